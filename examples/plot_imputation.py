"""Missing values: fill in knocked-out pixels with LangevinFlowPriorGenerator.impute.

A LangevinFlowPriorGenerator with a convolutional generator
(``image_shape=(1, 8, 8)``) learns 80% of the ``load_digits`` images, scaled to
[0, 1]. On the other 20%, 30% of the pixels are knocked out at random (set to
NaN). ``impute`` infers each image's latent from its observed pixels alone
(the NaN entries drop out of the likelihood) and fills the missing ones with
the generator's output there. The script prints the RMSE on the missing pixels
next to scikit-learn's KNNImputer and to the training mean of each pixel, and
writes ``imputation.png``: corrupted digits (missing pixels in red), the
model's imputation, KNNImputer's and the truth.

    python examples/plot_imputation.py
"""

import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import KNNImputer
from sklearn.model_selection import train_test_split

from _quick import settings
from skflowgen import LangevinFlowPriorGenerator

plt.switch_backend("Agg")
torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # epochs capped on purpose
cfg = settings(full=dict(max_iter=40, n_train=None), quick=dict(max_iter=2, n_train=200))

X, _ = load_digits(return_X_y=True)
X_train, X_test = train_test_split(X / 16.0, test_size=0.2, random_state=0)
X_train = X_train[:cfg.n_train]
missing = np.random.RandomState(0).rand(*X_test.shape) < 0.3
X_corrupted = np.where(missing, np.nan, X_test)

start = time.perf_counter()
# The defaults, but trained longer: their ten epochs rank anomalies best, while imputation
# needs the data learned (benchmarks/RESULTS.md, "Imputation").
model = LangevinFlowPriorGenerator(image_shape=(1, 8, 8), max_iter=cfg.max_iter,
                                   random_state=0).fit(X_train)
X_model = model.impute(X_corrupted)
print(f"LangevinFlowPriorGenerator: fit + impute in {time.perf_counter() - start:.1f} s")
X_knn = KNNImputer().fit(X_train).transform(X_corrupted)
X_mean = np.where(missing, X_train.mean(axis=0), X_test)

print(f"RMSE on the {missing.sum()} missing pixels ({missing.mean():.0%} of the test pixels):")
for name, X_filled in [("LangevinFlowPriorGenerator.impute", X_model),
                       ("KNNImputer", X_knn), ("training mean", X_mean)]:
    rmse = np.sqrt(np.mean((X_filled[missing] - X_test[missing]) ** 2))
    print(f"  {name:<35}{rmse:.4f}")

rows = [("corrupted", X_corrupted), ("model.impute", X_model), ("KNNImputer", X_knn),
        ("truth", X_test)]
cmap = plt.get_cmap("gray_r").copy()
cmap.set_bad("red")  # NaN pixels
n_images = 12
fig, axes = plt.subplots(len(rows), n_images, figsize=(n_images * 0.8, len(rows) * 0.9))
for row, (label, images) in zip(axes, rows):
    for ax, image in zip(row, images):
        ax.imshow(image.reshape(8, 8), cmap=cmap, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(label, rotation=0, ha="right", va="center")
fig.tight_layout()
fig.savefig("imputation.png", dpi=80)
print("wrote imputation.png")
