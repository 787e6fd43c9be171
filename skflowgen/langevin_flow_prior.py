"""LangevinFlowPriorGenerator: a top-down generator with a flow prior, learned by short-run
Langevin inference.

Xie, Zhu, Xu, Li and Li, "A Tale of Two Latent Flows: Learning Latent Space Normalizing Flow
with Short-run Langevin Flow for Approximate Inference", AAAI 2023.
"""

import numbers

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._auto import _TABLE_INFERENCE_STEPS
from ._base import BaseLatentFlow
from ._docs import COMMON_ATTRIBUTES_DOC, COMMON_PARAMETERS_DOC, PRIOR_COMPONENTS_DOC
from ._training import adam
from .langevin import langevin
from .networks import make_decoder, make_encoder

# Persistent chains advance this many training rows at a time: a Langevin step of many rows
# costs little more than one of a batch's (small steps are dominated by fixed costs;
# benchmarks/RESULTS.md, "Speed, batch auto"), and the rows' latents lag the weights by at
# most this many rows.
_CHAIN_ROWS = 1024


_TABLE_MAX_ITER = 5  # max_iter='auto' on tables
_IMAGE_MIN_EPOCHS = 80  # max_iter='auto' with image_shape: epochs, at least
_IMAGE_SCORE = "local_features"  # score_method='auto' with image_shape

_PARAMETERS_DOC = COMMON_PARAMETERS_DOC % dict(
    n_importance_samples=8, n_importance_samples_evidence="LFP's default: on the ADBench "
    "sets 8 draws (after\n        two inference steps) ranked anomalies as 128 did, 4 "
    "lower (benchmarks/RESULTS.md,\n        \"LFP inference on ADBench\").",
    table_max_iter=_TABLE_MAX_ITER, image_min_epochs=_IMAGE_MIN_EPOCHS, image_score=_IMAGE_SCORE,
    likelihood_score="marginal", support_fraction=None, n_estimators=1, covariance_type="spherical",
    covariance_type_evidence="LFP's default: with feature scaling, one shared variance ranked "
    "the\n        anomalies of the 18 ADBench sets better (benchmarks/RESULTS.md, \"Feature "
    "scaling and\n        ensembles\"). Ignored with a float ``sigma``, which fixes one "
    "shared variance.",
    score_method_evidence="On tables LFP's ``'fused'`` ranked the anomalies of the 18 "
    "ADBench sets\n        as well as any other score or combination of them measured "
    "(within 0.05 AUROC)\n        and above its marginal, the former default "
    "(benchmarks/RESULTS.md, \"Detection\n        study on ADBench\"); on images both "
    "likelihoods rank simple pictures as normal,\n        and ``'local_features'`` ranks "
    "held-out classes at LFP's image budget:\n        after 80 epochs the code's "
    "``'local'`` ranked held-out digits at 96.2 mean\n        AUPRC (96.7 at 40), a tie "
    "with kNN on the pixels, while its encoder's maps\n        held; the mean of both "
    "spaces ranked them at 97.1, and Fashion-MNIST classes\n        above LOF on the "
    "pixels (benchmarks/DEFAULTS.md, \"Images\").",
    max_iter_evidence="LFP's default: five epochs ranked the ADBench anomalies best of 1 "
    "to 20 with\n        ``'fused'`` (benchmarks/RESULTS.md, \"Detection study on "
    "ADBench\").",
    image_epochs_evidence="LFP's default is 80: its generator learns from codes that short\n        "
    "Langevin runs infer, and on Fashion-MNIST 80 epochs drew FD 13.5 against 20.9\n        "
    "at 40 (3 seeds; a tuned kernel density: 17.9), for about twice the fit.",
    support_fraction_evidence="The default for LFP\n        (trimmed): above untrimmed "
    "training on the ADBench sets (benchmarks/RESULTS.md,\n        \"Ablation of the "
    "defaults on ADBench\").",
    n_estimators_evidence="One, the default for LFP: five members measured lower on the "
    "ADBench sets\n        (benchmarks/RESULTS.md, \"Feature scaling and ensembles\").")


_PRIOR_COMPONENTS_DOC = PRIOR_COMPONENTS_DOC % dict(evidence=(
    "The mixture stays out of inference: the Langevin steps climb ``log p(z)``,\n        "
    "and a refitted prior's sharp components pulled the codes into their cores, which\n        "
    "cost the ``'lof'`` scores of load_digits 4.8 AUPRC points. Drawn from the\n        "
    "mixture, the samples were ahead of ``N(0, I)``'s on both image tasks and of\n        "
    "scikit-learn's tuned generators on load_digits (benchmarks/RESULTS.md, \"Samples:\n        "
    "load_digits\", \"Samples: Fashion-MNIST\"; benchmarks/DEFAULTS.md, \"Generating\")."))


class LangevinFlowPriorGenerator(BaseLatentFlow):
    __doc__ = f"""Generator with a normalizing-flow prior, learned with short-run Langevin inference.

    The model is ``x = g(z) + eps``, ``eps ~ N(0, sigma^2 I)``, with the
    coupling-flow prior ``p(z)``. For each mini-batch the posterior latents are
    inferred by K steps of Langevin dynamics on ``log p(z) + log N(x; g(z), sigma^2 I)``:

        z <- z + (delta^2 / 2) * grad_z log p(x, z) + delta * xi,

    then ``g`` takes a step on ``||x - g(z~)||^2 / (2 sigma^2)`` and the flow
    on ``-log p(z~)``, with no gradient through the chain. An inference network
    ``q(x)`` (``encoder_``) is fitted alongside to the chains' latents,
    ``||q(x) - z~||^2``, and proposes where each chain starts (the amortized
    MCMC of Xie et al.'s cooperative learning): a chain started near its
    posterior needs few steps. The paper starts every chain from ``N(0, I)``
    (``chain_init='prior'``).

    Missing values: NaN entries of ``X`` drop out of the likelihood, so ``fit``
    learns from incomplete rows and :meth:`impute` fills them in.

    Inference at ``transform``, ``score_samples``, ``impute`` and ``score`` runs
    ``inference_steps`` steps without noise (gradient ascent on ``log p(x, z)``)
    from the encoder's proposal (or from ``z = 0``, the prior's mode, with
    ``chain_init='prior'``), so a fitted model gives the same output for a row
    whatever its batch. The paper's training and inference:
    ``chain_init='prior', n_steps=20, persistent_steps=None, inference_steps=20``.

    Parameters
    ----------
    n_components : int or None, default=None
        Latent dimension d. None uses ``min(20, max(1, n_features // 2))``.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden widths of the MLP generator (from the latent upwards, reversed).
        Ignored with ``image_shape``.
    n_flow_blocks : int, default=5
        Coupling blocks of the flow prior.
{_PRIOR_COMPONENTS_DOC}
    image_shape : tuple (C, H, W) or None, default=None
        Rows are flattened images: use a DCGAN-style transposed-conv generator.
    sigma : float or 'auto', default='auto'
        Observation noise std. ``'auto'`` fits it by maximum likelihood at the
        inferred latents every epoch (per feature or shared, see
        ``covariance_type``), which keeps the likelihood on the data's own
        scale whatever the number of features or their scaling. A float fixes
        an isotropic ``sigma`` (the paper: 0.3 for images in [-1, 1]); ``covariance_type``
        is then ignored.
    step_size : float, default=1.0
        Langevin step in units of the approximate posterior std
        ``tau = (1 + sum_j v_j / (d sigma_j^2))^{{-1/2}}`` (v_j the training
        variance of feature j, d the latent dimension): the step is ``delta = step_size * tau``,
        so one value suits 6 or 1,500 features. The paper's 0.1 on MNIST at
        sigma 0.3 is about 1.1 here.
    n_steps : int, default=10
        Langevin steps K of a training chain's first visit (every visit with
        ``persistent_steps=None``; the paper: 20). On the ADBench sets 10 ranked
        anomalies as 20 did for half the first epoch's chain steps, and 5 lost
        ground on single sets (benchmarks/RESULTS.md, "LFP inference on ADBench").
    persistent_steps : int or None, default=5
        An int k: persistent training chains, as in alternating back-propagation (Han et
        al., AAAI 2017): each training row keeps its latent; its first visit (the first
        epoch) starts it at ``chain_init``'s start and runs ``n_steps``, later visits
        resume it for k steps. The chains of the next 1,024 rows of an epoch (whole
        batches) advance together, then the weights take their steps on those rows'
        latents: small batches then pay for their Langevin steps at the cost per row of
        large ones. None: every batch starts its chains afresh and runs ``n_steps`` (the
        paper). With the default, training costs a fraction of fresh chains' for the same
        mean AUROC on the 18 ADBench sets (benchmarks/RESULTS.md, "ADBench anomaly
        detection" and "Speed").
    inference_steps : int or 'auto', default='auto'
        Noise-free Langevin steps of every inference after ``fit`` (``transform``,
        ``score_samples``, ``impute``, ``score``). ``'auto'``: {_TABLE_INFERENCE_STEPS} on
        tables, ``n_steps`` with ``image_shape``. On tables, from the encoder's proposal, two
        steps (with 8 importance draws) ranked the anomalies of the ADBench sets about as
        20 steps from ``z = 0`` did, at a small fraction of the cost, where two steps from
        ``z = 0`` moved single sets far. On images the local scores of the codes want
        codes nearer the posterior mode (benchmarks/RESULTS.md, "LFP inference on ADBench"
        and "Images: load_digits"). Raise it for latents closer to the mode
        (``transform``, ``impute``).
    chain_init : {{'encoder', 'prior'}}, default='encoder'
        Where chains start: ``'encoder'``, the proposal ``q(x)`` of the inference
        network ``encoder_`` fitted to the training chains' latents; ``'prior'``, a
        prior draw ``N(0, I)`` in training and the prior's mode ``z = 0`` at inference
        (the paper). The encoder is fitted either way, so this can be changed on a fitted
        model; ``offset_`` and the training codes of the local scores follow it, as
        they follow every inference parameter.
    learning_rate_init : float, default=4e-4
        Adam learning rate of the generator, the flow and the encoder (betas
        (0.5, 0.999)), decayed by 0.998 per epoch.
{_PARAMETERS_DOC}

    Attributes
    ----------
    generator_ : torch.nn.Module
        The fitted generator ``g``.
    encoder_ : torch.nn.Module
        The inference network ``q``: rows (n, n_features) to proposed latents
        (n_estimators, n, n_components_), the start of every chain with
        ``chain_init='encoder'``. It is GLF's ``encoder_`` in form (the same network, rows
        to codes) but not in role: here it only proposes, and the Langevin steps on
        ``log p(x, z)`` give the code, where GLF's code is its encoder's output.
{COMMON_ATTRIBUTES_DOC}

    See Also
    --------
    GenerativeLatentFlow : an encoder instead of Langevin inference; faster.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> from skflowgen import LangevinFlowPriorGenerator
    >>> X, _ = load_breast_cancer(return_X_y=True)
    >>> model = make_pipeline(MinMaxScaler(),
    ...                       LangevinFlowPriorGenerator(max_iter=5, random_state=0))
    >>> model.fit(X).score_samples(X[:3]).shape
    (3,)
    """

    _network_names = ("generator_", "flow_", "noise_", "encoder_")
    _loss_terms = ("-log p(x | z)", "-log p(z)")  # per row, at the inferred latents
    _fit_state = ("_chains", "_chain_steps")
    _allow_nan = True
    _divergence_hint = " or step_size"

    _table_max_iter = _TABLE_MAX_ITER
    _image_min_epochs = _IMAGE_MIN_EPOCHS
    _image_score = _IMAGE_SCORE
    _likelihood_score = "marginal"
    _training_parameters = BaseLatentFlow._training_parameters | {"sigma", "persistent_steps"}

    _parameter_constraints = {
        **BaseLatentFlow._parameter_constraints,
        "sigma": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "step_size": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "inference_steps": [Interval(numbers.Integral, 1, None, closed="left"),
                            StrOptions({"auto"})],
        "persistent_steps": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "chain_init": [StrOptions({"encoder", "prior"})],
    }

    def __init__(self, n_components=None, *, hidden_layer_sizes=(64, 64), n_flow_blocks=5,
                 n_prior_components="auto", image_shape=None, sigma="auto", step_size=1.0, n_steps=10, persistent_steps=5,
                 inference_steps="auto", chain_init="encoder",
                 feature_scaling="robust", covariance_type="spherical", score_method="auto", n_importance_samples=8,
                 contamination=0.1, novelty=False, support_fraction=None, n_estimators=1, max_iter="auto",
                 batch_size="auto",
                 learning_rate_init=4e-4, tol=None, n_iter_no_change=10, early_stopping=False,
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
        self.sigma = sigma
        self.step_size = step_size
        self.n_steps = n_steps
        self.persistent_steps = persistent_steps
        self.inference_steps = inference_steps
        self.chain_init = chain_init

    def _initial_noise_variance(self):
        return super()._initial_noise_variance() if self._fits_noise else self.sigma ** 2

    def _build_modules(self, generator):
        super()._build_modules(generator)
        self.generator_ = make_decoder(self._n_members, self.n_components_, self.n_features_in_,
                                       self._hidden_sizes, self.image_shape, generator)
        self.encoder_ = make_encoder(self._n_members, self.n_features_in_, self.n_components_,
                                     self._hidden_sizes, self.image_shape, generator)

    def _make_optimizers(self):
        optimizers = [adam(net.parameters(), lr=self.learning_rate_init, betas=(0.5, 0.999))
                      for net in (self.generator_, self.flow_, self.encoder_)]
        return [(opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.998))
                for opt in optimizers]

    def _infer_latent(self, x, mask, z=None, noise=None, n_steps=None):
        """``n_steps`` (default: ``inference_steps``) steps of Langevin dynamics on
        ``log p(x, z)``; from ``_chain_start`` and noise-free by default.
        No step drifts a latent by more than ten times the prior's radius (``flow_.radius()``,
        ``sqrt(d)`` for ``N(0, I)``): a healthy chain never comes near it, one that runs away
        along a stiff direction stays finite. The radius follows the prior, as latents may
        spread far beyond ``N(0, I)`` as training goes on. Latents are
        (n_members, n, n_components_), each member on its own posterior."""
        if z is None:
            z = self._chain_start(x, mask)
        return langevin(lambda z: self._log_joint(x, mask, z), z,
                        self._inference_steps if n_steps is None else n_steps,
                        self.step_size * self._posterior_scale(), noise,
                        max_drift=10 * self.flow_.radius().detach())

    def _chain_start(self, x, mask):
        """Where a chain starts: the encoder's proposal ``q(x)`` (missing entries at 0 in the
        networks' units: the training median with ``feature_scaling='robust'``, the mean with
        ``'standard'``), or the prior's mode 0 (``chain_init``)."""
        if self.chain_init == "encoder":
            return self.encoder_(x if mask is None else torch.where(mask, x, 0.0)).detach()
        return x.new_zeros(self._n_members, len(x), self.n_components_)

    def _training_start(self, x, mask, generator):
        """Where a training chain starts: the encoder's proposal, or a prior draw
        ``N(0, I)`` (the paper)."""
        if self.chain_init == "encoder":
            return self._chain_start(x, mask)
        return torch.randn((self._n_members, len(x), self.n_components_), generator=generator,
                           device=x.device)

    def _train(self, x_train, x_val, generator, partial=False):
        """With ``persistent_steps``, one chain per member and training row lives for the
        fit (for ``partial_fit``, for the call): its first visit starts it
        (``_training_start``) and runs ``n_steps``, later visits resume it for
        ``persistent_steps``."""
        self._chains = None if self.persistent_steps is None else x_train.new_zeros(
            (self._n_members, len(x_train), self.n_components_))
        self._chain_steps = None  # the first visit
        super()._train(x_train, x_val, generator, partial)

    def _load_state(self, state):
        """Rollback also restarts, from the prior's mode, any chain the failed epoch left
        non-finite."""
        super()._load_state(state)
        chains = getattr(self, "_chains", None)
        if chains is not None:
            chains.copy_(torch.where(torch.isfinite(chains), chains, 0.0))

    def _end_epoch(self, stats, n_rows):
        super()._end_epoch(stats, n_rows)
        self._chain_steps = self.persistent_steps

    def _lookahead_rows(self, batch_size, n_rows):
        """Persistent chains advance ``_CHAIN_ROWS`` rows at a time (fewer where the memory
        of a Langevin step allows fewer), whole batches."""
        if self.persistent_steps is None:
            return batch_size
        return batch_size * max(1, min(_CHAIN_ROWS, self._chunk_size()) // batch_size)

    def _prepare_rows(self, x, rows, generator):
        """Each row's chain resumes where its last visit left it (the first epoch: from
        its start), for the upcoming batches at once."""
        chains = getattr(self, "_chains", None)
        if chains is None:
            return
        x_rows, mask = self._observed(x[rows])
        first = self._chain_steps is None
        steps = self.n_steps if first else self._chain_steps
        noise = torch.randn((steps, self._n_members, len(rows), self.n_components_),
                            generator=generator, device=x.device)
        start = self._training_start(x_rows, mask, generator) if first else chains[:, rows]
        chains[:, rows] = self._infer_latent(x_rows, mask, start, noise, steps)

    def _train_step(self, x, mask, generator, rows=None):
        chains = getattr(self, "_chains", None)
        if chains is None:  # the paper: a fresh short-run chain for every batch
            z0 = self._training_start(x, mask, generator)
            noise = torch.randn((self.n_steps, *z0.shape), generator=generator, device=x.device)
            z = self._infer_latent(x, mask, z0, noise, self.n_steps)  # short-run sample z~
        else:  # advanced by _prepare_rows
            z = chains[:, rows]
        x_hat = self.generator_(z)
        log_likelihood = self._log_likelihood(x, x_hat, mask)          # trains g
        log_prior = self.flow_.log_prob(z)                               # trains the flow
        code_error = (self.encoder_(x) - z).square().sum(dim=-1)         # trains the encoder
        self._optimize(-(log_likelihood + log_prior), code_error)
        terms = torch.stack([-log_likelihood.detach().mean(), -log_prior.detach().mean()])
        return torch.cat([terms, self._residual_stats(x, x_hat.detach(), mask)])

    def _decode(self, z):
        return self.generator_(z)
