"""Imputation: LangevinFlowPriorGenerator.impute against scikit-learn's imputers on load_digits.

Digits scaled to [0, 1]; a fixed 80/20 split; 30% of the test entries are removed at random
and each imputer fills them in, once fitted on complete training rows and once on training
rows that are themselves 30% missing. RMSE over the removed entries, mean over the seeds.

    python benchmarks/imputation.py [--seeds 0 1 2]
"""

import argparse
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import KNNImputer, SimpleImputer

from _common import limit_threads, timed, write_report
from skflowgen import LangevinFlowPriorGenerator


def imputers(seed):
    return {
        "LangevinFlowPriorGenerator(covariance_type='spherical')":
            LangevinFlowPriorGenerator(covariance_type="spherical", random_state=seed),
        "KNNImputer()": KNNImputer(),
        "SimpleImputer(mean)": SimpleImputer(),
    }


def fit_impute(imputer, train_rows, corrupted):
    """Fit on ``train_rows``, then fill the NaN entries of ``corrupted``."""
    imputer.fit(train_rows)
    if hasattr(imputer, "impute"):
        return imputer.impute(corrupted)
    return imputer.transform(corrupted)


def knock_out(X, fraction, rng):
    holes = rng.rand(*X.shape) < fraction
    return np.where(holes, np.nan, X), holes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--missing", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    args = parser.parse_args()
    _limits = limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    X = load_digits().data / 16.0
    results = {}  # (imputer, training rows) -> list of (rmse, seconds)
    for seed in args.seeds:
        rng = np.random.RandomState(seed)
        perm = rng.permutation(len(X))
        train, test = X[perm[:int(0.8 * len(X))]], X[perm[int(0.8 * len(X)):]]
        corrupted, holes = knock_out(test, args.missing, rng)
        for rows, train_rows in [("complete", train),
                                 (f"{args.missing:.0%} missing", knock_out(train, args.missing,
                                                                            rng)[0])]:
            for name, imputer in imputers(seed).items():
                filled, seconds = timed(fit_impute, imputer, train_rows, corrupted)
                rmse = float(np.sqrt(np.mean((filled - test)[holes] ** 2)))
                results.setdefault((name, rows), []).append((rmse, seconds))
                print(f"seed {seed}  {rows:<12} {name:<55} RMSE {rmse:.4f}  {seconds:.1f}s",
                      flush=True)
    table = [[name, rows, f"{np.mean([r for r, _ in v]):.4f}",
              f"{np.std([r for r, _ in v]):.4f}", f"{np.mean([s for _, s in v]):.1f}"]
             for (name, rows), v in results.items()]
    write_report(args.output, "imputation", "Imputation (load_digits)", args.threads,
                 f"{args.missing:.0%} of the test entries missing at random; RMSE on them "
                 f"(pixels in [0, 1]); mean and std over seeds {args.seeds}; fit + impute "
                 "seconds.", ["imputer", "training rows", "RMSE", "std", "seconds"], table)


if __name__ == "__main__":
    main()
