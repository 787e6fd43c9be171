"""Helpers shared by the benchmark scripts: data loading, the ADBench split, thread limits,
timing, machine description, Markdown tables and the sectioned ``RESULTS.md``.

Not a benchmark itself; imported by the benchmark scripts.
"""

import csv
import datetime
import os
import platform
import re
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_DIR = DEFAULT_RESULTS.parent / "results"  # raw rows and figures of the benchmarks


# ---------------------------------------------------------------- data
def dataset_name(path):
    """ADBench file name to dataset name: ``2_annthyroid.npz`` -> ``annthyroid``."""
    return re.sub(r"^\d+_", "", Path(path).stem)


def list_datasets(data_dir, names=None):
    """The ``.npz`` files of ``data_dir`` in ADBench order (by numeric prefix), optionally only
    those whose dataset name is in ``names`` (case-insensitive)."""
    files = sorted(Path(data_dir).glob("*.npz"),
                   key=lambda p: (int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit()
                                  else 10 ** 9, p.stem))
    if names:
        wanted = {n.lower() for n in names}
        files = [f for f in files if dataset_name(f).lower() in wanted]
        missing = wanted - {dataset_name(f).lower() for f in files}
        if missing:
            raise SystemExit(f"no such dataset in {data_dir}: {sorted(missing)}")
    if not files:
        raise SystemExit(f"no .npz files in {data_dir}")
    return files


def load_npz(path):
    """``(X float64, y int)`` from an ADBench ``.npz`` (``y`` 1 = anomaly)."""
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"]).astype(int).ravel()


def subsample(X, y, max_rows, seed=0):
    """At most ``max_rows`` rows, stratified on ``y`` with a fixed seed; unchanged if smaller."""
    if max_rows is None or len(X) <= max_rows:
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=max_rows, stratify=y, random_state=seed)
    return X, y


def adbench_split(X, y, seed, test_size=0.3):
    """The ADBench split: 70/30, stratified on ``y``, ``random_state=seed``."""
    return train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)


def parse_params(text):
    """Estimator parameters from ``"a=1,b='x',c=None"``: each value as a Python literal, or as
    a plain string where it is none (``covariance_type=spherical``)."""
    import ast
    params = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return params


def probe_parser(doc):
    """The arguments the single-model probes share: the data folder, the sets, the estimator
    (``--model glf|lfp``) and its parameters (``--params``, see :func:`parse_params`)."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--model", choices=["glf", "lfp"], default="glf")
    parser.add_argument("--params", default="", help="estimator parameters, 'a=1,b=\"x\"'")
    return parser


def estimator_class(model):
    """``'glf'`` or ``'lfp'`` to the skflowgen estimator class."""
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    return GenerativeLatentFlow if model == "glf" else LangevinFlowPriorGenerator


# ---------------------------------------------------------------- environment and timing
def limit_threads(n_threads):
    """Limit torch and the BLAS/OpenMP pools to ``n_threads`` (fair, quieter timings on a shared
    machine). Returns the threadpoolctl context, which must be kept alive."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(n_threads)
    return threadpool_limits(n_threads)


_DONE_IN_PROCESS = set()


def once_per_process(key, fn):
    """Call ``fn()`` the first time ``key`` is seen in this process. The record lives here, in
    an imported module: joblib sends the functions of a script's ``__main__`` to its workers
    by value, with a fresh copy of the globals they use, so a flag kept there is new in every
    task."""
    if key not in _DONE_IN_PROCESS:
        fn()
        _DONE_IN_PROCESS.add(key)


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call, by :func:`time.perf_counter`."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def rss():
    """Resident memory of this process in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(fn):
    """``(result, peak resident memory growth in bytes, seconds)`` of ``fn()``: a thread samples
    the resident memory every 5 ms; growth is over the resident memory just before the call."""
    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)
    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return result, max(peak[0], rss()) - base, seconds


def command_line():
    """The command that is running, as one could paste it into a shell."""
    script = os.path.relpath(sys.argv[0]) if os.path.exists(sys.argv[0]) else sys.argv[0]
    return shlex.join(["python", script, *sys.argv[1:]])


def machine_info(n_threads=None):
    """One line describing the machine and the library versions."""
    import sklearn
    import torch
    parts = [platform.platform(), platform.processor() or platform.machine(),
             f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}",
             f"torch {torch.__version__}", f"scikit-learn {sklearn.__version__}"]
    try:
        import pyod
        parts.append(f"pyod {pyod.__version__}")
    except ImportError:
        pass
    if torch.cuda.is_available():
        parts.append(f"CUDA {torch.cuda.get_device_name()}")
    if n_threads is not None:
        parts.append(f"{n_threads} thread(s) per process")
    return ", ".join(parts)


def code_revision():
    """Which skflowgen was imported: its version and, in a git checkout, the commit, marked
    ``+uncommitted changes`` when the package differs from it; else the folder it came from."""
    import subprocess
    import skflowgen
    package = Path(skflowgen.__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", str(package))
    except (OSError, subprocess.CalledProcessError):
        return f"skflowgen {skflowgen.__version__} from {package}"
    if dirty:
        import hashlib
        diff = git("diff", "HEAD", "--", str(package))
        digest = hashlib.sha1(diff.encode()).hexdigest()[:10]
        commit += f" +uncommitted changes (diff sha1 {digest})"
    where = "" if package.parent == Path(__file__).resolve().parents[1] else f" from {package}"
    return f"skflowgen {skflowgen.__version__}, git {commit}{where}"


def provenance(n_threads=None):
    """Markdown lines: the exact command, the code, the machine and the date."""
    return [f"Command: `{command_line()}`  ", f"Code: {code_revision()}  ",
            f"Machine: {machine_info(n_threads)}  ",
            f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"]


# ---------------------------------------------------------------- tables
def markdown_table(header, rows, align=None):
    """A GitHub Markdown table; ``align`` is one of 'l', 'r' per column (default: first left)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def text_table(header, rows):
    """The same table as plain aligned text, for the terminal."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths),
                      *map(fmt, cells[1:])])


def average_ranks(values):
    """Mean rank per column of a (rows x columns) array, rank 1 = highest in its row;
    ties get the mean rank; rows with a NaN are left out."""
    from scipy.stats import rankdata
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values).any(axis=1)]
    if not len(values):
        return np.full(values.shape[1], np.nan)
    return rankdata(-values, axis=1).mean(axis=0)


# ---------------------------------------------------------------- RESULTS.md sections
def figure_path(output, name):
    """Where the figure ``name`` of the results file ``output`` goes: the ``results/``
    folder beside it, which its Markdown links as ``results/<name>``."""
    folder = Path(output).parent / "results"
    folder.mkdir(exist_ok=True)
    return folder / name


def replace_section(path, name, body):
    """Write ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``;
    the rest of the file is left as it is (the section is appended if it is not there yet)."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# skflowgen benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def write_report(output, name, title, threads, description, header, rows, footer=""):
    """Print and write one RESULTS.md section: title, provenance, description, table, footer."""
    body = "\n".join([f"## {title}", "", *provenance(threads), "", description, "",
                      markdown_table(header, rows), *([ "", footer] if footer else [])])
    print(body)
    replace_section(output, name, body)


def run_resumable(raw, fields, tasks, run, row_task, n_jobs=1, resume=False):
    """Every row: ``run(*task)`` (a list of row dicts) for each of ``tasks`` in ``n_jobs``
    processes, the ``fields`` of the rows written to the CSV ``raw`` as each task ends (other
    keys, such as arrays for a figure, stay in the rows returned). With ``resume``, the rows
    already in ``raw`` are kept and the tasks they cover (``row_task(row) == task``) skipped."""
    from joblib import Parallel, delayed
    done = []
    if resume and Path(raw).exists():
        with open(raw) as f:
            done = list(csv.DictReader(f))
    covered = {row_task(row) for row in done}
    todo = [task for task in tasks if task not in covered]
    with open(raw, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(done)
        for task, rows in zip(todo, Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(run)(*task) for task in todo)):
            writer.writerows(rows)
            f.flush()
            done += rows
            print(f"{task} done", flush=True)
    return done
