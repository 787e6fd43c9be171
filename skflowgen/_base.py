"""The estimator both models are: the public API and the template a model fills.

As scikit-learn's ``BaseMixture``, this class holds ``fit`` and the contract; the plumbing
lives in one module per concern, each a mixin of this class:

- :mod:`skflowgen._auto`: every ``'auto'`` and None parameter value resolved;
- :mod:`skflowgen._scaling`: ``feature_scaling``, the units the networks see;
- :mod:`skflowgen._training`: the epoch loop, trimming, early stopping, rollback;
- :mod:`skflowgen._densities`: the noise, ``log p(x, z)``, the scores, streamed evaluation;
- :mod:`skflowgen.outlier`: the rows a fitted model keeps, ``offset_``, ``predict``;
- :mod:`skflowgen._sampling`: ``sample`` and the mixture of the codes it draws from;
- :mod:`skflowgen._persistence`: pickling.
"""

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin,
                          TransformerMixin)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._auto import _TABLE_SCORE, ResolvedParameters, resolve_device
from ._densities import DensityMixin
from ._persistence import PersistenceMixin
from ._sampling import SamplingMixin
from ._scaling import FeatureScalingMixin
from ._training import TrainingMixin, torch_generator
from .flows import CouplingFlow
from .networks import GaussianNoise, member_mean
from .outlier import DetectorMixin
from .scores import SCORES


class BaseLatentFlow(PersistenceMixin, DetectorMixin, SamplingMixin, TrainingMixin, DensityMixin,
                     FeatureScalingMixin, ResolvedParameters, ClassNamePrefixFeaturesOutMixin,
                     TransformerMixin, OutlierMixin, BaseEstimator):
    """Shared plumbing of the latent-flow estimators. Not for direct use.

    A model fills the template methods:

    - ``_network_names``: the attributes holding its networks (saved, moved, rolled back);
    - ``_build_modules(generator)``: create them (here: the flow prior and the noise);
    - ``_make_optimizers()``: ``[(optimizer, scheduler), ...]``;
    - ``_train_step(x, mask, generator, rows)``: one mini-batch, given its rows in the
      networks' units, their mask of observed entries (None when complete) and their
      indices in the training set (for state kept per training row);
    - ``_infer_latent(x, mask)``: the latent of each row, (n_members, n, n_components_);
    - ``_decode(z)``: the mean ``g(z)`` of ``p(x | z)``.

    and may hook ``_initial_latents``, ``_prepare_rows``, ``_lookahead_rows``,
    ``_end_epoch``, ``_convergence_loss`` and ``_after_fit``.
    """

    _network_names = ()

    def __init__(self, n_components, *, hidden_layer_sizes, n_flow_blocks, n_prior_components,
                 image_shape,
                 feature_scaling, covariance_type, score_method, n_importance_samples, contamination,
                 novelty, support_fraction, n_estimators,
                 max_iter, batch_size, learning_rate_init, tol, n_iter_no_change, early_stopping, validation_fraction,
                 warm_start, verbose, random_state, n_jobs, device):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_flow_blocks = n_flow_blocks
        self.n_prior_components = n_prior_components
        self.image_shape = image_shape
        self.feature_scaling = feature_scaling
        self.covariance_type = covariance_type
        self.score_method = score_method
        self.n_importance_samples = n_importance_samples
        self.contamination = contamination
        self.novelty = novelty
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
        self.n_jobs = n_jobs
        self.device = device

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "n_flow_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_prior_components": [Interval(numbers.Integral, 1, None, closed="left"),
                               StrOptions({"auto"})],
        "image_shape": ["array-like", None],
        "feature_scaling": [StrOptions({"robust", "standard"}), None],
        "score_method": [StrOptions({"auto", *SCORES})],
        "n_importance_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"diag", "spherical"})],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "novelty": ["boolean"],
        "support_fraction": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "n_jobs": [Interval(numbers.Integral, None, -1, closed="right"),
                   Interval(numbers.Integral, 1, None, closed="left"), None],
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
        for name in self._network_names:
            getattr(self, name).to(device)
        return device

    @property
    def _n_features_out(self):
        return self._n_members * self.n_components_

    # ------------------------------------------------------------ training
    def fit(self, X, y=None):
        """Fit the model to ``X``. Every row trains, unless something needs rows held out
        (``novelty=True``, ``early_stopping``): then
        ``validation_fraction`` of them (at most 4,096) are set aside before training.
        ``offset_`` is calibrated on the scores of every row of ``X`` (``novelty=False``)
        or of the held-out rows (``novelty=True``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self
        """
        self._validate_params()
        X, seeds, device = self._start_training(X, self.warm_start and hasattr(self, "flow_"))
        vars(self).pop("_row_samples", None)  # partial_fit's: a fit sets its own rows aside
        self.n_samples_seen_ = len(X)
        generator = torch_generator(seeds[1], device)
        X_train = self._split_held_out(X, generator)
        x_held = self._to_device(self._held_out_rows, device) if self.early_stopping else None
        self._train_epochs(self._to_device(X_train, device), x_held, generator)
        self._keep_rows(self._sample_rows(X_train if self.novelty else X, seeds[2]))
        self._fit_offset(X)
        return self

    def partial_fit(self, X, y=None):
        """One epoch over the rows of ``X``, continuing the fitted model (as
        :meth:`sklearn.neural_network.MLPRegressor.partial_fit`), for data that comes in
        blocks: ``dask_ml.wrappers.Incremental`` drives it over a dask array's blocks.

        The first call (or the first on an unfitted model) builds the networks and takes
        ``feature_scaling`` from its block; each call then runs one epoch over its rows
        (``n_iter_`` and ``loss_curve_`` grow by one) at a constant learning rate:
        ``max_iter``, ``tol``, ``early_stopping`` and ``fit``'s learning-rate schedule do
        not apply, and ``batch_size='auto'`` is its value for ``fit`` on large data (256
        rows on tables), the call's rows cut into batches of about equal size. ``sigma^2``
        is fitted to the residuals of about the last pass over the rows (as many rows as
        the distinct training rows seen, at most 10,000). LFP's chains start from the
        inference network in every call.

        The rows kept (held out of training where :attr:`_holds_out`, by a key of their
        values, so that a row held out in one pass is held out in every pass; the reference
        rows; see :mod:`skflowgen.outlier`) are bounded samples of the rows seen; what is
        derived from them (the codes' mixture :meth:`sample` draws from among them) is
        recomputed at first use after each call.

        A call is all or nothing: where its epoch diverges (a non-finite loss) or is
        interrupted, the estimator is left as before the call (weights, optimizer state,
        kept rows, noise variance, ``offset_``, ``n_samples_seen_``), with a warning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self
        """
        self._validate_params()
        continuing = hasattr(self, "flow_")
        before = self._snapshot()
        X, seeds, device = self._start_training(X, continuing)
        self.n_samples_seen_ = (self.n_samples_seen_ if continuing else 0) + len(X)
        # each call its own draws, the same for the same random_state and calls
        generator = torch_generator(np.random.SeedSequence(
            [int(seeds[1]), self.n_iter_]).generate_state(1)[0], device)
        X_train = self._split_block(X, int(seeds[2]), fresh=not continuing)
        try:
            if len(X_train):
                self._train_epochs(self._to_device(X_train, device), None, generator,
                                   partial=True)
        except (FloatingPointError, KeyboardInterrupt) as exc:
            self._restore(before)
            what = "was interrupted" if isinstance(exc, KeyboardInterrupt) else \
                "diverged on this block (non-finite loss)"
            warnings.warn(f"partial_fit {what}: the estimator is left as it was before the "
                          "call.", RuntimeWarning, stacklevel=2)
            return self
        samples = self._row_samples
        samples["residuals"] = samples.pop("pending residuals", samples["residuals"])
        self._keep_rows(*samples["training"][1:])
        return self

    def _start_training(self, X, continuing):
        """Validate ``X`` (against the fitted model when ``continuing``), initialise a new
        model, move the networks to the device; return ``X``, three seeds and the device."""
        X = self._validate_input(X, reset=not continuing)
        if not continuing and len(X) < 2:
            raise ValueError(f"X has {len(X)} sample; at least 2 are needed to fit "
                             "(n_samples = 1).")
        if continuing and self.n_estimators != self._n_members:
            raise ValueError(f"Continuing a fit (warm_start or partial_fit) trains the fitted "
                             f"{self._n_members} members; n_estimators={self.n_estimators} "
                             "needs a fresh fit.")
        if np.isnan(X).all():
            raise ValueError("X has no observed entry: every value is NaN (missing).")
        self._check_params(X.shape[1])
        self._fit_support(X, continuing)
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=3)
        if not continuing:
            self._initialize(X, seeds[0])
            self._auto_table_score, self._auto_image_score = _TABLE_SCORE, self._image_score
            self._draws_noise = self.image_shape is None  # sample() on tables: x ~ p(x | z)
        device = self._device()
        for optimizer, _ in self._optimizers:  # moves optimizer state to the parameters' device
            optimizer.load_state_dict(optimizer.state_dict())
        return X, seeds, device

    def _train_epochs(self, x_train, x_val, generator, partial=False):
        """:meth:`_train` (with :meth:`_threads`), then drop the per-row training state and
        run ``_after_fit``."""
        try:
            with self._threads():
                self._train(x_train, x_val, generator, partial)
        finally:
            for name in self._fit_state:
                self.__dict__.pop(name, None)
        self._after_fit(x_train)

    def _initialize(self, X, seed):
        n_features = X.shape[1]
        unobserved = np.flatnonzero(np.isnan(X).all(axis=0))
        if len(unobserved):  # as SimpleImputer, which drops them
            warnings.warn(f"Features {unobserved.tolist()} have no observed value in X: the "
                          "model learns nothing of them, and impute fills them with what the "
                          "other features' codes decode to.", UserWarning, stacklevel=4)
        self.n_components_ = self._resolved_n_components(n_features)
        self._fit_feature_scaling(X)
        with warnings.catch_warnings():  # an all-NaN column has no variance: count it as 0
            warnings.simplefilter("ignore", RuntimeWarning)
            variance = np.nanvar(X, axis=0)
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

    def _initial_latents(self, x, generator):
        """Latents that initialise the flow's ActNorm layers: prior draws by default."""
        return torch.randn(self._n_members, len(x), self.n_components_, generator=generator)

    def _build_modules(self, generator):
        """Create the networks of ``_network_names``: here the flow prior and the noise."""
        self.flow_ = self._new_flow(generator)
        self.noise_ = GaussianNoise(self._n_members, self.n_features_in_)

    def _new_flow(self, generator):
        """A coupling flow on the latents."""
        return CouplingFlow(self.n_components_, self.n_flow_blocks, n_members=self._n_members,
                            generator=generator)

    # ------------------------------------------------------------ public API
    def score_samples(self, X):
        """Score of each row by ``score_method``; higher is more normal. Deterministic for a
        fitted model; ``skflowgen.scores`` says what each score estimates. The density scores
        (``'joint'``, ``'marginal'``) read the prior ``flow_``, not the mixture of the codes
        that :meth:`sample` draws from (:meth:`sample` says why).

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
        ``log p(x)`` (``score_method='marginal'``), whatever ``score_method`` says, under the
        prior ``flow_`` (not the codes' mixture of :meth:`sample`, which says why).

        What ``GridSearchCV`` ranks models by without a scorer (as
        :meth:`sklearn.mixture.GaussianMixture.score`): a density of x alone, comparable
        across ``n_components`` and step sizes, where the log joint is not. Compare trained
        models: on tables ``max_iter='auto'`` stops before the likelihood settles; set
        ``max_iter`` to 10 or more (which found a manifold's dimension, the default did not).

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
