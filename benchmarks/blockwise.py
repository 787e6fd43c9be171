"""Training block by block with ``partial_fit``: as good as ``fit`` on the same rows, and on a
dask cluster over an array larger than a worker's memory.

What it measures
    ``adbench``: for each ADBench set and seed, both estimators at their defaults trained two
    ways on the same rows: ``fit``, and ``partial_fit`` over the rows in 10 blocks (rows
    shuffled with the seed, then split), for ``max_iter`` passes over the blocks in an order
    shuffled each pass (as ``dask_ml.wrappers.Incremental`` does), and ``fit`` with another
    ``random_state``, for the difference the random state alone makes. Sets are subsampled to
    10,000 rows, split 70/30 and scaled to [0, 1] as in ``adbench.py``. Reported: test AUROC
    and AP (x100) of each way, and the share of new normal rows ``predict`` flags: each
    way trained on one random half of the set's normal rows, the share of the other half
    flagged (``contamination=0.1``).

    ``cluster``: for each of ``--rows``, a dask array of that many rows x 20 features (rows
    near a 3-dimensional manifold, generated lazily block by block on the workers), an
    estimator trained on it by ``dask_ml.wrappers.Incremental`` (one pass, blocks of
    ``--block-rows``) on a ``LocalCluster`` of 2 single-threaded worker processes, driven
    two ways (``Incremental.fit`` on the whole array, ``Incremental.partial_fit`` on 2
    blocks a call), then the whole array scored with ``map_blocks``. A thread samples each
    worker's resident memory and the data it holds every 0.5 s. Reported: the array's
    size, each worker's peak memory and data held, training and scoring rows a second,
    beside ``fit`` (one epoch) on an in-memory sample of ``--sample-rows`` rows in this
    process, and the share of new rows ``predict`` flags.

How to run
    python benchmarks/blockwise.py adbench ../shared/data/adbench \\
        --datasets skin mammography mnist annthyroid pendigits --seeds 1 2 3 4 5 6 7 8 9 10
    python benchmarks/blockwise.py cluster --rows 1000000 10000000 --params n_estimators=1

    ``adbench`` writes one raw row per (set, seed, model) to ``--raw`` as it goes and
    ``--resume`` keeps them; both write their section of ``--output``.
"""

import argparse
import sys
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import MinMaxScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

N_BLOCKS = 10
RESEED = 1000
WAYS = ("fit", "blockwise", "refit")
CONTAMINATION = 0.1
RAW_FIELDS = ["dataset", "seed", "model", "way", "auroc", "ap", "share", "train_s"]
HERE = Path(__file__).resolve().parent
N_WORKERS = 2
DRIVERS = {"fit": "`Incremental.fit(X)`",
           "calls": f"`Incremental.partial_fit`, {N_WORKERS} blocks a call"}


def blockwise(model, X, seed):
    """``model`` trained by ``partial_fit`` on ``X`` in ``N_BLOCKS`` blocks, ``max_iter``
    passes, the block order shuffled each pass."""
    rng = np.random.RandomState(seed)
    blocks = np.array_split(X[rng.permutation(len(X))], N_BLOCKS)
    for _ in range(model.max_iter):
        for index in rng.permutation(N_BLOCKS):
            model.partial_fit(blocks[index])
    return model


def train(model, X, seed, way):
    """``way``: ``fit``, ``blockwise``, or ``refit``: ``fit`` with another ``random_state``,
    the spread that random_state alone gives (``RESEED``)."""
    if way == "refit":
        return model.set_params(random_state=model.random_state + RESEED).fit(X)
    return model.fit(X) if way == "fit" else blockwise(model, X, seed)


def run_adbench(path, seed, model_name, threads):
    _common.limit_threads(threads)
    warnings.simplefilter("ignore")
    X, y = _common.subsample(*_common.load_npz(path), 10000)
    X_train, X_test, _, y_test = _common.adbench_split(X, y, seed)
    scaler = MinMaxScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    normal = MinMaxScaler().fit_transform(X[y == 0])
    halves = np.array_split(normal[np.random.RandomState(seed).permutation(len(normal))], 2)
    # ten epochs (passes), the table default when its section was measured: the default now
    # stops after one or five, where anomalies rank best
    make = partial(_common.estimator_class(model_name), max_iter=10)
    rows = []
    for way in WAYS:
        model, seconds = _common.timed(train, make(random_state=seed), X_train, seed, way)
        scores = -model.score_samples(X_test)
        detector = train(make(random_state=seed, contamination=CONTAMINATION), halves[0],
                         seed, way)
        rows.append({"dataset": _common.dataset_name(path), "seed": seed, "model": model_name,
                     "way": way, "auroc": 100 * roc_auc_score(y_test, scores),
                     "ap": 100 * average_precision_score(y_test, scores),
                     "share": float(np.mean(detector.predict(halves[1]) == -1)),
                     "train_s": seconds})
    return rows


def interval(rows, model, way):
    """The mean of ``way`` - ``fit`` AUROC over the (set, seed) pairs of ``rows``, +- 1.96
    standard errors of the paired differences: the seeds' spread, not only the sets'."""
    auroc = {(r["dataset"], r["seed"], r["way"]): float(r["auroc"]) for r in rows
             if r["model"] == model}
    pairs = {(name, seed) for name, seed, _ in auroc}
    d = np.array([auroc[name, seed, way] - auroc[name, seed, "fit"] for name, seed in pairs])
    return f"{d.mean():+.1f} +- {1.96 * d.std(ddof=1) / np.sqrt(len(d)):.1f}"


def adbench(args):
    files = _common.list_datasets(args.data_dir, args.datasets)
    tasks = [(path, seed, model, args.threads) for path in files for seed in args.seeds
             for model in ("glf", "lfp")]
    rows = _common.run_resumable(
        args.raw, RAW_FIELDS, tasks, run_adbench,
        lambda r: (next(p for p in files if _common.dataset_name(p) == r["dataset"]),
                   int(r["seed"]), r["model"], args.threads),
        n_jobs=args.jobs, resume=args.resume)
    table, differences = [], {(model, way): [] for model in ("glf", "lfp")
                              for way in ("blockwise", "refit")}
    for path in files:
        name = _common.dataset_name(path)
        line = [name]
        for model in ("glf", "lfp"):
            mean = {way: {key: np.mean([float(r[key]) for r in rows if r["dataset"] == name
                                        and r["model"] == model and r["way"] == way])
                          for key in ("auroc", "ap", "share", "train_s")}
                    for way in WAYS}
            for way in ("blockwise", "refit"):
                differences[model, way].append(mean[way]["auroc"] - mean["fit"]["auroc"])
            line += [f"{mean['fit']['auroc']:.1f}", f"{mean['blockwise']['auroc']:.1f}",
                     f"{differences[model, 'blockwise'][-1]:+.1f}",
                     f"{differences[model, 'refit'][-1]:+.1f}",
                     f"{mean['fit']['ap']:.1f} / {mean['blockwise']['ap']:.1f}",
                     f"{mean['fit']['share']:.3f} / {mean['blockwise']['share']:.3f}",
                     f"{mean['blockwise']['train_s'] / mean['fit']['train_s']:.1f}"]
        table.append(line)
    table.append(["mean", *[value for model in ("glf", "lfp") for value in (
        "", "", f"{np.mean(differences[model, 'blockwise']):+.1f}",
        f"{np.mean(differences[model, 'refit']):+.1f}", "", "", "")]])
    table.append(["mean of absolute", *[value for model in ("glf", "lfp") for value in (
        "", "", f"{np.mean(np.abs(differences[model, 'blockwise'])):.1f}",
        f"{np.mean(np.abs(differences[model, 'refit'])):.1f}", "", "", "")]])
    table.append(["95% interval of the mean", *[value for model in ("glf", "lfp") for value in (
        "", "", interval(rows, model, "blockwise"), interval(rows, model, "refit"),
        "", "", "")]])
    header = ["set", *[f"{m} {c}" for m in ("GLF", "LFP") for c in
                       ("AUROC fit", "blockwise", "blockwise - fit", "refit - fit",
                        "AP fit / blockwise", "new normal rows flagged fit / blockwise",
                        "time blockwise / fit")]]
    description = (
        f"Mean over seeds {args.seeds} of "
        f"`benchmarks/results/{Path(args.raw).name}`. Each set subsampled to 10,000 rows, "
        f"split 70/30, scaled to [0, 1]; `fit` against `partial_fit` over the training rows "
        f"in {N_BLOCKS} blocks for `max_iter` passes (the default 10), the block order "
        f"shuffled each pass; refit: `fit` with `random_state` + {RESEED}, the difference "
        "that the random state alone makes. AUROC and AP x 100 on the test rows; the 95% "
        "interval: the mean difference over all (set, seed) pairs +- 1.96 standard errors. "
        "Flagged: "
        "the share of new normal rows `predict` flags after training on the other half of "
        "the normal rows "
        f"(`contamination={CONTAMINATION}`).")
    _common.write_report(args.output, "blockwise-adbench",
                         "Blockwise training on ADBench: partial_fit against fit",
                         args.threads, description, header, table)


# ---------------------------------------------------------------- the cluster run
def manifold_rows(u, weights):
    """Rows near a 3-dimensional manifold from standard normal draws ``u`` (n, 23)."""
    w1, w2 = weights
    return (np.tanh(u[:, :3] @ w1) @ w2 + 0.05 * u[:, 3:]).astype(np.float32)


def worker_rss():
    """Resident memory in bytes of the process that runs it (sent to the workers by value)."""
    import os
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_data(dask_worker):
    """Bytes of task results (blocks of the array among them) a worker holds."""
    return dask_worker.state.nbytes


def train_on_cluster(model, X, driver, n_workers):
    """``Incremental`` over ``X``, one pass. ``'fit'``: ``Incremental.fit(X)``, one graph of
    all the blocks, which idle workers compute ahead of the sequential ``partial_fit``
    chain; ``'calls'``: ``Incremental.partial_fit`` on ``n_workers`` blocks a call, in an
    order shuffled with the estimator's seed, so no more blocks than that are computed
    ahead."""
    from dask_ml.wrappers import Incremental

    incremental = Incremental(model, shuffle_blocks=True, random_state=0)
    if driver == "fit":
        return incremental.fit(X).estimator_
    starts = np.arange(0, X.numblocks[0], n_workers)
    for start in np.random.RandomState(0).permutation(starts):
        incremental.partial_fit(X.blocks[start:start + n_workers])
    return incremental.estimator_


def cluster(args):
    import dask.array as da
    from distributed import Client, LocalCluster

    warnings.simplefilter("ignore")
    rng = np.random.RandomState(0)
    weights = (rng.randn(3, 32), rng.randn(32, 20) / 4)
    model_class = _common.estimator_class(args.model)
    params = _common.parse_params(args.params)
    new_rows = manifold_rows(np.random.RandomState(2).standard_normal((100_000, 23)), weights)
    gib, mib, table = 2 ** 30, 2 ** 20, []
    for n_rows in args.rows:
        draws = da.random.RandomState(1).standard_normal((n_rows, 23),
                                                         chunks=(args.block_rows, 23))
        X = draws.map_blocks(manifold_rows, weights, chunks=(args.block_rows, 20),
                             dtype=np.float32)
        for driver in DRIVERS:
            with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                              host="127.0.0.1", dashboard_address=None) as local, \
                    Client(local) as client:
                peaks, done = {}, threading.Event()

                def sample_memory():
                    while not done.is_set():
                        for name, function in (("rss", worker_rss), ("data", worker_data)):
                            for worker, value in client.run(function).items():
                                key = name, worker
                                peaks[key] = max(peaks.get(key, 0), value)
                        time.sleep(0.5)
                sampler = threading.Thread(target=sample_memory, daemon=True)
                sampler.start()
                model, train_s = _common.timed(
                    train_on_cluster, model_class(random_state=0, **params), X, driver,
                    N_WORKERS)
                scores, score_s = _common.timed(
                    X.map_blocks(model.score_samples, drop_axis=1, dtype=np.float64).compute)
                done.set()
                sampler.join()
            table.append([f"{n_rows:,} x 20 float32: {n_rows * 80 / gib:.2f} GiB in "
                          f"{X.numblocks[0]} blocks of {args.block_rows * 80 / mib:.0f} MiB",
                          DRIVERS[driver],
                          " / ".join(f"{v / gib:.2f}" for (k, _), v in peaks.items()
                                     if k == "rss"),
                          " / ".join(f"{v / mib:.0f}" for (k, _), v in peaks.items()
                                     if k == "data"),
                          f"{n_rows / train_s:,.0f} ({train_s:.0f} s)",
                          f"{n_rows / score_s:,.0f} ({score_s:.0f} s)",
                          f"{np.isfinite(scores).mean():.4f}",
                          f"{np.mean(model.predict(new_rows) == -1):.3f}"])
            print(table[-1], flush=True)
    sample = manifold_rows(np.random.RandomState(3).standard_normal((args.sample_rows, 23)),
                           weights)
    _, fit_s = _common.timed(model_class(random_state=0, max_iter=1, **params).fit, sample)
    table.append([f"`fit` on {args.sample_rows:,} rows in memory, one epoch", "", "", "",
                  f"{args.sample_rows / fit_s:,.0f} ({fit_s:.0f} s)", "", "", ""])
    description = (
        f"`Incremental({model_class.__name__}(random_state=0"
        f"{', ' if params else ''}{args.params}))`, one pass over the blocks, on a "
        f"`LocalCluster` of {N_WORKERS} worker processes of 1 thread each, over a dask array "
        "of rows near a 3-dimensional manifold generated lazily block by block on the "
        "workers; then the array scored with `map_blocks`. Two ways to drive it: "
        "`Incremental.fit(X)` submits one graph of every block, and a worker left idle by the "
        "sequential chain of `partial_fit` calls computes the blocks ahead of it and holds "
        f"them; `Incremental.partial_fit` on {N_WORKERS} blocks a call (the README's recipe) "
        "holds no more than those. Sampled every 0.5 s on each worker: peak resident "
        "memory (torch and the model included) and peak data held (task results: blocks of "
        f"the array, {args.block_rows * 80 / mib:.0f} MiB, and of the standard normal "
        f"draws they are made from, {args.block_rows * 184 / mib:.0f} MiB). `fit` runs "
        "in the client process. Rows a second count every row given, held-out rows included. "
        "Flagged: the share of 100,000 new rows `predict` flags (`contamination=0.1`).")
    _common.write_report(args.output, "blockwise-cluster",
                         "Blockwise training on a dask cluster", None, description,
                         ["array", "driver", "workers' peak memory (GiB)",
                          "workers' peak data held (MiB)", "training rows/s",
                          "scoring rows/s", "finite scores", "new rows flagged"], table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("adbench")
    a.add_argument("data_dir", type=Path)
    a.add_argument("--datasets", nargs="+", default=None)
    a.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--jobs", type=int, default=2)
    a.add_argument("--raw", default=str(HERE / "results" / "blockwise_raw.csv"))
    a.add_argument("--resume", action="store_true")
    c = sub.add_parser("cluster")
    c.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    c.add_argument("--block-rows", type=int, default=250_000)
    c.add_argument("--sample-rows", type=int, default=1_000_000)
    c.add_argument("--model", choices=["glf", "lfp"], default="glf")
    c.add_argument("--params", default="", help="estimator parameters, 'a=1,b=\"x\"'")
    for p in (a, c):
        p.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    adbench(args) if args.command == "adbench" else cluster(args)


if __name__ == "__main__":
    main()
