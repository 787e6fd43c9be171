"""Imputation suite: the skflowgen estimators against scikit-learn's imputers on the tables
and missingness mechanisms the imputation literature reports (MIWAE, HyperImpute, ReMasker).

What it measures
    Per dataset, mechanism and seed, the table's columns are standardized on the complete
    data, entries are removed by the mechanism, and each imputer is fitted on the incomplete
    table and fills it (in-sample, as the published tables do). Metrics: the RMSE over the
    removed entries in standard deviations of each column; where the dataset has class
    labels, the accuracy of a logistic regression on the filled table (5-fold stratified
    cross-validation); fit + fill seconds (one process per task, ``--threads`` each).

Datasets
    scikit-learn's bundled ``breast_cancer``, ``wine``, ``iris`` and ``digits`` (labelled),
    and the normal rows (``y == 0``) of ADBench tables in ``--data-dir``: ``cardio``,
    ``satellite``, ``pendigits``, ``Pima``, ``Ionosphere``, ``yeast``, ``vowels``,
    ``breastw`` (no class labels). At most ``--max-rows`` rows, drawn per seed; constant
    columns dropped.

Mechanisms
    ``mcar-20``, ``mcar-50``: each entry removed with probability 0.2 (0.5), missing
    completely at random. ``mnar-20``: self-masking of high values, missing not at random:
    each entry above its column's median removed with probability 0.4 (a fifth of the
    entries in expectation).

Imputers
    ``SimpleImputer`` (mean), ``KNNImputer`` (5 neighbours), ``IterativeImputer``
    (BayesianRidge), ``missForest`` (``IterativeImputer`` with
    ``ExtraTreesRegressor(n_estimators=10)``,
    as scikit-learn's imputation example builds it), and ``GLF``: ``GenerativeImputer`` at its
    defaults (a denoising ``GenerativeLatentFlow`` trained to the best fills of held-out
    entries); ``LFP``: ``GenerativeImputer`` of ``LangevinFlowPriorGenerator(max_iter=10)``. A
    variant names its parameters in brackets, of the model or of the imputer:
    ``'GLF[mask_fraction=0.0]'``, ``'GLF[early_stopping=False]'``.

How to run
    python benchmarks/imputation_suite.py --n-jobs 2 --resume
    python benchmarks/imputation_suite.py --imputers 'GLF[mask_fraction=0.0]' --n-jobs 2 --resume

Raw rows go to ``--raw`` as each task ends and are not run again with ``--resume``; the tables
(mean over seeds, and the mean rank of each estimator among the four scikit-learn imputers
and itself) go to the ``imputation-suite`` section of ``--output``.
"""

import argparse
import warnings

import numpy as np
from sklearn import datasets
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

import _common
from imputation import knock_out
from skflowgen import GenerativeImputer, GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen.impute import _DEFAULT_MODEL

BUNDLED = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
           "iris": datasets.load_iris, "digits": datasets.load_digits}
ADBENCH = ["cardio", "satellite", "pendigits", "Pima", "Ionosphere", "yeast", "vowels",
           "breastw"]
MECHANISMS = ["mcar-20", "mcar-50", "mnar-20"]
BASELINES = ["SimpleImputer", "KNNImputer", "IterativeImputer", "missForest"]
ESTIMATORS = ["GLF", "LFP"]
FIELDS = ["dataset", "mechanism", "seed", "imputer", "rmse", "accuracy", "seconds", "machine"]


def load(name, data_dir, max_rows, seed):
    """``(X standardized, y or None)``: at most ``max_rows`` rows drawn with ``seed``."""
    if name in BUNDLED:
        X, y = BUNDLED[name](return_X_y=True)
    else:
        (path,) = _common.list_datasets(data_dir, [name])
        X, y = _common.load_npz(path)
        X, y = X[y == 0], None
    if len(X) > max_rows:
        rows = np.random.RandomState(seed).permutation(len(X))[:max_rows]
        X, y = X[rows], None if y is None else y[rows]
    X = X[:, X.std(axis=0) > 0]
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def remove(X, mechanism, rng):
    """``X`` with entries set to NaN by ``mechanism`` (see the module docstring)."""
    kind, percent = mechanism.split("-")
    p = int(percent) / 100
    if kind == "mcar":
        return knock_out(X, p, rng)
    # self-masking: only entries above their column's median, at twice the rate
    hidden = (X > np.median(X, axis=0)) & (rng.rand(*X.shape) < 2 * p)
    return np.where(hidden, np.nan, X)


def make_imputer(name, seed, n_features):
    if name == "SimpleImputer":
        return SimpleImputer()
    if name == "KNNImputer":
        return KNNImputer()
    if name == "IterativeImputer":
        return IterativeImputer(random_state=seed)
    if name == "missForest":
        return IterativeImputer(ExtraTreesRegressor(n_estimators=10, random_state=seed),
                                random_state=seed)
    family, _, spec = name.partition("[")
    params = _common.parse_params(spec.rstrip("]"))
    own = {key: params.pop(key) for key in list(params) if key in GenerativeImputer().get_params()}
    if family == "LFP":
        model = LangevinFlowPriorGenerator(max_iter=10, random_state=seed, **params)
    else:  # GenerativeImputer's default model, with the variant's parameters
        model = GenerativeLatentFlow(n_features, random_state=seed, **{**_DEFAULT_MODEL, **params})
    return GenerativeImputer(model, random_state=seed, **own)


def run(dataset, mechanism, seed, name, args):
    """One imputer on one incomplete table: a list of one raw row."""
    _limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the run)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load(dataset, args.data_dir, args.max_rows, seed)
    incomplete = remove(X, mechanism, np.random.RandomState(seed))
    filled, seconds = _common.timed(make_imputer(name, seed, X.shape[1]).fit_transform, incomplete)
    holes = np.isnan(incomplete)
    rmse = float(np.sqrt(np.mean((filled[holes] - X[holes]) ** 2)))
    accuracy = "" if y is None else float(cross_val_score(
        LogisticRegression(max_iter=2000), filled, y,
        cv=StratifiedKFold(5, shuffle=True, random_state=seed)).mean())
    print(f"{dataset} {mechanism} seed {seed} {name}: RMSE {rmse:.4f} {seconds:.1f} s",
          flush=True)
    return [dict(dataset=dataset, mechanism=mechanism, seed=seed, imputer=name, rmse=rmse,
                 accuracy=accuracy, seconds=seconds, machine=_common.machine_info(args.threads))]


def summary(rows, mechanism, imputers, datasets_):
    """Per dataset the mean RMSE (and accuracy) over seeds of each imputer, as arrays
    ``(datasets x imputers)``, NaN where a cell was not run, and the mean seconds."""
    def mean(field, dataset, imputer):
        values = [float(r[field]) for r in rows if r["mechanism"] == mechanism
                  and r["dataset"] == dataset and r["imputer"] == imputer and r[field] != ""]
        return np.mean(values) if values else np.nan
    rmse, accuracy = (np.array([[mean(f, d, i) for i in imputers] for d in datasets_])
                      for f in ("rmse", "accuracy"))
    seconds = np.array([np.nanmean([mean("seconds", d, i) for d in datasets_])
                        for i in imputers])
    return rmse, accuracy, seconds


def report(rows, args):
    """The ``imputation-suite`` section: one table per mechanism."""
    datasets_ = [d for d in [*BUNDLED, *ADBENCH] if any(r["dataset"] == d for r in rows)]
    n_seeds = len({int(r["seed"]) for r in rows})
    parts = []
    for mechanism in [m for m in MECHANISMS if any(r["mechanism"] == m for r in rows)]:
        run_here = dict.fromkeys(r["imputer"] for r in rows if r["mechanism"] == mechanism)
        imputers = BASELINES + [i for i in run_here if i not in BASELINES]
        estimators = imputers[len(BASELINES):]
        rmse, accuracy, seconds = summary(rows, mechanism, imputers, datasets_)
        table = [[d, *(f"{v:.3f}" for v in rmse[k])] for k, d in enumerate(datasets_)]
        table += [[f"{d} accuracy", *(f"{v:.3f}" for v in accuracy[k])]
                  for k, d in enumerate(datasets_) if not np.isnan(accuracy[k]).all()]
        for k, estimator in enumerate(estimators):  # lower RMSE = better rank
            five = rmse[:, [*range(len(BASELINES)), len(BASELINES) + k]]
            ranks = _common.average_ranks(-five)
            table.append([f"mean rank by RMSE, {estimator} and the four",
                          *(f"{r:.2f}" for r in ranks[:len(BASELINES)]),
                          *("" if j != k else f"{ranks[-1]:.2f}"
                            for j in range(len(estimators)))])
        table.append(["mean seconds", *(f"{s:.1f}" for s in seconds)])
        parts += [f"**{mechanism}** (RMSE in standard deviations, mean over {n_seeds} seeds)",
                  "", _common.markdown_table(["dataset", *imputers], table), ""]
    description = (
        "Each imputer is fitted on the incomplete table and fills it; RMSE over the removed "
        "entries, in standard deviations of each column; accuracy of a logistic regression "
        "on the filled table (5-fold cross-validation) where the set has labels; a mean rank "
        "is over the datasets, each estimator ranked with the four scikit-learn imputers "
        "(rank 1 = lowest RMSE). Protocol, datasets and imputers in the script's docstring.")
    body = "\n".join(["## Imputation suite", "", *_common.provenance(args.threads), "",
                      description, "", *parts])
    print(body)
    _common.replace_section(args.output, "imputation-suite", body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[*BUNDLED, *ADBENCH])
    parser.add_argument("--mechanisms", nargs="+", default=MECHANISMS, choices=MECHANISMS)
    parser.add_argument("--imputers", nargs="+", default=BASELINES + ESTIMATORS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR))
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", default=str(_common.RESULTS_DIR / "imputation_suite_raw.csv"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--output", default=str(_common.DEFAULT_RESULTS))
    args = parser.parse_args()
    tasks = [(d, m, s, i) for m in args.mechanisms for d in args.datasets for s in args.seeds
             for i in args.imputers]
    rows = _common.run_resumable(
        args.raw, FIELDS, tasks, lambda *task: run(*task, args),
        lambda r: (r["dataset"], r["mechanism"], int(r["seed"]), r["imputer"]),
        n_jobs=args.n_jobs, resume=args.resume)
    report(rows, args)


if __name__ == "__main__":
    main()
