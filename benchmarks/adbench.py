"""ADBench anomaly-detection benchmark of the skflowgen estimators against common detectors.

What it measures
    For each ADBench ``.npz`` set in DATA_DIR (``X``, ``y`` with 1 = anomaly) and each seed:
    a 70/30 stratified train/test split (``train_test_split(stratify=y, random_state=seed)``),
    ``make_pipeline(MinMaxScaler(), detector)`` fitted on the train part without labels, and the
    test part scored with an anomaly score (higher = more anomalous): ``-score_samples`` for
    scikit-learn style estimators, ``decision_function`` for PyOD detectors. Reported: AUROC and
    average precision (x100), mean over the seeds, and the fit + score wall time. Sets with more
    than ``--max-rows`` rows are first subsampled to that many rows (stratified, seed 0), for
    every detector alike. This is the ADBench protocol (Han et al., NeurIPS 2022) except that
    ADBench also resamples sets under 1,000 rows up to 1,000; we do not.

    The ``-marginal`` / ``-joint`` variants only change ``score_method``, which does not enter
    training (no early stopping by default), so they reuse the fit of their base detector in the
    same run; their time is that fit plus their own scoring.

How to run
    python benchmarks/adbench.py ../shared/data/adbench \
        --detectors glf lfp iforest glf-marginal lfp-marginal --seeds 1 2 3

    Per-run results go, one row per (dataset, detector, seed), to ``--raw`` (CSV, written as the
    run goes); ``--resume`` reuses the rows already in that file instead of refitting them, so a
    later run can add detectors to a table without refitting the others. The tables are printed
    and written to the ``adbench`` section of ``--output`` (other sections are left alone).
"""

import argparse
import csv
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import DEFAULT_DETECTORS, DETECTORS, detector  # noqa: E402

BELOW_IFOREST = "↓"
SUBSAMPLED = "†"
RAW_FIELDS = ["dataset", "detector", "seed", "n_rows", "n_features", "max_rows", "auroc", "ap",
              "fit_s", "score_s", "time_s", "n_iter", "n_nonfinite", "warnings", "error"]


# ---------------------------------------------------------------- detectors
SKFLOWGEN_KEYS = ("glf", "lfp")


def is_skflowgen(spec):
    return detector(spec).fit_key.split("[")[0] in SKFLOWGEN_KEYS


# ---------------------------------------------------------------- one run
def anomaly_scores(pipeline, X, detector):
    """Higher = more anomalous, whatever the library's convention."""
    if detector.pyod:
        return np.asarray(pipeline.decision_function(X), dtype=float)
    return -np.asarray(pipeline.score_samples(X), dtype=float)


def metrics(y, scores):
    """``(AUROC, AP, number of non-finite scores)``, x100. Non-finite scores are ranked
    (NaN as the most anomalous) rather than dropped, so a detector cannot gain from them."""
    n_bad = int((~np.isfinite(scores)).sum())
    if n_bad:
        scores = rankdata(np.nan_to_num(scores, nan=np.inf))
    return 100 * roc_auc_score(y, scores), 100 * average_precision_score(y, scores), n_bad


def run_group(names, X_train, X_test, y_test, seed):
    """Fit the model the detectors ``names`` share once, score each; one result dict each."""
    first = detector(names[0])
    results = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline = make_pipeline(MinMaxScaler(), first.make(seed))
            _, fit_s = _common.timed(pipeline.fit, X_train)
        except Exception as exc:  # record and go on with the other detectors
            traceback.print_exc()
            return {n: {"error": f"fit: {type(exc).__name__}: {exc}"} for n in names}
        fit_messages = sorted({f"{w.category.__name__}: {str(w.message)[:80]}" for w in caught})
    estimator = pipeline[-1]
    n_iter = getattr(estimator, "n_iter_", "")
    for name in names:
        detector_ = detector(name)
        original = {k: estimator.get_params()[k] for k in detector_.params}
        estimator.set_params(**detector_.params)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scores, score_s = _common.timed(anomaly_scores, pipeline, X_test, detector_)
            auroc, ap, n_bad = metrics(y_test, scores)
            messages = fit_messages + sorted({f"{w.category.__name__}: {str(w.message)[:80]}"
                                             for w in caught})
            results[name] = {"auroc": auroc, "ap": ap, "fit_s": fit_s, "score_s": score_s,
                             "time_s": fit_s + score_s, "n_iter": n_iter, "n_nonfinite": n_bad,
                             "warnings": " | ".join(messages)}
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"score: {type(exc).__name__}: {exc}"}
        finally:
            estimator.set_params(**original)
    return results


def groups_of(detectors):
    """Requested detectors grouped by the fit they share, in the order requested."""
    groups = {}
    for name in detectors:
        groups.setdefault(detector(name).fit_key, []).append(name)
    return list(groups.values())


def read_raw(path):
    """Rows of an earlier raw CSV keyed by (dataset, detector, seed, max_rows)."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        return {(r["dataset"], r["detector"], r["seed"], r["max_rows"]): r
                for r in csv.DictReader(f)}


def warm_up(detectors):
    """Fit and score each detector once on a small random table, untimed, so that one-off costs
    (imports, lazy initialisation of torch and the BLAS) are not charged to the first set."""
    X = np.random.default_rng(0).random((64, 4))
    y = np.r_[np.zeros(58, dtype=int), np.ones(6, dtype=int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in groups_of(detectors):
            run_group(group, X, X, y, seed=0)


def run_task(path, max_rows, seed, group, threads, detectors):
    """Fit and score one detector group on one (dataset, seed): the unit of parallel work.
    Each worker process warms up every detector once (untimed) before its first task."""
    limits = _common.limit_threads(threads)  # noqa: F841 (kept alive for the task)
    _common.once_per_process(("adbench warm-up", tuple(detectors)), lambda: warm_up(detectors))
    X_all, y_all = _common.load_npz(path)
    X, y = _common.subsample(X_all, y_all, max_rows)
    X_train, X_test, _, y_test = _common.adbench_split(X, y, seed)
    return [{"dataset": _common.dataset_name(path), "detector": det, "seed": seed,
             "n_rows": len(X_all), "n_features": X.shape[1], "max_rows": max_rows, **result}
            for det, result in run_group(group, X_train, X_test, y_test, seed).items()]


def run(args):
    """Every (dataset, seed, detector) of ``args`` in ``--n-jobs`` processes, the slowest
    groups (skflowgen's) first; returns the list of result rows."""
    from joblib import Parallel, delayed
    cached = read_raw(args.raw) if args.resume or args.report_only else {}
    Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
    rows, tasks = [], []
    paths = _common.list_datasets(args.data_dir, args.datasets)
    for path in paths:
        for seed in args.seeds:
            key = lambda det: (_common.dataset_name(path), det, str(seed),  # noqa: E731
                               str(args.max_rows))
            rows += [cached[key(d)] for d in args.detectors if key(d) in cached]
            todo = [] if args.report_only else [d for d in args.detectors
                                                if key(d) not in cached]
            tasks += [(path, args.max_rows, seed, group, args.threads, args.detectors)
                      for group in groups_of(todo)]
    tasks.sort(key=lambda task: not is_skflowgen(task[3][0]))
    with open(args.raw, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RAW_FIELDS)
        writer.writeheader()
        for row in cached.values():  # keep everything already there, used in this run or not
            writer.writerow({k: row.get(k, "") for k in RAW_FIELDS})
        f.flush()
        results = Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(
            delayed(run_task)(*task) for task in tasks)
        for task_rows in results:
            for row in task_rows:
                writer.writerow({k: row.get(k, "") for k in RAW_FIELDS})
                rows.append(row)
                print(f"{row['dataset']:>14} seed {row['seed']} {row['detector']:>13}: AUROC "
                      f"{_fmt(row.get('auroc'))} AP {_fmt(row.get('ap'))} "
                      f"{_fmt(row.get('time_s'), 2)} s  n_iter={row.get('n_iter', '')}"
                      + (f"  ERROR {row['error']}" if row.get("error") else ""), flush=True)
            f.flush()
    order = {_common.dataset_name(p): i for i, p in enumerate(paths)}
    return sorted(rows, key=lambda r: (order[r["dataset"]], int(r["seed"]),
                                       args.detectors.index(r["detector"])))


# ---------------------------------------------------------------- tables
def _fmt(value, digits=1):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if np.isnan(value) else f"{value:.{digits}f}"


def _float(row, key):
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return np.nan


def aggregate(rows, detectors, metric):
    """``(datasets, values[dataset, detector])``: mean of ``metric`` over seeds (NaN if any seed
    failed)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    values = np.full((len(datasets), len(detectors)), np.nan)
    for i, ds in enumerate(datasets):
        for j, det in enumerate(detectors):
            vals = [_float(r, metric) for r in rows if r["dataset"] == ds and r["detector"] == det]
            if vals:
                values[i, j] = np.mean(vals)  # NaN if any seed failed
    return datasets, values


def published_column(data_dir, metric, detector, datasets):
    """The published ADBench value of ``detector`` for each dataset (NaN where missing)."""
    table_name = "aucroc" if metric == "auroc" else "aucpr"
    path = Path(data_dir) / f"published_adbench_unsup_{table_name}.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        table = {r["dataset"].lower(): r for r in csv.DictReader(f)}
    out = []
    for ds in datasets:
        try:
            out.append(float(table[ds.lower()][detector]))
        except (KeyError, ValueError):
            out.append(np.nan)
    return np.array(out)


def score_table(rows, args, metric, subsampled):
    """Header and rows of the AUROC or AP table, with mean and average-rank rows."""
    detectors = args.detectors
    datasets, values = aggregate(rows, detectors, metric)
    iforest = detectors.index("iforest") if "iforest" in detectors else None
    header = ["dataset"] + detectors
    extra = []
    for pub in args.published:
        col = published_column(args.data_dir, metric, pub, datasets)
        if col is not None:
            extra.append(col)
            header.append(f"{pub} (pub.)")
    out = []
    for i, ds in enumerate(datasets):
        cells = [ds + (SUBSAMPLED if ds in subsampled else "")]
        for j, det in enumerate(detectors):
            cell = _fmt(values[i, j])
            if (iforest is not None and is_skflowgen(det)
                    and values[i, j] < values[i, iforest]):
                cell += BELOW_IFOREST
            cells.append(cell)
        out.append(cells + [_fmt(col[i]) for col in extra])
    means = np.nanmean(values, axis=0) if len(values) else []
    out.append(["**mean**"] + [_fmt(m) for m in means]
               + [_fmt(np.nanmean(col)) for col in extra])
    ranks = _common.average_ranks(values)
    out.append(["**average rank**"] + [_fmt(r, 2) for r in ranks] + ["" for _ in extra])
    return header, out


def time_table(rows, args):
    """Mean fit + score seconds per run, a total row, and mean epochs of the skflowgen models."""
    datasets, values = aggregate(rows, args.detectors, "time_s")
    _, epochs = aggregate(rows, args.detectors, "n_iter")
    header = ["dataset"] + args.detectors
    out = []
    for i, ds in enumerate(datasets):
        cells = [ds]
        for j, det in enumerate(args.detectors):
            cell = _fmt(values[i, j], 2)
            if is_skflowgen(det) and not np.isnan(epochs[i, j]):
                cell += f" ({epochs[i, j]:.0f} ep)"
            cells.append(cell)
        out.append(cells)
    out.append(["**total (all seeds)**"] + [_fmt(np.nansum(values[:, j]) * len(args.seeds), 1)
                                            for j in range(len(args.detectors))])
    return header, out


def plot(rows, args):
    """Heat map of the AUROC of each detector on each dataset, with the mean and the average
    rank in the column labels; written as ``results/<section>.png`` beside the results file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets, values = aggregate(rows, args.detectors, "auroc")
    ranks = _common.average_ranks(values)
    fig, ax = plt.subplots(figsize=(1.1 * len(args.detectors) + 2, 0.35 * len(datasets) + 2))
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, _fmt(value), ha="center", va="center", fontsize=7,
                color="white" if value < np.nanmean(values) else "black")
    ax.set_xticks(range(len(args.detectors)),
                  [f"{d}\nmean {m:.1f}\nrank {r:.2f}" for d, m, r in
                   zip(args.detectors, np.nanmean(values, axis=0), ranks)], fontsize=8)
    ax.set_yticks(range(len(datasets)), datasets, fontsize=8)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="AUROC x 100")
    fig.tight_layout()
    path = _common.figure_path(args.output, f"{args.section}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(rows, args, subsampled, header, wall_s):
    """Print the tables and write the ``--section`` section of the results file; ``header`` is
    the provenance taken when the run started, ``wall_s`` the run's wall time."""
    auroc = score_table(rows, args, "auroc", subsampled)
    ap = score_table(rows, args, "ap", subsampled)
    times = time_table(rows, args)
    for title, table in (("AUROC x100", auroc), ("Average precision x100", ap),
                         ("Fit + score seconds per run (mean over seeds)", times)):
        print(f"\n{title}\n" + _common.text_table(*table))
    problems = sorted({f"{r['detector']} on {r['dataset']} (seed {r['seed']}): {r['error']}"
                       for r in rows if r.get("error")})
    warned = sorted({f"{r['detector']} on {r['dataset']}: {r['warnings']}"
                     for r in rows if r.get("warnings")
                     and is_skflowgen(r["detector"])})
    nonfinite = sorted({f"{r['detector']} on {r['dataset']} (seed {r['seed']}): "
                        f"{r['n_nonfinite']} rows" for r in rows
                        if str(r.get("n_nonfinite", "0")) not in ("", "0")})
    seeds = ", ".join(map(str, args.seeds))
    fits = {(r["dataset"], r["seed"], detector(r["detector"]).fit_key): _float(r, "fit_s")
            for r in rows}
    scoring = [_float(r, "score_s") for r in rows]
    core_min = (np.nansum(list(fits.values())) + np.nansum(scoring)) / 60
    run_time = ("tables re-rendered from the raw results of earlier runs (`--report-only`)"
                if args.report_only else f"wall time of the run {wall_s / 60:.1f} min"
                + (" (rows reused from an earlier run by --resume not counted)"
                   if args.resume else ""))
    lines = [
        args.title, "",
        *header[:-1], header[-1] + f", {run_time}", "",
        f"Fit + score time of every run shown, summed: {core_min:.1f} core-minutes, "
        f"{core_min / 2:.1f} min on two cores if perfectly packed.", "",
        f"Protocol: per seed ({seeds}) a 70/30 stratified split, `make_pipeline(MinMaxScaler(), "
        "detector)` fitted on the train part without labels, test part scored by `-score_samples`"
        " (PyOD: `decision_function`); mean over seeds. Default parameters except "
        "`random_state=seed`; `gmm` is `GaussianMixture(n_components=5)`, `lof` has "
        "`novelty=True`. `-marginal`/`-joint` variants set `score_method` on the fitted model of "
        "their base detector (training does not depend on it). "
        f"{SUBSAMPLED} = set with more than {args.max_rows} rows, subsampled to {args.max_rows} "
        "(stratified, seed 0) before splitting, for all detectors. Unlike ADBench, sets under "
        "1,000 rows are not resampled up. "
        f"{BELOW_IFOREST} = a skflowgen estimator below IsolationForest on that set. "
        "`(pub.)` columns are the published ADBench numbers (their protocol), for reference; "
        "they are not ranked. Average rank: 1 = best, over the detectors run here.", "",
        "### AUROC (x100)", "", _common.markdown_table(*auroc), "",
        "### Average precision (x100)", "", _common.markdown_table(*ap), "",
        "### Fit + score time, seconds per run (mean over seeds; epochs run in brackets)", "",
        _common.markdown_table(*times), "",
        f"![AUROC per dataset and detector](results/{plot(rows, args).name})",
    ]
    if nonfinite:
        lines += ["", "Non-finite anomaly scores (ranked as most anomalous):", ""]
        lines += [f"- {p}" for p in nonfinite]
    if problems:
        lines += ["", "Failures:", ""] + [f"- {p}" for p in problems]
    if warned:
        lines += ["", "<details><summary>Warnings from the skflowgen estimators</summary>", ""]
        lines += [f"- {w}" for w in warned] + ["", "</details>"]
    _common.replace_section(args.output, args.section, "\n".join(lines))
    print(f"\nwrote the '{args.section}' section of {args.output}; raw results in {args.raw}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="folder of ADBench .npz files")
    parser.add_argument("--detectors", nargs="+", default=list(DEFAULT_DETECTORS),
                        metavar="NAME", help=f"detectors to run, of: {', '.join(DETECTORS)}; "
                        "parameters may follow in brackets: 'glf[max_iter=10,n_components=4]'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="dataset names to run (default: every .npz in DATA_DIR)")
    parser.add_argument("--max-rows", type=int, default=10000,
                        help="subsample larger sets to this many rows (stratified, seed 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads per process (default 1: quieter timings)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="processes running (dataset, seed, detector) tasks in parallel")
    parser.add_argument("--published", nargs="*", default=["IForest"],
                        help="published ADBench columns to show for reference")
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--raw", type=Path,
                        default=_common.RESULTS_DIR / "adbench_raw.csv",
                        help="per-run CSV (rewritten; see --resume)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows of --raw for the same dataset, detector, seed and "
                             "max-rows instead of running them again")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the tables from the rows of --raw; run nothing")
    parser.add_argument("--section", default="adbench",
                        help="name of the RESULTS.md section to write")
    parser.add_argument("--title", default="## ADBench anomaly detection",
                        help="heading of that section")
    args = parser.parse_args(argv)
    args.detectors = list(dict.fromkeys(args.detectors))
    for spec in args.detectors:
        try:
            detector(spec)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def main(argv=None):
    args = parse_args(argv)
    limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the run)
    subsampled = set()
    for path in _common.list_datasets(args.data_dir, args.datasets):
        with np.load(path) as data:
            if len(data["y"]) > args.max_rows:
                subsampled.add(_common.dataset_name(path))
    header = _common.provenance(args.threads)  # now: the code imported is the code run
    rows, wall_s = _common.timed(run, args)
    report(rows, args, subsampled, header, wall_s)


if __name__ == "__main__":
    main()
