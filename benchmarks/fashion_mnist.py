"""Held-out-class anomaly detection on Fashion-MNIST (Debian package ``dataset-fashion-mnist``).

Protocol of the latent-prior papers: one class is the anomaly; the detectors train on 80% of the
images of the other nine classes (training files) and are tested on the other 20% plus every
image of the held-out class (training and test files). AUPRC as the papers compute it,
``auc(recall, precision)``, with average precision beside it. Pixels are scaled to [0, 1]; the
skflowgen estimators use ``image_shape=(1, 28, 28)`` (DCGAN-style convolutional networks).
``--max-train`` subsamples the training images (the same rows for every detector) so that a CPU
run stays in minutes.

    python benchmarks/fashion_mnist.py [--classes 0] [--max-train 10000] [--max-iter 20]
"""

import argparse
import gzip
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve
from sklearn.model_selection import train_test_split

from _common import limit_threads, timed, write_report
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def read_idx(path):
    """An idx file (gzip) as a numpy array."""
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir):
    d = Path(data_dir)
    X = np.concatenate([read_idx(d / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")])
    y = np.concatenate([read_idx(d / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")])
    return X.reshape(len(X), -1).astype(np.float32) / 255.0, y


def detectors(max_iter, seed):
    images = dict(image_shape=(1, 28, 28), max_iter=max_iter, random_state=seed)
    return {
        "LangevinFlowPriorGenerator": LangevinFlowPriorGenerator(**images),
        "GenerativeLatentFlow": GenerativeLatentFlow(**images),
        "IsolationForest": IsolationForest(random_state=seed),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=[0])
    parser.add_argument("--detectors", nargs="+", default=None)
    parser.add_argument("--max-train", type=int, default=10000)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    args = parser.parse_args()
    _limits = limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    X, y = load(args.data_dir)
    rows = []
    for held_out in args.classes:
        normal = y != held_out
        X_train, X_normal_test = train_test_split(X[normal], test_size=0.2,
                                                  random_state=args.seed)
        if len(X_train) > args.max_train:
            X_train = X_train[np.random.RandomState(args.seed).choice(
                len(X_train), args.max_train, replace=False)]
        X_test = np.vstack([X_normal_test, X[~normal]])
        y_test = np.r_[np.zeros(len(X_normal_test)), np.ones((~normal).sum())]
        for name, detector in detectors(args.max_iter, args.seed).items():
            if args.detectors and name not in args.detectors:
                continue

            def run():
                return -detector.fit(X_train).score_samples(X_test)
            outlier_score, seconds = timed(run)
            precision, recall, _ = precision_recall_curve(y_test, outlier_score)
            row = [f"{held_out} ({CLASSES[held_out]})", name, f"{100 * auc(recall, precision):.1f}",
                   f"{100 * average_precision_score(y_test, outlier_score):.1f}",
                   f"{seconds:.0f}"]
            print("  ".join(row), flush=True)
            rows.append(row)
    write_report(
        args.output, "fashion-mnist", "Fashion-MNIST, held-out class", args.threads,
        f"Train: {args.max_train:,} images sampled from 80% of the nine normal classes; test: "
        "the other 20% plus every image of the held-out class. skflowgen estimators with "
        f"defaults except `image_shape=(1, 28, 28)`, `max_iter={args.max_iter}`. AUPRC = "
        "`auc(recall, precision)` x 100; AP = average precision x 100; seconds = fit + score.",
        ["held-out class", "detector", "AUPRC", "AP", "seconds"], rows)


if __name__ == "__main__":
    main()
