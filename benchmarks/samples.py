"""Sample quality: do the estimators' ``sample()`` draws look like the data?

What it measures
    Two image tasks, pixels in [0, 1]: ``digits`` (``load_digits``, 8x8, a stratified 70/30
    split per seed) and ``fashion`` (Fashion-MNIST, 28x28: 10,000 training images drawn from
    its training file and 5,000 test images from its test file, both stratified, per seed).
    A small classifier trained on the training images gives the feature space (an
    ``MLPClassifier((128, 64))`` for digits, a two-layer CNN for Fashion-MNIST; its test
    accuracy is reported): its last hidden layer, as the Frechet distance is computed for
    digit-like data when Inception features are out of reach (Heusel et al. 2017). Each
    generator, fitted on the training images, draws as many images as the test split holds
    (five such draws on digits, their metrics averaged: one draw of 540 images is noisy);
    every image is clipped to [0, 1]. Reported against the test images:

    - FD: the Frechet distance between the Gaussians of the two feature sets (lower is better),
      beside the floor the training images themselves reach;
    - precision, recall, density and coverage with k = 5 (Naeem et al., ICML 2020): precision
      and density low = blurry or off-manifold samples, recall and coverage low = collapse
      onto a few modes;
    - classes: the total variation between the classifier's label histogram of the samples
      and the test images' (0 = every class as often as in the data);
    - copying Z: memorisation, the data-copying test of Meehan et al. (AISTATS 2020) in the
      same features: the samples' distances to their nearest training image against those
      of the test images (about 0 = as far as new images, well below 0 = copies).

    Generators, every capacity chosen on the training images alone (each candidate fitted
    on 80% of them, the one whose fit gives the other 20% the highest likelihood refitted on
    all; the test split is read by the metrics only): the training images (the floor);
    ``PCA(q)`` + ``GaussianMixture(k)`` decoded by the PCA, ``q`` and ``k`` by the held-out
    likelihood of the images (PPCA's Gaussian on the residual completes the density of the
    codes); ``KernelDensity`` on ``PCA(q)``, its bandwidth by cross-validated likelihood of
    the codes (scikit-learn's digits example), ``q`` as above; a VAE of GLF's networks, its
    latent size and beta by the held-out ELBO after the first budget, along the budgets
    (the GLF paper's baseline); both estimators at their defaults with ``image_shape``
    along their training budget (``max_iter`` epochs, continued by ``warm_start``), and
    where an estimator's own budget is not the first (``max_iter='auto'`` on a small image
    set) a fresh fit at its defaults as well. Beside each fit's ``sample()`` (from the
    mixture of its codes): its samples from ``flow_``, the prior of inference and of the
    scores.

How to run
    python benchmarks/samples.py digits --seeds 0 1 2
    python benchmarks/samples.py fashion --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/samples.py digits --families 'GLF[n_prior_components=20]' --resume

    One task per (seed, generator family: the references, the VAE, GLF, LFP, or a variant
    of an estimator, its parameters in brackets, rows named by the variant); its raw rows
    go to ``--raw`` as it ends, and ``--resume`` keeps the tasks already there. The table
    goes to the ``samples-<task>`` section of ``--output``; ``results/samples_<task>.png``
    shows 36 random samples of each generator (first seed; the estimators at the first and
    the last budget), ``results/samples_<task>_fd.png`` FD against epochs.
"""

import argparse
import pickle
import sys
import textwrap
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from scipy import linalg
from scipy.stats import mannwhitneyu
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity, NearestNeighbors
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

BUDGETS = (10, 30, 100)  # epochs of the estimators
SHAPES = {"digits": (1, 8, 8), "fashion": (1, 28, 28)}
FASHION_ROWS = (10_000, 5_000)  # training and test images of the fashion task
FAMILIES = {"training images": "references", "PCA + GaussianMixture": "references",
            "KernelDensity on PCA": "references", "VAE, the same networks": "VAE",
            "GLF": "GLF", "LFP": "LFP"}
# the row of an estimator's fit beside its sample(): the same fit drawn from its prior flow_
PRIOR_ROW = ", drawn from flow_"
K = 5  # neighbours of precision / recall / density / coverage
# Sets of samples drawn from each fitted generator, their metrics averaged: load_digits' 540
# test images make one draw's FD move by up to 0.9 between draws of the same model (GLF,
# seed 2: 1.91 to 2.82), Fashion-MNIST's 5,000 by far less than the generators' gaps.
DRAWS = {"digits": 5, "fashion": 1}
DEFAULTS_ROW = ", at its defaults"  # the row of a fresh fit at an estimator's own budget
RAW_FIELDS = ["seed", "generator", "epochs", "fit_s", "fd", "precision", "recall", "density",
              "coverage", "classes", "copying", "chosen", "accuracy"]


# ---------------------------------------------------------------- the metrics
class FeatureSpace:
    """The last hidden layer of an MLP classifier trained on the training images."""

    def __init__(self, X, y, seed):
        self.net = MLPClassifier((128, 64), max_iter=500, random_state=seed).fit(X, y)

    def __call__(self, X):
        h = np.asarray(X, dtype=np.float64)
        for W, b in zip(self.net.coefs_[:-1], self.net.intercepts_[:-1]):
            h = np.maximum(h @ W + b, 0.0)  # the classifier's ReLU layers
        return h

    def classes(self, X):
        return self.net.predict(X)


class CNNFeatureSpace:
    """The last hidden layer (128 units) of a small CNN trained on the training images:
    two 3x3 convolutions (32 and 64 channels, each with ReLU and 2x2 max pooling), then 128
    ReLU units and the 10 classes; Adam, 10 epochs of batches of 128, seeded."""

    def __init__(self, X, y, seed, shape):
        import torch
        from torch import nn
        self.torch, self.shape = torch, shape
        generator = torch.Generator().manual_seed(seed)
        side = ((shape[1] - 2) // 2 - 2) // 2
        with torch.random.fork_rng():  # seeded initial weights, the global state left as it was
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                nn.Conv2d(shape[0], 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(64 * side * side, 128), nn.ReLU())
            self.head = nn.Linear(128, 10)
        optimizer = torch.optim.Adam([*self.body.parameters(), *self.head.parameters()])
        x, labels = self._images(X), torch.as_tensor(y, dtype=torch.long)
        for _ in range(10):
            for rows in torch.randperm(len(x), generator=generator).split(128):
                loss = nn.functional.cross_entropy(self.head(self.body(x[rows])), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.body.eval()

    def _images(self, X):
        return self.torch.as_tensor(np.asarray(X, dtype=np.float32)).view(-1, *self.shape)

    def __call__(self, X):
        with self.torch.no_grad():
            return np.concatenate([self.body(x).double().numpy()
                                   for x in self._images(X).split(1024)])

    def classes(self, X):
        with self.torch.no_grad():
            return np.concatenate([self.head(self.body(x)).argmax(dim=1).numpy()
                                   for x in self._images(X).split(1024)])


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


class Copying:
    """The data-copying statistic ``Z_U`` of Meehan et al. (AISTATS 2020) in a feature space:
    the Mann-Whitney U of the samples' distances to their nearest training image against
    the test images', standardised. About 0: samples lie as far from the training images as
    new images do; well below 0, closer (copies); above 0, farther. In the classifier's
    features rather than the pixels, where a blurred image lies near many."""

    def __init__(self, training_features, test_features):
        self.nearest = NearestNeighbors(n_neighbors=1).fit(training_features)
        self.test_distance = self._distance(test_features)

    def _distance(self, features):
        return self.nearest.kneighbors(features)[0][:, 0]

    def __call__(self, features):
        m, n = len(features), len(self.test_distance)
        u = mannwhitneyu(self._distance(features), self.test_distance).statistic
        return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def evaluate(space, X_test, samples, copying):
    """The metrics of ``samples`` against the test images (``copying``: a :class:`Copying`
    of the training and test images)."""
    samples = np.clip(samples, 0.0, 1.0)
    real, fake = space(X_test), space(samples)
    expected = np.bincount(space.classes(X_test), minlength=10) / len(X_test)
    got = np.bincount(space.classes(samples), minlength=10) / len(samples)
    return dict(fd=frechet(real, fake), **dict(zip(
        ("precision", "recall", "density", "coverage"), prdc(real, fake))),
        classes=float(0.5 * np.abs(expected - got).sum()), copying=copying(fake))


# ---------------------------------------------------------------- the generators
# Each generator, once fitted, is a function ``draw(n, random_state)`` of n samples. Every
# baseline's capacity is chosen as the estimators' settings are, on the training images
# alone: fitted on 80% of them, the grid point whose fit gives the other 20% the highest mean
# log-likelihood wins, and is refitted on all of them.
VALIDATION = 0.2
PCA_SIZES = (10, 20, 40, 80, 160)  # those below the number of pixels
MIXTURE_SIZES = (5, 10, 20, 40)
BANDWIDTHS = np.logspace(-2, 0, 20)
VAE_GRID = [dict(n_components=d, beta=b) for d in (10, 20, 40) for b in (0.5, 1.0, 2.0)]


def choose(X, seed, grid, make):
    """The point of ``grid`` whose ``make`` on 80% of the rows ``X`` gives the rest the
    highest mean ``log_density``."""
    fit_rows, held = train_test_split(X, test_size=VALIDATION, random_state=seed)
    held_out = [np.mean(make(fit_rows, point).log_density(held)) for point in grid]
    return grid[int(np.argmax(held_out))]


class PCADensity:
    """A density of the codes of ``PCA(q)`` made a density of the images by PPCA's isotropic
    Gaussian on the residual (Tipping and Bishop 1999): ``log p(x) = log p(W^T (x - m)) +
    log N(x - x_hat; 0, s^2 I_{D-q})``, ``s^2`` the mean variance PCA leaves out, so that
    sizes are compared in one space. Its draws are decoded codes."""

    def __init__(self, X, q, density, seed):
        self.pca = PCA(q, random_state=seed).fit(X)
        self.density = density.fit(self.pca.transform(X))

    def log_density(self, X):
        codes = self.pca.transform(X)
        residual = X - self.pca.inverse_transform(codes)
        noise, free = self.pca.noise_variance_, X.shape[1] - self.pca.n_components_
        return self.density.score_samples(codes) - 0.5 * (
            np.square(residual).sum(axis=1) / noise + free * np.log(2 * np.pi * noise))

    def __call__(self, n, random_state):
        if isinstance(self.density, GaussianMixture):  # its sample() reads its random_state
            self.density.random_state = random_state
            codes = self.density.sample(n)[0]
        else:
            codes = self.density.sample(n, random_state=random_state)
        return self.pca.inverse_transform(codes)


def pca_sizes(X):
    return [q for q in PCA_SIZES if q < X.shape[1]]


def pca_gmm(X, seed):
    """``PCA(q)`` + ``GaussianMixture(k)``, ``(q, k)`` by held-out likelihood: the draw and
    what was chosen."""
    def make(rows, point):
        return PCADensity(rows, point[0], GaussianMixture(point[1], random_state=seed), seed)
    q, k = choose(X, seed, [(q, k) for q in pca_sizes(X) for k in MIXTURE_SIZES], make)
    return make(X, (q, k)), f"q={q}, k={k}"


def kde_pca(X, seed):
    """``KernelDensity`` on ``PCA(q)``: for each ``q`` the bandwidth by 5-fold
    cross-validated likelihood of the codes (scikit-learn's digits example), ``q`` by
    held-out likelihood."""
    def make(rows, q):
        codes = PCA(q, random_state=seed).fit_transform(rows)
        bandwidth = GridSearchCV(KernelDensity(), {"bandwidth": BANDWIDTHS}).fit(codes) \
            .best_params_["bandwidth"]
        return PCADensity(rows, q, KernelDensity(bandwidth=bandwidth), seed)
    q = choose(X, seed, pca_sizes(X), make)
    density = make(X, q)
    return density, f"q={q}, bandwidth={density.density.bandwidth:.3g}"


class VAE:
    """A variational autoencoder of GLF's convolutional networks (the encoder emitting a mean
    and a log-variance per latent, the decoder ending in a sigmoid for Bernoulli pixels),
    trained on the beta-weighted ELBO with GLF's optimizer and batch rule; ``sample`` decodes
    ``N(0, I)``. The GLF paper's baseline for its convergence claim; its latent size and
    ``beta`` are chosen by the held-out ELBO (:data:`VAE_GRID`)."""

    def __init__(self, shape, seed, n_components=20, beta=1.0):
        import torch
        from torch import nn

        from skflowgen.networks import make_decoder, make_encoder
        generator = torch.Generator().manual_seed(seed)
        self.d, self.beta, self.torch, self.generator = n_components, beta, torch, generator
        n_features = int(np.prod(shape))
        self.encoder = make_encoder(1, n_features, 2 * n_components, None, shape, generator)
        self.decoder = make_decoder(1, n_components, n_features, None, shape, generator,
                                    final_activation=nn.Sigmoid())
        self.optimizer = torch.optim.Adam([*self.encoder.parameters(),
                                           *self.decoder.parameters()], lr=1e-3)

    def _terms(self, x):
        """Per row: the reconstruction's negative log-likelihood (one draw of z) and the KL
        divergence of the encoder's Gaussian from ``N(0, I)``."""
        torch = self.torch
        mean, log_var = self.encoder(x)[0].chunk(2, dim=-1)
        z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=self.generator)
        x_hat = self.decoder(z[None])[0]
        recon = torch.nn.functional.binary_cross_entropy(x_hat, x, reduction="none")
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(dim=-1)
        return recon.sum(dim=-1), kl

    def fit(self, X, epochs):
        torch = self.torch
        x_all = torch.as_tensor(X, dtype=torch.float32)
        from skflowgen._auto import _IMAGE_BATCH_SIZE as batch  # GLF's 'auto' on images
        for _ in range(epochs):
            for rows in torch.randperm(len(X), generator=self.generator).split(batch):
                recon, kl = self._terms(x_all[rows])
                loss = (recon + self.beta * kl).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        return self

    def log_density(self, X):
        """The ELBO of each row (``beta = 1``), a lower bound of its log-likelihood."""
        with self.torch.no_grad():
            recon, kl = self._terms(self.torch.as_tensor(X, dtype=self.torch.float32))
            return -(recon + kl).numpy()

    def sample(self, n):
        torch = self.torch
        with torch.no_grad():
            z = torch.randn((1, n, self.d), generator=self.generator)
            return self.decoder(z)[0].numpy()


def prior_draw(model):
    """``sample()`` of a copy of ``model`` with one prior component: latents from
    ``flow_``, the prior that inference and the scores use."""
    return pickle.loads(pickle.dumps(model)).set_params(n_prior_components=1).sample


def split(task, seed, data_dir):
    """``(X_train, X_test, y_train, y_test)`` of one task and seed."""
    X, y = _common.load_images(task, data_dir)
    if task == "digits":
        return train_test_split(X.astype(np.float64), y, test_size=0.3, stratify=y,
                                random_state=seed)
    n_train, n_test = FASHION_ROWS
    pool = 60_000  # the first rows are Fashion-MNIST's training file, the rest its test file
    X_train, _, y_train, _ = train_test_split(X[:pool], y[:pool], train_size=n_train,
                                              stratify=y[:pool], random_state=seed)
    X_test, _, y_test, _ = train_test_split(X[pool:], y[pool:], train_size=n_test,
                                            stratify=y[pool:], random_state=seed)
    return X_train, X_test, y_train, y_test


def family_of(generator):
    """The task family a raw row's generator comes from: 'references', 'GLF', a variant..."""
    name = generator.removesuffix(DEFAULTS_ROW).removesuffix(PRIOR_ROW)
    return FAMILIES.get(name, name)


def estimator(family, shape, seed):
    """The skflowgen estimator ``family`` names for images of ``shape``: ``'GLF'``, ``'LFP'``
    at their defaults, or a variant with its parameters in brackets, ``'GLF[batch_size=32]'``."""
    return _common.named_estimator(family, image_shape=shape, random_state=seed)


def run(task, seed, family, threads, budgets, data_dir):
    """The raw rows of one seed and generator family; a row shown in the figure carries 36
    random samples (``grid``, not written to the raw file)."""
    limits = _common.limit_threads(threads)  # noqa: F841 (kept alive for the run)
    shape = SHAPES[task]
    X_train, X_test, y_train, y_test = split(task, seed, data_dir)
    space = (FeatureSpace(X_train, y_train, seed) if task == "digits"
             else CNNFeatureSpace(X_train, y_train, seed, shape))
    accuracy = float(np.mean(space.classes(X_test) == y_test))
    print(f"{task}, seed {seed}: feature classifier test accuracy {accuracy:.3f}", flush=True)
    copying = Copying(space(X_train), space(X_test))
    n, rows = len(X_test), []

    def record(generator, draw, epochs="", fit_s="", chosen=""):
        """The metrics of ``DRAWS[task]`` draws of ``n`` samples, averaged."""
        draws = [draw(n, seed + 1000 * k) for k in range(DRAWS[task])]
        scores = [evaluate(space, X_test, samples, copying) for samples in draws]
        rows.append(dict(seed=seed, generator=generator, epochs=epochs, fit_s=fit_s,
                         accuracy=accuracy, chosen=chosen,
                         **{key: np.mean([s[key] for s in scores]) for key in scores[0]}))
        if epochs in ("", budgets[0], budgets[-1]) or generator.endswith(DEFAULTS_ROW):
            # a mixture samples component by component: a random 36 of them
            shown = np.random.RandomState(seed).permutation(n)[:36]
            rows[-1]["grid"] = np.clip(draws[0][shown], 0, 1)
    if family == "references":
        record("training images", lambda n, random_state: X_train[
            np.random.RandomState(random_state).choice(len(X_train), n)])
        for name, make in (("PCA + GaussianMixture", pca_gmm), ("KernelDensity on PCA", kde_pca)):
            start = time.perf_counter()
            draw, chosen = make(X_train, seed)
            record(name, draw, fit_s=time.perf_counter() - start, chosen=chosen)
    elif family == "VAE":  # latent size and beta by the held-out ELBO at the first budget
        start = time.perf_counter()
        chosen = choose(X_train, seed, VAE_GRID, lambda rows, point: VAE(
            shape, seed, **point).fit(rows, budgets[0]))
        vae, fit_s, done = VAE(shape, seed, **chosen), time.perf_counter() - start, 0
        for budget in budgets:
            start = time.perf_counter()
            vae.fit(X_train, budget - done)
            fit_s, done = fit_s + time.perf_counter() - start, budget
            record("VAE, the same networks", lambda n, _: vae.sample(n), budget, fit_s,
                   ", ".join(f"{k}={v}" for k, v in chosen.items()))
    else:  # an estimator at its defaults, or a variant: 'GLF[n_prior_components=20]'
        def new_model():
            return estimator(family, shape, seed)

        def fit(model, **params):
            model.set_params(**params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                model.fit(X_train)
                return time.perf_counter() - start

        def record_model(model, epochs, fit_s, suffix=""):
            record(family + suffix, model.sample, epochs, fit_s)
            if model._prior_components > 1:  # the same fit, sampled from its prior flow_
                record(family + PRIOR_ROW + suffix, prior_draw(model), epochs, fit_s)
        model = new_model()
        fit_s = fit(model)  # max_iter as the family sets it: the first budget, or not
        if model.n_iter_ != budgets[0]:
            record_model(model, model.n_iter_, fit_s, DEFAULTS_ROW)
            model = new_model()
            fit_s = fit(model, max_iter=budgets[0])
        for budget in budgets:
            if budget > budgets[0]:
                fit_s += fit(model, max_iter=budget - done, warm_start=True)
            done = budget
            record_model(model, budget, fit_s)
    return rows


# ---------------------------------------------------------------- the report
def report(rows, args):
    from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
    from skflowgen._auto import _IMAGE_ROWS_SEEN
    seeds = sorted({int(r["seed"]) for r in rows})
    order = [family for family in args.families if family != "references"]
    keys = sorted(dict.fromkeys((r["generator"], str(r["epochs"])) for r in rows),
                  key=lambda key: order.index(family_of(key[0])) + 1
                  if family_of(key[0]) in order else 0)  # a task's rows stay in run order
    metrics = ("fd", "precision", "recall", "density", "coverage", "classes", "copying")
    table = []
    for generator, epochs in keys:
        mine = [r for r in rows if r["generator"] == generator and str(r["epochs"]) == epochs]
        fit = [float(r["fit_s"]) for r in mine if r["fit_s"] not in ("", None)]
        fd = [float(r["fd"]) for r in mine]
        table.append([generator, epochs or "", f"{np.mean(fd):.3f}",
                      f"{np.min(fd):.2f}-{np.max(fd):.2f}" if len(fd) > 1 else "", *(
                          f"{np.mean([float(r[m]) for r in mine]):.{1 if m == 'copying' else 2}f}"
                          for m in metrics[1:]),
                      f"{np.mean(fit):.0f}" if fit else "", chosen_text(mine)])
    accuracy = np.mean([float(r["accuracy"]) for r in rows])
    shape = SHAPES[args.task]
    data = ("load_digits, 70/30 split per seed" if args.task == "digits" else
            f"Fashion-MNIST, {FASHION_ROWS[0]:,} training images from its training file and "
            f"{FASHION_ROWS[1]:,} test images from its test file per seed")
    network = ("an `MLPClassifier((128, 64))`" if args.task == "digits" else
               "a small CNN (two 3x3 convolutions, 32 and 64 channels, then 128 units)")
    n_test = 540 if args.task == "digits" else FASHION_ROWS[1]
    description = (
        f"{data} ({', '.join(map(str, seeds))}), means over the seeds. Features: the last "
        f"hidden layer of {network} trained on the training images (test accuracy "
        f"{100 * accuracy:.1f}%). As many samples as test images ({n_test:,}), clipped to "
        f"[0, 1], each metric the mean over {DRAWS[args.task]} such draw(s) of the fitted "
        "generator. FD: Frechet distance to the test images' features "
        "(lower is better; `training images` is the floor); precision / recall / density / "
        f"coverage with k = {K} (Naeem et al. 2020); classes: total variation between the "
        "classifier's label histograms of the samples and of the test images; copying Z: "
        "the data-copying statistic of Meehan et al. (2020) in the same features (the samples' "
        "distances to their nearest training image against the test images', Mann-Whitney U "
        "standardised: 0 as far as new images, below 0 closer, copies). FD range: lowest and "
        "highest seed. Chosen: what each baseline's fit chose on the training images alone "
        "(PCA size q, mixture components k, bandwidth, the VAE's latent size and beta) by "
        f"the likelihood of {VALIDATION:.0%} of them held out. The estimators' `sample()` "
        "draws from a `GaussianMixture` of each member's codes (`n_prior_components`); "
        "`..., drawn from flow_`: the same fit sampled from the prior that inference and "
        "the scores use. The estimators "
        f"run at their defaults with `image_shape={shape}`, `max_iter` the epochs, continued "
        "by `warm_start`; `..., at its defaults`: a fresh fit at the estimator's own budget "
        f"(`max_iter='auto'` trains on {_IMAGE_ROWS_SEEN:,} images in all, at least "
        f"{GenerativeLatentFlow._image_min_epochs} epochs for GLF and "
        f"{LangevinFlowPriorGenerator._image_min_epochs} for LFP), where it is "
        "not the first of the table; fit seconds are cumulative, "
        f"{args.threads} thread(s).")
    title = "Samples: load_digits" if args.task == "digits" else "Samples: Fashion-MNIST"
    _common.write_report(args.output, f"samples-{args.task}", title, args.threads,
                         description, ["generator", "epochs", "FD", "FD range", "precision",
                                       "recall", "density", "coverage", "classes",
                                       "copying Z", "fit s", "chosen"], table,
                         footer=f"![FD against epochs](results/samples_{args.task}_fd.png)\n\n"
                                "![36 random samples of each generator]"
                                f"(results/samples_{args.task}.png)")
    plot_fd(rows, _common.figure_path(args.output, f"samples_{args.task}_fd.png"), title)
    grids = {f"{r['generator']}, {r['epochs']} epochs" if r["epochs"] else r["generator"]:
             r["grid"] for r in rows if "grid" in r and int(r["seed"]) == min(args.seeds)}
    if grids:  # the samples themselves: only for the tasks of the first seed run in this call
        plot_grids(grids, shape[1:], _common.figure_path(args.output, f"samples_{args.task}.png"))


def chosen_text(rows):
    """What each seed's fit of a baseline chose, once each."""
    return " / ".join(c for c in dict.fromkeys(str(r.get("chosen") or "") for r in rows) if c)


def plot_grids(grids, side, path):
    """The sample grids, four to a row."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    names = list(grids)
    n_rows = -(-len(names) // 4)
    fig = plt.figure(figsize=(12, 3.2 * n_rows))
    for sub, name in zip(fig.subfigures(n_rows, 4).ravel(), names):
        axes = sub.subplots(6, 6, gridspec_kw=dict(wspace=0.05, hspace=0.05))
        for ax, image in zip(axes.ravel(), grids[name]):
            ax.imshow(image.reshape(side), cmap="gray_r", vmin=0, vmax=1)
            ax.set_axis_off()
        sub.suptitle(textwrap.fill(name, 36), fontsize=10)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def plot_fd(rows, path, title):
    """FD against epochs, beside the generators without a training budget; the floor (the
    training images) is drawn where it is within ten times the lowest value, else named in
    the legend, so that it does not squash the curves."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    plt.switch_backend("Agg")
    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    budgets = sorted({int(r["epochs"]) for r in rows if r["epochs"] not in ("", None)})
    lowest = np.inf
    names = list(dict.fromkeys(r["generator"] for r in rows if r["epochs"] not in ("", None)))
    bases = list(dict.fromkeys(name.removesuffix(DEFAULTS_ROW) for name in names))
    palette = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20").colors
    for name in names:  # a fit at its defaults in the colour of its generator's curve
        epochs = sorted({int(r["epochs"]) for r in rows if r["generator"] == name})
        values = [np.mean([float(r["fd"]) for r in rows if r["generator"] == name
                           and int(r["epochs"]) == e]) for e in epochs]
        lowest = min(lowest, *values)
        alone = len(epochs) == 1  # a fit at its own budget alone: a star
        ax.plot(epochs, values, "*" if alone else "o-", markersize=14 if alone else 6,
                markeredgecolor="black" if alone else None, label=name,
                color=palette[bases.index(name.removesuffix(DEFAULTS_ROW)) % len(palette)])
    for name, style in (("PCA + GaussianMixture", "--"), ("KernelDensity on PCA", "-."),
                        ("training images", ":")):
        values = [float(r["fd"]) for r in rows if r["generator"] == name]
        if not values:
            continue
        value = np.mean(values)
        if name == "training images" and value < lowest / 10:
            ax.plot([], [], " ", label=f"training images: {value:.2f} (off the axis)")
            continue
        lowest = min(lowest, value)
        ax.axhline(value, color="gray", linestyle=style, label=f"{name}: {value:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="epochs", ylabel="FD (lower is better)",
           title=f"{title}: FD of samples against training epochs")
    ax.set_xticks(budgets)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(SHAPES))
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                        help="the Fashion-MNIST folder (fashion only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--families", nargs="+", default=list(dict.fromkeys(FAMILIES.values())),
                        help="of: references, VAE, GLF, LFP, or an estimator with parameters in "
                             "brackets, 'GLF[n_prior_components=20]', its rows named so")
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS),
                        help="epochs of the estimators and the VAE, increasing")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=_common.DEFAULT_RESULTS)
    parser.add_argument("--raw", type=Path, help="default: results/samples_<task>_raw.csv")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    args.raw = args.raw or _common.RESULTS_DIR / f"samples_{args.task}_raw.csv"
    tasks = [(args.task, seed, family) for seed in args.seeds for family in args.families]
    done = _common.run_resumable(
        args.raw, RAW_FIELDS, tasks,
        partial(run, threads=args.threads, budgets=args.budgets, data_dir=args.data_dir),
        lambda r: (args.task, int(r["seed"]), family_of(r["generator"])),
        args.n_jobs,
        args.resume)
    report([r for r in done if int(r["seed"]) in args.seeds], args)


if __name__ == "__main__":
    main()
