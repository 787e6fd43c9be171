"""Training and scoring speed of the skflowgen estimators against PyOD's deep detectors.

What it measures (all side by side in one run, by ``time.perf_counter``)
    1. Fit seconds per epoch: ``GenerativeLatentFlow`` against PyOD's ``AutoEncoder`` and ``VAE``
       with the same epochs, batch size and hidden widths (GLF: MLP encoder features -> 64 -> 64
       -> d, mirrored decoder, plus the flow prior; PyOD AE: ``hidden_neuron_list=[64, 64, d]``,
       its default batch norm and dropout; PyOD VAE: ``[64, 64]`` encoder and decoder, latent d),
       a plain torch loop training the same autoencoder as GLF without the flow, a plain torch
       loop running GLF's own training step on its own networks (no estimator plumbing: the
       floor of GLF in eager torch), GLF with one member (``n_estimators=1``; the default is
       five), and
       ``LangevinFlowPriorGenerator`` (fewer epochs: each of its steps runs K Langevin steps).
       The time is a whole ``fit`` divided by the epochs, so it includes each library's
       pass over the training rows after training (PyOD's ``decision_scores_``, skflowgen's
       ``offset_``). skflowgen models run exactly the requested epochs (no early stop).
    2. ``score_samples`` throughput (rows per second) of GLF and LFP (the default
       ``score_method='auto'``, the joint and the marginal), PyOD AE and VAE
       (``decision_function``) and IsolationForest, fitted as above.
    3. The cost of one Langevin step of LFP's inference against one plain forward + backward of
       ``log p(x, z)`` through the same networks (DESIGN.md section 6: the package's own limit).
    4. Peak memory: the growth of the resident memory during each model's fit and during its
       scoring of the same rows (skflowgen's default ``score_samples``, PyOD's
       ``decision_function``), each model in a fresh process after an untimed one-epoch fit of
       the same model on 512 rows, so that imports and lazy initialisation are not counted.

    Each measurement is repeated ``--repeats`` times, the models taking turns within a repeat so
    that a slow spell of a shared machine hits them alike; tables give the median and the ratios
    of medians. Data: an ADBench set (default ``6_cardio``, min-max scaled) and a synthetic
    10,000 x 20 table (a random linear map of 5 latent factors plus noise, min-max scaled).

How to run
    python benchmarks/speed.py [--data-dir ../shared/data/adbench] [--datasets cardio synthetic]
        [--epochs 20] [--lfp-epochs 5] [--batch-size auto] [--repeats 5] [--threads 1]
        [--output benchmarks/RESULTS.md] [--section speed]

    Writes the ``speed`` section of ``--output`` (other sections are left alone).
"""

import argparse
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import HIDDEN, PAPER, PAPER_CHAINS, make_models, n_components_for  # noqa: E402

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator  # noqa: E402
from skflowgen._auto import auto_batch_size  # noqa: E402

SECTION = "speed"
FORMER_CHAINS = dict(chain_init="prior", n_steps=20)  # training chains before the encoder


# ---------------------------------------------------------------- models
def fitted_epochs(model, epochs):
    """Epochs actually run (a skflowgen fit can stop early only on divergence)."""
    return getattr(model, "n_iter_", epochs)


# ---------------------------------------------------------------- measurements
def time_fits(X, models, repeats):
    """Median seconds per epoch of each model over ``repeats`` interleaved fits; also returns
    the last fitted instance of each."""
    per_epoch = {name: [] for name in models}
    fitted = {}
    for _ in range(repeats):
        for name, (factory, epochs) in models.items():
            model = factory()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, seconds = _common.timed(model.fit, X)
            per_epoch[name].append(seconds / fitted_epochs(model, epochs))
            fitted[name] = model
    return {name: float(np.median(t)) for name, t in per_epoch.items()}, fitted


def scorers(fitted, X):
    """``{name: callable}`` scoring ``X`` with each fitted model (higher = more normal)."""
    out = {}
    for name in ("GLF", "LFP"):
        model = fitted[name]
        for method in ("auto", "joint", "marginal"):
            label = f"{name} ({'default' if method == 'auto' else method})"
            out[label] = (lambda m=model, k=method: m.set_params(score_method=k).score_samples(X))
    out["PyOD AE"] = lambda: -fitted["PyOD AE"].decision_function(X)
    out["PyOD VAE"] = lambda: -fitted["PyOD VAE"].decision_function(X)
    out["IsolationForest"] = lambda: fitted["IsolationForest"].score_samples(X)
    return out


INFERENCE_PARAMS = ("chain_init", "inference_steps", "n_importance_samples", "score_method")
# LFP inference settings of the study in RESULTS.md ("LFP inference on ADBench"), set on the
# fitted default LFP: where chains start, noise-free steps, importance draws (or the joint)
LFP_INFERENCE = {
    "prior, 20 steps, 128 draws (the former default)":
        dict(chain_init="prior", inference_steps=20, n_importance_samples=128),
    "prior, 20 steps, joint": dict(chain_init="prior", inference_steps=20, score_method="joint"),
    "prior, 5 steps, 16 draws": dict(chain_init="prior", inference_steps=5,
                                     n_importance_samples=16),
    "prior, 5 steps, 8 draws": dict(chain_init="prior", inference_steps=5, n_importance_samples=8),
    "encoder, 5 steps, 8 draws": dict(inference_steps=5),
    "encoder, 2 steps, 16 draws": dict(n_importance_samples=16),
    "encoder, 2 steps, 8 draws (the default)": {},
    "encoder, 2 steps, 4 draws": dict(n_importance_samples=4),
    "encoder, 2 steps, joint": dict(score_method="joint"),
}


def inference_scorers(fitted, X):
    """``{setting: callable}``: the fitted default LFP scoring ``X`` with each of
    ``LFP_INFERENCE``, and PyOD's AutoEncoder (the reference of the ratios)."""
    lfp = fitted["LFP"]
    defaults = {k: lfp.get_params()[k] for k in INFERENCE_PARAMS}
    out = {name: (lambda p=p: lfp.set_params(**{**defaults, **p}).score_samples(X))
           for name, p in LFP_INFERENCE.items()}
    out["PyOD AE"] = lambda: -fitted["PyOD AE"].decision_function(X)
    return out


def first_epoch_ratio(factory, X, repeats):
    """Median over ``repeats`` fits of the first epoch's seconds over the median of the later
    epochs' (each epoch timed around the estimator's epoch loop)."""
    ratios = []
    for _ in range(repeats):
        model, times = factory(), []
        run_epoch = model._run_epoch

        def timed(*args):
            start = time.perf_counter()
            out = run_epoch(*args)
            times.append(time.perf_counter() - start)
            return out
        model._run_epoch = timed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X)
        ratios.append(times[0] / np.median(times[1:]))
    return float(np.median(ratios))


def time_scoring(score_fns, n_rows, repeats):
    """Median rows per second of each scorer (interleaved repeats, after one untimed call)."""
    times = {name: [] for name in score_fns}
    for fn in score_fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in score_fns.items():
            times[name].append(_common.timed(fn)[1])
    return {name: n_rows / float(np.median(t)) for name, t in times.items()}


def time_langevin_step(lfp, X, repeats, batch_size):
    """Seconds per step of LFP's Langevin inference and of one plain forward + backward of
    ``log p(x, z)`` (gradient to z only) on one batch of ``batch_size`` rows; the ratio is
    the loop's overhead."""
    x = torch.as_tensor(X[:batch_size], dtype=torch.float32)
    z0 = torch.zeros(1, len(x), lfp.n_components_)
    n_steps = lfp.n_steps

    def langevin():
        lfp._infer_latent(x, None, z0.clone(), None, n_steps)

    def plain():
        for _ in range(n_steps):
            z = z0.clone().requires_grad_(True)
            torch.autograd.grad(lfp._log_joint(x, None, z).sum(), z)

    timings = {"Langevin step": [], "plain forward+backward": []}
    langevin(), plain()
    for _ in range(repeats):
        for name, fn in zip(timings, (langevin, plain)):
            timings[name].append(_common.timed(fn)[1] / n_steps)
    return {name: float(np.median(t)) for name, t in timings.items()}


def peak_memory(dataset, name, args):
    """``(fit MiB, scoring MiB or None)``: peak resident memory growth of ``name``'s fit on
    ``dataset`` and of its scoring of the same rows; run in a fresh process."""
    limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the call)
    _, X = _common.load_table(dataset, args.data_dir)
    d = n_components_for(X)
    build = lambda epochs: make_models(  # noqa: E731
        X, d, epochs, min(epochs, args.lfp_epochs), args.batch_size, seed=0)[name][0]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(1).fit(X[:512])
        model = build(args.epochs)
        _, fit_bytes, _ = _common.peak_growth(lambda: model.fit(X))
        score = getattr(model, "score_samples", getattr(model, "decision_function", None))
        score_bytes = None if score is None else _common.peak_growth(lambda: score(X))[1]
    return fit_bytes / 2 ** 20, None if score_bytes is None else score_bytes / 2 ** 20


def memory_rows(dataset, label, names, args):
    """One table row per model: fit and scoring peak memory growth, each in a new process."""
    rows = []
    for name in names:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            fit_mib, score_mib = pool.submit(peak_memory, dataset, name, args).result()
        rows.append([label, name, f"{fit_mib:.1f}",
                     "" if score_mib is None else f"{score_mib:.1f}"])
        print(f"{label}: {name} peak memory growth fit {fit_mib:.1f} MiB, "
              f"scoring {score_mib} MiB", flush=True)
    return rows


# ---------------------------------------------------------------- report
def run(args, header):
    """All measurements on every dataset; returns Markdown lines and prints as it goes."""
    fit_rows, score_rows, step_rows, memory, ratios = [], [], [], [], []
    inference_rows, inference_columns, first_rows = {}, [], []
    batch_text = ("`batch_size='auto'`'s, `min(256, max(16, n // 10))` rows (cardio: 183), "
                  if args.batch_size == "auto" else str(args.batch_size))
    fit_names = score_names = None
    for dataset in args.datasets:
        label, X = _common.load_table(dataset, args.data_dir)
        d = n_components_for(X)
        models = make_models(X, d, args.epochs, args.lfp_epochs, args.batch_size, seed=0)
        # warm-up: one short fit of each, untimed (imports, lazy init)
        time_fits(X[:512], make_models(X, d, 1, 1, args.batch_size, seed=0), repeats=1)
        per_epoch, fitted = time_fits(X, models, args.repeats)
        fitted["IsolationForest"] = IsolationForest(random_state=0).fit(X)
        fit_names = list(per_epoch)
        ae = per_epoch["PyOD AE"]
        fit_rows.append([label, *(f"{per_epoch[n] * 1e3:.1f}" for n in fit_names),
                         f"**{per_epoch['GLF'] / ae:.2f}**",
                         f"{per_epoch['GLF, one member'] / ae:.2f}",
                         f"{per_epoch['GLF'] / per_epoch['PyOD VAE']:.2f}",
                         f"{per_epoch['GLF'] / per_epoch['plain torch GLF']:.2f}",
                         f"{per_epoch['plain torch GLF'] / ae:.2f}",
                         f"{per_epoch['LFP'] / ae:.1f}",
                         f"{per_epoch[PAPER] / ae:.1f}"])
        ratios.append((label, per_epoch["GLF"] / ae))
        print(f"{label}: ms/epoch " + ", ".join(f"{n} {per_epoch[n] * 1e3:.1f}"
                                                for n in fit_names), flush=True)

        rates = time_scoring(scorers(fitted, X), len(X), args.repeats)
        score_names = list(rates)
        score_rows.append([label, *(f"{rates[n]:,.0f}" for n in score_names),
                           f"**{rates['LFP (default)'] / rates['PyOD AE']:.3f}**",
                           f"{rates['GLF (default)'] / rates['PyOD AE']:.2f}",
                           f"{rates['IsolationForest'] / rates['PyOD AE']:.2f}"])
        print(f"{label}: rows/s " + ", ".join(f"{n} {r:,.0f}" for n, r in rates.items()),
              flush=True)

        saved = {k: fitted["LFP"].get_params()[k] for k in INFERENCE_PARAMS}
        settings = time_scoring(inference_scorers(fitted, X), len(X), args.repeats)
        fitted["LFP"].set_params(**saved)
        inference_columns.append(label)
        for name in LFP_INFERENCE:
            inference_rows.setdefault(name, [name]).extend(
                [f"{settings[name]:,.0f}", f"{settings[name] / settings['PyOD AE']:.3f}"])
        print(f"{label}: LFP inference rows/s " + ", ".join(f"{n} {r:,.0f}"
                                                         for n, r in settings.items()), flush=True)

        lfp_factory = models["LFP"][0]
        first = [first_epoch_ratio(f, X, args.repeats) for f in (
            lfp_factory, lambda: lfp_factory().set_params(**FORMER_CHAINS))]
        first_rows.append([label, f"{first[0]:.2f}", f"{first[1]:.2f}"])
        print(f"{label}: LFP first epoch / later epochs {first}", flush=True)

        step = time_langevin_step(fitted["LFP"], X, args.repeats,
                                  auto_batch_size(len(X)) if args.batch_size == "auto"
                                  else args.batch_size)
        step_rows.append([label, f"{step['Langevin step'] * 1e3:.2f}",
                          f"{step['plain forward+backward'] * 1e3:.2f}",
                          f"{step['Langevin step'] / step['plain forward+backward']:.2f}"])
        print(f"{label}: Langevin step {step}", flush=True)
        memory += memory_rows(dataset, label, fit_names, args)

    fit_table = (["data", *(f"{n} ms/epoch" for n in fit_names), "GLF / PyOD AE",
                  "GLF, one member / PyOD AE", "GLF / PyOD VAE", "GLF / plain torch GLF",
                  "plain torch GLF / PyOD AE",
                  "LFP / PyOD AE", f"{PAPER} / PyOD AE"], fit_rows)
    score_table = (["data", *(f"{n} rows/s" for n in score_names),
                    "LFP (default) / PyOD AE", "GLF (default) / PyOD AE",
                    "IsolationForest / PyOD AE"], score_rows)
    inference_table = (["LFP inference", *(f"{c} {k}" for c in inference_columns
                                           for k in ("rows/s", "/ PyOD AE"))],
                       list(inference_rows.values()))
    first_table = (["data", "LFP", "LFP, first visits of 20 steps from N(0, I)"], first_rows)
    step_table = (["data", "Langevin step ms", "plain forward+backward ms", "ratio"], step_rows)
    memory_table = (["data", "model", "fit MiB", "scoring MiB"], memory)
    for table in (fit_table, score_table, inference_table, first_table, step_table,
                  memory_table):
        print("\n" + _common.text_table(*table))
    return [
        "## Speed" + ("" if args.section == SECTION else f", batch {args.batch_size}"), "",
        *header, "",
        f"Medians of {args.repeats} interleaved repeats (the models take turns within a repeat); "
        f"ratios of medians, below 1 = the first is faster. Batch size {batch_text} for every "
        f"model; {args.epochs} epochs ({args.lfp_epochs} for LFP, whose every step runs "
        "`n_steps` Langevin steps); latent d = min(20, features // 2) and hidden widths "
        f"{HIDDEN} for every model (PyOD AE: `hidden_neuron_list=[64, 64, d]` with its default "
        "batch norm and dropout; PyOD VAE: `[64, 64]` encoder and decoder, `latent_dim=d`). "
        "Time per epoch = whole `fit` / epochs, so it includes each library's pass over the "
        "training rows after training (skflowgen: the `offset_` scoring pass with the default "
        "`score_method`). GLF is the default ensemble of five members, its flow stepping once "
        "per group of batches of about `batch_size='auto'`'s rows, `min(256, n // 10)` (cardio: "
        "five batches of 32; one batch when the batch is larger); `GLF, one member` sets "
        "`n_estimators=1`; LFP at its defaults, `LFP, the paper's chains` with "
        f"`{', '.join(f'{k}={v!r}' for k, v in PAPER_CHAINS.items())}` (a fresh chain "
        "of 20 steps from the prior for every batch and every inference). Scoring: "
        "`(default)` is each estimator's `score_method='auto'` (on tables GLF "
        f"{GenerativeLatentFlow()._score_method!r}, LFP "
        f"{LangevinFlowPriorGenerator()._score_method!r}). PyOD drops the last incomplete "
        "batch of each epoch (`drop_last=True`); skflowgen trains on it.", "",
        "### Fit time per epoch", "", _common.markdown_table(*fit_table), "",
        "### `score_samples` throughput (PyOD: `decision_function`)", "",
        _common.markdown_table(*score_table), "",
        "### LFP inference settings: `score_samples` throughput", "",
        "The fitted default LFP scoring the same rows with the settings of the study in "
        "\"LFP inference on ADBench\" (set on the fitted model: where the chains start, the "
        "noise-free Langevin steps, the importance draws of the marginal or the joint "
        "score), interleaved with PyOD's AutoEncoder, whose rows per second are the "
        "reference of the ratios.", "", _common.markdown_table(*inference_table), "",
        "### LFP: the first epoch over a later one", "",
        "Seconds of the first epoch over the median of the later epochs' in one fit (median "
        f"of {args.repeats} fits), at the defaults (a chain's first visit: `n_steps=10` steps "
        "from the encoder's proposal; later visits 5) and with the first visits of the former "
        f"defaults (`{', '.join(f'{k}={v!r}' for k, v in FORMER_CHAINS.items())}`: 20 steps "
        "from a prior draw).", "", _common.markdown_table(*first_table), "",
        "### LFP: one Langevin step against one plain forward + backward (one training "
        "batch)", "", _common.markdown_table(*step_table), "",
        "### Peak resident memory growth, fit and scoring of the same rows", "",
        "Each model in a fresh process, after an untimed one-epoch fit of the same model on 512 "
        "rows (imports and lazy initialisation not counted). Scoring: `score_samples` with each "
        "estimator's default `score_method`, PyOD's `decision_function`; the plain torch "
        "loops do not score.", "", _common.markdown_table(*memory_table),
    ], ratios


def _batch_size(text):
    return text if text == "auto" else int(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=_common.DEFAULT_DATA_DIR)
    parser.add_argument("--datasets", nargs="+", default=["cardio", "synthetic"],
                        help="ADBench dataset names and/or 'synthetic'")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lfp-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=_batch_size, default="auto",
                        help="rows per training batch for every model, or 'auto' (default): "
                             "skflowgen's batch_size='auto', min(256, n // 10), for every model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for every model (default 1)")
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--section", default=SECTION,
                        help=f"name of the RESULTS.md section to write (default {SECTION})")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the run)
    header = _common.provenance(args.threads)  # at the start: the code imported is the code run
    lines, ratios = run(args, header)
    _common.replace_section(args.output, args.section, "\n".join(lines))
    print(f"\nwrote the '{args.section}' section of {args.output}")
    for label, ratio in ratios:
        print(f"GLF / PyOD AE fit time per epoch on {label}: {ratio:.2f} "
              f"({'meets' if ratio <= 1.0 else 'misses'} the goal of 1.0; aim 0.5)")


if __name__ == "__main__":
    main()
