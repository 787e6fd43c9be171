"""Sample quality: do the estimators' ``sample()`` draws look like the data?

What it measures
    ``load_digits`` (8x8, pixels in [0, 1]), per seed a stratified 70/30 split. A small
    classifier (``MLPClassifier``, hidden layers (128, 64)) is trained on the training images;
    its last hidden layer is the feature space, as the Frechet distance is computed for
    digit-like data when Inception features are out of reach (Heusel et al. 2017). Each
    generator, fitted on the training images, draws as many images as the test split holds;
    every image is clipped to [0, 1]. Reported against the test images:

    - FD: the Frechet distance between the Gaussians of the two feature sets (lower is better),
      beside the floor the training images themselves reach;
    - precision, recall, density and coverage with k = 5 (Naeem et al., ICML 2020): precision
      and density low = blurry or off-manifold samples, recall and coverage low = collapse
      onto a few modes;
    - classes: the total variation between the classifier's label histogram of the samples
      and the test images' (0 = every digit as often as in the data).

    Generators: the training images (the floor); ``PCA(20)`` + ``GaussianMixture(10)`` decoded
    by the PCA; ``KernelDensity`` on ``PCA(15)`` with its bandwidth chosen by ``GridSearchCV``
    (scikit-learn's own digits example); both estimators at their defaults with
    ``image_shape=(1, 8, 8)`` along their training budget (``max_iter`` epochs, continued by
    ``warm_start``), the same fitted GLF with a ``GaussianMixture(10)`` fitted to its codes
    afterwards and decoded by ``inverse_transform`` (the GLF paper's comparison: the flow
    earns its place by beating it), and a VAE of GLF's networks along the same budgets (the
    paper's convergence claim is against it).

How to run
    python benchmarks/samples.py --seeds 0 1 2

    Raw rows go to ``--raw`` as each seed ends; ``--resume`` keeps the seeds already there.
    The table goes to the ``samples-digits`` section of ``--output``; ``samples_digits.png``
    shows 36 random samples of each generator (first seed; the estimators at the default and
    the largest budget), ``samples_digits_fd.png`` FD against epochs.
"""

import argparse
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from scipy import linalg
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HERE = Path(__file__).resolve().parent
BUDGETS = (10, 30, 100)  # epochs of the estimators
K = 5  # neighbours of precision / recall / density / coverage
RAW_FIELDS = ["seed", "generator", "epochs", "fit_s", "fd", "precision", "recall", "density",
              "coverage", "classes", "accuracy"]


# ---------------------------------------------------------------- the metrics
class FeatureSpace:
    """The last hidden layer of a classifier trained on the training images."""

    def __init__(self, X, y, seed):
        self.net = MLPClassifier((128, 64), max_iter=500, random_state=seed).fit(X, y)

    def __call__(self, X):
        h = np.asarray(X, dtype=np.float64)
        for W, b in zip(self.net.coefs_[:-1], self.net.intercepts_[:-1]):
            h = np.maximum(h @ W + b, 0.0)  # the classifier's ReLU layers
        return h

    def classes(self, X):
        return self.net.predict(X)


def frechet(a, b):
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; 1e-6 is added to the
    diagonals, as the reference FID code does, since units that never fire make both
    covariances singular."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    eye = 1e-6 * np.eye(a.shape[1])
    s_a, s_b = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    root = linalg.sqrtm(s_a @ s_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * root))


def prdc(real, fake, k=K):
    """Precision, recall, density and coverage of ``fake`` against ``real`` features."""
    def radii(x):
        d = pairwise_distances(x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    real_r, fake_r = radii(real), radii(fake)
    d = pairwise_distances(real, fake)
    inside = d < real_r[:, None]
    return (float(inside.any(axis=0).mean()),
            float((d < fake_r[None, :]).any(axis=1).mean()),
            float(inside.sum(axis=0).mean() / k),
            float((d.min(axis=1) < real_r).mean()))


def evaluate(space, X_test, samples):
    """The metrics of ``samples`` against the test images."""
    samples = np.clip(samples, 0.0, 1.0)
    real, fake = space(X_test), space(samples)
    expected = np.bincount(space.classes(X_test), minlength=10) / len(X_test)
    got = np.bincount(space.classes(samples), minlength=10) / len(samples)
    return dict(fd=frechet(real, fake), **dict(zip(
        ("precision", "recall", "density", "coverage"), prdc(real, fake))),
        classes=float(0.5 * np.abs(expected - got).sum()))


# ---------------------------------------------------------------- the generators
def pca_gmm(X, n, seed):
    pca = PCA(20, random_state=seed).fit(X)
    gmm = GaussianMixture(10, random_state=seed).fit(pca.transform(X))
    return pca.inverse_transform(gmm.sample(n)[0])


def kde_pca(X, n, seed):
    pca = PCA(15, random_state=seed).fit(X)
    codes = pca.transform(X)
    search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-2, 0, 20)}).fit(codes)
    return pca.inverse_transform(search.best_estimator_.sample(n, random_state=seed))


class VAE:
    """A variational autoencoder of GLF's convolutional networks (the encoder emitting a mean
    and a log-variance per latent, the decoder ending in a sigmoid for Bernoulli pixels),
    trained on the ELBO with GLF's optimizer and batch rule; ``sample`` decodes ``N(0, I)``.
    The GLF paper's baseline for its convergence claim."""

    def __init__(self, n_components, seed):
        import torch
        from torch import nn

        from skflowgen.networks import make_decoder, make_encoder
        generator = torch.Generator().manual_seed(seed)
        self.d, self.torch, self.generator = n_components, torch, generator
        self.encoder = make_encoder(1, 64, 2 * n_components, None, (1, 8, 8), generator)
        self.decoder = make_decoder(1, n_components, 64, None, (1, 8, 8), generator,
                                    final_activation=nn.Sigmoid())
        self.optimizer = torch.optim.Adam([*self.encoder.parameters(),
                                           *self.decoder.parameters()], lr=1e-3)

    def fit(self, X, epochs):
        torch = self.torch
        x_all = torch.as_tensor(X, dtype=torch.float32)
        batch = min(256, max(16, len(X) // 32))  # GLF's batch_size='auto' on images
        for _ in range(epochs):
            for rows in torch.randperm(len(X), generator=self.generator).split(batch):
                x = x_all[rows]
                mean, log_var = self.encoder(x)[0].chunk(2, dim=-1)
                z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape,
                                                                generator=self.generator)
                x_hat = self.decoder(z[None])[0]
                recon = torch.nn.functional.binary_cross_entropy(x_hat, x, reduction="none")
                kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(dim=-1)
                loss = (recon.sum(dim=-1) + kl).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        return self

    def sample(self, n):
        torch = self.torch
        with torch.no_grad():
            z = torch.randn((1, n, self.d), generator=self.generator)
            return self.decoder(z)[0].numpy()


def codes_gmm(model, X, n, seed):
    """A ``GaussianMixture(10)`` on the model's codes of ``X``, decoded by the model."""
    gmm = GaussianMixture(10, random_state=seed).fit(model.transform(X))
    return model.inverse_transform(gmm.sample(n)[0])


def run_seed(seed, threads):
    """The raw rows of one seed; a row shown in the figure carries 36 random samples
    (``grid``, not written to the raw file)."""
    limits = _common.limit_threads(threads)  # noqa: F841 (kept alive for the run)
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.3,
                                                        stratify=y, random_state=seed)
    space = FeatureSpace(X_train, y_train, seed)
    accuracy = float(np.mean(space.classes(X_test) == y_test))
    n, rows = len(X_test), []

    def record(generator, samples, epochs="", fit_s=""):
        rows.append(dict(seed=seed, generator=generator, epochs=epochs, fit_s=fit_s,
                         accuracy=accuracy, **evaluate(space, X_test, samples)))
        if epochs in ("", BUDGETS[0], BUDGETS[-1]):  # a mixture samples component by component
            shown = np.random.RandomState(seed).permutation(len(samples))[:36]
            rows[-1]["grid"] = np.clip(samples[shown], 0, 1)
    record("training images", X_train[np.random.RandomState(seed).choice(len(X_train), n)])
    for name, make in (("PCA + GaussianMixture", pca_gmm), ("KernelDensity on PCA", kde_pca)):
        start = time.perf_counter()
        samples = make(X_train, n, seed)
        record(name, samples, fit_s=time.perf_counter() - start)
    vae, fit_s, done = VAE(20, seed), 0.0, 0  # GLF's latent size on 64 pixels
    for budget in BUDGETS:
        start = time.perf_counter()
        vae.fit(X_train, budget - done)
        fit_s, done = fit_s + time.perf_counter() - start, budget
        record("VAE, the same networks", vae.sample(n), budget, fit_s)
    for name, cls in (("GLF", GenerativeLatentFlow), ("LFP", LangevinFlowPriorGenerator)):
        model, fit_s, done = cls(image_shape=(1, 8, 8), random_state=seed), 0.0, 0
        for budget in BUDGETS:
            model.set_params(max_iter=budget - done, warm_start=done > 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                model.fit(X_train)
                fit_s += time.perf_counter() - start
            done = budget
            record(name, model.sample(n, random_state=seed), budget, fit_s)
            if name == "GLF":
                record("GLF codes + GaussianMixture", codes_gmm(model, X_train, n, seed),
                       budget, fit_s)
    return rows


# ---------------------------------------------------------------- the report
def report(rows, args):
    seeds = sorted({int(r["seed"]) for r in rows})
    keys = list(dict.fromkeys((r["generator"], str(r["epochs"])) for r in rows))
    metrics = ("fd", "precision", "recall", "density", "coverage", "classes")
    table = []
    for generator, epochs in keys:
        mine = [r for r in rows if r["generator"] == generator and str(r["epochs"]) == epochs]
        fit = [float(r["fit_s"]) for r in mine if r["fit_s"] not in ("", None)]
        table.append([generator, epochs or "", *(
            f"{np.mean([float(r[m]) for r in mine]):.{3 if m == 'fd' else 2}f}"
            for m in metrics), f"{np.mean(fit):.0f}" if fit else ""])
    accuracy = np.mean([float(r["accuracy"]) for r in rows])
    description = (
        f"load_digits, 70/30 split per seed ({', '.join(map(str, seeds))}), means over the "
        f"seeds. Features: the last hidden layer of an `MLPClassifier((128, 64))` trained on "
        f"the training images (test accuracy {100 * accuracy:.1f}%). As many samples as test "
        "images (540), clipped to [0, 1]. FD: Frechet distance to the test images' features "
        "(lower is better; `training images` is the floor); precision / recall / density / "
        f"coverage with k = {K} (Naeem et al. 2020); classes: total variation between the "
        "classifier's label histograms of the samples and of the test images. The estimators "
        "run at their defaults with `image_shape=(1, 8, 8)`, `max_iter` the epochs (10 is the "
        "default), continued by `warm_start`; fit seconds are cumulative, one thread.")
    _common.write_report(args.output, "samples-digits", "Samples: load_digits", args.threads,
                         description, ["generator", "epochs", "FD", "precision", "recall",
                                       "density", "coverage", "classes", "fit s"], table,
                         footer="![FD against epochs](results/samples_digits_fd.png)\n\n"
                                "![36 random samples of each generator](results/samples_digits.png)")
    plot_fd(rows, _common.figure_path(args.output, "samples_digits_fd.png"))
    grids = {f"{r['generator']}, {r['epochs']} epochs" if r["epochs"] else r["generator"]:
             r["grid"] for r in rows if "grid" in r and int(r["seed"]) == min(args.seeds)}
    if grids:  # the samples themselves: only when the first seed ran in this call
        plot_grids(grids, _common.figure_path(args.output, "samples_digits.png"))


def plot_grids(grids, path):
    """The sample grids, four to a row."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    names = list(grids)
    n_rows = -(-len(names) // 4)
    fig = plt.figure(figsize=(12, 3.2 * n_rows))
    for sub, name in zip(fig.subfigures(n_rows, 4).ravel(), names):
        axes = sub.subplots(6, 6, gridspec_kw=dict(wspace=0.05, hspace=0.05))
        for ax, image in zip(axes.ravel(), grids[name]):
            ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_axis_off()
        sub.suptitle(name, fontsize=10)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def plot_fd(rows, path):
    """FD against epochs, beside the generators without a training budget."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    for name in ("GLF", "LFP", "GLF codes + GaussianMixture", "VAE, the same networks"):
        epochs = sorted({int(r["epochs"]) for r in rows if r["generator"] == name})
        ax.plot(epochs, [np.mean([float(r["fd"]) for r in rows if r["generator"] == name
                                  and int(r["epochs"]) == e]) for e in epochs], "o-", label=name)
    for name, style in (("PCA + GaussianMixture", "--"), ("KernelDensity on PCA", "-."),
                        ("training images", ":")):
        ax.axhline(np.mean([float(r["fd"]) for r in rows if r["generator"] == name]),
                   color="gray", linestyle=style, label=name)
    ax.set(xscale="log", yscale="log", xlabel="epochs", ylabel="FD (lower is better)",
           title="load_digits: FD of samples against training epochs")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--raw", type=Path, default=_common.RESULTS_DIR / "samples_raw.csv")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    done = _common.run_resumable(args.raw, RAW_FIELDS, [(s,) for s in args.seeds],
                                 partial(run_seed, threads=args.threads),
                                 lambda r: (int(r["seed"]),), args.n_jobs, args.resume)
    report([r for r in done if int(r["seed"]) in args.seeds], args)


if __name__ == "__main__":
    main()
