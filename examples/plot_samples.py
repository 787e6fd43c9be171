"""Sampling: new handwritten digits from both estimators, beside scikit-learn's own.

The convolutional estimators (``image_shape=(1, 8, 8)``) learn the 8x8 digits of
``load_digits`` scaled to [0, 1]. ``sample`` draws latents and decodes them: at the defaults
on images, from a 20-component Gaussian mixture of the training codes; with
``n_prior_components=1``, from the prior trained with the model, whose base is the papers'
``N(0, I)``. The parameter moves ``sample`` alone, so one fit shows both. Beside them: a
``GaussianMixture(10)`` on ``PCA(20)`` codes, decoded by the PCA. ``transform`` encodes real digits and ``inverse_transform``
decodes any latent, so a straight line between the codes of two real digits morphs one into
the other. The script writes

* ``sampling_grid.png``: real digits next to each generator's;
* ``sampling_interpolation.png``: GLF's latent interpolations between pairs of real
  digits (left and right columns: their reconstructions).

    python examples/plot_samples.py
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from _quick import settings
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

plt.switch_backend("Agg")
torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
cfg = settings(full=dict(epochs={}, n_train=None), quick=dict(epochs={"max_iter": 2}, n_train=200))

X, digit = load_digits(return_X_y=True)
X = X / 16.0  # pixels in [0, 1]
X, digit = X[:cfg.n_train], digit[:cfg.n_train]

IMAGES = dict(image_shape=(1, 8, 8), random_state=0, **cfg.epochs)
model = GenerativeLatentFlow(**IMAGES).fit(X)
prior_samples = model.set_params(n_prior_components=1).sample(36, random_state=0)
model.set_params(n_prior_components="auto")  # back to the default: the codes' mixture
lfp = LangevinFlowPriorGenerator(**IMAGES).fit(X)
print(f"fitted GLF {model.n_iter_} and LFP {lfp.n_iter_} epochs on {len(X)} digits")
pca = PCA(20, random_state=0).fit(X)
mixture = GaussianMixture(10, random_state=0).fit(pca.transform(X))
codes = mixture.sample(36)[0][np.random.RandomState(0).permutation(36)]  # drawn by component
pca_samples = np.clip(pca.inverse_transform(codes), 0, 1)


def show(axes, images):
    for ax, image in zip(np.ravel(axes), images):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])


# Real digits next to generated ones.
panels = {"real digits": X[:36], "PCA(20) + GaussianMixture(10)": pca_samples,
          "GLF, from its prior (N(0, I) base)": prior_samples,
          "GLF (defaults: its codes' mixture)": model.sample(36, random_state=0),
          "LFP (defaults: its codes' mixture)": lfp.sample(36, random_state=0)}
fig = plt.figure(figsize=(16, 3.8))
for subfig, (title, images) in zip(fig.subfigures(1, len(panels), wspace=0.06),
                                   panels.items()):
    show(subfig.subplots(6, 6, gridspec_kw=dict(wspace=0.08, hspace=0.08)), images)
    subfig.suptitle(title, fontsize=10)
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
