"""Sampling and latent interpolation: new handwritten digits from GenerativeLatentFlow.

A convolutional GenerativeLatentFlow (``image_shape=(1, 8, 8)``) learns the
8x8 digits of ``load_digits`` scaled to [0, 1]. ``sample`` draws latents from
the flow prior and decodes them; ``transform`` encodes real digits, and
``inverse_transform`` decodes any latent, so a straight line between the codes
of two real digits morphs one into the other. The script writes

* ``sampling_grid.png``: real digits next to generated ones;
* ``sampling_interpolation.png``: latent interpolations between pairs of real
  digits (left and right columns: their reconstructions).

    python examples/plot_sampling.py
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from _quick import settings
from skflowgen import GenerativeLatentFlow

plt.switch_backend("Agg")
torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # epochs capped on purpose
cfg = settings(full=dict(max_iter=150, n_train=None), quick=dict(max_iter=2, n_train=200))

X, digit = load_digits(return_X_y=True)
X = X / 16.0  # pixels in [0, 1]
X, digit = X[:cfg.n_train], digit[:cfg.n_train]

model = GenerativeLatentFlow(n_components=8, image_shape=(1, 8, 8), reconstruction="bce",
                             max_iter=cfg.max_iter, random_state=0).fit(X)
print(f"fitted {model.n_iter_} epochs on {len(X)} digits; "
      f"mean log-density of the training digits: {model.score(X):.1f}")


def show(axes, images):
    for ax, image in zip(np.ravel(axes), images):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])


# Real digits next to generated ones.
fig = plt.figure(figsize=(10, 4.9))
for subfig, title, images in zip(fig.subfigures(1, 2, wspace=0.08),
                                 ["real digits", "sampled from the model"],
                                 [X[:36], model.sample(36, random_state=0)]):
    show(subfig.subplots(6, 6, gridspec_kw=dict(wspace=0.08, hspace=0.08)), images)
    subfig.suptitle(title)
fig.savefig("sampling_grid.png", dpi=80)

# Linear paths in latent space between the codes of two real digits.
pairs = [(0, 1), (3, 8), (4, 9), (2, 7), (5, 6)]  # digit classes
first = {d: np.flatnonzero(digit == d)[0] for d in np.unique(digit)}
weights = np.linspace(0, 1, 10)[:, None]
fig, axes = plt.subplots(len(pairs), len(weights), figsize=(8, 0.85 * len(pairs)))
for row, (a, b) in zip(axes, pairs):
    z_a, z_b = model.transform(X[[first[a], first[b]]])
    show(row, model.inverse_transform((1 - weights) * z_a + weights * z_b))
fig.suptitle("transform -> linear interpolation of the latents -> inverse_transform")
fig.tight_layout()
fig.savefig("sampling_interpolation.png", dpi=80)
print("wrote sampling_grid.png, sampling_interpolation.png")
