"""Imputation: the estimators' ``impute`` against scikit-learn's imputers.

Three settings, each over seeds; every imputer is fitted on the training rows and fills the
removed entries of the test rows; RMSE over the removed entries, fit + impute seconds. The
skflowgen estimators train ten epochs on the tables (``max_iter=10``: their table default
stops after one or five, where anomalies rank best) and ``max_iter='auto'`` on images.

- ``digits-30`` and ``digits-50``: ``load_digits`` scaled to [0, 1], a random 80/20 split,
  30% (50%) of the test entries removed at random; training rows complete, and training
  rows with the same share removed.
- ``fashion-square``: Fashion-MNIST in [0, 1] (Debian package ``dataset-fashion-mnist``),
  ``--max-train`` training images (complete), ``--max-test`` test images, each missing one
  10 x 10 square at a random place (inpainting). The skflowgen estimators get
  ``image_shape=(1, 28, 28)``; IterativeImputer regresses each pixel on its
  ``n_nearest_features=100`` most correlated pixels (on all 783 it takes hours).

The skflowgen estimators run at their defaults. Raw results go to ``--raw`` (one row per
setting, training rows, imputer and seed) and ``--resume`` keeps the rows already there, so
settings can be run on different machines into one table:

    python benchmarks/imputation.py --settings digits-30 digits-50 --n-jobs 2 --resume
    python benchmarks/imputation.py --settings fashion-square --n-jobs 8 --resume
"""

import argparse
import csv
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

from _common import figure_path, limit_threads, load_images, machine_info, markdown_table, \
    provenance, replace_section, timed
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

SETTINGS = ["digits-30", "digits-50", "fashion-square"]
IMPUTERS = ["LangevinFlowPriorGenerator", "GenerativeLatentFlow", "KNNImputer",
            "IterativeImputer", "SimpleImputer"]
N_SHOWN = 8  # test images in the inpainting figure
FIELDS = ["setting", "training_rows", "imputer", "seed", "rmse", "seconds", "machine"]


def make_imputer(name, setting, seed):
    # ten epochs on tables (the table default stops after one or five, for detection)
    images = {"image_shape": (1, 28, 28)} if setting == "fashion-square" else {"max_iter": 10}
    if name == "LangevinFlowPriorGenerator":
        return LangevinFlowPriorGenerator(random_state=seed, **images)
    if name == "GenerativeLatentFlow":
        return GenerativeLatentFlow(random_state=seed, **images)
    if name == "KNNImputer":
        return KNNImputer()
    if name == "IterativeImputer":
        nearest = 100 if setting == "fashion-square" else None
        return IterativeImputer(n_nearest_features=nearest, random_state=seed)
    return SimpleImputer()


def knock_out(X, fraction, rng):
    """``X`` with each entry removed (NaN) with probability ``fraction``."""
    return np.where(rng.rand(*X.shape) < fraction, np.nan, X)


def cut_square(X, rng, side=10, shape=(28, 28)):
    """``X`` (flat images) with one ``side`` x ``side`` square per image removed."""
    images = X.reshape(len(X), *shape).copy()
    for image, (i, j) in zip(images, rng.randint(0, shape[0] - side + 1, size=(len(X), 2))):
        image[i:i + side, j:j + side] = np.nan
    return images.reshape(len(X), -1)


def problems(setting, seed, args):
    """``[(training rows label, train, test, corrupted test)]`` for one setting and seed."""
    rng = np.random.RandomState(seed)
    if setting == "fashion-square":
        X, _ = load_images("fashion", args.data_dir)
        perm = rng.permutation(len(X))
        train, test = X[perm[:args.max_train]], X[perm[-args.max_test:]]
        return [("complete", train, test, cut_square(test, rng))]
    fraction = int(setting.split("-")[1]) / 100
    X = load_digits().data / 16.0
    perm = rng.permutation(len(X))
    n_train = int(0.8 * len(X))
    train, test = X[perm[:n_train]], X[perm[n_train:]]
    corrupted = knock_out(test, fraction, rng)
    return [("complete", train, test, corrupted),
            (f"{fraction:.0%} missing", knock_out(train, fraction, rng), test, corrupted)]


def run_one(args, setting, seed, rows_label, name):
    """Fit one imputer on one problem: a raw-results row."""
    _limits = limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    (_, train, test, corrupted), = [p for p in problems(setting, seed, args)
                                    if p[0] == rows_label]
    imputer = make_imputer(name, setting, seed)

    def fit_impute():
        imputer.fit(train)
        return imputer.impute(corrupted) if hasattr(imputer, "impute") \
            else imputer.transform(corrupted)
    filled, seconds = timed(fit_impute)
    holes = np.isnan(corrupted)
    rmse = float(np.sqrt(np.mean((filled[holes] - test[holes]) ** 2)))
    print(f"{setting} {rows_label} seed {seed} {name}: RMSE {rmse:.4f} {seconds:.1f} s",
          flush=True)
    row = dict(setting=setting, training_rows=rows_label, imputer=name, seed=seed,
               rmse=f"{rmse:.5f}", seconds=f"{seconds:.2f}", machine=machine_info(args.threads))
    return row, (test[:N_SHOWN], corrupted[:N_SHOWN], filled[:N_SHOWN])


def plot_inpainting(examples, path):
    """Rows: the test images with their square cut (red), each imputer's fill, the truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    truth, corrupted, _ = next(iter(examples.values()))  # the same images for every imputer
    rows = [("cut", corrupted), *((name, filled) for name, (_, _, filled) in examples.items()),
            ("truth", truth)]
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("red")
    fig, axes = plt.subplots(len(rows), N_SHOWN, figsize=(1.1 * N_SHOWN + 2.2, 1.1 * len(rows)))
    for (label, images), row_axes in zip(rows, axes):
        for image, ax in zip(images, row_axes):
            ax.imshow(image.reshape(28, 28), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row_axes[0].set_ylabel(label.replace("Imputer", "\nImputer").replace(
            "Generator", "\nGenerator").replace("LatentFlow", "\nLatentFlow"), fontsize=7,
            rotation=0, ha="right", va="center")
    fig.suptitle("Fashion-MNIST inpainting: a 10 x 10 square missing per image", fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.05)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_raw(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report(rows, output, threads, notes=None):
    """RESULTS.md section: mean (std) RMSE and seconds per setting, training rows and imputer."""
    groups = {}
    for r in rows:
        groups.setdefault((r["setting"], r["training_rows"]), {}).setdefault(
            r["imputer"], []).append((float(r["rmse"]), float(r["seconds"])))
    header = ["setting", "training rows",
              *(f"{name} RMSE (s)" for name in IMPUTERS)]
    table = []
    for (setting, rows_label) in sorted(groups, key=lambda k: (SETTINGS.index(k[0]),
                                                               k[1] != "complete")):
        cells = []
        for name in IMPUTERS:
            values = groups[setting, rows_label].get(name)
            cells.append("" if not values else
                         f"{np.mean([v for v, _ in values]):.4f} ± "
                         f"{np.std([v for v, _ in values]):.4f} "
                         f"({np.mean([s for _, s in values]):.1f})")
        seeds = len(next(iter(groups[setting, rows_label].values())))
        table.append([f"{setting} ({seeds} seeds)", rows_label, *cells])
    machines = sorted({r["machine"] for r in rows})
    body = "\n".join([
        "## Imputation", "", *provenance(threads), "",
        "RMSE over the removed entries (pixels in [0, 1]), mean ± std over the seeds, and in "
        "brackets fit + impute seconds (one process per task, "
        f"{threads} thread(s) each); skflowgen estimators at their "
        "defaults (`image_shape=(1, 28, 28)` for Fashion-MNIST). Settings in the script's "
        "docstring. Rows measured on: " + "; ".join(machines) + ".", "",
        markdown_table(header, table), *(["", Path(notes).read_text().strip()] if notes else [])])
    print(body)
    replace_section(output, "imputation", body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    parser.add_argument("--imputers", nargs="+", default=IMPUTERS, choices=IMPUTERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", default="benchmarks/results/imputation_raw.csv")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    parser.add_argument("--notes", help="a Markdown file appended to the section")
    args = parser.parse_args()
    from joblib import Parallel, delayed
    done = read_raw(args.raw) if args.resume else []
    have = {(r["setting"], r["training_rows"], r["imputer"], int(r["seed"])) for r in done}
    tasks = [(s, seed, label, name) for s in args.settings for seed in args.seeds
             for label, *_ in problems(s, seed, args) for name in args.imputers
             if (s, label, name, seed) not in have]
    rows, examples = list(done), {}
    with open(args.raw, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        for task, (row, shown) in zip(tasks, Parallel(n_jobs=args.n_jobs, return_as="generator")(
                delayed(run_one)(args, *task) for task in tasks)):
            writer.writerow(row)
            f.flush()
            rows.append(row)
            if task[0] == "fashion-square" and task[1] == args.seeds[0]:
                examples[task[3]] = shown
    if examples:
        plot_inpainting(examples, figure_path(args.output, "inpainting.png"))
    report(rows, args.output, args.threads, args.notes)


if __name__ == "__main__":
    main()
