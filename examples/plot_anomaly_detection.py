"""Anomaly detection: spot a digit the models have never seen.

The models learn the handwritten digits of ``load_digits`` (bundled with
scikit-learn) except the 7s, from 70% of their images. The test set holds the
other 30% plus every 7, the anomalies. GenerativeLatentFlow and
LangevinFlowPriorGenerator, each behind a ``MinMaxScaler`` in a pipeline, rank
the test images by ``score_samples`` (a log-density: higher is more normal),
next to scikit-learn's IsolationForest. The script prints each detector's test
AUROC and writes

* ``anomaly_scores.png``: histograms of ``score_samples`` for the normal test
  digits and for the 7s, one panel per detector;
* ``anomaly_roc.png``: the three ROC curves.

    python examples/plot_anomaly_detection.py
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from _quick import settings
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

plt.switch_backend("Agg")
torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
cfg = settings(full=dict(epochs={}, n_train=None), quick=dict(epochs={"max_iter": 2}, n_train=200))

ANOMALY = 7
X, digit = load_digits(return_X_y=True)
is_anomaly = digit == ANOMALY
X_train, X_normal_test = train_test_split(X[~is_anomaly], test_size=0.3, random_state=0)
X_train = X_train[:cfg.n_train]
X_test = np.vstack([X_normal_test, X[is_anomaly]])
y_test = np.r_[np.zeros(len(X_normal_test)), np.ones(is_anomaly.sum())]  # 1 = anomaly

# The rows are 8x8 images: image_shape gives both models convolutional networks; every other
# parameter is the default.
IMAGES = dict(image_shape=(1, 8, 8), random_state=0, **cfg.epochs)
detectors = {
    "GenerativeLatentFlow": make_pipeline(MinMaxScaler(), GenerativeLatentFlow(**IMAGES)),
    "LangevinFlowPriorGenerator": make_pipeline(MinMaxScaler(),
                                                LangevinFlowPriorGenerator(**IMAGES)),
    "IsolationForest": IsolationForest(random_state=0),
}

print(f"train: {len(X_train)} digits without {ANOMALY}; test: {len(X_normal_test)} normal "
      f"+ {is_anomaly.sum()} anomalous ({ANOMALY})")
scores = {}
for name, detector in detectors.items():
    start = time.perf_counter()
    scores[name] = detector.fit(X_train).score_samples(X_test)
    auroc = roc_auc_score(y_test, -scores[name])  # low score = anomalous
    print(f"{name:<28} test AUROC = {auroc:.3f}   ({time.perf_counter() - start:.1f} s)")

# Histograms of score_samples: normal digits to the right, the 7s to the left.
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (name, s) in zip(axes, scores.items()):
    bins = np.linspace(*np.percentile(s, [1, 100]), 40)  # the 1% lowest off the left edge
    ax.hist(s[y_test == 0], bins=bins, alpha=0.6, density=True, label="normal digits")
    ax.hist(s[y_test == 1], bins=bins, alpha=0.6, density=True, label=f"unseen {ANOMALY}s")
    ax.set(title=name, xlabel="score_samples (higher = more normal)")
axes[0].set_ylabel("density")
axes[0].legend(loc="upper left")
fig.tight_layout()
fig.savefig("anomaly_scores.png", dpi=90)

fig, ax = plt.subplots(figsize=(4.8, 4.5))
for name, s in scores.items():
    fpr, tpr, _ = roc_curve(y_test, -s)
    ax.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y_test, -s):.3f})")
ax.plot([0, 1], [0, 1], ":", color="gray")
ax.set(xlabel="false positive rate", ylabel="true positive rate",
       title=f"ROC: the unseen digit {ANOMALY} as anomaly")
ax.legend(loc="lower right", fontsize=8, title="detector (AUROC)", title_fontsize=8)
fig.tight_layout()
fig.savefig("anomaly_roc.png", dpi=90)
print("wrote anomaly_scores.png, anomaly_roc.png")
