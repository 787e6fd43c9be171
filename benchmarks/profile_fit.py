"""Where fit and inference spend their time, before and after a change, and what
``torch.compile`` would give the Langevin step.

What it measures, in one run
    1. Before/after: the fit time per epoch and the ``score_samples`` throughput of GLF and LFP
       for the package in this checkout and for the package at ``--baseline`` (a git revision,
       extracted with ``git archive``), each in a fresh subprocess, the two taking turns
       ``--repeats`` times; medians and the ratio after / before.
    2. Profiles: the share of each fit spent in the package's and the optimizer's functions
       (``cProfile``, cumulative), before and after; the torch operators with the most self CPU
       time over a fit of the current code (``torch.profiler``).
    3. ``torch.compile`` of one Langevin step (``z + s^2/2 grad log p(x, z)`` with
       ``torch.func.grad``) against the package's eager loop on a 256-row chunk: the compile
       time and the steady-state time of a K-step chain.

    python benchmarks/profile_fit.py --baseline 1e12b9b
"""

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_data(data_dir):
    """cardio (1831 x 21), min-max scaled, or a synthetic table of that shape."""
    path = Path(data_dir) / "6_cardio.npz"
    if path.exists():
        X, _ = _common.load_npz(path)
        name = "cardio"
    else:
        X = np.random.default_rng(0).normal(size=(1831, 21))
        name = "synthetic"
    X = (X - X.min(axis=0)) / np.maximum(np.ptp(X, axis=0), 1e-12)
    return name, X


def models(epochs, lfp_epochs):
    """The two estimators with a fixed number of epochs and the joint score (the fit ends with
    one scoring pass over the training rows; the joint one is cheapest)."""
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    fixed = dict(tol=0.0, batch_size=256, random_state=0, score_method="joint", device="cpu")
    return {
        "GLF": (GenerativeLatentFlow(max_iter=epochs, n_iter_no_change=epochs + 1, **fixed),
                epochs),
        "LFP": (LangevinFlowPriorGenerator(max_iter=lfp_epochs, n_iter_no_change=lfp_epochs + 1,
                                           **fixed), lfp_epochs),
    }


def function_shares(fit, X, top):
    """Share of a ``fit`` call's time (cProfile, cumulative) spent in each of the ``top`` package
    and optimizer functions that take the most: ``{"file:function": percent}``."""
    python = cProfile.Profile()
    python.runcall(fit, X)
    stats = pstats.Stats(python).stats
    total = max(v[3] for v in stats.values())
    rows = sorted(((v[3], k) for k, v in stats.items()
                   if ("skflowgen" in k[0] and k[2] != "fit") or "torch/optim" in k[0]),
                  reverse=True)
    return {f"{Path(k[0]).name}:{k[2]}": 100 * cum / total for cum, k in rows[:top]}


def worker(args):
    """Time (and with --top, profile) the skflowgen on ``sys.path``; print one JSON line."""
    _common.limit_threads(args.threads)
    _, X = load_data(args.data_dir)
    warnings.simplefilter("ignore")
    for model, _ in models(1, 1).values():  # warm up torch and the BLAS, untimed
        model.fit(X[:256]).score_samples(X[:256])
    out = {"times": {}, "shares": {}}
    for name, (model, epochs) in models(args.epochs, args.lfp_epochs).items():
        _, fit_s = _common.timed(model.fit, X)
        _, score_s = _common.timed(model.score_samples, X)
        out["times"][f"{name} fit ms/epoch"] = 1e3 * fit_s / epochs
        out["times"][f"{name} score rows/s"] = len(X) / score_s
        if args.profile:
            fresh = models(args.epochs, args.lfp_epochs)[name][0]
            out["shares"][name] = function_shares(fresh.fit, X, args.top)
    print(json.dumps(out))


def extract(revision, folder):
    """The ``skflowgen`` package at ``revision`` into ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "skflowgen"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def before_after(args):
    """Median of each time for (baseline, current), the two run in turn in subprocesses, and
    each one's function shares (profiled in its first run)."""
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as base:
        extract(args.baseline, base)
        paths = {"before": base, "after": str(ROOT)}
        for repeat in range(args.repeats):
            for which, path in paths.items():
                env = {**os.environ, "PYTHONPATH": path}
                cmd = [sys.executable, __file__, "--worker", "--data-dir", str(args.data_dir),
                       "--epochs", str(args.epochs), "--lfp-epochs", str(args.lfp_epochs),
                       "--threads", str(args.threads), "--top", str(args.top)]
                line = subprocess.run(cmd + (["--profile"] if repeat == 0 else []), env=env,
                                      capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]
                runs[which].append(json.loads(line))
                print(which, line, flush=True)
    times = {which: {k: statistics.median(r["times"][k] for r in rs) for k in rs[0]["times"]}
             for which, rs in runs.items()}
    shares = {which: rs[0]["shares"] for which, rs in runs.items()}
    return times, shares


def operator_table(X, epochs, lfp_epochs, top):
    """Per model, the torch operators with the most self CPU time over one fit."""
    from torch.profiler import ProfilerActivity, profile
    tables = {}
    for name, (model, _) in models(epochs, lfp_epochs).items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.fit(X)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        tables[name] = [[f"`{e.key}`", e.count, f"{e.self_cpu_time_total / 1e3:.0f}",
                         f"{100 * e.self_cpu_time_total / total:.1f}"] for e in events[:top]]
    return tables


def compile_langevin(X, n_steps, repeats):
    """Eager vs compiled K-step noise-free chain on one 256-row chunk of a fitted LFP."""
    import torch
    from skflowgen import LangevinFlowPriorGenerator
    model = LangevinFlowPriorGenerator(max_iter=2, n_steps=n_steps, random_state=0,
                                       device="cpu").fit(X)
    x = torch.as_tensor(X[:256], dtype=torch.float32)
    step = model.step_size * model._posterior_scale()
    grad = torch.func.grad(lambda z, x: model._log_joint(x, None, z).sum())
    compiled_step = torch.compile(lambda z, x: z + 0.5 * step ** 2 * grad(z, x), dynamic=False)

    def compiled():
        z = x.new_zeros(1, len(x), model.n_components_)
        for _ in range(n_steps):
            z = compiled_step(z, x)
        return z

    def eager():
        return model._infer_latent(x, None)

    with torch.no_grad():
        z_compiled, compile_s = _common.timed(compiled)
        times = {"eager": [], "compiled": []}
        for _ in range(repeats):
            times["eager"].append(_common.timed(eager)[1])
            times["compiled"].append(_common.timed(compiled)[1])
        max_diff = float((z_compiled - eager()).abs().max())
    return {k: statistics.median(v) for k, v in times.items()}, compile_s, max_diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None,
                        help="git revision to compare with (default: no before/after)")
    parser.add_argument("--data-dir", type=Path, default=_common.DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lfp-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the run)
    header = _common.provenance(args.threads)
    name, X = load_data(args.data_dir)
    warnings.simplefilter("ignore")
    lines = ["## Profile: fit and inference", "", *header, "",
             f"Data: {name} {X.shape[0]}x{X.shape[1]}, min-max scaled; defaults except "
             f"batch_size=256, score_method='joint', a fixed number of epochs ({args.epochs} "
             f"for GLF, {args.lfp_epochs} for LFP)."]
    if args.baseline:
        med, shares = before_after(args)
        rows = [[k, f"{med['before'][k]:,.1f}", f"{med['after'][k]:,.1f}",
                 f"**{med['after'][k] / med['before'][k]:.2f}**"] for k in med["after"]]
        lines += ["", f"### Before ({args.baseline}) and after (this checkout)", "",
                  f"Medians of {args.repeats} runs, each in a fresh process, before and after "
                  "taking turns. Ratio after / before: below 1 = faster for ms/epoch, above 1 "
                  "= faster for rows/s.", "",
                  _common.markdown_table(["measure", "before", "after", "after / before"],
                                         rows)]
        for model_name in shares["after"]:
            funcs = list(dict.fromkeys([*shares["before"][model_name],
                                        *shares["after"][model_name]]))
            cell = lambda which, f: (  # noqa: E731
                f"{shares[which][model_name][f]:.1f}" if f in shares[which][model_name] else "")
            lines += ["", f"### {model_name} fit: share of the fit time by function (cProfile, "
                      f"cumulative %; top {args.top} of each, blank = not in that top)", "",
                      _common.markdown_table(["function", "before", "after"],
                                             [[f"`{f}`", cell("before", f), cell("after", f)]
                                              for f in funcs])]
    for model_name, ops in operator_table(X, args.epochs, args.lfp_epochs, args.top).items():
        lines += ["", f"### {model_name} fit: torch operators by self CPU time (this checkout)",
                  "", _common.markdown_table(["operator", "calls", "self ms",
                                              "% of self time"], ops)]
    if not args.no_compile:
        med, compile_s, max_diff = compile_langevin(X, 20, args.repeats)
        per_step = {k: 1e3 * v / 20 for k, v in med.items()}
        saved = per_step["eager"] - per_step["compiled"]
        break_even = compile_s * 1e3 / saved if saved > 0 else float("inf")
        lines += ["", "### `torch.compile` of the Langevin step", "",
                  "K = 20 noise-free steps on one 256-row chunk of a fitted LFP; median of "
                  f"{args.repeats} interleaved repeats; the compiled step is "
                  "`torch.compile(lambda z, x: z + s^2/2 * torch.func.grad(log_joint)(z, x))`.",
                  "", _common.markdown_table(
                      ["variant", "ms per step", "first call (s)"],
                      [["eager (package)", f"{per_step['eager']:.2f}", ""],
                       ["torch.compile", f"{per_step['compiled']:.2f}", f"{compile_s:.1f}"]]),
                  "", f"Compiled / eager per step: **{per_step['compiled'] / per_step['eager']:.2f}**; "
                  f"the first call (compilation) pays for itself after about "
                  f"{break_even:,.0f} steps of a 256-row chunk; largest latent difference "
                  f"{max_diff:.1e}."]
    body = "\n".join(lines)
    print(body)
    _common.replace_section(args.output, "profile", body)


if __name__ == "__main__":
    main()
