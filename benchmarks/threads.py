"""Torch's thread count: wall time of ``fit`` and ``score_samples`` under 1, 2 and torch's
default number of intra-op threads, on an idle machine and beside a busy process.

What it measures (all side by side in one run, by ``time.perf_counter``)
    For each estimator at its defaults (only ``random_state=0`` set, and ``image_shape`` on
    images), the seconds of one ``fit`` and of one ``score_samples`` on the same rows, on
        ``breast_cancer``  ``load_breast_cancer``, 569 x 30, min-max scaled;
        ``synthetic``      the 10,000 x 20 table of ``speed.py``, ``_common.synthetic()`` (a
                           random linear map of 5 Gaussian factors plus noise, min-max scaled);
        ``digits``         ``load_digits``, 1,797 images, pixels / 16 in [0, 1],
                           ``image_shape=(1, 8, 8)``;
        ``fashion``        the first 10,000 Fashion-MNIST training images (Debian's
                           ``dataset-fashion-mnist``), ``image_shape=(1, 28, 28)``, two
                           epochs (``max_iter=2``: the default 10 take minutes each);
    under each torch thread count of ``--threads`` (``default``: what
    ``torch.get_num_threads()`` gives at start, reported as its number), each both ``idle``
    and ``busy``: beside a separate process (``multiprocessing``, spawn) spinning a pure-Python
    loop, one core's worth of work, from before the timed calls to after them, then terminated.

    Every (estimator, data, threads, load) configuration runs in a fresh Python process (this
    script re-invoked with ``--one``), which sets ``torch.set_num_threads`` first (not at all
    for ``default``), does an untimed one-epoch fit and scoring of 64 rows (imports, lazy
    initialisation), then times the full ``fit`` and ``score_samples``. Only torch's pool is
    set; numpy's BLAS and the inter-op pool are left at their defaults. ``--repeats`` rounds,
    each running every configuration once in turn (so a slow spell hits them alike); tables
    give the medians and the ratio of each median to the 1-thread idle median of the same
    estimator, data and call (below 1 = faster than one thread). A thread count equal to the
    default is measured once, as ``default``.

How to run
    python benchmarks/threads.py [--datasets breast_cancer synthetic digits fashion]
        [--estimators glf lfp] [--threads 1 2 default] [--repeats 3] [--resume]
        [--out benchmarks/results/threads.csv] [--output benchmarks/RESULTS.md]
    python benchmarks/threads.py --report-only   # the report of the rows on disk
    python benchmarks/threads.py --quick    # smoke test in seconds: max_iter=1, 200 rows,
                                            # one repeat, a temporary CSV, no RESULTS.md

    Raw rows (one per configuration and repeat) go to ``--out`` as the run goes; ``--resume``
    keeps the rows already there and skips their configurations. Writes the ``threads``
    section of ``--output`` (other sections are left alone) unless ``--quick`` or
    ``--no-results``.
"""

import argparse
import csv
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SECTION = "threads"
DATASETS = ("breast_cancer", "synthetic", "digits", "fashion")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
FASHION_ROWS, FASHION_MAX_ITER = 10_000, 2  # the image benchmarks' training size; 2 epochs
ESTIMATORS = {"glf": "GenerativeLatentFlow", "lfp": "LangevinFlowPriorGenerator"}
LOADS = ("idle", "busy")
QUICK_ROWS, QUICK_MAX_ITER, WARMUP_ROWS = 200, 1, 64
RAW_FIELDS = ["setting", "dataset", "estimator", "threads", "load", "repeat", "n_threads",
              "interop_threads", "device", "rows", "features", "n_iter", "fit_s", "score_s",
              "busy_cpu_share", "loadavg_1min", "started"]
RESULT_TAG = "THREADS-RESULT "


# ---------------------------------------------------------------- data
def load(name, quick=False):
    """``(X float32, image_shape or None)`` of a dataset of ``DATASETS``."""
    from sklearn.preprocessing import MinMaxScaler
    shape = None
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer
        X = MinMaxScaler().fit_transform(load_breast_cancer().data)
    elif name == "synthetic":
        X = _common.synthetic()  # the table of speed.py and scaling.py
    elif name == "digits":
        from sklearn.datasets import load_digits
        X, shape = load_digits().data / 16.0, (1, 8, 8)
    elif name == "fashion":
        X, shape = _common.load_images("fashion", FASHION_DIR)[0][:FASHION_ROWS], (1, 28, 28)
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose from {DATASETS}")
    X = np.asarray(X, dtype=np.float32)
    return (X[:QUICK_ROWS] if quick else X), shape


def default_threads():
    """``torch.get_num_threads()`` of a fresh process (this one has set nothing)."""
    import torch
    return torch.get_num_threads()


# ---------------------------------------------------------------- machine
def cpu_model():
    """The ``model name`` of ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_line(n_default):
    """The CPU model, its cores and torch's default pools, for the provenance lines."""
    import torch
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return (f"CPU: {cpu_model()}, {os.cpu_count()} logical cores"
            + (f" ({usable} usable by this process)" if usable not in (None, os.cpu_count())
               else "")
            + f"; torch {torch.__version__}: default `torch.get_num_threads()` {n_default}, "
            f"inter-op threads {torch.get_num_interop_threads()}")


# ---------------------------------------------------------------- the busy process
def spin(started):
    """Burn one core with a pure-Python loop until terminated."""
    started.set()
    n = 0
    while True:
        n += 1


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ---------------------------------------------------------------- one configuration
def measure_one(dataset, estimator, threads, load_kind, quick, device):
    """Run in a fresh process: set the threads, warm up, time ``fit`` and ``score_samples``."""
    import torch
    if threads != "default":
        torch.set_num_threads(int(threads))
    n_threads = torch.get_num_threads()
    from sklearn.base import clone
    import skflowgen
    from skflowgen._auto import resolve_device
    warnings.simplefilter("ignore")

    X, shape = load(dataset, quick)
    params = dict(random_state=0, n_jobs=n_threads)  # the estimators set it in every call
    if shape is not None:
        params["image_shape"] = shape
    if quick:
        params["max_iter"] = QUICK_MAX_ITER
    elif dataset == "fashion":  # the defaults' 40 epochs would take minutes a configuration
        params["max_iter"] = FASHION_MAX_ITER
    if device is not None:
        params["device"] = device
    model = getattr(skflowgen, ESTIMATORS[estimator])(**params)

    busy = None
    if load_kind == "busy":
        context = multiprocessing.get_context("spawn")
        started = context.Event()
        busy = context.Process(target=spin, args=(started,), daemon=True)
        busy.start()
        if not started.wait(120):
            busy.terminate()
            raise RuntimeError("the busy process did not start")
    try:
        warm = clone(model).set_params(max_iter=1).fit(X[:WARMUP_ROWS])  # untimed
        warm.score_samples(X[:WARMUP_ROWS])
        loadavg = os.getloadavg()[0]
        busy_before = cpu_seconds(busy.pid) if busy else None
        start = time.perf_counter()
        _, fit_s = _common.timed(model.fit, X)
        scores, score_s = _common.timed(model.score_samples, X)
        wall = time.perf_counter() - start
        busy_share = (cpu_seconds(busy.pid) - busy_before) / wall if busy else None
        alive = busy.is_alive() if busy else True
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()
    if not alive:
        raise RuntimeError("the busy process ended before the measurement did")
    assert scores.shape == (len(X),)
    return dict(n_threads=n_threads, interop_threads=torch.get_num_interop_threads(),
                device=str(resolve_device(model.device)), rows=X.shape[0],
                features=X.shape[1], n_iter=getattr(model, "n_iter_", ""),
                fit_s=f"{fit_s:.4f}", score_s=f"{score_s:.4f}",
                busy_cpu_share="" if busy_share is None else f"{busy_share:.2f}",
                loadavg_1min=f"{loadavg:.2f}")


def run_config(args, setting, dataset, estimator, threads, load_kind, repeat):
    """One configuration in a fresh process (this script with ``--one``); one raw row."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", dataset, estimator,
               threads, load_kind]
    if setting == "quick":
        command.append("--quick")
    if args.device is not None:
        command += ["--device", args.device]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    row = dict(setting=setting, dataset=dataset, estimator=estimator, threads=threads,
               load=load_kind, repeat=repeat, started=started,
               **json.loads(lines[-1][len(RESULT_TAG):]))
    print(f"repeat {repeat}: {dataset} {estimator} threads={threads} ({row['n_threads']}) "
          f"{load_kind}: fit {float(row['fit_s']):.2f} s, score_samples "
          f"{float(row['score_s']):.2f} s", flush=True)
    return [row]


# ---------------------------------------------------------------- report
def thread_labels(requested, n_default):
    """The ``--threads`` values to run: a number equal to the default is run as ``default``."""
    labels = []
    for t in requested:
        if t != "default" and "default" in requested and int(t) == n_default:
            continue
        if t not in labels:
            labels.append(t)
    return labels


def tables(rows, datasets, estimators, labels, n_default):
    """``(header, rows)`` of the Markdown table and of the busy process's CPU share table."""
    def name(t):
        n = n_default if t == "default" else int(t)
        return f"{n} thread{'s' if n > 1 else ''}" + (" (default)" if t == "default" else "")
    present = {(r["threads"], r["load"]) for r in rows}
    configs = [(t, load_kind) for t in labels for load_kind in LOADS
               if (t, load_kind) in present]
    base_label = "1" if "1" in labels else labels[0]
    cell = {}
    for row in rows:
        key = (row["dataset"], row["estimator"], row["threads"], row["load"])
        cell.setdefault(key, []).append(row)
    header = ["data", "estimator", "call",
              *(f"{name(t)}, {load_kind}" for t, load_kind in configs)]
    out = []
    for dataset in datasets:
        for estimator in estimators:
            found = [cell.get((dataset, estimator, t, load_kind), []) for t, load_kind in configs]
            if not any(found):
                continue
            some = next(r for r in found if r)[0]
            label = f"{dataset} {some['rows']}x{some['features']}"
            for call, field in (("fit", "fit_s"), ("score_samples", "score_s")):
                medians = [statistics.median(float(r[field]) for r in rs) if rs else None
                           for rs in found]
                base = (medians[configs.index((base_label, "idle"))]
                        if (base_label, "idle") in configs else None)
                out.append([label, ESTIMATORS[estimator], f"`{call}`", *(
                    "" if m is None else
                    (f"**{m / base:.2f}** ({m:.2f} s)" if base else f"{m:.2f} s")
                    for m in medians)])
    busy = []
    for t in labels:
        shares = [float(r["busy_cpu_share"]) for r in rows
                  if r["threads"] == t and r["load"] == "busy" and r["busy_cpu_share"]]
        if shares:
            busy.append([name(t), f"{statistics.median(shares):.2f}",
                         f"{min(shares):.2f}", f"{max(shares):.2f}"])
    loads = [float(r["loadavg_1min"]) for r in rows if r["load"] == "idle"]
    return (header, out), (["torch threads", "median", "min", "max"], busy), \
        base_label, (statistics.median(loads) if loads else None)


def report(args, rows, labels, n_default, header_lines):
    (head, body), (busy_head, busy_body), base_label, idle_load = tables(
        rows, args.datasets, args.estimators, labels, n_default)
    per_dataset = [f"{len({r['repeat'] for r in rows if r['dataset'] == d})} on {d}"
                   for d in args.datasets if any(r["dataset"] == d for r in rows)]
    print("\n" + _common.text_table(head, body))
    if busy_body:
        print("\nbusy process CPU share\n" + _common.text_table(busy_head, busy_body))
    merged = [t for t in args.threads if t != "default" and t not in labels]
    description = (
        f"Seconds of one `fit` and of one `score_samples` on the same rows (median of "
        f"the repeats run: {', '.join(per_dataset)}), each configuration in a fresh process "
        "that sets `torch.set_num_threads` and the estimators' `n_jobs` to the count first "
        "(`default`: torch's own choice, "
        f"{n_default} here), after an untimed one-epoch fit and scoring of {WARMUP_ROWS} "
        "rows. In **bold** the ratio to the "
        f"{'1-thread' if base_label == '1' else base_label + '-thread'} idle median of the "
        "same estimator, data and call (below 1 = faster); the seconds in brackets. `busy`: "
        "beside a separate process spinning a pure-Python loop (one core's worth of work) "
        "from before the timed calls to after them. Estimators at their defaults "
        "(`random_state=0`; `image_shape` on images"
        + (f"; `device={args.device!r}`" if args.device else "")
        + "); each repeat runs every configuration once in turn. Data: "
        "`load_breast_cancer` min-max scaled; the synthetic 10,000 x 20 table of `speed.py`; "
        "`load_digits` / 16 as 8x8 images; the first 10,000 Fashion-MNIST training images as "
        f"28x28 images, {FASHION_MAX_ITER} epochs (default `score_method`: `'lof'` on "
        "images). Only "
        "torch's intra-op pool is set; numpy's BLAS (used by the EM fit of a mixture prior, "
        "scikit-learn's `GaussianMixture`, on images and wherever `n_prior_components` > 1) "
        "and torch's inter-op pool are at their defaults."
        + (f" `--threads {' '.join(merged)}` equals the default and is measured once, as "
           "the default." if merged else "")
        + ("" if idle_load is None else
           f" Median 1-minute load average at the start of the idle timings: {idle_load:.2f}."))
    lines = ["## Threads", "", *header_lines, "", description, "",
             _common.markdown_table(head, body, ["l", "l", "l"] + ["r"] * (len(head) - 3))]
    if busy_body:
        lines += ["", "CPU share the busy process got during the timed calls (CPU seconds / "
                  "wall seconds; 1.00 = a whole core):", "",
                  _common.markdown_table(busy_head, busy_body)]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--estimators", nargs="+", choices=list(ESTIMATORS),
                        default=list(ESTIMATORS))
    parser.add_argument("--threads", nargs="+", default=["1", "2", "default"],
                        help="torch thread counts: numbers and/or 'default' (default: 1 2 "
                             "default)")
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS),
                        help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds over every configuration (default 3; 1 with --quick)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out and skip their configurations")
    parser.add_argument("--out", type=Path, default=None,
                        help="raw CSV (default benchmarks/results/threads.csv; with --quick a "
                             "file in the temporary folder)")
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS,
                        help="the results file whose 'threads' section is written")
    parser.add_argument("--no-results", action="store_true",
                        help="do not write the section of --output")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: max_iter={QUICK_MAX_ITER}, {QUICK_ROWS} rows, one "
                             "repeat unless --repeats is given, no RESULTS.md")
    parser.add_argument("--device", default=None,
                        help="pass this device to the estimators (default: not set, 'auto')")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the rows in --out, running nothing")
    parser.add_argument("--one", nargs=4, metavar=("DATASET", "ESTIMATOR", "THREADS", "LOAD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for t in args.threads:
        if t != "default" and not (t.isdigit() and int(t) > 0):
            parser.error(f"--threads: {t!r} is neither a positive number nor 'default'")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "threads_quick.csv" if args.quick
                    else _common.RESULTS_DIR / "threads.csv")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        result = measure_one(*args.one, quick=args.quick, device=args.device)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return
    header_lines = _common.provenance()  # at the start: the code imported is the code run
    n_default = default_threads()
    header_lines.insert(-1, cpu_line(n_default) + "  ")
    labels = thread_labels(args.threads, n_default)
    setting = "quick" if args.quick else "full"
    configs = [(d, e, t, load_kind) for d in args.datasets for e in args.estimators
               for t in labels for load_kind in args.loads]
    tasks = [(setting, *config, repeat) for repeat in range(args.repeats)
             for config in configs]  # interleaved: every configuration once per repeat
    print(f"{len(tasks)} runs: {len(configs)} configurations x {args.repeats} repeat(s); "
          f"torch default threads {n_default}; raw rows to {args.out}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    key = (lambda row: (row["setting"], row["dataset"], row["estimator"], row["threads"],
                        row["load"], int(row["repeat"])))
    if args.report_only:  # every repeat on disk of the configurations asked for
        with open(args.out) as f:
            rows = [r for r in csv.DictReader(f) if key(r)[:5] in {t[:5] for t in tasks}]
    else:
        rows = _common.run_resumable(args.out, RAW_FIELDS, tasks,
                                     lambda *task: run_config(args, *task), key,
                                     resume=args.resume)
        rows = [r for r in rows if key(r) in set(tasks)]
    text = report(args, rows, labels, n_default, header_lines)
    if args.quick or args.no_results:
        print(f"\n(not written to {args.output}: "
              f"{'--quick' if args.quick else '--no-results'})\n\n{text}")
    else:
        _common.replace_section(args.output, SECTION, text)
        print(f"\n{text}\n\nwrote the '{SECTION}' section of {args.output}")


if __name__ == "__main__":
    main()
