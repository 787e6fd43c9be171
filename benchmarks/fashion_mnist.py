"""Held-out-class anomaly detection on Fashion-MNIST (Debian package ``dataset-fashion-mnist``).

Protocol of the latent-prior papers: one class is the anomaly; the detectors train on 80% of the
images of the other nine classes (training files) and are tested on the other 20% plus every
image of the held-out class (training and test files). AUPRC as the papers compute it,
``auc(recall, precision)``, with average precision beside it. Pixels are scaled to [0, 1]; the
skflowgen estimators use ``image_shape=(1, 28, 28)`` (DCGAN-style convolutional networks).
The same training and test rows serve every detector.

    python benchmarks/fashion_mnist.py --n-jobs 2

The skflowgen estimators run at their defaults except ``image_shape`` (on a GPU when there is
one). ``--max-train``, ``--max-test`` and ``--max-iter`` (epochs of the skflowgen estimators,
default: theirs) bound the cost: all ten classes and nine detectors with ``--max-iter 5`` took
51 minutes in one process on a shared two-core machine; ``--n-jobs 2`` runs two (class,
detector) tasks at once.
"""

import argparse
import gzip
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve
from sklearn.model_selection import train_test_split

from _common import (average_ranks, limit_threads, markdown_table, provenance,
                     replace_section, timed)
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


BASELINES = ["iforest", "lof", "ocsvm", "gmm", "ecod", "pyod-ae", "pyod-vae"]


def make_detectors(names, max_iter, seed):
    """``{name: Detector}``: the skflowgen estimators at their defaults with the convolutional
    networks (and ``max_iter`` unless None), the baselines as in the ADBench benchmark."""
    from adbench import DETECTORS, Detector
    images = dict(image_shape=(1, 28, 28), random_state=seed,
                  **({} if max_iter is None else {"max_iter": max_iter}))
    own = {"glf": lambda s: GenerativeLatentFlow(**images),
           "lfp": lambda s: LangevinFlowPriorGenerator(**images)}
    return {name: (Detector(name, own[name]) if name in own else DETECTORS[name])
            for name in names}


def split(X, y, held_out, max_train, max_test, seed):
    """The held-out-class split, with the training and test rows subsampled (the test rows
    stratified on the label) to at most ``max_train`` and ``max_test``."""
    normal = y != held_out
    X_train, X_normal_test = train_test_split(X[normal], test_size=0.2, random_state=seed)
    if len(X_train) > max_train:
        X_train = X_train[np.random.RandomState(seed).choice(len(X_train), max_train,
                                                             replace=False)]
    X_test = np.vstack([X_normal_test, X[~normal]])
    y_test = np.r_[np.zeros(len(X_normal_test)), np.ones((~normal).sum())]
    if len(X_test) > max_test:
        X_test, _, y_test, _ = train_test_split(X_test, y_test, train_size=max_test,
                                                stratify=y_test, random_state=seed)
    return X_train, X_test, y_test


def run_one(args, held_out, name):
    """Fit one detector for one held-out class; ``(AUPRC, AP, seconds, anomaly share)``."""
    from adbench import anomaly_scores
    _limits = limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load(args.data_dir)
    X_train, X_test, y_test = split(X, y, held_out, args.max_train, args.max_test, args.seed)
    detector = make_detectors([name], args.max_iter, args.seed)[name]

    def run():
        estimator = detector.make(args.seed).fit(X_train)
        return anomaly_scores(estimator, X_test, detector)
    outlier_score, seconds = timed(run)
    precision, recall, _ = precision_recall_curve(y_test, outlier_score)
    result = (100 * auc(recall, precision), 100 * average_precision_score(y_test, outlier_score),
              seconds, float(y_test.mean()))
    print(f"class {held_out} {name}: AUPRC {result[0]:.1f} AP {result[1]:.1f} "
          f"{seconds:.0f} s", flush=True)
    return result


def plot(results, classes, names, path):
    """Grouped bars: AUPRC per held-out class and detector."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar(np.arange(len(classes)) + j * width, [results[c, name][0] for c in classes],
               width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2,
                  [CLASSES[c] for c in classes], rotation=20)
    ax.set_ylabel("AUPRC x 100")
    ax.set_title("Fashion-MNIST, held-out class as the anomaly")
    ax.legend(ncol=len(names), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--detectors", nargs="+", default=["lfp", "glf", *BASELINES])
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--max-test", type=int, default=3000)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="processes running (class, detector) tasks in parallel")
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    args = parser.parse_args()
    from joblib import Parallel, delayed
    header = provenance(args.threads)
    tasks = [(c, name) for name in args.detectors for c in args.classes]  # slowest first
    (outputs, wall_s) = timed(Parallel(n_jobs=args.n_jobs), (delayed(run_one)(args, c, name)
                                                             for c, name in tasks))
    results = dict(zip(tasks, outputs))
    rows = [[f"{c} ({CLASSES[c]})", *(f"{results[c, n][0]:.1f}" for n in args.detectors)]
            for c in args.classes]
    values = np.array([[results[c, n][0] for n in args.detectors] for c in args.classes])
    rows.append(["**mean**", *(f"{m:.1f}" for m in values.mean(axis=0))])
    rows.append(["**average rank**", *(f"{r:.2f}" for r in average_ranks(values))])
    ap_means = [np.mean([results[c, n][1] for c in args.classes]) for n in args.detectors]
    rows.append(["mean AP", *(f"{m:.1f}" for m in ap_means)])
    seconds = [np.mean([results[c, n][2] for c in args.classes]) for n in args.detectors]
    rows.append(["seconds per class (fit + score)", *(f"{s:.0f}" for s in seconds)])
    figure = Path(args.output).parent / "fashion_mnist.png"
    plot(results, args.classes, args.detectors, figure)
    body = "\n".join([
        "## Fashion-MNIST, held-out class", "", *header, "",
        f"Train: {args.max_train:,} images sampled from 80% of the nine normal classes; test: "
        f"{args.max_test:,} images sampled (stratified) from the other 20% plus every image of "
        f"the held-out class (anomaly share {outputs[0][3]:.2f}). skflowgen estimators at their "
        "defaults except `image_shape=(1, 28, 28)`"
        + ("" if args.max_iter is None else f" and `max_iter={args.max_iter}`")
        + "; baselines as in the ADBench section, on the flat 784 pixels. AUPRC = "
        "`auc(recall, precision)` x 100 (the papers' formula); one seed "
        f"({args.seed}); wall time of the run {wall_s / 60:.1f} min with {args.n_jobs} "
        "process(es).", "", markdown_table(["held-out class", *args.detectors], rows), "",
        f"![AUPRC per held-out class]({figure.name})"])
    print(body)
    replace_section(args.output, "fashion-mnist", body)


if __name__ == "__main__":
    main()
