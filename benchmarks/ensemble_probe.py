"""Would an ensemble of small models rank anomalies better? A probe on ADBench.

What it measures
    For each ADBench set and seed (the ``adbench.py`` split and scaling), ``--members`` models
    of one estimator are fitted with different ``random_state`` values. Each member's test
    scores are standardised by its own training scores (``(s - median) / std``, a per-row
    transform that does not depend on the other test rows), and the ensemble score is their
    mean; the plain mean of the members' scores (their log-densities) is printed beside it.
    Printed per set: the mean AUROC of the single members and both ensembles' AUROC; at the
    end, the means over the sets. It probes a design before it is built into the
    estimators (an ``n_estimators`` parameter); it is not a detector of the package.

How to run
    python benchmarks/ensemble_probe.py ../shared/data/adbench --model glf --members 5 \
        --params "max_iter=10,score_method='joint',covariance_type='spherical'"
"""

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MinMaxScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def probe(cls, params, members, X_train, X_test, y_test, seed):
    """``(mean single-member AUROC, standardised-mean AUROC, plain-mean AUROC)``, x100."""
    singles, standardised, plain = [], [], []
    for k in range(members):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = cls(random_state=100 * seed + k, **params).fit(X_train)
        train, test = model.score_samples(X_train), model.score_samples(X_test)
        singles.append(roc_auc_score(y_test, -test))
        standardised.append((test - np.median(train)) / train.std())
        plain.append(test)
    return (100 * np.mean(singles), 100 * roc_auc_score(y_test, -np.mean(standardised, axis=0)),
            100 * roc_auc_score(y_test, -np.mean(plain, axis=0)))


def main(argv=None):
    parser = _common.probe_parser(__doc__)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    args = parser.parse_args(argv)
    _limits = _common.limit_threads(1)  # noqa: F841
    params = _common.parse_params(args.params)
    cls = _common.estimator_class(args.model)
    print(_common.command_line())
    results = []
    for path in _common.list_datasets(args.data_dir, args.datasets):
        X, y = _common.subsample(*_common.load_npz(path), 10000)
        rows = []
        for seed in args.seeds:
            X_train, X_test, _, y_test = _common.adbench_split(X, y, seed)
            scaler = MinMaxScaler().fit(X_train)
            rows.append(probe(cls, params, args.members, scaler.transform(X_train),
                              scaler.transform(X_test), y_test, seed))
        single, ensemble, mean = np.mean(rows, axis=0)
        results.append((single, ensemble, mean))
        print(f"{_common.dataset_name(path):>12}: single {single:.1f}  ensemble of "
              f"{args.members} {ensemble:.1f}  ({ensemble - single:+.1f}), plain mean "
              f"{mean:.1f}", flush=True)
    single, ensemble, mean = np.mean(results, axis=0)
    print(f"{'mean':>12}: single {single:.1f}  ensemble of {args.members} {ensemble:.1f}  "
          f"({ensemble - single:+.1f}), plain mean {mean:.1f} over {len(results)} sets")


if __name__ == "__main__":
    main()
