"""Density study: the densities of the codes a fitted image model can draw from: the
Gaussian mixture of its codes that ``sample`` draws from (``n_prior_components``), at
other component counts and widenings, and ``flow_``, the prior trained with the model
(which inference and the scores use); no choice reads a test split.

What it measures
    Per task and seed, the training split of ``benchmarks/samples.py`` is itself split
    80/20 into *fit* images and *validation* images (its test split is not read). Each
    estimator at its defaults (``image_shape``) is fitted on the fit images; then ``sample()``
    of the model with its codes' mixture replaced by one of:

    - ``chosen``: the package's, :func:`skflowgen._sampling.fit_code_mixture` of the codes
      of the fit images (20 components), each member's widened as ``sample`` chooses
      (:func:`skflowgen._sampling.choose_widening`, on the fit images alone);
    - ``mixture``: the same mixture at fixed widenings: 10, 20 or 40 components at 1.1,
      and 20 components at 0.9 to 2.0;
    - ``prior``: none, ``flow_``.

    Metrics against the validation images, in the features of a classifier trained on the
    fit images (those of ``samples.py``): FD, coverage, precision and the data-copying Z
    against the fit images.

How to run
    python benchmarks/studies/densities.py digits --seeds 0 1 2 --n-jobs 2
    python benchmarks/studies/densities.py fashion --seeds 0 1 --n-jobs 2 --data-dir DIR
    python benchmarks/studies/densities.py digits --seeds 0 1 2 --n-jobs 2 --study widening
    python benchmarks/studies/densities.py fashion --seeds 0 1 --n-jobs 2 --study batch \
        --models 'GLF[batch_size=16]' 'GLF[batch_size=250]' ...

``--models`` takes an estimator at its defaults (``GLF``, ``LFP``) or a variant of one, its
parameters in brackets; ``--study`` names the raw file and the section of the results.

Raw rows go to ``--raw`` (``densities_<study>_<task>_raw.csv``) as each run ends and are not
run again; the table goes to the ``densities-<study>-<task>`` section of ``--output``.
"""

import argparse
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks
import _common  # noqa: E402
import samples  # noqa: E402

HERE = Path(__file__).resolve().parent
FIELDS = ["task", "seed", "model", "sampler", "components", "temperature", "fd", "coverage",
          "precision", "copying", "fit_s"]
# (components, widening) of the mixtures at fixed widenings: the neighbours of the default's
# 20 components, and widenings up to 2
MIXTURES = [(10, 1.1), (20, 1.1), (40, 1.1), (20, 0.9), (20, 1.0), (20, 1.2), (20, 1.3),
            (20, 1.5), (20, 1.7), (20, 2.0)]


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X)


def samplers(model):
    """``{(sampler, components, widening): sample}``: ``sample`` of ``model`` (``chosen``:
    its mixture widened per member as the package chooses, the widenings named), of copies
    of it drawing from each mixture of :data:`MIXTURES` of its codes, and from ``flow_``."""
    from skflowgen._sampling import fit_code_mixture
    codes = model._training_codes(torch.device("cpu")).numpy()
    chosen = model._code_mixture()[2][:, 0, 0, 0] / fit_code_mixture(
        codes, model._prior_components, model._inference_seed, 1.0)[2][:, 0, 0, 0]
    out = {("prior", "", ""): samples.prior_draw(model),
           ("chosen", model._prior_components,
            "/".join(f"{w:.1f}" for w in np.round(chosen, 1))): model.sample}
    for components, temperature in MIXTURES:
        copied = pickle.loads(pickle.dumps(model))
        mixture = fit_code_mixture(codes, components, model._inference_seed, temperature)
        copied._code_mixture = lambda mixture=mixture: mixture
        out["mixture", components, temperature] = copied.sample
    return out


def run_samples(task, seed, model_name, data_dir):
    shape = samples.SHAPES[task]
    X_train, _, y_train, _ = samples.split(task, seed, data_dir)
    X_fit, X_val, y_fit, _ = train_test_split(X_train, y_train, test_size=0.2,
                                              stratify=y_train, random_state=seed)
    space = (samples.FeatureSpace(X_fit, y_fit, seed) if task == "digits"
             else samples.CNNFeatureSpace(X_fit, y_fit, seed, shape))
    copying = samples.Copying(space(X_fit), space(X_val))
    start = time.perf_counter()
    model = fit_quietly(samples.estimator(model_name, shape, seed), X_fit)
    fit_s = time.perf_counter() - start
    rows = []
    for (sampler, components, temperature), sample in samplers(model).items():
        scores = [samples.evaluate(space, X_val, sample(len(X_val), seed + 1000 * k), copying)
                  for k in range(samples.DRAWS[task])]
        rows.append(dict(task=task, seed=seed, model=model_name, sampler=sampler,
                         components=components, temperature=temperature, fit_s=fit_s,
                         **{key: np.mean([s[key] for s in scores])
                            for key in ("fd", "coverage", "precision", "copying")}))
    return rows


def report(rows, args):
    def seconds(mine):  # the fits timed (rows carried over from before fit_s have none)
        fit = [float(r["fit_s"]) for r in mine if r["fit_s"]]
        return f"{np.mean(fit):.0f}" if fit else ""
    def density(r):  # the widenings chosen differ per fit: one row for them all
        return r["sampler"], r["components"], "" if r["sampler"] == "chosen" else r["temperature"]
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for sampler in dict.fromkeys(density(r) for r in rows):
            mine = [r for r in rows if r["model"] == model and density(r) == sampler]
            if not mine:
                continue
            fd = [float(r["fd"]) for r in mine]
            if sampler[0] == "chosen":
                sampler = (*sampler[:2], " ; ".join(r["temperature"] for r in mine))
            table.append([model, *sampler, f"{np.mean(fd):.3f}",
                          " / ".join(f"{v:.2f}" for v in fd),
                          *(f"{np.mean([float(r[m]) for r in mine]):.2f}"
                            for m in ("coverage", "precision")),
                          f"{np.mean([float(r['copying']) for r in mine]):.1f}",
                          seconds(mine)])
    seeds = sorted({int(r["seed"]) for r in rows})
    return (f"the training split of `benchmarks/samples.py` (seeds {', '.join(map(str, seeds))}) "
            "split 80/20 into fit and validation images; the test split is not read. Each "
            "estimator at its defaults (or the variant named) fitted on the fit images, in "
            "the fit seconds given (one thread); its `sample()` with each "
            "density of its codes: `chosen`, the package's Gaussian mixture of the codes (20 "
            "components) widened as `sample()` chooses per member (the widenings chosen, per "
            "seed); `mixture`, the same mixture at fixed widenings and other component counts; "
            "`prior`: `flow_`. FD, coverage and precision against the validation "
            "images in the features of a classifier trained on the fit images, each the mean "
            f"of {samples.DRAWS[args.task]} draw(s) of as many samples as validation images; "
            "copying Z against the fit images (Meehan et al. 2020: 0 as far as new images, "
            "below 0 closer)."), \
        ["model", "sampler", "components", "widening", "FD", "FD per seed", "coverage",
         "precision", "copying Z", "fit s"], table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(samples.SHAPES))
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["GLF", "LFP"])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--study", default="samples",
                        help="names the raw file and the section (e.g. 'batch' for variants)")
    args = parser.parse_args()
    args.raw = args.raw or HERE / f"densities_{args.study}_{args.task}_raw.csv"
    tasks = [(args.task, seed, m) for seed in args.seeds for m in args.models]

    def key(r):
        return r["task"], int(r["seed"]), r["model"]

    def one(*task):
        limits = _common.limit_threads(1)  # noqa: F841 (kept alive for the run)
        return run_samples(*task, data_dir=args.data_dir)
    done = _common.run_resumable(args.raw, FIELDS, tasks, one, key, args.n_jobs, True)
    description, header, table = report([r for r in done if key(r) in set(tasks)], args)
    name = "load_digits" if args.task == "digits" else "Fashion-MNIST"
    _common.write_report(args.output, f"densities-{args.study}-{args.task}",
                         f"Density study, {args.study}: {name}", 1, f"{name}: {description}",
                         header, table)


if __name__ == "__main__":
    main()
