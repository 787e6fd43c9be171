"""Peak memory and throughput of streamed scoring: ``score_samples`` over 100,000 and
1,000,000 rows, beside PyOD's AutoEncoder and VAE ``decision_function`` and scikit-learn's
``IsolationForest.score_samples``, in one run.

A thread samples the process's resident memory (``/proc/self/statm``) every 5 ms while
``score_samples`` runs; the figure is the peak minus the resident memory just before the call,
with the input array already in memory. Flat growth from 100k to 1M rows means the scoring
streams in chunks; the goal is under 200 MiB at 1M rows of 20 features. Rows per second are
given beside PyOD's AutoEncoder's on the same rows.

    python benchmarks/memory.py [--rows 100000 1000000] [--langevin-rows N] [--features 20]
"""

import argparse
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from _common import limit_threads, peak_growth, write_report
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--estimators", nargs="+", default=None,
                        help="names of the estimators to run (default: all)")
    parser.add_argument("--langevin-rows", type=int, default=None,
                        help="LFP scores only the row counts up to this (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    args = parser.parse_args()
    _limits = limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    rng = np.random.RandomState(0)
    mixing = rng.randn(5, args.features)
    X = rng.randn(max(args.rows), 5) @ mixing + 0.1 * rng.randn(max(args.rows), args.features)
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.vae import VAE
    from sklearn.ensemble import IsolationForest
    models = {  # PyOD's AutoEncoder first: the others' rows per second are given over its
        "PyOD AutoEncoder": (AutoEncoder(epoch_num=5, random_state=0, verbose=0),
                             "decision_function"),
        "GenerativeLatentFlow": (GenerativeLatentFlow(max_iter=5, random_state=0, device="cpu"),
                                 "score_samples"),
        "LangevinFlowPriorGenerator": (LangevinFlowPriorGenerator(max_iter=5, random_state=0,
                                                                  device="cpu"),
                                       "score_samples"),
        "PyOD VAE": (VAE(epoch_num=5, random_state=0, verbose=0), "decision_function"),
        "IsolationForest": (IsolationForest(random_state=0), "score_samples"),
    }
    rows, rates = [], {}
    for name, (model, method) in models.items():
        if args.estimators and name not in args.estimators:
            continue
        model.fit(X[:5000])
        for n in args.rows:
            if name == "LangevinFlowPriorGenerator" and args.langevin_rows \
                    and n > args.langevin_rows:
                continue
            scores, growth, seconds = peak_growth(lambda: getattr(model, method)(X[:n]))
            assert scores.shape == (n,) and np.isfinite(scores).all()
            rates[name, n] = n / seconds
            ae = rates.get(("PyOD AutoEncoder", n))
            rows.append([name, method, f"{n:,}", f"{growth / 2 ** 20:.1f}", f"{seconds:.1f}",
                         f"{n / seconds:,.0f}", "" if ae is None else f"{n / seconds / ae:.2f}"])
            print("  ".join(rows[-1]), flush=True)
    write_report(
        args.output, "memory", "Memory of streamed scoring", args.threads,
        f"`score_samples` of float64 rows x {args.features} features (input already in "
        f"memory, {X[:max(args.rows)].nbytes / 2 ** 20:.0f} MiB at {max(args.rows):,} rows); "
        "peak resident memory growth during the call, sampled every 5 ms. Goal: under 200 MiB "
        "at 1,000,000 rows, flat in the number of rows. skflowgen at its defaults (each "
        "estimator's default `score_method`, GLF's joint and LFP's "
        f"{LangevinFlowPriorGenerator()._score_method}), fitted for 5 epochs on 5,000 rows; "
        "PyOD's detectors fitted with 5 epochs, default widths; IsolationForest at its "
        "defaults on the same 5,000 rows. The models run one after another in one process; "
        "`/ PyOD AE` is the rows per second over PyOD AutoEncoder's on the same rows.",
        ["estimator", "method", "rows", "peak growth (MiB)", "seconds", "rows / s",
         "/ PyOD AE"], rows)


if __name__ == "__main__":
    main()
