"""Detection study on images: which features of a fitted model, which neighbour scores and
which combinations rank a held-out class best, all chosen without labels.

What it measures
    For each task (``load_digits``, Fashion-MNIST), held-out class, seed (the split of
    ``benchmarks/images.py``) and model (GLF, LFP at the defaults, plus ``--params``), one fit;
    then, for the training rows the model keeps (each scored as a new row: it is left out of
    its own neighbours) and for the test rows, *parts*:

    - in each of four spaces, the code ``z~`` (``code``), the encoder's feature maps after its
      first and second stride-2 convolution (``f1``, ``f2``: 32 x 14 x 14 and 64 x 7 x 7 on
      28 x 28 images, flattened) and the pixels (``pixels``): minus the log distance to the
      k-th nearest training row (``-knn-k1``, ``-knn-k5``) and minus the local outlier factor
      (``-lof-k5``, ``-lof-k10``, ``-lof-k20``), each per member, then averaged over the
      members (the package's ``'knn'`` and ``'lof'`` are ``code-knn-k5`` and ``code-lof-k5``);
    - the reconstruction term ``log p(x | x^)`` of the ensemble's reconstruction
      (``reconstruction``) and the flow's log-density of the code (``latent``).

    Variants, each a rule applied alike to every class, are scored by AUPRC (the papers'
    ``auc(recall, precision)``), AP and AUROC: each part alone, and *fusions*, the mean of
    parts each standardised by the median and interquartile range of its scores of the
    training rows (no label is read). One row per (task, class, seed, model, variant) goes to
    ``--raw`` as each run ends; a run already there is not run again. ``--scores DIR`` keeps
    each run's parts (``.npz``), and ``--rescore`` recomputes the rows from them, for variants
    added later.

How to run
    python benchmarks/studies/image_detection.py digits --n-jobs 2 --scores DIR
    python benchmarks/studies/image_detection.py fashion --n-jobs 2 --seeds 0 --stages 2 \
        --scores DIR          # f1 left out on 28 x 28 images: it doubles the neighbour search
    python benchmarks/studies/image_detection.py digits --rescore --scores DIR
    python benchmarks/studies/image_detection.py fashion --report

Fashion-MNIST reads the Debian package ``dataset-fashion-mnist`` (``--data-dir``).
"""

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks
import _common  # noqa: E402
import images  # noqa: E402
from detection import standardised  # noqa: E402

HERE = Path(__file__).resolve().parent
RAW = HERE / "image_detection_raw.csv"
FIELDS = ["task", "held_out", "seed", "model", "params", "variant", "auprc", "ap", "auroc",
          "fit_s"]
SPACES = ("code", "f1", "f2", "pixels")
KNN, LOF = (1, 5), (5, 10, 20)


# ---------------------------------------------------------------- neighbour scores
def neighbours(query, reference, k):
    """Distances (n, k) and indices of the ``k`` nearest rows of ``reference`` to each row of
    ``query`` (float32 tensors), by the package's search: a row of ``query`` that is a row of
    ``reference`` is not its own neighbour."""
    from skflowgen.outlier import nearest
    distances, indices = nearest(query[None], reference[None], k)
    return distances[0].numpy(), indices[0].numpy()


def local_parts(train, test):
    """``{name: (train scores, test scores)}``, higher = more normal: minus the log distance
    to the k-th neighbour and minus the LOF (``KNN``, ``LOF``), training rows left out of
    their own neighbours (as ``LocalOutlierFactor`` scores its training rows)."""
    import torch
    train, test = torch.as_tensor(train, dtype=torch.float32), torch.as_tensor(
        test, dtype=torch.float32)
    k_max = max(*KNN, *LOF)
    d_train, i_train = neighbours(train, train, k_max)
    d_test, i_test = neighbours(test, train, k_max)
    out = {f"knn-k{k}": (-np.log(np.maximum(d_train[:, k - 1], 1e-30)),
                         -np.log(np.maximum(d_test[:, k - 1], 1e-30))) for k in KNN}
    for k in LOF:
        k_distance = d_train[:, k - 1]

        def density(d, i):
            return 1 / (np.maximum(d[:, :k], k_distance[i[:, :k]]).mean(axis=1) + 1e-10)
        reference = density(d_train, i_train)
        out[f"lof-k{k}"] = tuple(-reference[i[:, :k]].mean(axis=1) / density(d, i)
                                 for d, i in ((d_train, i_train), (d_test, i_test)))
    return out


def member_mean(parts):
    """``{name: (train, test)}`` averaged over a list of such dicts (one per member)."""
    return {name: tuple(np.mean([p[name][j] for p in parts], axis=0) for j in (0, 1))
            for name in parts[0]}


# ---------------------------------------------------------------- parts of a fitted model
def encoder_features(model, X, member, stage):
    """The ``member``'s encoder feature maps after ``stage`` stride-2 convolutions, flat."""
    shape = model.image_shape

    def features(xb):
        x, _ = model._observed(xb)
        return model.encoder_.networks[member].net[:2 * stage](x.view(-1, *shape)).flatten(1)
    return model._apply(features, X, data=True).astype(np.float32)


def code_terms(model, X):
    """Codes (n, n_members, d), ``log p(x | x^)`` of the ensemble's reconstruction and the
    flow's member-mean ``log p(z~)``, from one inference."""
    import torch
    from skflowgen.networks import member_mean as members_mean

    def terms(xb):
        x, mask = model._observed(xb)
        z = model._infer_latent(x, mask)
        x_hat = members_mean(model._decode(z))[None]
        log_lik = members_mean(model._log_likelihood(x, x_hat, mask))
        log_prior = members_mean(model.flow_.log_prob(z))
        return torch.cat([log_lik[:, None], log_prior[:, None], z.transpose(0, 1).flatten(1)],
                         dim=1)
    out = model._apply(terms, X, data=True)
    return out[:, 2:].reshape(len(X), -1, model.n_components_), out[:, 0], out[:, 1]


def model_parts(model, X_train, X_test, stages=(1, 2)):
    """Every part of the fitted ``model``: ``{name: (train, test)}``, higher = more normal;
    encoder features after each convolution of ``stages``."""
    (c_train, rec_train, lat_train), (c_test, rec_test, lat_test) = (
        code_terms(model, X_train), code_terms(model, X_test))
    parts = {"reconstruction": (rec_train, rec_test), "latent": (lat_train, lat_test)}
    members = range(c_train.shape[1])
    spaces = {"code": [local_parts(c_train[:, m], c_test[:, m]) for m in members],
              "pixels": [local_parts(X_train, X_test)]}
    for stage in stages:
        spaces[f"f{stage}"] = [local_parts(encoder_features(model, X_train, m, stage),
                                           encoder_features(model, X_test, m, stage))
                               for m in members]
    for space, per_member in spaces.items():
        parts.update({f"{space}-{name}": v for name, v in member_mean(per_member).items()})
    return parts


# ---------------------------------------------------------------- variants
def variants():
    """``{variant: part names}``: every part alone and the fusions."""
    singles = [f"{s}-knn-k{k}" for s in SPACES for k in KNN] + \
        [f"{s}-lof-k{k}" for s in SPACES for k in LOF] + ["reconstruction", "latent"]
    combos = [("code-lof-k5", "code-knn-k1"), ("code-lof-k5", "code-knn-k5"),
              ("code-lof-k10", "code-knn-k1"), ("code-lof-k5", "f2-knn-k1"),
              ("code-lof-k5", "code-knn-k1", "f2-knn-k1"), ("f2-lof-k5", "f2-knn-k1"),
              ("code-lof-k5", "reconstruction"), ("code-knn-k5", "reconstruction"),
              ("code-lof-k10", "pixels-lof-k10"), ("code-lof-k5", "pixels-lof-k5"),
              ("code-lof-k10", "f2-lof-k10"), ("code-lof-k10", "f1-lof-k10"),
              ("code-knn-k1", "f2-knn-k1"), ("f1-lof-k10", "f2-lof-k10"),
              ("code-lof-k10", "code-knn-k1", "f2-lof-k10"),
              ("code-lof-k10", "f1-lof-k10", "f2-lof-k10"),
              ("code-lof-k10", "code-knn-k1", "reconstruction"),
              ("code-lof-k5", "code-knn-k1", "f2-lof-k5", "f2-knn-k1")]
    out = {name: [name] for name in singles}
    out.update({" + ".join(c): list(c) for c in combos})
    return out


def fusion(parts, names):
    """Mean of the standardised test scores of ``names`` (higher = more normal)."""
    return np.mean([standardised(*parts[n]) for n in names], axis=0)


def score_rows(base, parts, y_test):
    rows = []
    for variant, names in variants().items():
        if all(n in parts for n in names):
            auprc, ap, auroc = images.metrics(y_test, -fusion(parts, names))
            rows.append({**base, "variant": variant, "auprc": auprc, "ap": ap,
                         "auroc": auroc})
    return rows


def run_task(task, held_out, seed, model, params, data_dir, scores_dir, stages=(1, 2)):
    """One (task, class, seed, model): fit, compute the parts, keep them in ``scores_dir``
    (None: not kept) and return one row per variant."""
    limits = _common.limit_threads(1)  # noqa: F841
    spec = images.TASKS[task]
    X, y = _common.load_images(task, data_dir)
    X_train, X_test, y_test = images.split(X, y, held_out, seed, spec["max_train"],
                                           spec["max_test"])
    estimator = images.make_model(f"{model}[{params}]" if params else model, seed,
                                  spec["shape"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, fit_s = _common.timed(estimator.fit, X_train)
        parts = model_parts(estimator, X_train, X_test, stages)
    if scores_dir is not None:
        np.savez_compressed(cache_path(scores_dir, task, held_out, seed, model, params),
                            y_test=y_test, fit_s=fit_s,
                            **{f"{n}/{j}": v[j] for n, v in parts.items() for j in (0, 1)})
    base = dict(task=task, held_out=held_out, seed=seed, model=model, params=params,
                fit_s=fit_s)
    return score_rows(base, parts, y_test)


def cache_path(scores_dir, task, held_out, seed, model, params):
    return Path(scores_dir) / f"{task}_{held_out}_{seed}_{model}{params}.npz"


def rescore(scores_dir, raw):
    """Rows from every cached run in ``scores_dir``."""
    rows = []
    for path in sorted(Path(scores_dir).glob("*.npz")):
        arrays = np.load(path)
        task, held_out, seed, spec = path.stem.split("_", 3)
        model, params = spec[:3], spec[3:]
        parts = {}
        for key in arrays.files:
            if "/" in key:
                name, j = key.rsplit("/", 1)
                parts.setdefault(name, [None, None])[int(j)] = arrays[key]
        base = dict(task=task, held_out=int(held_out), seed=int(seed), model=model,
                    params=params, fit_s=float(arrays["fit_s"]))
        rows += score_rows(base, parts, arrays["y_test"])
    with open(raw, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


# ---------------------------------------------------------------- report
BASELINE_VARIANTS = {"pixels-knn-k5": "kNN on the pixels (PyOD's KNN: 5th neighbour)",
                     "pixels-lof-k20": "LOF on the pixels (scikit-learn's default, k = 20)"}
HARD = {"fashion": (3, 6)}  # Dress and Shirt, named by the issue


def report(raw, task, output):
    """The RESULTS.md section of ``task``: per variant and model, mean AUPRC / AUROC over the
    classes (each the mean over the seeds the model covers) and the classes above LOF on
    the pixels (its seeds alike); the hard classes apart."""
    with open(raw, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == task and not r["params"]]
    if not rows:
        return
    cell = {}
    for r in rows:
        cell.setdefault((r["model"], r["variant"]), {}).setdefault(int(r["held_out"]), []) \
            .append((int(r["seed"]), float(r["auprc"]), float(r["auroc"])))
    models = sorted({r["model"] for r in rows})
    classes = sorted({int(r["held_out"]) for r in rows})
    names = images.TASKS[task]["names"]
    hard = HARD.get(task, ())

    def per_class(model, variant, j):
        values = cell.get((model, variant), {})
        if any(k not in values for k in classes):
            return None
        return np.array([np.mean([v[j] for v in values[k]]) for k in classes])
    order = sorted(variants(), key=lambda v: -np.mean(
        [a.mean() for m in models if (a := per_class(m, v, 1)) is not None] or [0]))
    header = ["variant"] + [f"{m.upper()} AUPRC / AUROC" for m in models] + \
        [f"{m.upper()} classes above LOF" for m in models] + \
        [f"{m.upper()} {names[k]}" for k in hard for m in models]
    table = []
    for variant in order:
        line, above, hard_cells = [variant], [], []
        for m in models:
            auprc, auroc = per_class(m, variant, 1), per_class(m, variant, 2)
            lof = per_class(m, "pixels-lof-k20", 1)
            if auprc is None:
                line.append("")
                above.append("")
                hard_cells.append([""] * len(hard))
                continue
            line.append(f"{auprc.mean():.1f} / {auroc.mean():.1f}")
            above.append(f"{int((auprc > lof).sum())} of {len(classes)}")
            hard_cells.append([f"{auprc[classes.index(k)]:.1f}" for k in hard])
        line += above + [hard_cells[i][h] for h in range(len(hard)) for i in range(len(models))]
        if any(line[1:]):  # a part not measured on this task (f1 on Fashion-MNIST) is left out
            table.append(line)
    seeds = {m: sorted({int(r["seed"]) for r in rows if r["model"] == m}) for m in models}
    spec = images.TASKS[task]
    description = (
        f"Runs: `python benchmarks/studies/image_detection.py {task} --n-jobs 2"
        f"{' --seeds 0 1 --stages 2' if task == 'fashion' else ''} --scores DIR` (rows in "
        "`benchmarks/studies/image_detection_raw.csv`), this section: `--report`. "
        f"The held-out-class split of `benchmarks/images.py` ({spec['shape'][1]}x"
        f"{spec['shape'][2]} images), {len(classes)} classes, seeds "
        + "; ".join(f"{m.upper()} {', '.join(map(str, s))}" for m, s in seeds.items()) +
        ". One fit per (class, seed, model) at the defaults of the code of its run (a "
        "model's rows of earlier defaults or other parameters stay in the raw file, marked "
        "by `params`); every variant scores the same fit. Parts, each in a space: `code` the inferred code, `f1`/`f2` the encoder's "
        "feature maps after its first/second stride-2 convolution (flattened), `pixels` "
        "the images; `-knn-kK` minus the log distance to the K-th nearest training image, "
        "`-lof-kK` minus the local outlier factor with K neighbours (training images left "
        "out of their own neighbours); per member, then the members' mean. `code-lof-k5` "
        "is the package's `'lof'` (the image default before `'local'`), `code-knn-k5` its "
        "`'knn'`, `code-lof-k5 + code-knn-k1` its `'local'` (GLF's image default), "
        "`code-lof-k5 + code-knn-k1 + f2-lof-k5 + f2-knn-k1` its `'local_features'` (LFP's: "
        "`f2` is the encoder's last feature maps); the two `pixels` rows are the "
        "baselines (" + "; ".join(f"`{v}`: {d}" for v, d in BASELINE_VARIANTS.items()) +
        "). `a + b`: the mean of the parts, each standardised by the median and "
        "interquartile range of its training images' scores (no label read). AUPRC = "
        "`auc(recall, precision)` x 100; classes above LOF: classes whose AUPRC beats "
        "`pixels-lof-k20`'s.")
    title = {"digits": "load_digits", "fashion": "Fashion-MNIST"}[task]
    text = "\n".join([f"## Image detection study: {title}", "", *_common.provenance(1), "",
                      description, "", _common.markdown_table(header, table)])
    print(text)
    _common.replace_section(output, f"image-detection-{task}", text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(images.TASKS))
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["glf", "lfp"])
    parser.add_argument("--params", default="", help="estimator parameters, k=v,k=v")
    parser.add_argument("--stages", type=int, nargs="*", default=[1, 2],
                        help="encoder stages whose feature maps are scored (f1 costs twice f2)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", default=str(RAW))
    parser.add_argument("--scores", default=None, help="folder for each run's parts (.npz)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the rows from the parts in --scores")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--output", default=str(HERE.parent / "RESULTS.md"))
    args = parser.parse_args()
    if args.rescore:
        rescore(args.scores, args.raw)
    elif not args.report:
        if args.scores:
            Path(args.scores).mkdir(parents=True, exist_ok=True)
        tasks = [(args.task, c, s, m, args.params, args.data_dir, args.scores,
                  tuple(args.stages))
                 for s in args.seeds for m in args.models for c in args.classes]
        _common.run_resumable(
            args.raw, FIELDS, tasks, run_task, n_jobs=args.n_jobs, resume=True,
            row_task=lambda r: (r["task"], int(r["held_out"]), int(r["seed"]), r["model"],
                                r["params"], args.data_dir, args.scores, tuple(args.stages)))
    report(args.raw, args.task, args.output)


if __name__ == "__main__":
    main()
