"""Fit time at the defaults, against the former defaults and IsolationForest.

What it measures
    Seconds of one ``fit`` (which includes scoring every row given to it for ``offset_``)
    of each estimator at its defaults, of the same estimator at the former table defaults
    (GLF: ten epochs scored by ``'joint'``; LFP: ten epochs scored by ``'marginal'``; set
    explicitly, so both run the same code) and of ``IsolationForest()``; medians of
    ``--repeats`` fits taken in turns (a slow spell of a shared machine hits every model
    alike), one thread. Data: an ADBench set (min-max scaled, default cardio) and the
    synthetic 10,000 x 20 table of ``benchmarks/speed.py``.

How to run
    python benchmarks/fit_time.py ../shared/data/adbench [--datasets cardio synthetic]
        [--repeats 5] [--output benchmarks/RESULTS.md]
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

FORMER = {"glf": dict(max_iter=10, score_method="joint"),
          "lfp": dict(max_iter=10, score_method="marginal")}


def models():
    from sklearn.ensemble import IsolationForest
    out = {}
    for key, label in (("glf", "GLF"), ("lfp", "LFP")):
        cls = _common.estimator_class(key)
        out[label] = lambda cls=cls: cls(random_state=0)
        out[f"{label}, former defaults"] = lambda cls=cls, key=key: cls(random_state=0,
                                                                        **FORMER[key])
    out["IsolationForest"] = lambda: IsolationForest(random_state=0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--datasets", nargs="+", default=["cardio", "synthetic"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    args = p.parse_args(argv)
    limits = _common.limit_threads(1)  # noqa: F841
    factories = models()
    rows = []
    for name in args.datasets:
        label, X = _common.load_table(name, args.data_dir)
        seconds = {model: [] for model in factories}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for factory in factories.values():  # untimed: imports, lazy initialisation
                factory().fit(X[:256])
            for _ in range(args.repeats):
                for model, factory in factories.items():
                    seconds[model].append(_common.timed(factory().fit, X)[1])
        median = {model: float(np.median(t)) for model, t in seconds.items()}
        for model in ("GLF", "LFP"):
            former = median[f"{model}, former defaults"]
            rows.append([label, model, f"{median[model]:.3f}", f"{former:.3f}",
                         f"**{median[model] / former:.2f}**",
                         f"{median['IsolationForest']:.3f}",
                         f"{median[model] / median['IsolationForest']:.1f}"])
    _common.write_report(
        args.output, "fit-time", "Fit time at the defaults", 1,
        f"Medians of {args.repeats} fits per model, taken in turns. Former defaults: "
        "ten epochs, scored by GLF's `'joint'` and LFP's `'marginal'` (now: GLF one epoch, "
        "LFP five, both scored by `'fused'`); a fit includes scoring its rows for `offset_`.",
        ["data", "model", "fit s, defaults", "fit s, former defaults",
         "defaults / former", "IsolationForest fit s", "defaults / IsolationForest"], rows)


if __name__ == "__main__":
    main()
