"""Helpers shared by the benchmark scripts: data loading, the ADBench split and detectors, the
speed benchmarks' models, thread limits, timing, machine description, Markdown tables and the
sectioned ``RESULTS.md``.

Not a benchmark itself; imported by the benchmark scripts.
"""

import csv
import datetime
import gzip
import os
import platform
import re
import shlex
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

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


def load_images(task, data_dir):
    """Flat images in [0, 1] (float32) and their labels: ``'digits'`` (``load_digits``) or
    ``'fashion'`` (the Fashion-MNIST idx files in ``data_dir``, its training file first)."""
    if task == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(np.float32), y
    d = Path(data_dir)
    X = np.concatenate([read_idx(d / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")])
    y = np.concatenate([read_idx(d / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")])
    return X.reshape(len(X), -1).astype(np.float32) / 255.0, y


def read_idx(path):
    """An idx file (gzip) as a numpy array."""
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def synthetic(n_rows=10_000, n_features=20, n_factors=5, seed=0):
    """A min-max scaled table: a random linear map of Gaussian factors plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_factors)) @ rng.normal(size=(n_factors, n_features))
    X += 0.3 * rng.normal(size=X.shape)
    return MinMaxScaler().fit_transform(X)


def load_table(name, data_dir):
    """``(label, X)`` for ``'synthetic'`` (:func:`synthetic`) or an ADBench dataset name,
    min-max scaled."""
    if name == "synthetic":
        X = synthetic()
        return f"synthetic {X.shape[0]}x{X.shape[1]}", X
    (path,) = list_datasets(data_dir, [name])
    X, _ = load_npz(path)
    return f"{name} {X.shape[0]}x{X.shape[1]}", MinMaxScaler().fit_transform(X)


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


def named_estimator(family, **defaults):
    """The skflowgen estimator ``family`` names: ``'GLF'`` or ``'LFP'`` with ``defaults``, or
    a variant with its parameters in brackets, ``'GLF[max_iter=50]'`` (those override)."""
    name, _, spec = family.partition("[")
    return estimator_class(name.lower())(**{**defaults, **parse_params(spec.rstrip("]"))})


def estimator_class(model):
    """``'glf'`` or ``'lfp'`` to the skflowgen estimator class."""
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    return GenerativeLatentFlow if model == "glf" else LangevinFlowPriorGenerator


# ---------------------------------------------------------------- ADBench detectors
@dataclass
class Detector:
    """How to build one detector and read its anomaly score.

    ``fit_key`` names the fitted model it scores with (detectors with the same key share one
    fit); ``params`` are set on the fitted estimator before scoring; ``pyod`` detectors give
    ``decision_function`` (higher = more anomalous), the others ``score_samples`` (higher = more
    normal).
    """
    fit_key: str
    make: callable
    params: dict = field(default_factory=dict)
    pyod: bool = False


def _glf(seed):
    from skflowgen import GenerativeLatentFlow
    return GenerativeLatentFlow(random_state=seed)


def _lfp(seed):
    from skflowgen import LangevinFlowPriorGenerator
    return LangevinFlowPriorGenerator(random_state=seed)


def _iforest(seed):
    from sklearn.ensemble import IsolationForest
    return IsolationForest(random_state=seed)


def _lof(seed):
    from sklearn.neighbors import LocalOutlierFactor
    return LocalOutlierFactor(novelty=True)


def _ocsvm(seed):
    from sklearn.svm import OneClassSVM
    return OneClassSVM()


def _gmm(seed, n_components=5):
    from sklearn.mixture import GaussianMixture
    return GaussianMixture(n_components=n_components, random_state=seed)


def _ecod(seed):
    from pyod.models.ecod import ECOD
    return ECOD()


def _pyod_knn(seed):
    from pyod.models.knn import KNN
    return KNN()


def _copod(seed):
    from pyod.models.copod import COPOD
    return COPOD()


def _pyod_ae(seed):
    from pyod.models.auto_encoder import AutoEncoder
    return AutoEncoder(random_state=seed, verbose=0)


def _pyod_vae(seed):
    from pyod.models.vae import VAE
    return VAE(random_state=seed, verbose=0)


DETECTORS = {
    "glf": Detector("glf", _glf),
    "glf-joint": Detector("glf", _glf, {"score_method": "joint"}),
    "glf-marginal": Detector("glf", _glf, {"score_method": "marginal"}),
    "lfp": Detector("lfp", _lfp),
    "lfp-joint": Detector("lfp", _lfp, {"score_method": "joint"}),
    "lfp-marginal": Detector("lfp", _lfp, {"score_method": "marginal"}),
    "iforest": Detector("iforest", _iforest),
    "lof": Detector("lof", _lof),
    "ocsvm": Detector("ocsvm", _ocsvm),
    "gmm": Detector("gmm", _gmm),
    "ecod": Detector("ecod", _ecod, pyod=True),
    "copod": Detector("copod", _copod, pyod=True),
    "pyod-knn": Detector("pyod-knn", _pyod_knn, pyod=True),
    "pyod-ae": Detector("pyod-ae", _pyod_ae, pyod=True),
    "pyod-vae": Detector("pyod-vae", _pyod_vae, pyod=True),
}
DEFAULT_DETECTORS = ("glf", "lfp", "iforest", "lof", "ocsvm", "gmm", "ecod", "copod", "pyod-knn",
                     "pyod-ae", "pyod-vae")


def split_spec(spec):
    """``(name, fit parameters, scoring parameters)`` of a detector spec
    ``name[fit parameters]{scoring parameters}``, each part optional."""
    head, _, score = spec.partition("{")
    name, _, bracket = head.partition("[")
    if (bracket and not bracket.endswith("]")) or (score and not score.endswith("}")):
        raise ValueError(f"malformed detector {spec!r}: name[fit params]{{scoring params}}")
    return name, parse_params(bracket[:-1]), parse_params(score[:-1])


def detector(spec):
    """The :class:`Detector` named by ``spec``: a name of ``DETECTORS``, optionally followed
    by estimator parameters in brackets, ``glf-joint[max_iter=10,n_components=4]``, and by
    parameters in braces set on the fitted estimator before scoring,
    ``lfp[...]{inference_steps=5}``.
    Bracketed parameters are set before fitting and are part of the fit key, so ``glf[...]``,
    ``glf-joint[...]`` and ``glf[...]{...}`` with the same brackets share one fit."""
    name, fit_params, score_params = split_spec(spec)
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {spec!r}; names: {', '.join(DETECTORS)}")
    base = DETECTORS[name]
    bracket = spec.partition("{")[0][len(name):]
    make = base.make if not fit_params else \
        (lambda seed: base.make(seed).set_params(**fit_params))
    return Detector(base.fit_key + bracket, make, {**base.params, **score_params}, base.pyod)


# ---------------------------------------------------------------- the speed benchmarks' models
HIDDEN = (64, 64)  # hidden widths of every model
PAPER = "LFP, the paper's chains"  # the name of LFP with PAPER_CHAINS
PAPER_CHAINS = dict(chain_init="prior", n_steps=20, persistent_steps=None, inference_steps=20)


def n_components_for(X):
    """The skflowgen default latent size, used by every model here."""
    return min(20, max(1, X.shape[1] // 2))


class PlainTorchAE:
    """The floor: GLF's autoencoder (same layers) trained by a bare torch loop on MSE, no flow."""

    def __init__(self, n_components, epochs, batch_size, seed):
        self.n_components, self.epochs, self.batch_size, self.seed = (
            n_components, epochs, batch_size, seed)

    def fit(self, X):
        import torch
        from torch import nn
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.as_tensor(X, dtype=torch.float32)
        sizes = [x.shape[1], *HIDDEN, self.n_components]

        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers.append(nn.Linear(a, b))
                if i < len(sizes) - 2:
                    layers.append(nn.LeakyReLU(0.2))
            return nn.Sequential(*layers)
        self.model = nn.Sequential(mlp(sizes), mlp(sizes[::-1]))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        for _ in range(self.epochs):
            perm = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), self.batch_size):
                xb = x[perm[start:start + self.batch_size]]
                loss = (self.model(xb) - xb).square().sum(dim=1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return self


class PlainTorchGLF:
    """GLF's own computation with none of the estimator plumbing: the networks of a GLF
    (its public ``encoder_``, ``decoder_``, ``flow_``, taken from a one-epoch fit on a few rows
    when the object is made, untimed) trained by a bare loop on ``recon + NLL(stopgrad(z))`` with
    the same two Adam optimizers, the flow stepping once per group of batches as GLF's does.
    ``GLF / this`` is the cost of the plumbing; ``this / PyOD AE`` is the floor of GLF's ratio
    in eager torch."""

    def __init__(self, X, n_components, epochs, batch_size, seed):
        from skflowgen import GenerativeLatentFlow
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            glf = GenerativeLatentFlow(n_components, hidden_layer_sizes=HIDDEN, max_iter=1,
                                       batch_size=batch_size, random_state=seed,
                                       device="cpu").fit(X[:64])
        self.encoder, self.decoder, self.flow = glf.encoder_, glf.decoder_, glf.flow_
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed

    def fit(self, X):
        import torch
        from skflowgen._auto import auto_batch_size
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.as_tensor(X, dtype=torch.float32)
        autoencoder = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()],
                                       lr=1e-3)
        flow = torch.optim.Adam(self.flow.parameters(), lr=1e-3, betas=(0.8, 0.9), eps=1e-6,
                                weight_decay=2e-5)
        for module in (self.encoder, self.decoder, self.flow):
            module.train()
        group = self.batch_size * max(1, auto_batch_size(len(x)) // self.batch_size)
        for _ in range(self.epochs):
            perm = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), self.batch_size):
                xb = x[perm[start:start + self.batch_size]]
                z = self.encoder(xb)
                codes = z.detach() if start % group == 0 else torch.cat([codes, z.detach()], 1)
                loss = (self.decoder(z) - xb).square().sum(dim=-1).mean()
                optimizers = [autoencoder]
                if (start + self.batch_size) % group == 0 or start + self.batch_size >= len(x):
                    loss = loss - self.flow.log_prob(codes).mean()
                    optimizers.append(flow)
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
        return self


def make_models(X, d, epochs, lfp_epochs, batch_size, seed):
    """``{name: (factory, epochs)}`` of the models whose fit is timed (``batch_size='auto'``:
    skflowgen's rule for ``X``'s rows, the same number for every model)."""
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    from skflowgen._auto import auto_batch_size
    common = dict(batch_size=batch_size, random_state=seed, device="cpu")
    if batch_size == "auto":
        batch_size = auto_batch_size(len(X))
    no_stop = lambda e: dict(max_iter=e, n_iter_no_change=e + 1)  # noqa: E731

    def pyod_ae():
        from pyod.models.auto_encoder import AutoEncoder
        return AutoEncoder(epoch_num=epochs, batch_size=batch_size,
                           hidden_neuron_list=[*HIDDEN, d], random_state=seed, verbose=0)

    def pyod_vae():
        from pyod.models.vae import VAE
        return VAE(epoch_num=epochs, batch_size=batch_size, encoder_neuron_list=list(HIDDEN),
                   decoder_neuron_list=list(HIDDEN[::-1]), latent_dim=d, random_state=seed,
                   verbose=0)

    return {
        "GLF": (lambda: GenerativeLatentFlow(d, hidden_layer_sizes=HIDDEN, **no_stop(epochs),
                                             **common), epochs),
        # the default is an ensemble of five members: the same fit with one
        "GLF, one member": (lambda: GenerativeLatentFlow(d, hidden_layer_sizes=HIDDEN,
                                                         n_estimators=1, **no_stop(epochs),
                                                         **common), epochs),
        "PyOD AE": (pyod_ae, epochs),
        "PyOD VAE": (pyod_vae, epochs),
        "plain torch AE": (lambda: PlainTorchAE(d, epochs, batch_size, seed), epochs),
        "plain torch GLF": (lambda: PlainTorchGLF(X, d, epochs, batch_size, seed), epochs),
        "LFP": (lambda: LangevinFlowPriorGenerator(d, hidden_layer_sizes=HIDDEN,
                                                   **no_stop(lfp_epochs), **common), lfp_epochs),
        # the paper's inference: fresh chains of 20 steps from the prior for every batch
        PAPER: (lambda: LangevinFlowPriorGenerator(
            d, hidden_layer_sizes=HIDDEN, **PAPER_CHAINS, **no_stop(lfp_epochs), **common),
            lfp_epochs),
    }


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
