"""GenerativeLatentFlow: an autoencoder with a normalizing-flow density on its latents.

Xiao, Yan and Amit, "Generative Latent Flow" (2019).
"""

import itertools
import numbers

import numpy as np

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._base import BaseLatentFlow
from ._docs import COMMON_ATTRIBUTES_DOC, COMMON_PARAMETERS_DOC, PRIOR_COMPONENTS_DOC
from ._training import adam
from .networks import make_decoder, make_encoder


_TABLE_MAX_ITER = 1  # max_iter='auto' on tables
_IMAGE_MIN_EPOCHS = 40  # max_iter='auto' with image_shape: epochs, at least
_IMAGE_SCORE = "local"  # score_method='auto' with image_shape
_FILL_PASSES = 10  # reconstructions that fill a row's missing entries before it is encoded

_PARAMETERS_DOC = COMMON_PARAMETERS_DOC % dict(
    n_importance_samples=128, n_importance_samples_evidence="",
    table_max_iter=_TABLE_MAX_ITER, image_min_epochs=_IMAGE_MIN_EPOCHS, image_score=_IMAGE_SCORE,
    likelihood_score="joint", support_fraction=1.0, n_estimators=5, covariance_type="diag",
    covariance_type_evidence="GLF's default: one shared variance was a wash on the 18 ADBench "
    "sets\n        (benchmarks/RESULTS.md, \"Feature scaling and ensembles\").",
    score_method_evidence="On tables GLF's ``'fused'`` ranked the anomalies of the 18 "
    "ADBench sets\n        above every other score and combination of them measured, "
    "and above its joint,\n        the former default (benchmarks/RESULTS.md, \"Detection "
    "study on ADBench\"); on\n        images both likelihoods rank simple pictures as "
    "normal, and ``'local'`` ranked\n        held-out classes ahead of ``'lof'`` and of "
    "kNN and LOF on the pixels on both\n        image tasks (``skflowgen.scores``). GLF "
    "keeps it over ``'local_features'``:\n        at its 40 epochs its codes rank nearly as well "
    "as its encoder's maps (load_digits\n        97.2 against 97.5 for the maps alone), "
    "whose five members would keep 630 MB\n        for 10,000 Fashion-MNIST images "
    "(benchmarks/DEFAULTS.md, \"Images\").",
    max_iter_evidence="GLF's default: one epoch ranked the ADBench anomalies best of 1 to "
    "20 with\n        ``'fused'`` (which does not use the flow), the ranking falling at "
    "every longer\n        budget measured (benchmarks/RESULTS.md, \"Detection study on "
    "ADBench\").",
    image_epochs_evidence="GLF's default is 40: 80 drew validation FD 11.6 against 14.4\n        "
    "(one seed) for twice the fit of its five members, already the slower fit of\n        "
    "the two, and at 40 GLF drew ahead of every tuned baseline.",
    support_fraction_evidence="The default for GLF\n        trains on every row: "
    "trimming measured lower on the ADBench sets (benchmarks/RESULTS.md,\n        "
    "\"Ablation of the defaults on ADBench\").",
    n_estimators_evidence="Five, the default for GLF: above one member on the ADBench sets, "
    "for one to\n        three times the fit time (benchmarks/RESULTS.md, \"Feature scaling "
    "and ensembles\").")


_PRIOR_COMPONENTS_DOC = PRIOR_COMPONENTS_DOC % dict(evidence=(
    "On load_digits and Fashion-MNIST 20 components, widened per fit, drew samples\n        "
    "ahead of scikit-learn's tuned generators (a kernel density of PCA codes the\n        "
    "nearest); ``N(0, I)`` was behind (benchmarks/RESULTS.md, \"Samples:\n        "
    "load_digits\", \"Samples: Fashion-MNIST\"; benchmarks/DEFAULTS.md, \"Generating\")."))


class GenerativeLatentFlow(BaseLatentFlow):
    __doc__ = f"""Generative Latent Flow: a deterministic autoencoder plus a flow prior on its codes.

    An encoder ``E`` and a decoder ``G`` are trained on the reconstruction
    error while a coupling flow learns the density ``p(z)`` of the codes
    ``z = E(x)``; with ``stop_gradient=True`` (the paper's method) the flow's
    negative log-likelihood does not reach the encoder, so the codes cannot
    shrink to cheat it. Per batch the loss is

        recon(x, G(E(x))) + NLL_flow(stopgrad(E(x))).

    The two terms then train separate networks, and batches smaller than
    ``batch_size='auto'``'s share the flow's steps: the autoencoder steps on
    each batch, the flow once per group of consecutive batches of about the
    'auto' size, on all of their codes. The flow so takes as many steps
    whatever the batch size, and a fit at a small ``batch_size`` costs less
    (benchmarks/RESULTS.md, "Speed").

    Sampling is ``G(f^{{-1}}(u))``, ``u ~ N(0, I)``, or with ``n_prior_components > 1``
    ``G(z)``, ``z`` from a Gaussian mixture of the training codes; ``score_samples`` is the
    log joint of the vanishing-noise model, ``log N(x; G(E(x)), sigma^2 I) +
    log p(E(x))``, with ``sigma^2 = noise_variance_`` the mean squared training
    residual, per feature or pooled (``covariance_type``).

    Missing values: NaN entries drop out of the reconstruction loss and of the
    likelihood, so ``fit`` learns from incomplete rows. The encoder sees a
    missing entry filled by ten passes of the model's reconstruction,
    ``x_miss <- G(E(x))_miss``, from zeros there (the training median with
    ``feature_scaling='robust'``, the mean with ``'standard'``, a raw 0 with None or
    images); :meth:`impute` returns that row's decoding. One pass left a trained
    autoencoder reproducing much of the zeros it was shown (benchmarks/DEFAULTS.md,
    "Imputation"). Ascending ``log p(x_obs, z)`` from the encoder's code,
    as LFP infers its latents, imputed worse on ``load_digits``: the posterior
    mode fits the observed
    pixels at the expense of the missing ones (benchmarks/RESULTS.md, "Imputation").

    Parameters
    ----------
    n_components : int or None, default=None
        Latent dimension d. None uses ``min(20, max(1, n_features // 2))``.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden widths of the MLP encoder; the decoder mirrors them. Ignored
        with ``image_shape``.
    n_flow_blocks : int, default=4
        Coupling blocks of the flow prior.
{_PRIOR_COMPONENTS_DOC}
    image_shape : tuple (C, H, W) or None, default=None
        Rows are flattened images of this shape: use DCGAN-style
        convolutional networks instead of MLPs.
    reconstruction : {{'mse', 'bce'}}, default='mse'
        Squared error summed over features, or binary cross-entropy for data
        in [0, 1] (the decoder then ends in a sigmoid and the likelihood in
        ``score_samples`` is Bernoulli).
    stop_gradient : bool, default=True
        Stop the flow's NLL from reaching the encoder. False trains the
        paper's "regularized GLF", ``beta * recon + NLL`` through the
        encoder, which can diverge.
    mask_fraction : float in [0, 1), default=0.0
        Share of each training batch's observed entries hidden from the encoder
        (filled as missing entries are) while the reconstruction loss still counts
        them: a denoising autoencoder, trained to fill what it does not see (MIDA,
        Gondara and Wang 2018; ReMasker, Du et al. 2023), as
        :class:`GenerativeImputer`'s default estimator is; 0 trains the paper's
        autoencoder.
    beta : float, default=1.0
        Weight of the reconstruction when ``stop_gradient=False``; ignored with the
        default ``stop_gradient=True``, where the two terms train separate networks.
    learning_rate_init : float, default=1e-3
        Adam learning rate of both the autoencoder and the flow (the flow's
        Adam uses the authors' betas (0.8, 0.9), eps 1e-6 and weight decay
        2e-5); halved every 50 epochs.
{_PARAMETERS_DOC}

    Attributes
    ----------
    encoder_, decoder_ : torch.nn.Module
        The fitted autoencoder: ``E`` gives the code of a row (``transform``), ``G``
        decodes it. LFP's ``encoder_`` is the same network in an other role (see there).
{COMMON_ATTRIBUTES_DOC}

    See Also
    --------
    LangevinFlowPriorGenerator : the same flow prior on a generator without encoder.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> from skflowgen import GenerativeLatentFlow
    >>> X, _ = load_breast_cancer(return_X_y=True)
    >>> model = make_pipeline(MinMaxScaler(), GenerativeLatentFlow(max_iter=5, random_state=0))
    >>> model.fit(X).score_samples(X[:3]).shape
    (3,)
    """

    _network_names = ("encoder_", "decoder_", "flow_", "noise_")
    # the loss's terms, per row: they train separate networks (with the stop-gradient), and
    # the NLL grows as the autoencoder spreads the codes apart, whatever the flow learns
    _loss_terms = ("reconstruction", "flow NLL of the codes")
    _fit_state = ("_codes", "_group_rows")
    _allow_nan = True

    _table_max_iter = _TABLE_MAX_ITER
    _image_min_epochs = _IMAGE_MIN_EPOCHS
    _image_score = _IMAGE_SCORE
    _likelihood_score = "joint"
    _training_parameters = BaseLatentFlow._training_parameters | {
        "stop_gradient", "beta", "mask_fraction"}

    _parameter_constraints = {
        **BaseLatentFlow._parameter_constraints,
        "reconstruction": [StrOptions({"mse", "bce"})],
        "stop_gradient": ["boolean"],
        "beta": [Interval(numbers.Real, 0, None, closed="neither")],
        "mask_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
    }

    def __init__(self, n_components=None, *, hidden_layer_sizes=(64, 64), n_flow_blocks=4,
                 n_prior_components="auto", image_shape=None, reconstruction="mse", stop_gradient=True, beta=1.0,
                 mask_fraction=0.0,
                 feature_scaling="robust", covariance_type="diag", score_method="auto", n_importance_samples=128,
                 contamination=0.1, novelty=False, support_fraction=1.0, n_estimators=5, max_iter="auto",
                 batch_size="auto",
                 learning_rate_init=1e-3, tol=None, n_iter_no_change=10, early_stopping=False,
                 validation_fraction=0.2, warm_start=False, verbose=0, random_state=None,
                 n_jobs=None, device="auto"):
        super().__init__(
            n_components, hidden_layer_sizes=hidden_layer_sizes,
            n_flow_blocks=n_flow_blocks, n_prior_components=n_prior_components,
            image_shape=image_shape,
            feature_scaling=feature_scaling, covariance_type=covariance_type,
            score_method=score_method, n_importance_samples=n_importance_samples,
            contamination=contamination, novelty=novelty, support_fraction=support_fraction,
            n_estimators=n_estimators, max_iter=max_iter, batch_size=batch_size,
            learning_rate_init=learning_rate_init, tol=tol, n_iter_no_change=n_iter_no_change,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            warm_start=warm_start, verbose=verbose, random_state=random_state, n_jobs=n_jobs,
            device=device)
        self.reconstruction = reconstruction
        self.stop_gradient = stop_gradient
        self.beta = beta
        self.mask_fraction = mask_fraction

    def _validate_input(self, X, reset):
        X = super()._validate_input(X, reset)
        if self.reconstruction == "bce" and (np.fmin.reduce(X, axis=None) < 0
                                             or np.fmax.reduce(X, axis=None) > 1):
            raise ValueError("reconstruction='bce' needs X in [0, 1]; scale it first "
                             "(e.g. MinMaxScaler) or use reconstruction='mse'.")
        return X

    @property
    def _scales_features(self):  # and Bernoulli likelihoods need the data in [0, 1]
        return super()._scales_features and self.reconstruction != "bce"

    def _build_modules(self, generator):
        super()._build_modules(generator)
        self.encoder_ = make_encoder(self._n_members, self.n_features_in_, self.n_components_,
                                     self._hidden_sizes, self.image_shape, generator)
        self.decoder_ = make_decoder(self._n_members, self.n_components_, self.n_features_in_,
                                     self._hidden_sizes, self.image_shape, generator,
                                     final_activation=(nn.Sigmoid() if self.reconstruction == "bce"
                                                       else None))

    def _make_optimizers(self):
        autoencoder = adam(
            itertools.chain(self.encoder_.parameters(), self.decoder_.parameters()),
            lr=self.learning_rate_init)
        flow = adam(self.flow_.parameters(), lr=self.learning_rate_init, betas=(0.8, 0.9),
                    eps=1e-6, weight_decay=2e-5)
        return [(opt, torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5))
                for opt in (autoencoder, flow)]

    def _reconstruction_loss(self, x, x_hat, mask=None):
        """Per-row reconstruction loss over the observed entries: summed squared error or
        binary cross-entropy."""
        if self.reconstruction == "bce":
            terms = F.binary_cross_entropy(x_hat, x.expand_as(x_hat), reduction="none")
        else:
            terms = (x - x_hat).square()
        return (terms if mask is None else terms * mask).sum(dim=-1)

    def _encode(self, x, mask):
        """``E(x)``. A row with missing entries is encoded with them filled by the model's
        current reconstruction: from zeros there (in the networks' units; see the class
        docstring), ``_FILL_PASSES`` times ``x_miss <- G(E(x))_miss``. The encoder then sees
        rows like the complete ones it learns from, not holes at an arbitrary value."""
        if mask is None:
            return self.encoder_(x)
        with torch.no_grad():
            filled = torch.where(mask, x, 0.0)
            for _ in range(_FILL_PASSES):
                filled = torch.where(mask, x, self.decoder_(self.encoder_(filled)))
        # complete rows keep the code of the plain pass (the members' fills make the filled
        # rows per member, whose products round differently): a row's code does not depend
        # on whether other rows of its batch have missing entries
        complete = mask.all(dim=-1)[:, None]
        return torch.where(complete, self.encoder_(x), self.encoder_(filled))

    def _visible(self, x, mask, generator):
        """The entries of a training batch the encoder sees: the observed ones (``mask``;
        None: all), each hidden with probability ``mask_fraction``."""
        if self.mask_fraction == 0:
            return mask
        shown = torch.rand(x.shape, generator=generator, device=x.device) >= self.mask_fraction
        return shown if mask is None else mask & shown

    def _lookahead_rows(self, batch_size, n_rows):
        """With the stop-gradient, the flow steps once per group of batches of together
        about ``batch_size='auto'``'s rows: as many flow steps whatever the batch size."""
        if not self.stop_gradient:
            return batch_size
        return batch_size * max(1, self._auto_batch_size(n_rows) // batch_size)

    def _prepare_rows(self, x, rows, generator):
        self._codes, self._group_rows = [], len(rows)

    def _train_step(self, x, mask, generator, rows=None):
        z = self._encode(x, self._visible(x, mask, generator))
        x_hat = self.decoder_(z)
        recon = self._reconstruction_loss(x, x_hat, mask)
        if not self.stop_gradient:  # the NLL trains the encoder too
            recon, nll = self.beta * recon, -self.flow_.log_prob(z)
            self._optimize(recon + nll)
            nll = nll.detach().mean()
        else:
            self._codes.append(z.detach())
            if sum(codes.shape[1] for codes in self._codes) < self._group_rows:
                autoencoder, _ = self._optimizers[0]
                self._optimize(recon, optimizers=[autoencoder])
                nll = recon.new_zeros(())
            else:  # the group's last batch: the flow's step on all of its codes too
                nll = -self.flow_.log_prob(torch.cat(self._codes, dim=1))
                self._optimize(recon, nll)
                nll = nll.detach().mean() * nll.shape[1] / len(x)  # the group's, per row here
        terms = torch.stack([recon.detach().mean(), nll])
        return torch.cat([terms, self._residual_stats(x, x_hat.detach(), mask)])

    def _convergence_loss(self, stats):
        """The reconstruction error (the members' mean): the flow's NLL moves with the codes
        and is not monotone."""
        mean_squared, _ = self._split_residual_stats(stats)
        return float(mean_squared.sum(axis=1).mean())

    def _after_fit(self, x_train):
        """``sigma^2`` from the residuals of the final weights over all training rows (of
        the call, with ``partial_fit``)."""
        def residuals(xb):
            x, mask = self._observed(xb)
            observed = torch.ones_like(x) if mask is None else mask.float()
            squared = (x - self._decode(self._infer_latent(x, mask))).square() * observed
            return torch.cat([squared.transpose(0, 1).flatten(1), observed], dim=1)
        total = sum(rows.sum(dim=0) for _, rows in self._stream(residuals, x_train))
        self._fit_noise_variance(np.r_[np.zeros(len(self._loss_terms)),
                                       (total / len(x_train)).cpu().numpy()],
                                 len(x_train))

    def _log_likelihood(self, x, x_hat, mask):
        if self.reconstruction == "bce":
            return -self._reconstruction_loss(x, x_hat, mask)
        return super()._log_likelihood(x, x_hat, mask)

    def _initial_latents(self, x, generator):
        return self._encode(*self._observed(x))

    def _infer_latent(self, x, mask):
        return self._encode(x, mask)

    def _decode(self, z):
        return self.decoder_(z)
