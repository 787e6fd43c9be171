"""Detection study on ADBench: which scores, training lengths and combinations of a fitted
model rank anomalies best, all chosen without labels.

What it measures
    For each set, seed (the ADBench split of ``adbench.py``: 70/30 stratified, sets above
    10,000 rows subsampled, ``MinMaxScaler`` fitted on the train part) and model (GLF, LFP at
    the defaults but ``max_iter``, plus ``--params``), one fit of ``max(--epochs)`` epochs
    whose weights are kept after each epoch of ``--epochs`` (a snapshot). Each snapshot
    scores the train and the test rows by the package's scores (``'marginal'`` for LFP only:
    it is GLF's worst and costs 128 decoder passes a row), by the reconstruction term alone
    (``'residual'``: ``-sum_j (x_j - g(z~)_j)^2 / sigma_j^2``), by an IsolationForest fitted
    to the train rows' codes (``'iforest-codes'``) and by the ``'knn'`` score with 10 and 20
    neighbours. IsolationForest and a 5-nearest-neighbour distance on the scaled inputs are
    scored beside them, for fusions with a baseline.

    Variants, each a rule applied alike to every set, are scored by AUROC and AP: a single
    score at one snapshot; a *fusion*, the mean of several scores each standardised by the
    median and interquartile range of its scores of the train rows (no label is read: the
    train rows are the unlabeled rows the model was fitted to); a *snapshot ensemble*, such
    a mean over snapshots. One row per (set, seed, model, variant) goes to ``--raw`` as
    each run ends; a run already there is not run again. ``--scores DIR`` keeps each run's
    raw scores (``.npz``) for variants not yet thought of.

What it reports (``--report``)
    The ``detection-study`` section of RESULTS.md: per model, each score or combination
    (rows) at each training length (columns), mean AUROC / AP over the sets (each the mean
    over seeds), the fit seconds to each snapshot, and the best cell's average AUROC rank
    among the other detectors of the ADBench table (``benchmarks/results/adbench_raw.csv``,
    same splits and seeds).

How to run
    python benchmarks/studies/detection.py ../shared/data/adbench --n-jobs 2
    python benchmarks/studies/detection.py ../shared/data/adbench --n-jobs 2 --models glf \\
        --params n_estimators=10 --epochs 1 2
    python benchmarks/studies/detection.py ../shared/data/adbench --report
"""

import argparse
import csv
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks
import _common  # noqa: E402
from _common import DEFAULT_DETECTORS  # noqa: E402

HERE = Path(__file__).resolve().parent
OTHER_DETECTORS = [d for d in DEFAULT_DETECTORS if d not in ("glf", "lfp")]
METHODS = {"glf": ("fused", "joint", "knn", "lof"),
           "lfp": ("fused", "marginal", "joint", "knn", "lof")}


def snapshot_fit(estimator, X, epochs):
    """Fit ``estimator`` for ``max(epochs)`` epochs; return the training state after each
    epoch of ``epochs`` and the fit seconds up to it."""
    snapshots, start = {}, time.perf_counter()
    end_epoch = estimator._end_epoch

    def record(stats, n_rows):
        end_epoch(stats, n_rows)
        if estimator.n_iter_ + 1 in epochs:
            snapshots[estimator.n_iter_ + 1] = (estimator._state(),
                                                time.perf_counter() - start)
    estimator._end_epoch = record
    estimator.set_params(max_iter=max(epochs)).fit(X)
    del estimator._end_epoch
    return snapshots, time.perf_counter() - start


def snapshot_scores(estimator, model, X_train, X_test, seed):
    """Every score of the fitted ``estimator`` on the train and test rows: {name: (train,
    test)}, higher = more normal."""
    from sklearn.ensemble import IsolationForest
    out = {}
    for method in METHODS[model]:
        estimator.set_params(score_method=method)
        out[method] = (estimator.score_samples(X_train), estimator.score_samples(X_test))
    variance = estimator.noise_variance_.mean(axis=0)

    def residual(X):
        codes = estimator.transform(X)
        return codes, -((X - estimator.inverse_transform(codes)) ** 2 / variance).sum(axis=1)
    (codes_train, res_train), (codes_test, res_test) = residual(X_train), residual(X_test)
    out["residual"] = (res_train, res_test)
    forest = IsolationForest(random_state=seed).fit(codes_train)
    out["iforest-codes"] = (forest.score_samples(codes_train), forest.score_samples(codes_test))
    for k in (10, 20):
        out[f"knn-k{k}"] = knn_codes(codes_train, codes_test, estimator._n_members, k)
    return out


def knn_codes(codes_train, codes_test, members, k):
    """The ``'knn'`` score with ``k`` neighbours, less its constants: minus the mean over the
    members of ``d log r_k`` (the train rows leave themselves out)."""
    from sklearn.neighbors import NearestNeighbors
    train, test = np.zeros(len(codes_train)), np.zeros(len(codes_test))
    for c_train, c_test in zip(np.split(codes_train, members, axis=1),
                               np.split(codes_test, members, axis=1)):
        nn = NearestNeighbors(n_neighbors=k + 1).fit(c_train)
        d = c_train.shape[1]
        train -= d * np.log(np.maximum(nn.kneighbors(c_train)[0][:, -1], 1e-30)) / members
        test -= d * np.log(np.maximum(nn.kneighbors(c_test, n_neighbors=k)[0][:, -1],
                                      1e-30)) / members
    return train, test


def baseline_scores(X_train, X_test, seed):
    """IsolationForest and the 5-NN distance (train rows leave themselves out) on the
    inputs, higher = more normal."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import NearestNeighbors
    forest = IsolationForest(random_state=seed).fit(X_train)
    nn = NearestNeighbors(n_neighbors=6).fit(X_train)
    return {"iforest-inputs": (forest.score_samples(X_train), forest.score_samples(X_test)),
            "knn-inputs": (-nn.kneighbors(X_train)[0][:, -1],
                           -nn.kneighbors(X_test, n_neighbors=5)[0][:, -1])}


def run_task(path, seed, model, epochs, params, scores_dir, threads):
    """One (set, seed, model): fit with snapshots, score, keep the scores in ``scores_dir``
    (a cache; None: not kept) and return one row per variant."""
    from sklearn.preprocessing import MinMaxScaler
    limits = _common.limit_threads(threads)  # noqa: F841
    X, y = _common.subsample(*_common.load_npz(path), 10_000)
    X_train, X_test, _, y_test = _common.adbench_split(X, y, seed)
    scaler = MinMaxScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    estimator = _common.estimator_class(model)(random_state=seed,
                                                **_common.parse_params(params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshots, _ = snapshot_fit(estimator, X_train, set(epochs))
        arrays = {}
        for name, (train, test) in baseline_scores(X_train, X_test, seed).items():
            arrays[f"{name}/train"], arrays[f"{name}/test"] = train, test
        seconds = {}
        for epoch, (state, seconds[epoch]) in sorted(snapshots.items()):
            estimator._load_state(state)
            estimator._after_fit(estimator._to_device(X_train, estimator._device()))
            estimator._derived_state = {}
            for name, (train, test) in snapshot_scores(estimator, model, X_train, X_test,
                                                       seed).items():
                arrays[f"{name}@{epoch}/train"], arrays[f"{name}@{epoch}/test"] = train, test
    name = _common.dataset_name(path)
    if scores_dir is not None:
        np.savez_compressed(Path(scores_dir) / f"{name}_{seed}_{model}{params}.npz",
                            y_test=y_test, **arrays)
    rows = []
    for variant, (names, epoch) in variants(model, sorted(seconds)).items():
        auroc, ap = metrics(y_test, fused(arrays, names))
        rows.append({"dataset": name, "seed": seed, "model": model, "params": params,
                     "variant": variant, "epochs": epoch, "auroc": auroc, "ap": ap,
                     "fit_s": seconds[epoch] if epoch else 0.0})
    return rows


# ---------------------------------------------------------------- variants
def standardised(train, test):
    """``test`` in units of ``train``'s median and interquartile range."""
    median = np.median(train)
    q1, q3 = np.percentile(train, [25, 75])
    spread = q3 - q1 if q3 > q1 else (np.std(train) or 1.0)
    return (test - median) / spread


def fused(arrays, names):
    """Mean of the standardised test scores ``names`` (higher = more normal)."""
    return np.mean([standardised(np.nan_to_num(arrays[f"{n}/train"], nan=-1e30),
                                 np.nan_to_num(arrays[f"{n}/test"], nan=-1e30))
                    for n in names], axis=0)


def variants(model, epochs):
    """``{variant: (score names, epochs of training it needs)}``: each score and
    combination at each snapshot (``name@epoch``), snapshot ensembles over every snapshot
    (``name@all``) and over the first three (``name@first3``), and the baselines on the
    inputs (``@0``)."""
    density = "marginal" if model == "lfp" else "joint"
    singles = METHODS[model] + ("residual", "iforest-codes", "knn-k10", "knn-k20")
    combos = [("knn", "residual"), ("knn-k20", "residual"), (density, "knn"),
              (density, "residual"), ("lof", "residual"), ("knn", "residual", density),
              ("knn", "residual", "iforest-codes"), (density, "iforest-inputs"),
              (density, "knn-inputs"), ("knn", "residual", "iforest-inputs")]
    inputs = {"iforest-inputs", "knn-inputs"}

    def at(combo, e):
        return [c if c in inputs else f"{c}@{e}" for c in combo]
    out = {f"{b}@0": ([b], 0) for b in sorted(inputs)}
    for e in epochs:
        out.update({f"{m}@{e}": ([f"{m}@{e}"], e) for m in singles})
        out.update({" + ".join(c) + f"@{e}": (at(c, e), e) for c in combos})
    for label, chosen in (("all", epochs), ("first3", epochs[:3])):
        for combo in [(density,), ("residual",), ("knn",), ("knn", "residual")]:
            out[" + ".join(combo) + f"@{label}"] = (
                [n for e in chosen for n in at(combo, e)], max(chosen))
    return out


def metrics(y, scores):
    from sklearn.metrics import average_precision_score, roc_auc_score
    return 100 * roc_auc_score(y, -scores), 100 * average_precision_score(y, -scores)


# ---------------------------------------------------------------- report
FIELDS = ["dataset", "seed", "model", "params", "variant", "epochs", "auroc", "ap", "fit_s"]


def report(args):
    """The RESULTS.md section: per model (and parameters), each score or combination
    (rows) at each training length (columns), mean AUROC / AP over the sets; the best
    cells' average rank among the ADBench table's other detectors."""
    with open(args.raw, newline="") as f:
        rows = list(csv.DictReader(f))
    others = defaultdict(dict)
    with open(args.adbench_raw, newline="") as f:
        for r in csv.DictReader(f):
            if r["detector"] in OTHER_DETECTORS and not r.get("error"):
                others[r["detector"]][(r["dataset"], r["seed"])] = float(r["auroc"])
    cells = defaultdict(lambda: defaultdict(list))  # (model, family) -> epoch -> rows
    for r in rows:
        family, _, epoch = r["variant"].rpartition("@")
        model = r["model"] + (f"[{r['params']}]" if r["params"] else "")
        cells[(model, family)][epoch].append(r)
    sets = sorted({r["dataset"] for r in rows})
    other = np.array([[np.mean([v for (s, _), v in others[d].items() if s == s_])
                       for s_ in sets] for d in OTHER_DETECTORS])

    def per_set(group, key):
        return np.array([np.mean([float(r[key]) for r in group if r["dataset"] == s])
                         for s in sets])
    models = sorted({m for m, _ in cells})
    body = []
    for model in models:
        families = sorted(f for m, f in cells if m == model)
        epochs = sorted({e for f in families for e in cells[(model, f)]},
                        key=lambda e: (not e.isdigit(), int(e) if e.isdigit() else 0, e))
        table, best = [], (-1, None)
        for family in families:
            line = [family]
            for e in epochs:
                group = cells[(model, family)].get(e)
                if not group or len(group) != len(sets) * len(args.seeds):
                    line.append("")
                    continue
                auroc, ap = per_set(group, "auroc"), per_set(group, "ap")
                line.append(f"{auroc.mean():.2f} / {ap.mean():.2f}")
                if auroc.mean() > best[0]:
                    best = (auroc.mean(), f"{family}@{e}", auroc, ap, group)
            table.append(line)
        fit = [f"{np.mean([float(r['fit_s']) for r in cells[(model, 'knn')].get(e, [])] or [0]):.2f}"
               for e in epochs]
        table.append(["fit seconds per run (mean)", *fit])
        if best[1] is None:  # no complete cell yet
            continue
        ranks = _common.average_ranks(np.vstack([best[2], other]).T)
        body += [f"### {model}: mean AUROC / AP (x100) by training length (epochs)", "",
                 _common.markdown_table(["score", *epochs], table), "",
                 f"Best cell: `{best[1]}`, AUROC {best[0]:.2f}, AP {best[3].mean():.2f}, "
                 f"average AUROC rank {ranks[0]:.2f} among itself and the other detectors "
                 f"of the ADBench table (IsolationForest {ranks[1 + OTHER_DETECTORS.index('iforest')]:.2f}).",
                 ""]
    description = (
        "Runs: `python benchmarks/studies/detection.py ../shared/data/adbench --n-jobs 2` and "
        "`... --models glf --params n_estimators=10 --epochs 1 2` (rows in "
        "`benchmarks/studies/detection_raw.csv`); this section: `--report`. "
        f"{len(sets)} sets x seeds {', '.join(map(str, args.seeds))}, the ADBench split and "
        "scaling of `benchmarks/adbench.py`. One fit per (set, seed, model) at the defaults "
        "of the commit but `max_iter`, scored at each snapshot (epochs in the columns); `fused` "
        "is the package's score, the others the study's. "
        "Scores: the package's `joint`, `marginal` (LFP), `knn`, `lof`; `residual` the "
        "reconstruction term alone (`-sum_j (x_j - g(z~)_j)^2 / sigma_j^2`); "
        "`iforest-codes` IsolationForest on the codes; `knn-k10`/`knn-k20` the `knn` "
        "score with 10 and 20 neighbours; `iforest-inputs`, `knn-inputs` (5-NN distance) "
        "on the scaled inputs, column `0`. `a + b` is the mean of the scores, each "
        "standardised by the median and interquartile range of its scores of the train rows "
        "(no label read); `@all` and `@first3` columns average a score over every snapshot "
        "or the first three (snapshot ensembles). Fit seconds to each snapshot, "
        "two processes sharing two cores with other work (clean fit times: \"Fit time at "
        "the defaults\").")
    body = "\n".join(body)
    title = "Detection study on ADBench"
    text = "\n".join([f"## {title}", "", *_common.provenance(1), "", description, "", body])
    print(text)
    _common.replace_section(args.output, "detection-study", text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--models", nargs="+", default=["glf", "lfp"], choices=["glf", "lfp"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 2, 3, 5, 10, 20])
    p.add_argument("--params", default="", help="estimator parameters, e.g. n_estimators=10")
    p.add_argument("--datasets", nargs="*")
    p.add_argument("--raw", type=Path, default=HERE / "detection_raw.csv")
    p.add_argument("--scores", type=Path, default=None,
                   help="folder to keep each run's raw scores in (.npz), for new variants")
    p.add_argument("--adbench-raw", type=Path,
                   default=_common.RESULTS_DIR / "adbench_raw.csv")
    p.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    p.add_argument("--n-jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        return report(args)
    if args.scores is not None:
        args.scores.mkdir(parents=True, exist_ok=True)
    tasks = [(path, seed, model, tuple(args.epochs), args.params)
             for model in args.models
             for path in _common.list_datasets(args.data_dir, args.datasets)
             for seed in args.seeds]
    tasks.sort(key=lambda t: -t[0].stat().st_size)  # the largest first

    def task_of(row):
        path = next(p for p in _common.list_datasets(args.data_dir)
                    if _common.dataset_name(p) == row["dataset"])
        return (path, int(row["seed"]), row["model"], tuple(args.epochs), row["params"])
    _common.run_resumable(args.raw, FIELDS, tasks,
                          lambda *t: run_task(*t, args.scores, args.threads), task_of,
                          n_jobs=args.n_jobs, resume=True)


if __name__ == "__main__":
    main()
