"""Anomalies among images: which handwritten digits look like none seen in training?

The models learn the 8x8 digits of ``load_digits`` except the 8s (80% of the other images;
``image_shape=(1, 8, 8)`` gives them convolutional networks). The test set holds the other
20% plus every 8. On images a likelihood ranks pictures by how simple they are rather than by
what they show, so with ``image_shape`` the models score by default (``score_method='auto'``)
by where an image lies among the training images: GLF by ``'local'``, in the space of the
latent codes (the mean of the code's local outlier factor and its distance to the nearest
code, each standardised), LFP by ``'local_features'``, those two and the same two in the
space of its encoder's last feature maps. Next to them, scikit-learn's ``LocalOutlierFactor`` on the
raw pixels. The
script prints each detector's
AUPRC and AUROC and writes ``image_anomalies.png``: for each detector, the eight test images
it finds most anomalous and the eight it finds most normal, each with its score (the 8s
framed in red).

    python examples/plot_image_anomalies.py
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor

from _quick import settings
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

plt.switch_backend("Agg")
torch.set_num_threads(1)  # small networks: one thread is as fast, and steady on a busy machine
cfg = settings(full=dict(epochs={}, n_train=None), quick=dict(epochs={"max_iter": 2}, n_train=200))

ANOMALY, N_SHOWN = 8, 8
X, digit = load_digits(return_X_y=True)
X = X / 16.0  # pixels in [0, 1]
normal = digit != ANOMALY
X_train, X_normal_test = train_test_split(X[normal], test_size=0.2, random_state=0)
X_train = X_train[:cfg.n_train]
X_test = np.vstack([X_normal_test, X[~normal]])
y_test = np.r_[np.zeros(len(X_normal_test)), np.ones((~normal).sum())]

images = dict(image_shape=(1, 8, 8), random_state=0, **cfg.epochs)
detectors = {"GenerativeLatentFlow": GenerativeLatentFlow(**images),
             "LangevinFlowPriorGenerator": LangevinFlowPriorGenerator(**images),
             "LocalOutlierFactor (pixels)": LocalOutlierFactor(novelty=True)}
scores, auprc = {}, {}
for name, detector in detectors.items():
    start = time.perf_counter()
    scores[name] = detector.fit(X_train).score_samples(X_test)  # higher = more normal
    precision, recall, _ = precision_recall_curve(y_test, -scores[name])
    auprc[name] = auc(recall, precision)
    print(f"{name:28s} AUPRC {auprc[name]:.3f}  AUROC {roc_auc_score(y_test, -scores[name]):.3f}"
          f"  ({time.perf_counter() - start:.1f} s)")

fig, axes = plt.subplots(len(detectors), 2 * N_SHOWN + 1, figsize=(15, 1.6 * len(detectors) + 0.6),
                         gridspec_kw={"width_ratios": [1] * N_SHOWN + [0.35] + [1] * N_SHOWN})
for row, (name, score) in zip(axes, scores.items()):
    order = np.argsort(score)  # most anomalous first
    shown = list(order[:N_SHOWN]) + [None] + list(order[::-1][:N_SHOWN][::-1])
    for ax, i in zip(row, shown):
        ax.set_xticks([])
        ax.set_yticks([])
        if i is None:
            ax.axis("off")
            continue
        ax.imshow(X_test[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{score[i]:.1f}", fontsize=9)
        for spine in ax.spines.values():
            spine.set(color="red" if y_test[i] else "0.7", linewidth=2.5 if y_test[i] else 0.8)
    row[0].set_ylabel(f"{name.replace(' (', chr(10) + '(')}\nAUPRC {auprc[name]:.2f}",
                      fontsize=9, rotation=0, ha="right", va="center", labelpad=10)
fig.text(0.31, 0.98, "most anomalous test images (lowest score)", ha="center", va="top",
         fontsize=11)
fig.text(0.75, 0.98, "most normal test images (highest score)", ha="center", va="top",
         fontsize=11)
fig.suptitle(f"Held-out digit {ANOMALY} (framed in red) among the other digits' test images",
             y=0.02, va="bottom", fontsize=10)
fig.subplots_adjust(left=0.13, right=0.99, top=0.87, bottom=0.09, wspace=0.12, hspace=0.35)
fig.savefig("image_anomalies.png", dpi=90)
print("wrote image_anomalies.png")
