"""Anomaly ranking along training: test AUROC and held-out likelihood after every epoch.

What it measures
    For each ADBench set (seed 1 split, ``MinMaxScaler`` fitted on the train part), one model is
    trained one epoch at a time (``warm_start``) on 90% of the train part; after each epoch it
    prints the test AUROC of ``-score_samples`` and the held-out mean score of the other 10%
    (trimmed: its lowest ``contamination`` share left out). It shows whether an unsupervised
    rule that watches the held-out likelihood would stop where the ranking is best.

How to run
    python benchmarks/training_curve.py ../shared/data/adbench --datasets cardio Ionosphere \
        --model glf --epochs 60 --params "covariance_type='spherical'"
"""

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def curve(model, X_fit, X_val, X_test, y_test, epochs):
    """Rows ``(epoch, trimmed held-out mean score, test AUROC x100)``."""
    rows = []
    cut = int(model.contamination * len(X_val))
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_fit)
        held_out = np.sort(model.score_samples(X_val))[cut:].mean()
        rows.append((epoch, held_out, 100 * roc_auc_score(y_test, -model.score_samples(X_test))))
    return np.array(rows)


def main(argv=None):
    parser = _common.probe_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="print every k-th epoch")
    args = parser.parse_args(argv)
    _limits = _common.limit_threads(1)  # noqa: F841
    params = _common.parse_params(args.params)
    cls = _common.estimator_class(args.model)
    print(_common.command_line())
    for path in _common.list_datasets(args.data_dir, args.datasets):
        X, y = _common.subsample(*_common.load_npz(path), 10000)
        X_train, X_test, _, y_test = _common.adbench_split(X, y, 1)
        scaler = MinMaxScaler().fit(X_train)
        X_fit, X_val = train_test_split(scaler.transform(X_train), test_size=0.1, random_state=0)
        model = cls(random_state=1, max_iter=1, warm_start=True, **params)
        rows = curve(model, X_fit, X_val, scaler.transform(X_test), y_test, args.epochs)
        best_val = rows[np.argmax(rows[:, 1])]
        print(f"{_common.dataset_name(path)}: best test AUROC {rows[:, 2].max():.1f} at epoch "
              f"{rows[np.argmax(rows[:, 2]), 0]:.0f}; at the best held-out likelihood (epoch "
              f"{best_val[0]:.0f}) {best_val[2]:.1f}")
        print("  epoch:AUROC " + " ".join(f"{e:.0f}:{a:.1f}" for e, _, a in
                                          rows[args.every - 1::args.every]))


if __name__ == "__main__":
    main()
