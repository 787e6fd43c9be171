"""Density study: the two latent densities of a fitted image model, ``flow_`` (the prior
trained with the model, which inference and the scores use) and ``sampling_flow_`` (the
Gaussian-mixture flow fitted to the codes after training, which ``sample`` draws from), and
the samplers ``sample`` could use; no choice reads a test split.

What it measures
    ``samples``: per task and seed, the training split of ``benchmarks/samples.py`` is
    itself split 80/20 into *fit* images and *validation* images (its test split is not
    read). Each estimator at its defaults (``image_shape``) is fitted on the fit images; then
    ``sample()`` of a copy of the model whose ``sampling_flow_`` is replaced by one of:

    - ``flow``: the package's sampler, a flow with a Gaussian-mixture base fitted to the
      codes (EM on the whitened codes, then maximum likelihood early-stopped on the codes of
      the rows the fit held out);
    - ``mixture``: the same mixture from EM alone (the flow's start: its couplings are the
      identity, so it is a Gaussian mixture of the codes);

    each widened by a temperature (0.9 to 1.3, or ``held-out``: per member, the one of 0.8,
    0.85, ..., 1.6 under which the held-out rows' codes are most likely); and ``prior``:
    ``flow_``.
    Metrics against the validation images, in the features of a classifier trained on the
    fit images (those of ``samples.py``): FD, coverage, precision, the data-copying Z
    against the fit images, and the temperatures chosen.

    ``scores``: per held-out class and seed of ``benchmarks/images.py``, each estimator at
    its defaults; AUPRC of the density scores (``'joint'``, ``'marginal'``) and the mean
    log-likelihood of the test inliers (``score``) with ``flow_`` and with
    ``sampling_flow_`` in its place (for LFP also the prior its Langevin inference climbs).

How to run
    python benchmarks/studies/densities.py samples digits --seeds 0 1 2 --n-jobs 2
    python benchmarks/studies/densities.py samples fashion --seeds 0 --data-dir DIR
    python benchmarks/studies/densities.py scores digits --seeds 0 --n-jobs 2

Raw rows go to ``--raw`` as each run ends and are not run again; the table goes to the
``densities-<mode>-<task>`` section of ``--output``.
"""

import argparse
import copy
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks
import _common  # noqa: E402
import images  # noqa: E402
import samples  # noqa: E402

HERE = Path(__file__).resolve().parent
FIELDS = {"samples": ["task", "seed", "model", "sampler", "temperature", "chosen", "fd",
                      "coverage", "precision", "copying"],
          "scores": ["task", "held_out", "seed", "model", "density", "joint", "marginal",
                     "score"]}
TEMPERATURES = ("0.9", "1.0", "1.1", "1.2", "1.3", "held-out")
HELD_OUT_GRID = np.round(np.arange(0.8, 1.6001, 0.05), 2)


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X)


def with_module(model, name, module):
    """A copy of ``model`` with ``module`` as its attribute ``name``."""
    copied = pickle.loads(pickle.dumps(model))
    setattr(copied, name, module)
    return copied


# ---------------------------------------------------------------- samples
def widen_to_held_out(flow, z_held):
    """Widen each member's mixture by the temperature of :data:`HELD_OUT_GRID` under which
    the held-out codes ``z_held`` are most likely; return those temperatures."""
    def held_out(temperature):
        widened = copy.deepcopy(flow)
        widened.base.widen(temperature)
        with torch.no_grad():
            return widened.log_prob(z_held).mean(dim=1).numpy()  # (n_members,)
    chosen = HELD_OUT_GRID[np.argmax([held_out(t) for t in HELD_OUT_GRID], axis=0)]
    for member, temperature in enumerate(chosen):  # each member's components, scaled alone
        flow.base.log_diagonal.data[member] += np.log(temperature)
        flow.base.lower.data[member] *= temperature
    return chosen


def samplers(model, X_fit, seed):
    """``{(sampler, temperature): (flow, chosen)}`` for the codes of ``model``'s training
    rows (the fit images less those it held out), early-stopped on the held-out rows."""
    from skflowgen._training import torch_generator
    held_rows = {row.tobytes() for row in model._held_out_rows.astype(np.float32)}
    kept = np.array([row.astype(np.float32).tobytes() not in held_rows for row in X_fit])

    def codes(rows):
        x = model._to_device(rows, model._device())
        return torch.as_tensor(model._inferred_codes(x), dtype=torch.float32)
    z, z_held = codes(X_fit[kept]), codes(model._held_out_rows)
    out = {("prior", ""): (model.flow_, [])}
    for name, stop_on in (("flow", z_held), ("mixture", z_held[:, :0])):
        flow = model._new_flow(torch_generator(seed, "cpu"), model._prior_components)
        flow.fit(z, stop_on, torch_generator(seed + 1, "cpu"))
        flow.eval()
        for temperature in TEMPERATURES:
            widened = copy.deepcopy(flow)
            if temperature == "held-out":
                chosen = widen_to_held_out(widened, z_held)
            else:
                chosen = [float(temperature)] * len(z)
                widened.base.widen(float(temperature))
            out[name, temperature] = widened, chosen
    return out


def run_samples(task, seed, model_name, data_dir):
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    shape = samples.SHAPES[task]
    X_train, _, y_train, _ = samples.split(task, seed, data_dir)
    X_fit, X_val, y_fit, _ = train_test_split(X_train, y_train, test_size=0.2,
                                              stratify=y_train, random_state=seed)
    space = (samples.FeatureSpace(X_fit, y_fit, seed) if task == "digits"
             else samples.CNNFeatureSpace(X_fit, y_fit, seed, shape))
    copying = samples.Copying(space(X_fit), space(X_val))
    cls = dict(GLF=GenerativeLatentFlow, LFP=LangevinFlowPriorGenerator)[model_name]
    model = fit_quietly(cls(image_shape=shape, random_state=seed), X_fit)
    rows = []
    for (sampler, temperature), (flow, chosen) in samplers(model, X_fit, seed).items():
        sample = with_module(model, "sampling_flow_", flow).sample
        scores = [samples.evaluate(space, X_val, sample(len(X_val), seed + 1000 * k), copying)
                  for k in range(samples.DRAWS[task])]
        rows.append(dict(task=task, seed=seed, model=model_name, sampler=sampler,
                         temperature=temperature, chosen=" ".join(f"{t:.2f}" for t in chosen),
                         **{key: np.mean([s[key] for s in scores])
                            for key in ("fd", "coverage", "precision", "copying")}))
    return rows


def report_samples(rows, args):
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for sampler, temperature in dict.fromkeys((r["sampler"], r["temperature"])
                                                  for r in rows):
            mine = [r for r in rows if r["model"] == model and r["sampler"] == sampler
                    and r["temperature"] == temperature]
            fd = [float(r["fd"]) for r in mine]
            chosen = [float(t) for r in mine for t in r["chosen"].split()]
            table.append([model, sampler, temperature, f"{np.mean(fd):.3f}",
                          " / ".join(f"{v:.2f}" for v in fd),
                          *(f"{np.mean([float(r[m]) for r in mine]):.2f}"
                            for m in ("coverage", "precision")),
                          f"{np.mean([float(r['copying']) for r in mine]):.1f}",
                          f"{min(chosen):.2f}-{max(chosen):.2f}" if chosen else ""])
    seeds = sorted({int(r["seed"]) for r in rows})
    return (f"the training split of `benchmarks/samples.py` (seeds {', '.join(map(str, seeds))}) "
            "split 80/20 into fit and validation images; the test split is not read. Each "
            "estimator at its defaults fitted on the fit images; its `sample()` with each "
            "sampler of its codes in place of `sampling_flow_`. FD, coverage and precision "
            "against the validation images in the features of a classifier trained on the fit "
            f"images, each the mean of {samples.DRAWS[args.task]} draw(s) of as many samples "
            "as validation images; copying Z against the fit images (Meehan et al. 2020: 0 as "
            "far as new images, below 0 closer). `flow`: EM, then maximum likelihood "
            "early-stopped on the held-out rows' codes; `mixture`: EM alone; `prior`: "
            "`flow_`. Temperature `held-out`: per member, the one under which the held-out "
            "rows' codes are most likely."), \
        ["model", "sampler", "temperature", "FD", "FD per seed", "coverage", "precision",
         "copying Z", "temperatures chosen"], table


# ---------------------------------------------------------------- scores
def run_scores(task, held_out, seed, model_name, data_dir):
    spec = images.TASKS[task]
    X, y = _common.load_images(task, data_dir)
    X_train, X_test, y_test = images.split(X, y, held_out, seed, spec["max_train"],
                                           spec["max_test"])
    model = fit_quietly(images.make_model(model_name.lower(), seed, spec["shape"]), X_train)
    rows = []
    for density, fitted in (("flow_", model),
                            ("sampling_flow_", with_module(model, "flow_",
                                                           model.sampling_flow_))):
        row = dict(task=task, held_out=held_out, seed=seed, model=model_name, density=density,
                   score=fitted.score(X_test[y_test == 0]))
        for method in ("joint", "marginal"):
            fitted.set_params(score_method=method)
            row[method] = images.metrics(y_test, -fitted.score_samples(X_test))[0]
        rows.append(row)
    return rows


def report_scores(rows, args):
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for density in ("flow_", "sampling_flow_"):
            mine = [r for r in rows if r["model"] == model and r["density"] == density]
            table.append([model, density, *(f"{np.mean([float(r[m]) for r in mine]):.{d}f}"
                                            for m, d in (("joint", 1), ("marginal", 1),
                                                         ("score", 2)))])
    seeds = sorted({int(r["seed"]) for r in rows})
    classes = sorted({int(r["held_out"]) for r in rows})
    return (f"the held-out-class task of `benchmarks/images.py` ({len(classes)} classes, seeds "
            f"{', '.join(map(str, seeds))}); each estimator at its defaults, its scores with "
            "`flow_` and with `sampling_flow_` in its place (LFP's Langevin inference then "
            "climbs it too). AUPRC (mean over classes and seeds) of `score_method='joint'` "
            "and `'marginal'`; `score`: the mean log-likelihood of the test inliers (images "
            "of the training classes not trained on)."), \
        ["model", "density", "AUPRC joint", "AUPRC marginal", "score (inliers)"], table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=list(FIELDS))
    parser.add_argument("task", choices=list(samples.SHAPES))
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--models", nargs="+", default=["GLF", "LFP"])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    args = parser.parse_args()
    args.raw = args.raw or HERE / f"densities_{args.mode}_{args.task}_raw.csv"
    if args.mode == "samples":
        tasks = [(args.task, seed, m) for seed in args.seeds for m in args.models]
        run, key = run_samples, lambda r: (r["task"], int(r["seed"]), r["model"])
    else:
        tasks = [(args.task, c, seed, m) for seed in args.seeds for c in args.classes
                 for m in args.models]
        run, key = run_scores, lambda r: (r["task"], int(r["held_out"]), int(r["seed"]),
                                          r["model"])

    def one(*task):
        limits = _common.limit_threads(1)  # noqa: F841 (kept alive for the run)
        return run(*task, data_dir=args.data_dir)
    done = _common.run_resumable(args.raw, FIELDS[args.mode], tasks, one, key, args.n_jobs,
                                 True)
    done = [r for r in done if key(r) in set(tasks)]
    description, header, table = (report_samples if args.mode == "samples"
                                  else report_scores)(done, args)
    name = "load_digits" if args.task == "digits" else "Fashion-MNIST"
    _common.write_report(args.output, f"densities-{args.mode}-{args.task}",
                         f"Density study, {args.mode}: {name}", 1, f"{name}: {description}",
                         header, table)


if __name__ == "__main__":
    main()
