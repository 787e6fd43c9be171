"""How many new normal rows ``predict`` flags: the share should be about ``contamination``.

What it measures
    For each set and seed: the normal rows (all of ``load_digits``, scaled to [0, 1] and fitted
    with ``image_shape=(1, 8, 8)``; the ``y == 0`` rows of an ADBench set) split at random into
    two halves; each detector is fitted on one half with ``contamination=0.1`` and predicts the
    other half, rows of the same distribution it did not fit. Reported: the share of those new
    rows flagged (-1), for both estimators at their defaults, with every ``score_method`` and
    after ``set_params`` of each parameter that moves a score on the fitted model (checked
    against that setting's ``contamination``), beside scikit-learn's detectors on the same
    halves. ``training rows`` is the share that the former offset gives, the percentile of the
    training rows' own scores (of the training rows the model keeps).

How to run
    python benchmarks/predict_share.py ../shared/data/adbench --datasets digits cardio thyroid

    Raw rows go to ``--raw`` as the run goes; ``--resume`` keeps those already there. The table
    is printed and written to the ``predict-share`` section of ``--output``, with what holding
    rows out of training cost in ranking: the mean AUROC and AP of the estimators' variants in
    ``--adbench-raw`` (rows of ``adbench.py`` runs with ``validation_fraction`` in brackets;
    ``glf-former`` and ``lfp-former`` are the rows of the version that trained on every row).
"""

import argparse
import csv
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CONTAMINATION = 0.1
TOLERANCE = 0.05
RAW_FIELDS = ["dataset", "seed", "detector", "setting", "contamination", "share"]
# set on a fitted model, one at a time (each estimator's own parameters where named)
SETTINGS = {
    "glf": ["score_method='fused'", "score_method='joint'", "score_method='marginal'",
            "score_method='knn'",
            "score_method='lof'", "contamination=0.05", "contamination=0.2",
            "n_importance_samples=16"],
    "lfp": ["score_method='fused'", "score_method='joint'", "score_method='marginal'",
            "score_method='knn'",
            "score_method='lof'", "contamination=0.05", "contamination=0.2",
            "n_importance_samples=32", "chain_init='prior'", "inference_steps=20",
            "chain_init='prior',inference_steps=20", "step_size=0.5", "n_steps=20"],
}


def load(data_dir, name):
    """``(normal rows, image_shape)`` of a set."""
    if name == "digits":
        return load_digits().data / 16.0, (1, 8, 8)
    X, y = _common.load_npz(_common.list_datasets(data_dir, [name])[0])
    return X[y == 0], None


def run_one(data_dir, name, seed, threads, params):
    """The raw rows of one set and seed."""
    limits = _common.limit_threads(threads)  # noqa: F841 (kept alive for the run)
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.svm import OneClassSVM

    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    X, image_shape = load(data_dir, name)
    order = np.random.RandomState(seed).permutation(len(X))
    fit_rows, new_rows = X[order[:len(X) // 2]], X[order[len(X) // 2:]]
    rows = []

    def record(detector, setting, contamination, labels):
        rows.append(dict(dataset=name, seed=seed, detector=detector, setting=setting,
                         contamination=contamination, share=float(np.mean(labels == -1))))
    baselines = {"iforest": IsolationForest(contamination=CONTAMINATION, random_state=seed),
                 "lof": LocalOutlierFactor(novelty=True, contamination=CONTAMINATION),
                 "ocsvm": OneClassSVM(nu=CONTAMINATION)}
    for detector, model in baselines.items() if not params else ():  # once, without params
        record(detector, "", CONTAMINATION, model.fit(fit_rows).predict(new_rows))
    for kind, cls in (("glf", GenerativeLatentFlow), ("lfp", LangevinFlowPriorGenerator)):
        detector = f"{kind}[{params}]" if params else kind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls(image_shape=image_shape, contamination=CONTAMINATION,
                        random_state=seed, **_common.parse_params(params)).fit(fit_rows)
        defaults = model.get_params()
        record(detector, "defaults", CONTAMINATION, model.predict(new_rows))
        if model.novelty:  # without, the default offset is the training rows' percentile
            trained = model._reference_rows[len(model._held_out_rows):]  # training rows kept
            training = np.percentile(model.score_samples(trained), 100 * CONTAMINATION)
            record(detector, "training rows", CONTAMINATION,
                   np.where(model.score_samples(new_rows) < training, -1, 1))
        for setting in SETTINGS[kind]:
            model.set_params(**_common.parse_params(setting))
            record(detector, setting, model.contamination, model.predict(new_rows))
            model.set_params(**defaults)
    return rows


def report(rows, args):
    datasets = [name for name in args.datasets if any(r["dataset"] == name for r in rows)]
    seeds = sorted({int(r["seed"]) for r in rows})
    columns = list(dict.fromkeys((r["detector"], r["setting"]) for r in rows))
    table, counts = [], {}
    for detector, setting in columns:
        line = [f"{detector} {setting}".strip()]
        for name in datasets:
            cells = [r for r in rows if r["dataset"] == name and r["detector"] == detector
                     and r["setting"] == setting]
            shares = [float(r["share"]) for r in cells]
            target = float(cells[0]["contamination"]) if cells else CONTAMINATION
            ok = [abs(s - target) <= TOLERANCE for s in shares]
            if detector[:3] in ("glf", "lfp") and setting != "training rows":
                variant = detector.replace("glf", "").replace("lfp", "") or "defaults"
                within, total = counts.get(variant, (0, 0))
                counts[variant] = (within + sum(ok), total + len(ok))
            line.append(" / ".join(f"{100 * s:.1f}" + ("" if k else "*")
                                   for s, k in zip(shares, ok)) + f" (c = {100 * target:g})")
        table.append(line)
    description = (
        f"Share of new normal rows flagged (%), one value per seed ({', '.join(map(str, seeds))}); "
        f"`*` marks a share more than {100 * TOLERANCE:g} points from the setting's "
        "contamination `c`. Each estimator is fitted once per set and seed at its defaults "
        "(`image_shape=(1, 8, 8)` on digits; `novelty=False`: every row trains and `offset_` "
        "is the percentile of the scores of the rows given to `fit`), and again with the "
        "parameters in brackets (`novelty=True`: a fifth of the rows held out of training "
        "set `offset_`); the settings below `defaults` are set on that fitted model. "
        "`training rows`: the threshold `novelty=False` uses, the percentile of the training "
        "rows' own scores, on the `novelty=True` model.\n\n"
        f"Estimators' checks within {100 * TOLERANCE:g} points (both estimators, every setting "
        "but `training rows`, every set and seed): " + "; ".join(
            f"{variant}: **{within} of {total}**" for variant, (within, total) in counts.items()))
    _common.write_report(args.output, "predict-share", "predict on new rows", args.threads,
                         description, ["detector, setting"] + datasets, table,
                         footer=ranking_cost(args.adbench_raw))


def ranking_cost(path):
    """A Markdown table of the mean AUROC and AP (over sets and seeds) of every GLF and LFP
    variant in an ``adbench.py`` raw file."""
    if not path.exists():
        return ""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["detector"][:3] in ("glf", "lfp")
                and not r["error"]]
    table = []
    for detector in sorted({r["detector"] for r in rows}):
        mine = [r for r in rows if r["detector"] == detector]
        table.append([detector, len({r["dataset"] for r in mine}), len(mine),
                      f"{np.mean([float(r['auroc']) for r in mine]):.2f}",
                      f"{np.mean([float(r['ap']) for r in mine]):.2f}"])
    return "\n".join([
        "### What holding rows out costs in ranking (ADBench)", "",
        f"Mean over sets and seeds of the rows in `{path.name}` (`adbench.py`'s protocol: "
        "contaminated training rows, test AUROC and AP x 100). The defaults (`novelty=False`) "
        "train on every row; `novelty=True` holds `validation_fraction` of the training rows "
        "out (0.2 by default) to set `offset_`.", "",
        _common.markdown_table(["detector", "sets", "runs", "mean AUROC", "mean AP"], table)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder of ADBench .npz files")
    parser.add_argument("--datasets", nargs="+", default=["digits", "cardio", "thyroid"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--raw", type=Path,
                        default=_common.RESULTS_DIR / "predict_share_raw.csv")
    parser.add_argument("--adbench-raw", type=Path,
                        default=_common.RESULTS_DIR / "adbench_raw.csv")
    parser.add_argument("--params", default="",
                        help="estimator parameters set before fitting, 'validation_fraction=0.3'")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    glf = f"glf[{args.params}]" if args.params else "glf"
    done = _common.run_resumable(
        args.raw, RAW_FIELDS, [(name, seed) for name in args.datasets for seed in args.seeds],
        partial(run_one, args.data_dir, threads=args.threads, params=args.params),
        lambda r: (r["dataset"], int(r["seed"])) if r["detector"] == glf else None,
        args.n_jobs, args.resume)
    wanted = {(name, seed) for name in args.datasets for seed in args.seeds}
    report([r for r in done if (r["dataset"], int(r["seed"])) in wanted], args)


if __name__ == "__main__":
    main()
