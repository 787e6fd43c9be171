"""How fit time grows with the number of rows (1k to 100k) and with LFP's ``n_steps``.

What it measures, in one run
    1. Seconds per training epoch of GLF, LFP, PyOD's AutoEncoder and VAE on synthetic tables of
       20 features (the speed benchmark's models: widths (64, 64), batch 256, latent 10) with
       1,000 to 100,000 rows. One epoch = the time of a 2-epoch fit minus that of a 1-epoch fit,
       so the fixed costs of a fit (set-up, the final scoring pass over the training rows)
       cancel; median of ``--repeats`` interleaved repeats, after an untimed warm-up.
    2. Seconds per epoch of LFP on 10,000 rows against ``n_steps`` (K), the same way.
    Both are drawn in ``results/scaling.png`` beside ``RESULTS.md``.

    python benchmarks/scaling.py
"""

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import make_models, n_components_for, synthetic  # noqa: E402

MODELS = ["GLF", "LFP", "PyOD AE", "PyOD VAE"]


def fit_seconds(factory, X):
    model = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _common.timed(model.fit, X)[1]


def epoch_seconds(X, names, repeats, **lfp_params):
    """Median seconds of one epoch per model: 2-epoch fit minus 1-epoch fit. The skflowgen
    models score with ``score_method='joint'``, which makes the fixed cost that cancels
    smaller (it does not enter training)."""
    d = n_components_for(X)
    one, two = (make_models(X, d, e, e, 256, 0) for e in (1, 2))
    params = {"GLF": {"score_method": "joint"},
              "LFP": {"score_method": "joint", **lfp_params}}
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            pair = []
            for models in (one, two):
                factory = models[name][0]
                if name in params:
                    factory = (lambda f, p: lambda: f().set_params(**p))(factory, params[name])
                pair.append(fit_seconds(factory, X))
            times[name].append(pair[1] - pair[0])
    return {name: statistics.median(t) for name, t in times.items()}


def plot(rows_grid, by_rows, steps_grid, by_steps, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in MODELS:
        left.loglog(rows_grid, [by_rows[n][name] for n in rows_grid], "o-", label=name)
    left.set_xlabel("training rows (20 features)")
    left.set_ylabel("seconds per epoch")
    left.set_title("Fit time against rows")
    left.legend()
    right.plot(steps_grid, [by_steps[k] for k in steps_grid], "o-", color="C1")
    right.set_xlabel("n_steps (K)")
    right.set_ylabel("seconds per epoch")
    right.set_title("LFP fit time against K (10,000 rows)")
    right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    parser.add_argument("--n-steps", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    args = parser.parse_args()
    limits = _common.limit_threads(args.threads)  # noqa: F841 (kept alive for the run)
    header = _common.provenance(args.threads)
    epoch_seconds(synthetic(n_rows=500), MODELS, 1)  # warm-up (imports, first calls), untimed
    by_rows = {}
    for n in args.rows:
        by_rows[n] = epoch_seconds(synthetic(n_rows=n), MODELS, args.repeats)
        print(n, by_rows[n], flush=True)
    X = synthetic(n_rows=10_000)
    by_steps = {k: epoch_seconds(X, ["LFP"], args.repeats, n_steps=k)["LFP"]
                for k in args.n_steps}
    print(by_steps, flush=True)
    figure = _common.figure_path(args.output, "scaling.png")
    plot(args.rows, by_rows, args.n_steps, by_steps, figure)

    row_table = [[f"{n:,}", *(f"{by_rows[n][m]:.3f}" for m in MODELS),
                  f"{by_rows[n]['GLF'] / by_rows[n]['PyOD AE']:.2f}",
                  f"{by_rows[n]['LFP'] / by_rows[n]['PyOD AE']:.1f}"] for n in args.rows]
    small, large = args.rows[0], args.rows[-1]
    growth = {m: by_rows[large][m] / by_rows[small][m] for m in MODELS}
    k0 = args.n_steps[0]
    step_table = [[k, f"{by_steps[k]:.2f}", f"{by_steps[k] / by_steps[k0]:.2f}"]
                  for k in args.n_steps]
    body = "\n".join([
        "## Fit time against rows and n_steps", "", *header, "",
        "Synthetic tables of 20 features; widths (64, 64), batch 256, latent 10 for every "
        "model. Seconds per epoch = (2-epoch fit) - (1-epoch fit), median of "
        f"{args.repeats} interleaved repeats.", "",
        "### Against rows", "",
        _common.markdown_table(["rows", *(f"{m} s/epoch" for m in MODELS), "GLF / PyOD AE",
                                "LFP / PyOD AE"], row_table), "",
        f"From {small:,} to {large:,} rows ({large / small:.0f}x) the epoch time grows "
        + ", ".join(f"{growth[m]:.0f}x ({m})" for m in MODELS) + ".", "",
        "### LFP against n_steps (10,000 rows)", "",
        _common.markdown_table(["n_steps", "s/epoch", f"ratio to K = {k0}"], step_table), "",
        f"![fit time against rows and n_steps](results/{figure.name})"])
    print(body)
    _common.replace_section(args.output, "scaling", body)


if __name__ == "__main__":
    main()
