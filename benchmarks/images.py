"""Held-out-class anomaly detection on images: ``load_digits`` (8x8) and Fashion-MNIST (28x28).

Protocol of the latent-prior papers: one class is the anomaly; the detectors train on 80% of
the images of the other classes and are tested on the other 20% plus every image of the
held-out class. AUPRC as the papers compute it, ``auc(recall, precision)``, with average
precision and AUROC beside it. Pixels are scaled to [0, 1]; the skflowgen estimators get
``image_shape`` (convolutional networks), the baselines the flat pixels. The same training and
test rows serve every detector of a (class, seed).

Each skflowgen fit is scored by every anomaly score of the study (``SCORES`` below) on the same
fitted model: the package's ``score_method`` values and the candidates computed here from the
model's parts (the flow's density of the inferred code, the reconstruction term, local
densities of the codes, complexity- and reference-corrected likelihoods).

    python benchmarks/images.py digits --n-jobs 2                  # 10 digits x 3 seeds, minutes
    python benchmarks/images.py fashion --n-jobs 2 --seeds 0       # 10,000 training images a class

``fashion`` reads the Debian package ``dataset-fashion-mnist`` (``--data-dir``, default
``/usr/share/datasets/fashion-mnist``). Raw results go to ``benchmarks/results/images_raw.csv``, one
row per (task, class, seed, detector, score), written as each fit ends; a rerun skips the fits
already there, so a long run can be stopped and resumed. ``--report-only`` writes the
RESULTS.md sections and the figures from the raw file.
"""

import argparse
import csv
import math
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import train_test_split

import _common

HERE = Path(__file__).resolve().parent
RAW = _common.RESULTS_DIR / "images_raw.csv"
FIELDS = ["task", "held_out", "seed", "detector", "score", "auprc", "ap", "auroc", "fit_s",
          "score_s", "n_train", "n_test"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
TASKS = {"digits": dict(shape=(1, 8, 8), max_train=None, max_test=None,
                        names=[str(d) for d in range(10)]),
         "fashion": dict(shape=(1, 28, 28), max_train=10_000, max_test=5_000,
                         names=FASHION_CLASSES)}
BASELINES = ["iforest", "lof", "knn", "ocsvm", "gmm", "ecod", "pyod-ae", "pyod-vae", "deepsvdd"]
DEFAULT_SCORE = {"glf": "local", "lfp": "local_features"}  # score_method='auto' on images


# ---------------------------------------------------------------- data
def split(X, y, held_out, seed, max_train=None, max_test=None):
    """The held-out-class split, training and test rows subsampled (the test rows stratified
    on the label) to at most ``max_train`` and ``max_test``."""
    normal = y != held_out
    X_train, X_normal_test = train_test_split(X[normal], test_size=0.2, random_state=seed)
    if max_train is not None and len(X_train) > max_train:
        X_train = X_train[np.random.RandomState(seed).choice(len(X_train), max_train,
                                                             replace=False)]
    X_test = np.vstack([X_normal_test, X[~normal]])
    y_test = np.r_[np.zeros(len(X_normal_test)), np.ones((~normal).sum())]
    if max_test is not None and len(X_test) > max_test:
        X_test, _, y_test, _ = train_test_split(X_test, y_test, train_size=max_test,
                                                stratify=y_test, random_state=seed)
    return X_train, X_test, y_test


# ---------------------------------------------------------------- detectors
def _knn(seed):
    from pyod.models.knn import KNN
    return KNN()


def _deepsvdd(seed, n_features):
    from pyod.models.deep_svdd import DeepSVDD
    return DeepSVDD(n_features=n_features, random_state=seed, verbose=0)


def make_baseline(name, seed, n_features):
    """``(estimator, pyod)`` for a baseline: ADBench's, plus PyOD's kNN distance and DeepSVDD."""
    if name == "knn":
        return _knn(seed), True
    if name == "deepsvdd":
        return _deepsvdd(seed, n_features), True
    return _common.DETECTORS[name].make(seed), _common.DETECTORS[name].pyod


def make_model(spec, seed, shape):
    """A skflowgen estimator from ``glf`` / ``lfp`` with optional bracketed parameters
    (``glf[max_iter=20]``), at its defaults otherwise, with ``image_shape``."""
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    name, _, bracket = spec.partition("[")
    cls = {"glf": GenerativeLatentFlow, "lfp": LangevinFlowPriorGenerator}[name]
    params = _common.parse_params(bracket[:-1]) if bracket else {}
    return cls(image_shape=shape, random_state=seed, **params)


# ---------------------------------------------------------------- the score study
def model_terms(model, X):
    """Per row and member (n, n_members, ...): ``log p(x | z~)``, ``log p(z~)`` and the code
    ``z~``, from one inference of each row."""
    import torch

    def terms(xb):
        x, mask = model._observed(xb)
        z = model._infer_latent(x, mask)
        log_lik = model._log_likelihood(x, model._decode(z), mask)
        log_prior = model.flow_.log_prob(z)
        return torch.cat([log_lik[..., None], log_prior[..., None], z], dim=-1).transpose(0, 1)
    out = model._apply(terms, X, data=True)
    return out[..., 0], out[..., 1], out[..., 2:]


def code_length_bits(X):
    """zlib's code length (level 9) of each image as 8-bit pixels, in bits: the input
    complexity of Serra et al. (ICLR 2020)."""
    pixels = np.clip(np.rint(X * 255), 0, 255).astype(np.uint8)
    return np.array([8 * len(zlib.compress(row.tobytes(), 9)) for row in pixels], dtype=float)


def pixel_gaussian(X_train):
    """Log-density of independent per-pixel Gaussians fitted to ``X_train`` (variances
    floored at 1e-3 of the mean variance): the simplest reference model."""
    mean, var = X_train.mean(axis=0), X_train.var(axis=0)
    var = np.maximum(var, 1e-3 * var.mean())
    return lambda X: -0.5 * (((X - mean) ** 2 / var) + np.log(2 * np.pi * var)).sum(axis=1)


def local_scores(train_codes, test_codes, n_neighbors=(1, 20), lof_neighbors=(10, 20)):
    """Per member, averaged over the members: the k-NN log-density ``-d log r_k`` for each k
    of ``n_neighbors`` (the package's ``'knn'`` score, up to a constant, at other k) and minus
    the local outlier factor for each k of ``lof_neighbors`` (``'lof'`` at other k)."""
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    d = train_codes.shape[-1]
    scores = {f"knn-k{k}": [] for k in n_neighbors} | {f"lof-k{k}": [] for k in lof_neighbors}
    for m in range(train_codes.shape[1]):
        distances, _ = NearestNeighbors(n_neighbors=max(n_neighbors)).fit(train_codes[:, m]) \
            .kneighbors(test_codes[:, m])
        for k in n_neighbors:
            scores[f"knn-k{k}"].append(-d * np.log(np.maximum(distances[:, k - 1], 1e-30)))
        for k in lof_neighbors:
            lof = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(train_codes[:, m])
            scores[f"lof-k{k}"].append(lof.score_samples(test_codes[:, m]))
    return {name: np.mean(values, axis=0) for name, values in scores.items()}


def study_scores(model, X_train, X_test, marginal=True):
    """``{score: (normality of the test rows, seconds)}`` for every score of the study, on one
    fitted model (the marginal only with ``marginal``); the seconds include the shared
    inference each score needs."""
    (log_lik, log_prior, codes), test_s = _common.timed(model_terms, model, X_test)
    joint = (log_lik + log_prior).mean(axis=1)
    scores = {"joint": (joint, test_s),
              "latent": (log_prior.mean(axis=1), test_s),
              "reconstruction": (log_lik.mean(axis=1), test_s)}
    # the codes of the training rows the model keeps (up to 10,000), (m, n_members, d)
    train_codes = model.transform(model._reference_rows).reshape(
        len(model._reference_rows), -1, model.n_components_)
    local, local_s = _common.timed(local_scores, train_codes, codes)
    scores.update({name: (values, test_s + local_s) for name, values in local.items()})
    bits, bits_s = _common.timed(code_length_bits, X_test)
    scores["complexity"] = (joint + math.log(2) * bits, test_s + bits_s)
    reference, ref_s = _common.timed(lambda: pixel_gaussian(X_train)(X_test))
    scores["pixel-ratio"] = (joint - reference, test_s + ref_s)
    for method in ("knn", "lof", "local", "local_features", "fused") + (
            ("marginal",) if marginal else ()):
        model.set_params(score_method=method)
        scores[method] = _common.timed(model.score_samples, X_test)
    return scores


def metrics(y, outlier_score):
    """``(AUPRC, AP, AUROC)`` x 100 of outlier scores (higher = more anomalous)."""
    outlier_score = np.nan_to_num(outlier_score, nan=np.inf, posinf=np.inf, neginf=-np.inf)
    precision, recall, _ = precision_recall_curve(y, outlier_score)
    return (100 * auc(recall, precision), 100 * average_precision_score(y, outlier_score),
            100 * roc_auc_score(y, outlier_score))


def run_one(task, held_out, seed, detector, data_dir, skip_marginal):
    """Fit one detector for one (class, seed); its result rows."""
    _limits = _common.limit_threads(1)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    spec = TASKS[task]
    X, y = _common.load_images(task, data_dir)
    X_train, X_test, y_test = split(X, y, held_out, seed, spec["max_train"], spec["max_test"])
    base = dict(task=task, held_out=held_out, seed=seed, detector=detector,
                n_train=len(X_train), n_test=len(X_test))
    rows = []
    if detector.split("[")[0] in DEFAULT_SCORE:
        model = make_model(detector, seed, spec["shape"])
        _, fit_s = _common.timed(model.fit, X_train)
        scores = study_scores(model, X_train, X_test,
                              marginal=detector.split("[")[0] not in skip_marginal)
        for name, (normality, score_s) in scores.items():
            auprc, ap, auroc = metrics(y_test, -normality)
            rows.append({**base, "score": name, "auprc": auprc, "ap": ap, "auroc": auroc,
                         "fit_s": fit_s, "score_s": score_s})
    else:
        estimator, pyod = make_baseline(detector, seed, X.shape[1])
        _, fit_s = _common.timed(estimator.fit, X_train)
        outlier, score_s = _common.timed(
            lambda: estimator.decision_function(X_test) if pyod
            else -estimator.score_samples(X_test))
        auprc, ap, auroc = metrics(y_test, np.asarray(outlier, dtype=float))
        rows.append({**base, "score": "", "auprc": auprc, "ap": ap, "auroc": auroc,
                     "fit_s": fit_s, "score_s": score_s})
    for row in rows:
        print(f"{task} class {held_out} seed {seed} {detector} {row['score']}: AUPRC "
              f"{row['auprc']:.1f} AUROC {row['auroc']:.1f} ({row['fit_s']:.0f} + "
              f"{row['score_s']:.0f} s)", flush=True)
    return rows


# ---------------------------------------------------------------- raw results
def read_raw(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("held_out", "seed", "n_train", "n_test"):
            row[key] = int(row[key])
        for key in ("auprc", "ap", "auroc", "fit_s", "score_s"):
            row[key] = float(row[key])
    return rows


def append_raw(path, rows):
    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                             for k in FIELDS})


# ---------------------------------------------------------------- report
def column(row):
    """The column name of a raw row: the baseline, or ``model:score``."""
    return row["detector"] if not row["score"] else f"{row['detector']}:{row['score']}"


def summarize(rows, task):
    """``(columns, classes, seeds, table)`` with ``table[column][class, seed] = row``."""
    rows = [r for r in rows if r["task"] == task]
    table = {}
    for r in rows:
        table.setdefault(column(r), {})[r["held_out"], r["seed"]] = r
    classes = sorted({r["held_out"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    return table, classes, seeds


def complete(table, classes, seeds):
    """The columns measured on every (class, seed) of the run."""
    return [c for c in table if all((k, s) in table[c] for k in classes for s in seeds)]


def report(rows, task, output, figure):
    table, classes, seeds = summarize(rows, task)
    columns = complete(table, classes, seeds)
    if not columns:
        return
    names = TASKS[task]["names"]
    defaults = [c for c in (f"{m}:{score}" for m, score in DEFAULT_SCORE.items()) if c in columns]
    baselines = [b for b in BASELINES if b in columns]
    ranked = defaults + baselines
    if not ranked:
        return

    def mean_over_seeds(col, key="auprc", over=seeds):
        return np.array([np.mean([table[col][k, s][key] for s in over]) for k in classes])
    per_class = np.array([mean_over_seeds(c) for c in ranked]).T  # classes x detectors
    ranks = _common.average_ranks(per_class)
    rows_out = [[f"{k} ({names[k]})", *(f"{v:.1f}" for v in per_class[i])]
                for i, k in enumerate(classes)]
    rows_out.append(["**mean AUPRC**", *(f"{v:.1f}" for v in per_class.mean(axis=0))])
    rows_out.append(["**average rank**", *(f"{r:.2f}" for r in ranks)])
    for key, label in (("ap", "mean AP"), ("auroc", "mean AUROC")):
        rows_out.append([label, *(f"{mean_over_seeds(c, key).mean():.1f}" for c in ranked)])
    rows_out.append(["min AUROC over classes", *(f"{mean_over_seeds(c, 'auroc').min():.1f}"
                                                 for c in ranked)])
    rows_out.append(["seconds per class (fit + score)",
                     *(f"{np.mean([r['fit_s'] + r['score_s'] for r in table[c].values()]):.0f}"
                       for c in ranked)])
    study_rows = []
    for c in sorted(c for c in table if ":" in c):  # every score on the seeds it covers
        covered = [s for s in seeds if all((k, s) in table[c] for k in classes)]
        if not covered:
            continue
        auprc = mean_over_seeds(c, over=covered)
        lof = mean_over_seeds("lof", over=covered) if "lof" in columns else None
        per_seed = [np.mean([table[c][k, s]["auprc"] for k in classes]) for s in covered]
        study_rows.append([c, ", ".join(map(str, covered)), f"{auprc.mean():.1f}",
                           f"{mean_over_seeds(c, 'ap', covered).mean():.1f}",
                           f"{mean_over_seeds(c, 'auroc', covered).mean():.1f}",
                           f"{mean_over_seeds(c, 'auroc', covered).min():.1f}",
                           f"{np.std(per_seed):.1f}" if len(covered) > 1 else "",
                           "" if lof is None else f"{lof.mean():.1f} ({int((auprc > lof).sum())})",
                           f"{np.mean([table[c][k, s]['score_s'] for k in classes for s in covered]):.1f}"])
    spec = TASKS[task]
    title = {"digits": "Images: load_digits, held-out digit",
             "fashion": "Images: Fashion-MNIST, held-out class"}[task]
    sizes = _sizes(table, columns)
    body = "\n".join([
        f"## {title}", "", *_common.provenance(1), "",
        f"Held-out-class protocol: train on 80% of the other classes' images, test on the other "
        f"20% plus every image of the held-out class ({sizes}); "
        f"{len(classes)} classes x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
        "values averaged over the seeds. skflowgen estimators at their defaults with "
        f"`image_shape={spec['shape']}`, scored by their default `score_method` "
        f"(`'auto'`, which is `'{DEFAULT_SCORE['glf']}'` for GLF and `'{DEFAULT_SCORE['lfp']}'` "
        "for LFP on images); baselines on the flat pixels in [0, 1] "
        "(ADBench's, PyOD's "
        "kNN distance and DeepSVDD at their defaults). AUPRC = `auc(recall, precision)` x 100 "
        "(the papers' formula). Average rank among the columns of this table.", "",
        _common.markdown_table(["held-out class", *ranked], rows_out), "",
        "### Anomaly scores of the same fitted models", "",
        "Each row scores the same fits: `joint` and `marginal` are the package's "
        "`score_method` values for tables; `latent` is the flow's log-density of the inferred "
        "code alone, `reconstruction` the likelihood term alone; `knn` (a `score_method`) is "
        "the k-NN log-density (k = 5) of the code among the codes of the training images, "
        "`knn-k1` and `knn-k20` the same at k = 1 and 20 on the same training codes (each "
        "per member, then averaged); `lof` (a `score_method`, the image default before "
        "`local`) is minus the local outlier factor of the code among the training codes "
        "(5 neighbours, as "
        "`LocalOutlierFactor(n_neighbors=5, novelty=True)`), `lof-k10` and `lof-k20` the same "
        "with 10 and 20 neighbours; `local` (a `score_method`, GLF's default on images) the "
        "mean of `lof` and `knn-k1`, each standardised over the training images; "
        "`local_features` (a `score_method`, LFP's default on images) the mean of those two "
        "and the same two of the encoder's last feature maps, standardised alike; `fused` (a "
        "`score_method`, the default on tables) the mean of `knn` and the reconstruction "
        "term, standardised alike; "
        "`complexity` adds the zlib code length of the 8-bit image "
        "(`joint + ln 2 x bits`, Serra et al. 2020); `pixel-ratio` subtracts the "
        "log-likelihood of independent per-pixel Gaussians fitted on the training images "
        "(a likelihood ratio against a simple reference, after Ren et al. 2019). "
        "Seconds: scoring the test images, with the inference each score needs (some early "
        "`knn-k1`/`knn-k20` rows also re-inferred the training codes). `model[params]` rows "
        "are fits with other parameters (the training study; `batch_size=n//10` is the "
        "table rule, 10 steps an epoch, that images had before), on the seeds they cover; "
        "`-former` rows: the defaults of the version that trained on every row, before a fifth "
        "of the rows was held out to set `offset_`.", "",
        _common.markdown_table(["model:score", "seeds", "mean AUPRC", "mean AP", "mean AUROC",
                                "min AUROC", "std over seeds",
                                "LOF on the pixels, same seeds (classes above it)",
                                "score seconds"], study_rows), "",
        f"![AUPRC per held-out class](results/{figure.name})"])
    plot(table, classes, seeds, ranked, names, figure, title)
    print(body)
    _common.replace_section(output, f"images-{task}", body)


def _sizes(table, columns):
    some = next(iter(table[columns[0]].values()))
    return f"{some['n_train']:,} training and {some['n_test']:,} test images a class"


def plot(table, classes, seeds, columns, names, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.85 / len(columns)
    for j, col in enumerate(columns):
        values = [np.mean([table[col][k, s]["auprc"] for s in seeds]) for k in classes]
        ax.bar(np.arange(len(classes)) + j * width, values, width, label=col,
               color=plt.cm.tab20(j % 20))
    ax.set_xticks(np.arange(len(classes)) + 0.425 - width / 2, [names[k] for k in classes],
                  rotation=20)
    ax.set_ylabel("AUPRC x 100 (mean over seeds)")
    ax.set_title(title)
    ax.legend(ncol=min(len(columns), 7), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds to run, and to report")
    parser.add_argument("--detectors", nargs="+", default=["lfp", "glf", *BASELINES])
    parser.add_argument("--skip-marginal", nargs="*", default=[], choices=list(DEFAULT_SCORE),
                        help="models whose marginal score the study leaves out (GLF's costs "
                             "640 decoder and flow passes per image with five members)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--raw", default=str(RAW))
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    figure = _common.figure_path(args.output, f"images_{args.task}.png")
    if not args.report_only:
        from joblib import Parallel, delayed
        done = {(r["task"], r["held_out"], r["seed"], r["detector"]) for r in read_raw(args.raw)}
        tasks = [(args.task, c, s, d) for s in args.seeds for d in args.detectors
                 for c in args.classes if (args.task, c, s, d) not in done]
        print(f"{len(tasks)} fits to run ({len(done)} already in {args.raw})", flush=True)
        start = time.perf_counter()
        for rows in Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(
                delayed(run_one)(*t, args.data_dir, args.skip_marginal) for t in tasks):
            append_raw(args.raw, rows)
        print(f"wall time {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    report([r for r in read_raw(args.raw) if r["seed"] in args.seeds], args.task, args.output,
           figure)


if __name__ == "__main__":
    main()
