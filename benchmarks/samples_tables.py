"""Sample quality on tables: can a classifier tell the estimators' samples from real rows?

What it measures
    For a few ADBench sets and seeds: the ADBench 70/30 stratified split; each generator is
    fitted on the training rows (anomalies included, as a user's data would be) and draws as
    many rows as the test split holds. A classifier two-sample test (Lopez-Paz and Oquab,
    ICLR 2017): ``HistGradientBoostingClassifier`` tells the test rows (label 0) from the
    samples (label 1); reported is its 5-fold cross-validated AUROC, 0.5 when the two cannot
    be told apart and 1.0 when every sample gives itself away. Generators: training rows
    drawn without replacement (the floor), ``GaussianMixture`` with full covariances and its number of
    components (1 to 10) chosen by BIC, the same draws with each column of few values moved
    to its nearest training value (``sample``'s rule: at most 20 distinct values, each seen
    twice or more on average), and both estimators at their defaults but ten epochs
    (``max_iter=10``; the table default stops early, where anomalies rank best), whose
    ``sample`` draws ``x ~ N(g(z), diag(noise_variance_))``, and beside each the same draws
    without the noise (the decoded mean ``g(z)``).

How to run
    python benchmarks/samples_tables.py ../shared/data/adbench

    Raw rows go to ``--raw`` as each run ends; ``--resume`` keeps those already there. The
    table goes to the ``samples-tables`` section of ``--output``.
"""

import argparse
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HERE = Path(__file__).resolve().parent
GENERATORS = ("training rows", "GaussianMixture (BIC)", "GaussianMixture (BIC), on the support",
              "GLF", "GLF, the decoded mean", "LFP", "LFP, the decoded mean")
RAW_FIELDS = ["dataset", "seed", "generator", "n_components", "auroc"]
MAX_ITER = 10  # epochs: the table default stops after one (GLF) or five (LFP), for detection


def two_sample_auroc(real, fake, seed):
    """5-fold AUROC of a classifier telling ``real`` (0) from ``fake`` (1) rows."""
    X = np.vstack([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    classifier = HistGradientBoostingClassifier(random_state=seed)
    return float(cross_val_score(classifier, X, y, cv=5, scoring="roc_auc").mean())


def gmm_bic(X, n, seed):
    """``(n samples, components)`` of the ``GaussianMixture`` of 1 to 10 components with the
    lowest BIC, fitted to the standardised rows."""
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    gmm = min((GaussianMixture(k, random_state=seed).fit(Z) for k in range(1, 11)),
              key=lambda fit: fit.bic(Z))
    return scaler.inverse_transform(gmm.sample(n)[0]), gmm.n_components


def run_one(path, seed, threads):
    limits = _common.limit_threads(threads)  # noqa: F841 (kept alive for the run)
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    X, y = _common.load_npz(path)
    X_train, X_test, _, _ = _common.adbench_split(X, y, seed)
    n, name, rows = len(X_test), _common.dataset_name(path), []
    mixture_rows, mixture_components = gmm_bic(X_train, n, seed)
    support = GenerativeLatentFlow()  # sample()'s rule for columns with few values, alone
    support._fit_support(X_train, continuing=False)
    for generator in GENERATORS:
        n_components = ""
        if generator == "training rows":
            fake = X_train[np.random.RandomState(seed).choice(len(X_train), n, replace=False)]
        elif generator.startswith("GaussianMixture"):
            fake, n_components = mixture_rows.copy(), mixture_components
            if generator.endswith("on the support"):
                fake = support._on_support(fake)
        elif generator in ("GLF", "LFP"):
            cls = GenerativeLatentFlow if generator == "GLF" else LangevinFlowPriorGenerator
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = cls(random_state=seed, max_iter=MAX_ITER).fit(X_train)
            fake = model.sample(n, random_state=seed)
        else:  # the same fit and draws without the observation noise: g(z) alone
            model._draws_noise = False
            fake = model.sample(n, random_state=seed)
        rows.append(dict(dataset=name, seed=seed, generator=generator,
                         n_components=n_components,
                         auroc=two_sample_auroc(X_test, fake, seed)))
    return rows


def report(rows, args):
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})
    table = []
    for generator in GENERATORS:
        mine = [r for r in rows if r["generator"] == generator]
        table.append([generator, *(
            f"{np.mean([float(r['auroc']) for r in mine if r['dataset'] == name]):.3f}"
            for name in datasets), f"{np.mean([float(r['auroc']) for r in mine]):.3f}"])
    description = (
        f"Classifier two-sample test, AUROC of a `HistGradientBoostingClassifier` telling the "
        f"test rows from as many samples (5-fold cross-validation), mean over seeds "
        f"({', '.join(map(str, seeds))}); 0.5 = indistinguishable, 1.0 = every sample gives "
        "itself away. Generators fitted on the ADBench training split (70%, anomalies "
        "included); `GaussianMixture (BIC)`: full covariances, 1 to 10 components by BIC; `..., "
        "on the support`: its draws with each column of at most 20 distinct training values, "
        "each seen twice or more on average, moved to the nearest of them (the rule of the "
        "estimators' `sample`); the estimators at their defaults (10 epochs), whose `sample` "
        "draws the observation noise on tables; `..., the decoded mean`: the same draws "
        "without it, `g(z)`.")
    _common.write_report(args.output, "samples-tables", "Samples: tables", args.threads,
                         description, ["generator", *datasets, "mean"], table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder of ADBench .npz files")
    parser.add_argument("--datasets", nargs="+",
                        default=["cardio", "thyroid", "pendigits", "satellite", "breastw",
                                 "Pima", "yeast", "annthyroid", "WBC", "optdigits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--raw", type=Path, default=_common.RESULTS_DIR / "samples_tables_raw.csv")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    paths = _common.list_datasets(args.data_dir, args.datasets)
    by_name = {_common.dataset_name(p): p for p in paths}
    done = _common.run_resumable(
        args.raw, RAW_FIELDS, [(p, s) for p in paths for s in args.seeds],
        partial(run_one, threads=args.threads),
        lambda r: (by_name.get(r["dataset"]), int(r["seed"])), args.n_jobs, args.resume)
    wanted = {(_common.dataset_name(p), s) for p in paths for s in args.seeds}
    report([r for r in done if (r["dataset"], int(r["seed"])) in wanted], args)


if __name__ == "__main__":
    main()
