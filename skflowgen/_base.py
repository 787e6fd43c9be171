"""Estimator plumbing shared by both models.

A model subclass provides the networks and the training step; this base does
everything else once: parameter and input validation, the device rule, the
private random generators, the mini-batch training loop (early stopping,
warm start, divergence rollback, interruption), streamed evaluation and
pickling. The outlier API and the rows it keeps live in :mod:`skflowgen.outlier`.
"""

import io
import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin,
                          TransformerMixin)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .flows import CouplingFlow
from .networks import GaussianNoise, member_mean
from .outlier import DetectorMixin
from .scores import SCORES

_STATE_FORMAT = 4  # 4: held-out rows set offset_; derived state follows the parameters
_EVAL_MEMORY = 64 * 2 ** 20  # bytes of activations per evaluation chunk
_DRAWS_MEMORY = 4 * 2 ** 20  # bytes of the importance draws' working set per block of rows
_MAX_ROLLBACKS = 3

COMMON_PARAMETERS_DOC = """\
    feature_scaling : {'robust', 'standard'} or None, default='robust'
        Units the networks see: each feature centred and divided by a spread learned in
        ``fit``. ``'robust'``: the median and the 5-95 percentile range (the full range where
        that is 0, 1 for a constant feature), so that a feature whose bulk is packed in a
        corner of its range (a heavy tail, or rare anomalies, stretched by ``MinMaxScaler``)
        still carries weight, and its tail shows as large values; ``'standard'``: mean and
        standard deviation; None: the data as given. Outputs stay in the data's units:
        ``score_samples`` is ``log p(x)`` of the unscaled row (the log-Jacobian
        ``-sum_j log s_j`` of the observed entries added), ``inverse_transform``, ``sample``
        and ``impute`` map back. A fixed ``sigma`` (LFP) is in the scaled units. Ignored with
        ``image_shape`` (a convolution shares its weights across pixels, which then keep one
        common scale) and with ``reconstruction='bce'`` (GLF), which needs the data in [0, 1]. On the 18 ADBench
        sets the default ranked anomalies better than None for both estimators, the largest
        single gain measured (benchmarks/RESULTS.md, "Feature scaling and ensembles").
    covariance_type : {'diag', 'spherical'}, default=%(covariance_type)r
        Observation noise ``N(x; g(z), diag(sigma^2))`` fitted by maximum
        likelihood: one variance per feature (``'diag'``, nonlinear factor
        analysis: features the model reconstructs well weigh more), or one
        shared variance (``'spherical'``, the papers' ``sigma^2 I``: no feature
        can be written off as noise, nor dominate the likelihood from a variance
        driven to its floor).
        %(covariance_type_evidence)s
    score_method : {'auto', 'marginal', 'joint', 'knn', 'lof'}, default='auto'
        What :meth:`score_samples`, :meth:`decision_function` and :meth:`predict` rank
        rows by; ``skflowgen.scores`` says what each estimates and when to choose it.
        ``'marginal'``: an importance-sampled ``log p(x)``; ``'joint'``: the papers' log
        joint ``log p(x, z~)`` at the inferred latent ``z~``; ``'knn'`` and ``'lof'``: the
        local density of ``z~`` among the codes of the rows the model keeps. ``'auto'``:
        ``'lof'`` with ``image_shape``, ``'%(table_score_method)s'`` on tables.
        :meth:`score` (model selection) uses the marginal whatever this says.
        %(score_method_evidence)s
    n_importance_samples : int, default=%(n_importance_samples)r
        Importance draws per row of the ``'marginal'`` score and of :meth:`score`:
        ``log p(x)`` is the log of the mean of ``p(x, z_i) / q(z_i)`` over them. Its
        cost grows with the draws (a decoder and flow pass each) and its variance
        shrinks. %(n_importance_samples_evidence)s
    contamination : float in (0, 0.5], default=0.1
        Expected fraction of outliers: ``predict`` flags about this share of new rows
        of the training distribution (``offset_``); with ``support_fraction=None`` it
        also sets which rows each training step learns from.
    support_fraction : float in (0, 1] or None, default=%(support_fraction)r
        Trimmed maximum likelihood: each training step minimises the mean loss
        (negative log-likelihood) of the ``support_fraction`` share of its batch
        that the model finds most likely, so that rows it cannot explain, the
        likely anomalies of an unlabeled training set, are not learned as normal
        (the deep counterpart of :class:`~sklearn.covariance.MinCovDet`; GLF's
        autoencoder and flow keep their rows by their own losses, the
        reconstruction error and the NLL of the code). None uses
        ``1 - contamination``; 1 trains on every row. %(support_fraction_evidence)s
    n_estimators : int, default=%(n_estimators)r
        Members of an ensemble trained together: the same networks with different initial
        weights (and their own Langevin noise), evaluated at once along a leading member
        dimension of every layer (one batched matrix product, not a loop over models).
        ``score_samples`` is the mean of the members' scores (the log of the geometric
        mean of their densities), which averages out the seed-to-seed spread of a deep
        detector; ``transform`` concatenates the members' latents, ``inverse_transform``
        averages the members' decodings of such a concatenation, and ``sample`` draws
        each row from a member chosen at random (the members' mixture).
        %(n_estimators_evidence)s
    max_iter : int, default=10
        Epochs of training (the most, with a ``tol``). A short budget is the default
        because it ranks anomalies best: early on a model has learned the bulk of the
        data and not yet its rare rows (the inlier-memorisation effect), while the
        held-out likelihood keeps improving long after the ranking peaks
        (benchmarks/RESULTS.md, "Ablation of the defaults"). Raise it for sampling
        and imputation.
    batch_size : int or 'auto', default='auto'
        Rows per training mini-batch. ``'auto'`` trains on
        ``min(256, max(16, n_samples // 10))`` rows, so that even a small table
        gets ten or more steps per epoch, and with ``image_shape`` on
        ``min(256, max(16, n_samples // 32))``: a convolutional network needs more
        steps (on ``load_digits`` a third of them ranked held-out digits lower,
        benchmarks/RESULTS.md, "Images"). Evaluation (scoring, ``transform``,
        ``sample``...) streams over chunks sized by memory instead: about 64 MiB
        of network activations each, whatever the number of rows.
    tol : float or None, default=None
        Minimum improvement of the training loss (GLF: of its reconstruction
        error; with ``early_stopping``: of the validation score) that resets
        the ``n_iter_no_change`` count, or None: no convergence test, training runs
        exactly ``max_iter`` epochs (a fixed budget, as with the ``tol=None`` of
        :class:`~sklearn.linear_model.SGDOneClassSVM`) and ends without a
        ``ConvergenceWarning``; with ``early_stopping``, the best epoch's weights
        are kept. With a float, a fit that reaches ``max_iter`` first warns.
    n_iter_no_change : int, default=10
        Epochs without a ``tol`` improvement before training stops.
    early_stopping : bool, default=False
        Stop when the mean log-likelihood of the held-out rows stops improving and
        keep the best weights. The log-likelihood is the estimator's table score
        (%(table_score_method)r), whatever ``score_method`` says: the local scores
        need the training rows' codes, which exist only once training ends.
    validation_fraction : float in (0, 1), default=0.2
        Fraction of the rows (at most 4,096) held out of training: ``offset_`` is the
        ``100 * contamination`` percentile of their scores, the scores new rows get
        (training rows score higher), and they are ``early_stopping``'s validation
        rows. The share of new rows ``predict`` flags then strays from
        ``contamination`` by about ``sqrt(c (1 - c) / n_held)`` (0.02 for 900 rows at
        0.2); on the 18 ADBench sets holding out a fifth moved the mean AUROC by less than
        0.2 points (benchmarks/RESULTS.md, "predict on new rows"). Where it rounds to no
        row, ``offset_`` comes from the training rows. With ``warm_start`` on the same
        rows, keep an int ``random_state``: the same rows are held out again.
    warm_start : bool, default=False
        Continue from the fitted networks and optimizer state on the next fit.
    verbose : int, default=0
        0 is silent; 1 prints one line per epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds private :class:`torch.Generator` objects for initialisation,
        shuffling, Langevin noise and importance sampling. Torch's global RNG
        is never used. A fitted model scores deterministically either way; its
        importance draws and ``sample`` draws come from a CPU generator, so that
        it gives the same numbers on the CPU and on a GPU, up to rounding.
    device : str, default='auto'
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        Resolved at every call, so ``set_params(device='cpu')`` works on a
        fitted model; a missing CUDA gives a warning and the CPU."""

COMMON_ATTRIBUTES_DOC = """\
    n_components_ : int
        Latent dimension used (of each member).
    flow_ : CouplingFlow
        The latent prior of every member; ``flow_.log_prob(z)`` of latents
        ``(n_estimators, n, n_components_)`` is the per-row log-density of each.
    noise_variance_ : ndarray of shape (n_estimators, n_features_in_)
        Observation noise variances ``sigma_j^2`` of ``N(x; g(z), diag(sigma^2))`` in the
        data's units, one row per member (a single row for one member: the shape does not
        depend on ``n_estimators``).
    offset_ : float
        ``score_samples`` percentile at ``100 * contamination`` over the rows held out of
        training (``validation_fraction``), for the current parameters: after
        ``set_params`` of one that moves a score, recomputed at first use
        (``skflowgen.outlier``).
    n_iter_ : int
        Epochs run (completed epochs, if the fit was interrupted).
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_scores_ : list of float or None
        Mean held-out log-likelihood per epoch with ``early_stopping``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names."""


def resolve_device(device):
    """Map ``'auto' | 'cpu' | 'cuda[:k]'`` to a :class:`torch.device`; fall back to the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]'; got {device!r}.") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]'; got {device!r}.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device={device!r} but CUDA is not available; using the CPU.",
                      UserWarning, stacklevel=3)
        return torch.device("cpu")
    return resolved


def adam(params, **kwargs):
    """``torch.optim.Adam`` with the fused kernel (one kernel for all parameters: measured
    4.6x faster than the default per-tensor loop on small networks)."""
    return torch.optim.Adam(params, fused=True, **kwargs)


def _clone(state):
    """A copy of a nested state dict: tensors cloned, containers rebuilt, the rest shared
    (immutable numbers and strings)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _clone(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(value) for value in state)
    return state


def auto_batch_size(n_rows, steps=10):
    """``batch_size='auto'``: ``min(256, max(16, n_rows // steps))`` rows, ``steps`` or more
    optimizer steps an epoch."""
    return min(256, max(16, n_rows // steps))


def torch_generator(seed, device):
    """A private generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


class BaseLatentFlow(DetectorMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                     OutlierMixin, BaseEstimator):
    """Shared plumbing of the latent-flow estimators. Not for direct use.

    A subclass defines ``_module_names``, ``_build_modules``,
    ``_make_optimizers``, ``_train_step``, ``_infer_latent`` and ``_decode``.
    ``_train_step(x, mask, generator, rows)`` gets the batch's rows in the networks' units,
    their mask of observed entries (None when complete) and their indices in the training
    set (for state kept per training row).
    """

    _module_names = ()

    def __init__(self, n_components, *, hidden_layer_sizes, n_flow_blocks, image_shape,
                 feature_scaling, covariance_type, score_method, n_importance_samples, contamination,
                 support_fraction, n_estimators,
                 max_iter, batch_size, learning_rate_init, tol, n_iter_no_change, early_stopping, validation_fraction,
                 warm_start, verbose, random_state, device):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_flow_blocks = n_flow_blocks
        self.image_shape = image_shape
        self.feature_scaling = feature_scaling
        self.covariance_type = covariance_type
        self.score_method = score_method
        self.n_importance_samples = n_importance_samples
        self.contamination = contamination
        self.support_fraction = support_fraction
        self.n_estimators = n_estimators
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "n_flow_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "image_shape": ["array-like", None],
        "feature_scaling": [StrOptions({"robust", "standard"}), None],
        "score_method": [StrOptions({"auto", *SCORES})],
        "n_importance_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"diag", "spherical"})],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "support_fraction": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "device": [str],
    }

    # ------------------------------------------------------------ validation
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._allow_nan
        return tags

    _allow_nan = False

    def _check_params(self, n_features):
        sizes = np.atleast_1d(self.hidden_layer_sizes)
        if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) \
                or (sizes < 1).any():
            raise ValueError("hidden_layer_sizes must be a non-empty sequence of positive "
                             f"integers; got {self.hidden_layer_sizes!r}.")
        if self.image_shape is not None:
            shape = np.asarray(self.image_shape)
            if shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer) \
                    or (shape < 1).any():
                raise ValueError("image_shape must be (channels, height, width) of positive "
                                 f"integers; got {self.image_shape!r}.")
            if shape.prod() != n_features:
                raise ValueError(f"image_shape={tuple(self.image_shape)} holds {shape.prod()} "
                                 f"values but X has {n_features} features.")
        resolve_device(self.device)

    def _validate_input(self, X, reset):
        """Check ``X`` with :func:`validate_data`; NaN passes only where the model allows it."""
        X = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64],
                          ensure_all_finite="allow-nan" if self._allow_nan else True)
        # extremes without a temporary copy of X (np.abs would double the memory)
        if max(np.fmax.reduce(X, axis=None), -np.fmin.reduce(X, axis=None)) \
                > np.finfo(np.float32).max:
            raise ValueError("X has values beyond the float32 range (3.4e38) that the networks "
                             "compute in; rescale it.")
        return X

    def _device(self):
        device = resolve_device(self.device)
        for name in self._module_names:
            getattr(self, name).to(device)
        return device

    def _chunk_size(self, draws=0):
        """Rows per chunk of every streamed evaluation, sized by memory rather than by the
        training batch: a Langevin step keeps every activation of a row and its gradient
        (``_EVAL_MEMORY`` bytes in all); with ``draws``, rows per block of a chunk whose
        ``draws`` importance draws per row, computed without a graph, hold about two layer
        outputs of each draw at a time (``_DRAWS_MEMORY``: larger working sets measured
        slower on a CPU). A power of two from 16 to 65,536."""
        total, widest = self._row_activations
        rows = _EVAL_MEMORY // (4 * 2 * total)
        if draws:
            rows = min(rows, _DRAWS_MEMORY // (4 * 2 * draws * widest))
        return 2 ** int(np.clip(np.log2(max(rows, 1)), 4, 16))

    def _count_row_activations(self):
        """``(sum, largest)`` of the output sizes of the networks' leaf modules in one forward
        pass of ``log p(x, z)`` for one row."""
        counts = []
        leaves = [m for name in self._module_names for m in getattr(self, name).modules()
                  if not any(m.children())]
        hooks = [m.register_forward_hook(lambda m, i, out: counts.extend(
            t.numel() for t in (out if isinstance(out, tuple) else (out,))))
            for m in leaves]
        try:
            with torch.no_grad():
                self._log_joint(torch.zeros(1, self.n_features_in_), None,
                                torch.zeros(self._n_members, 1, self.n_components_))
        finally:
            for hook in hooks:
                hook.remove()
        return max(1, sum(counts)), max(counts, default=1)

    @property
    def _hidden_sizes(self):
        """``hidden_layer_sizes`` as a tuple (an int means one hidden layer)."""
        return tuple(int(h) for h in np.atleast_1d(self.hidden_layer_sizes))

    @property
    def _n_features_out(self):
        return self._n_members * self.n_components_

    # ------------------------------------------------------------ training
    def fit(self, X, y=None):
        """Fit the model to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._validate_input(X, reset=not (self.warm_start and hasattr(self, "flow_")))
        if self.warm_start and hasattr(self, "flow_") and self.n_estimators != self._n_members:
            raise ValueError(f"warm_start continues the fitted {self._n_members} members; "
                             f"n_estimators={self.n_estimators} needs a fresh fit "
                             "(warm_start=False).")
        if np.isnan(X).all():
            raise ValueError("X has no observed entry: every value is NaN (missing).")
        self._check_params(X.shape[1])
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=3)
        if not (self.warm_start and hasattr(self, "flow_")):
            self._initialize(X, seeds[0])
        device = self._device()
        for optimizer, _ in self._optimizers:  # moves optimizer state to the parameters' device
            optimizer.load_state_dict(optimizer.state_dict())
        generator = torch_generator(seeds[1], device)
        X_train, X_held = self._split_held_out(X, generator)

        def to_model(rows):
            return self._to_model(torch.as_tensor(np.asarray(rows, dtype=np.float32),
                                                  device=device))
        x_train = to_model(X_train)
        x_val = to_model(X_held) if self.early_stopping else None
        try:
            self._train(x_train, x_val, generator)
        finally:
            for name in self._fit_state:
                self.__dict__.pop(name, None)
        self._after_fit(x_train)
        self._keep_rows(X_train, X_held, seeds[2])
        return self

    def _initialize(self, X, seed):
        n_features = X.shape[1]
        self.n_components_ = (self.n_components if self.n_components is not None
                              else min(20, max(1, n_features // 2)))
        self._fit_feature_scaling(X)
        with warnings.catch_warnings():  # an all-NaN column has no variance: count it as 0
            warnings.simplefilter("ignore", RuntimeWarning)
            variance = np.nanvar(X, axis=0) if len(X) > 1 else np.ones(n_features)
        self._feature_variance = np.nan_to_num(variance) / self._scale ** 2  # model units
        self._data_variance = max(float(self._feature_variance.mean()), 1e-12)
        self._inference_seed = int(seed)
        self._n_members = self.n_estimators
        generator = torch_generator(seed, "cpu")
        self._build_modules(generator)
        self._row_activations = self._count_row_activations()
        self.noise_.variance.fill_(self._initial_noise_variance())
        x_first = self._to_model(torch.from_numpy(np.array(X[:256], dtype=np.float32)))
        with torch.no_grad():
            self.flow_.initialize(self._initial_latents(x_first, generator))
        self._optimizers = self._make_optimizers()
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None

    def _auto_batch_size(self, n_rows):
        """``batch_size='auto'`` for ``n_rows`` training rows: 10 or more steps an epoch on
        tables, 32 or more with ``image_shape``."""
        return auto_batch_size(n_rows, 10 if self.image_shape is None else 32)

    @property
    def _score_method(self):
        """``score_method`` with ``'auto'`` resolved: ``'lof'`` for images, the estimator's
        ``_table_score_method`` otherwise."""
        if self.score_method != "auto":
            return self.score_method
        return "lof" if self.image_shape is not None else self._table_score_method

    @property
    def _scales_features(self):
        """Whether ``feature_scaling`` applies: not to images, whose convolutions share their
        weights across pixels and so need one scale for all of them."""
        return self.image_shape is None

    def _fit_feature_scaling(self, X):
        """``_center`` and ``_scale`` of each feature (see ``feature_scaling``), NaN ignored."""
        n_features = X.shape[1]
        center, scale = np.zeros(n_features), np.ones(n_features)
        if self.feature_scaling is not None and self._scales_features:
            with warnings.catch_warnings():  # all-NaN columns: centre 0, scale 1
                warnings.simplefilter("ignore", RuntimeWarning)
                if self.feature_scaling == "robust":
                    low, center, high = np.nanpercentile(X, [5, 50, 95], axis=0)
                    scale = np.where(high > low, high - low,
                                     np.nanmax(X, axis=0) - np.nanmin(X, axis=0))
                else:
                    center, scale = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
            center = np.nan_to_num(center)
            scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self._center, self._scale = center, scale

    def _to_model(self, x):
        """Rows in the data's units (a tensor) to the units the networks see."""
        return (x - x.new_tensor(self._center)) / x.new_tensor(self._scale)

    def _to_data(self, x):
        """Rows in the networks' units back to the data's units."""
        return x * x.new_tensor(self._scale) + x.new_tensor(self._center)

    def _initial_latents(self, x, generator):
        """Latents that initialise the flow's ActNorm layers: prior draws by default."""
        return torch.randn(self._n_members, len(x), self.n_components_, generator=generator)

    def _build_modules(self, generator):
        """Create the networks of ``_module_names``: here the flow prior and the noise."""
        self.flow_ = CouplingFlow(self.n_components_, self.n_flow_blocks,
                                  n_members=self._n_members, generator=generator)
        self.noise_ = GaussianNoise(self._n_members, self.n_features_in_)

    @property
    def noise_variance_(self):
        return self.noise_.variance[:, 0].cpu().numpy().astype(np.float64) * self._scale ** 2

    def _train(self, x_train, x_val, generator):
        """Epoch loop: convergence test, early stopping, rollback on divergence and on Ctrl-C.

        An epoch counts as good when its loss and a scoring pass at its final weights are
        finite; otherwise the fit rolls back to the last good epoch and halves the learning
        rates, a bounded number of times.
        """
        best, no_improvement, rollbacks = np.inf, 0, 0
        good = best_state = self._state()
        try:
            for _ in range(self.max_iter):
                rates = self._learning_rates()
                stats = self._run_epoch(x_train, generator)
                if not np.all(np.isfinite(stats)):
                    rollbacks += 1
                    self._load_state(good)
                    if rollbacks > _MAX_ROLLBACKS:
                        warnings.warn(
                            f"Training diverged {rollbacks} times (non-finite loss); stopped "
                            f"after {self.n_iter_} epochs with the last good weights. Lower "
                            "learning_rate_init" + self._divergence_hint + ".",
                            ConvergenceWarning, stacklevel=3)
                        break
                    self._set_learning_rates([0.5 * rate for rate in rates])
                    warnings.warn(f"Non-finite loss in epoch {self.n_iter_ + 1}: rolled back to "
                                  "the last good weights and halved the learning rates.",
                                  RuntimeWarning, stacklevel=3)
                    continue
                self._end_epoch(stats)
                self.n_iter_ += 1
                self.loss_curve_.append(float(stats[0]))
                criterion = self._convergence_loss(stats)
                if x_val is not None:
                    self.validation_scores_.append(float(self._score_rows(
                        x_val, data=False, method=self._table_score_method).mean()))
                    criterion = -self.validation_scores_[-1]
                if self.verbose:
                    line = f"Epoch {self.n_iter_}, loss = {self.loss_curve_[-1]:.6g}"
                    if x_val is not None:
                        line += f", validation score = {self.validation_scores_[-1]:.6g}"
                    print(line)
                good = self._state()
                if self.tol is not None:  # None: a fixed budget of max_iter epochs
                    improved = criterion < best - self.tol
                    no_improvement = 0 if improved else no_improvement + 1
                if criterion < best:
                    best, best_state = criterion, good
                if self.tol is not None and no_improvement >= self.n_iter_no_change:
                    break
            else:
                if self.tol is not None:
                    warnings.warn(f"Stopped at max_iter={self.max_iter} epochs without "
                                  "converging; increase max_iter.", ConvergenceWarning,
                                  stacklevel=3)
        except KeyboardInterrupt:
            self._load_state(good)
            warnings.warn(f"Fit interrupted: keeping the weights of the last completed epoch "
                          f"(n_iter_={self.n_iter_}).", RuntimeWarning, stacklevel=3)
        if x_val is not None:
            self._load_state(best_state)
        for name in self._module_names:
            getattr(self, name).eval()

    _divergence_hint = ""

    # Attributes that live only during a fit (per-row or per-group training state); dropped
    # when training ends, however it ends.
    _fit_state = ()

    def _run_epoch(self, x, generator):
        """One pass over shuffled mini-batches (each :meth:`_lookahead_rows` of them first
        handed to :meth:`_prepare_rows`), then a scoring pass of the last batch at the final
        weights (a step can leave weights that only fail on the next forward pass). The only
        host sync is at the end."""
        for name in self._module_names:
            getattr(self, name).train()
        perm = torch.randperm(len(x), generator=generator, device=x.device)
        batch_size = self.batch_size if self.batch_size != "auto" else self._auto_batch_size(len(x))
        lookahead = self._lookahead_rows(batch_size, len(x))
        totals = 0
        for start in range(0, len(x), batch_size):
            if start % lookahead == 0:
                self._prepare_rows(x, perm[start:start + lookahead], generator)
            rows = perm[start:start + batch_size]
            xb = x[rows]
            totals = totals + self._train_step(*self._observed(xb), generator, rows) * len(xb)
        for _, scheduler in self._optimizers:
            scheduler.step()
        with torch.no_grad():
            x_last, mask = self._observed(xb)
            probe = self._log_joint(x_last, mask, self._infer_latent(x_last, mask)).sum()
        return torch.cat([totals / len(x), probe[None]]).cpu().numpy()

    def _lookahead_rows(self, batch_size, n_rows):
        """Rows (a multiple of ``batch_size``) that :meth:`_prepare_rows` gets at a time,
        of the ``n_rows`` of an epoch."""
        return batch_size

    def _prepare_rows(self, x, rows, generator):
        """Hook before the training steps on ``x[rows]``, the next rows of the epoch's
        shuffle: per-row state a model keeps (LFP's persistent chains) is advanced here,
        for many batches at once."""

    def _optimize(self, *losses, optimizers=None):
        """One step of ``optimizers`` (default: every network's) on the sum of the trimmed
        means of the per-row ``losses`` (each (n_members, n), n free to differ): for each
        member, the mean over the ``support_fraction`` share of the rows with its lowest
        loss (least trimmed squares; None keeps ``1 - contamination``). The members' means
        are summed, so each member follows its own gradient. Returns the untrimmed mean of
        the first."""
        support = (1 - self.contamination if self.support_fraction is None
                   else self.support_fraction)
        loss = 0
        for rows in losses:
            kept = max(1, math.ceil(support * rows.shape[-1]))
            kept_rows = rows if kept == rows.shape[-1] else \
                torch.topk(rows, kept, dim=-1, largest=False, sorted=False).values
            loss = loss + kept_rows.mean(dim=-1).sum()
        optimizers = [o for o, _ in self._optimizers] if optimizers is None else optimizers
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        return losses[0].detach().mean()

    def _initial_noise_variance(self):
        """``sigma_j^2`` before training: the data variance (a model that explains nothing)."""
        return self._data_variance

    _fits_noise = True

    def _convergence_loss(self, stats):
        """The epoch quantity whose stalling stops training: the mean loss."""
        return float(stats[0])

    def _end_epoch(self, stats):
        """Refit each ``sigma_j^2`` by maximum likelihood from the epoch's residuals.

        ``stats`` starts with the epoch mean of ``_train_step``'s output:
        ``[loss, *residual_stats]`` (see :meth:`_residual_stats`).
        """
        if self._fits_noise:
            mean_squared, observed = self._split_residual_stats(stats)
            self._set_noise_variance(mean_squared, observed)

    @staticmethod
    def _residual_stats(x, x_hat, mask):
        """Over the batch: each member's mean squared residual per feature (flattened), then
        the observed fraction of each feature."""
        sq = (x - x_hat).square()
        if mask is None:
            return torch.cat([sq.mean(dim=1).flatten(), sq.new_ones(x.shape[1])])
        return torch.cat([(sq * mask).mean(dim=1).flatten(), mask.float().mean(dim=0)])

    def _split_residual_stats(self, stats):
        """``(mean_squared (n_members, p), observed (p,))`` from an epoch's ``stats``."""
        p, m = self.n_features_in_, self._n_members
        return stats[1:1 + m * p].reshape(m, p), stats[1 + m * p:1 + (m + 1) * p]

    def _set_noise_variance(self, mean_squared, observed):
        """``sigma_j^2`` of each member = mean squared residual (n_members, p) over observed
        entries (pooled over features when spherical), floored at 1e-3 of the data variance
        (an unobserved feature gets the mean of the others)."""
        mean_squared = np.asarray(mean_squared, dtype=np.float64)
        if self.covariance_type == "spherical":
            mean_squared = np.broadcast_to(mean_squared.sum(axis=1, keepdims=True),
                                           mean_squared.shape)
            observed = np.full(len(observed), np.sum(observed))
        var = np.divide(mean_squared, observed, out=np.full(mean_squared.shape, np.nan),
                        where=observed > 0)
        finite = np.isfinite(var)
        fill = np.array([row[ok].mean() if ok.any() else 1.0 for row, ok in zip(var, finite)])
        var = np.where(finite, var, fill[:, None])
        var = np.maximum(var, 1e-3 * self._data_variance)
        self.noise_.variance.copy_(torch.as_tensor(var[:, None, :], dtype=torch.float32))

    def _after_fit(self, x_train):
        """Hook after training, before ``offset_`` is set."""

    def _learning_rates(self):
        return [g["lr"] for optimizer, _ in self._optimizers for g in optimizer.param_groups]

    def _set_learning_rates(self, rates):
        groups = [g for optimizer, _ in self._optimizers for g in optimizer.param_groups]
        for group, rate in zip(groups, rates):
            group["lr"] = rate

    def _state(self):
        """A copy of everything training changes, for rollback."""
        return _clone({
            "modules": {n: getattr(self, n).state_dict() for n in self._module_names},
            "optimizers": [(o.state_dict(), s.state_dict()) for o, s in self._optimizers],
        })

    def _load_state(self, state):
        for name, module_state in state["modules"].items():
            getattr(self, name).load_state_dict(module_state)
        for (optimizer, scheduler), (o_state, s_state) in zip(self._optimizers,
                                                              state["optimizers"]):
            optimizer.load_state_dict(o_state)
            scheduler.load_state_dict(s_state)

    # ------------------------------------------------------------ the model's densities
    def _observed(self, x):
        """Split ``x`` into (values with NaN set to 0, mask of observed entries), or
        ``(x, None)`` when nothing is missing: the densities then skip the masking (one check
        per batch, outside the Langevin loop)."""
        if not self._allow_nan:
            return x, None
        mask = ~torch.isnan(x)
        if mask.all():
            return x, None
        return torch.where(mask, x, 0.0), mask

    def _log_likelihood(self, x, x_hat, mask):
        """``log p(x | z)`` per row, over the observed entries, in the networks' units."""
        return self.noise_.log_prob(x, x_hat, mask)

    def _log_jacobian(self, x, mask):
        """``sum_j log s_j`` over each row's observed entries: ``log p`` in the networks'
        units minus this is ``log p`` in the data's. Summed row by row whether or not
        ``mask`` is None, so that a row's value does not depend on the rest of its chunk."""
        observed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        log_scale = torch.as_tensor(np.log(self._scale), dtype=x.dtype, device=x.device)
        return torch.where(observed, log_scale, 0.0).sum(dim=-1)

    def _log_joint(self, x, mask, z):
        """``log p(x | z) + log p(z)`` per row."""
        return self._log_likelihood(x, self._decode(z), mask) + self.flow_.log_prob(z)

    def _posterior_scale(self):
        """Approximate posterior std of each member's latents,
        ``(1 + sum_j v_j / (d sigma_j^2))^{-1/2}``, with ``v_j`` the training variance of
        feature j (a constant feature adds nothing); shape (n_members, 1, 1)."""
        variance = self.noise_.variance
        ratio = (torch.as_tensor(self._feature_variance, dtype=variance.dtype,
                                 device=variance.device) / variance).sum(dim=-1, keepdim=True)
        return (1.0 + ratio / self.n_components_) ** -0.5

    def _scorer(self, device, data, method):
        """The function that scores one chunk with ``SCORES[method]`` (its importance draws
        fixed per call): the mean of the members' scores, a density in the data's units with
        ``data``."""
        score = SCORES[method]
        draws = None
        if score.importance:
            generator = torch_generator(self._inference_seed, "cpu")  # same draws on any device
            draws = torch.randn(self.n_importance_samples, self.n_components_,
                                generator=generator).to(device)

        def fn(xb):
            xb, mask = self._observed(xb)
            value = member_mean(score.function(self, xb, mask, self._infer_latent(xb, mask), draws))
            return value - self._log_jacobian(xb, mask) if data and score.density else value
        return fn

    def _score_rows(self, x, data=True, method=None):
        """:meth:`score_samples` of validated rows (array or tensor, in the data's units or,
        with ``data=False``, the networks'), by ``method`` (default: ``score_method``),
        streamed in the chunks that suit it."""
        method = self._score_method if method is None else method
        return self._apply(self._scorer(self._device(), data, method), x, data=data)

    def _stream(self, fn, x, data=False):
        """Yield ``(start, fn(chunk))`` for each chunk of ``x`` (array or tensor), computed on
        the model's device without parameter gradients, in chunks of :meth:`_chunk_size`
        rows (``data``: ``x`` holds rows in the data's units, which ``fn`` gets in the networks'
        units).

        A short last chunk is padded to a multiple of 16 rows: a row's result then does not
        depend on the other rows of the call (matrix products of fewer than about 12 rows
        round differently; from 16 rows up the CPU kernels agree to the bit whatever the
        number of rows, which the scikit-learn subset-invariance checks verify). On a GPU,
        whose libraries pick their matrix kernels by shape, every chunk is padded to the
        full chunk size instead: one shape for every call.
        """
        device = self._device()
        size = self._chunk_size()
        multiple = size if device.type == "cuda" else 16
        for start in range(0, len(x), size):
            chunk = x[start:start + size]
            if isinstance(chunk, np.ndarray):
                chunk = torch.from_numpy(np.array(chunk, dtype=np.float32))
            n = len(chunk)
            padded = -(-n // multiple) * multiple
            chunk = torch.nn.functional.pad(chunk.to(device), (0, 0, 0, padded - n))
            if data:
                chunk = self._to_model(chunk)
            with torch.no_grad():
                yield start, fn(chunk)[:n]

    def _apply(self, fn, X, data=False):
        """:meth:`_stream` into one preallocated float64 array: memory stays flat in rows."""
        out = None
        for start, result in self._stream(fn, X, data):
            result = result.cpu().numpy()
            if out is None:
                out = np.empty((len(X), *result.shape[1:]), dtype=np.float64)
            out[start:start + len(result)] = result
        return out

    # ------------------------------------------------------------ public API
    def score_samples(self, X):
        """Log-density score of each row; higher is more normal.

        ``score_method='marginal'`` gives an importance-sampled ``log p(x)``;
        ``'joint'`` gives ``log N(x; g(z~), diag(sigma^2)) + log p(z~)`` at the inferred
        latent ``z~``. Deterministic for a fitted model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return self._score_rows(X)

    def score(self, X, y=None):
        """Mean log-likelihood of ``X``, the average over rows of an importance-sampled
        ``log p(x)`` (``score_method='marginal'``), whatever ``score_method`` says.

        This is the number ``GridSearchCV`` ranks models by when it is given no scorer, as
        with :meth:`sklearn.mixture.GaussianMixture.score`: a density of x alone, it is
        comparable across ``n_components``, step sizes and the other hyperparameters,
        where the log joint (``'joint'``) is a density over x and the latent coordinates
        whose values grow with ``n_components``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return float(np.mean(self._score_rows(X, method="marginal")))

    def transform(self, X):
        """Latent code of each row: with ``n_estimators > 1``, the members' codes side by side.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_estimators * n_components_)
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return self._apply(lambda xb: self._infer_latent(*self._observed(xb))
                           .transpose(0, 1).flatten(1), X, data=True)

    def inverse_transform(self, Z):
        """Decode latents to data: the mean ``g(z)`` of ``p(x | z)``; with
        ``n_estimators > 1``, the mean of the members' decodings of their own codes (laid out
        as :meth:`transform` returns them).

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_estimators * n_components_)

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self)
        Z = check_array(Z, dtype=[np.float32, np.float64])
        if Z.shape[1] != self._n_features_out:
            raise ValueError(f"Z has {Z.shape[1]} columns, but {type(self).__name__} takes "
                             f"n_estimators * n_components_ = {self._n_features_out}.")
        members = (self._n_members, self.n_components_)
        return self._apply(lambda zb: self._to_data(
            member_mean(self._decode(zb.unflatten(1, members).transpose(0, 1)))), Z)

    def impute(self, X):
        """Fill the NaN entries of ``X`` with the decoding ``g(z~)`` of the latent ``z~``
        that :meth:`transform` infers from the row's observed entries; with
        ``n_estimators > 1``, the mean of the members' fills. Observed entries are returned
        as they are.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows with missing entries as NaN.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
            ``X`` with every NaN replaced; observed entries unchanged.
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)

        def fill(xb):
            x, mask = self._observed(xb)
            if mask is None:  # nothing missing in this chunk
                return xb
            return self._to_data(member_mean(self._decode(self._infer_latent(x, mask))))
        filled = self._apply(fill, X, data=True)
        return np.where(np.isnan(X), filled, X)

    def sample(self, n_samples=1, random_state=None):
        """Generate rows ``g(f^{-1}(u))``, ``u ~ N(0, I)``; with ``n_estimators > 1``, each
        row from a member drawn uniformly (the members' mixture).

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the private generator; None draws fresh samples each call.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        device = self._device()
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        generator = torch_generator(seed, "cpu")  # the same draws on any device
        u = torch.randn(n_samples, self.n_components_, generator=generator)
        member = torch.randint(self._n_members, (n_samples, 1), generator=generator)

        def generate(rows):
            x = self._decode(self.flow_.inverse(rows[:, :-1]))
            return self._to_data(x[rows[:, -1].long(), torch.arange(len(rows), device=device)])
        return self._apply(generate, torch.cat([u, member.float()], dim=1))

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the estimator keeps its modules
        if "flow_" not in state:
            return state
        buffer = io.BytesIO()
        torch.save({
            "modules": {n: state.pop(n).state_dict() for n in self._module_names},
            "optimizers": [(o.state_dict(), s.state_dict()) for o, s in state.pop("_optimizers")],
        }, buffer)
        state["_torch_state"] = buffer.getvalue()
        state["_state_format"] = _STATE_FORMAT
        return state

    def __setstate__(self, state):
        blob = state.pop("_torch_state", None)
        if blob is None:
            super().__setstate__(state)
            return
        if state.pop("_state_format", None) != _STATE_FORMAT:
            raise ValueError(f"This {type(self).__name__} was pickled by an incompatible version "
                             "of skflowgen; refit it with the installed version.")
        super().__setstate__(state)
        try:
            saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            self._build_modules(torch_generator(0, "cpu"))
            self._optimizers = self._make_optimizers()
            self._load_state(saved)
        except Exception as exc:  # a corrupt or foreign blob: say what failed
            raise ValueError(f"Could not restore the networks of this pickled "
                             f"{type(self).__name__}: {exc}") from exc
        for name in self._module_names:
            getattr(self, name).eval()
