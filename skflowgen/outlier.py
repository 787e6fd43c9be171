"""What turns a fitted latent-flow model into a detector: the rows it keeps, the codes of its
training rows, the offset, and ``decision_function`` / ``predict`` / ``fit_predict``.

``novelty`` says which rows a fitted model keeps, in the data's units (as in
:class:`~sklearn.neighbors.LocalOutlierFactor`):

- ``novelty=False`` (default): the *reference rows* are the rows given to ``fit`` (a random
  10,000 of them where there are more), and ``offset_`` is the ``100 * contamination``
  percentile of the scores of every row given to ``fit``, computed as ``predict`` computes
  them, so ``fit_predict(X)`` equals ``fit(X).predict(X)`` and flags that share of ``X``.
- ``novelty=True``: the *held-out rows*, ``validation_fraction`` of the rows given to
  ``fit`` (at most 4,096), are set aside before training and never trained on.
  ``offset_`` is the ``100 * contamination`` percentile of their scores: a new row of the
  training distribution gets such a score, where a training row scores higher than a new
  one (the networks fit their own rows better). So ``predict`` flags about
  ``contamination`` of new normal rows, as split-conformal calibration guarantees for
  exchangeable rows (Vovk et al. 2005; Bates et al., Ann. Statist. 2023). The reference
  rows are the held-out rows, then random training rows, up to 10,000 in all. To set the
  offset, the held-out rows are scored in two folds (alternate rows), each against the
  reference rows without its own fold: as new rows. (Leaving out the row alone is not
  enough for LOF, whose neighbours' densities then count the row itself: on a dense
  manifold it flagged far more new rows than ``contamination``.)

The local scores (``'knn'``, ``'lof'``) compare a row's code with the codes of the reference
rows, and a row is never its own neighbour: the first reference code equal to the row's
own, the row's copy where the row is a reference row, is left out of its neighbours
(:func:`nearest`), in ``fit`` and in ``predict`` alike. A new row that repeats a kept row
is so scored as that row is; the other copies of a repeated row stay its neighbours.

``partial_fit`` sees its rows a block at a time, and the same rows again on each pass over
them, so it chooses its rows by a key of each row's values (:func:`row_keys`): where rows are
held out (``novelty=True`` and the other uses of ``validation_fraction``), a row is held
out where its first key is below ``validation_fraction`` and among the ``_HELD_OUT_ROWS``
smallest of those seen, so it is never trained on in any pass; the reference rows are the
training rows of smallest second key. Keeping the rows of smallest key (a bottom-k sample) is
a uniform sample of the rows seen, bounded in memory, and for distinct rows the same whatever
the blocks and their order. The copies of a repeated row get keys of their own (the key
counts the equal rows before it in its block), so ``validation_fraction`` of them are held
out, as in ``fit`` (when one key held all copies of a row that is 30% of mammography's, new
rows, a third of them copies of training rows, were flagged at 6%, not 10%); a kept row
counts in the percentile as often as it was seen. Without ``novelty``, the reference rows
(that sample of the training rows) set the offset, each weighted by the times it was seen.

Everything derived from these rows (the reference codes, LOF's fitted part, the offset) is
recomputed at first use after ``set_params`` of any parameter that moves a score: every
parameter but those a class lists in ``_training_parameters``, which act on training alone.
No stale value is served, and a parameter added later invalidates by default.
"""

import numpy as np
import torch
from sklearn.utils.metaestimators import available_if

_HELD_OUT_ROWS = 4096  # most rows held out of training: a percentile within about 0.005
_REFERENCE_ROWS = 10_000  # training rows whose codes the local scores compare a code with
_DISTANCES_MEMORY = 16 * 2 ** 20  # bytes of distances held at once by the neighbour search
_STANDARDISATION_ROWS = 2048  # reference rows whose scores standardise a combined score
# parameters that move a score but not the codes of the reference rows
_SCORE_ONLY = frozenset({"score_method", "contamination", "n_importance_samples"})


def _mix(h):
    """splitmix64's finaliser: each bit of the output depends on every bit of ``h``."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def row_keys(X, seed):
    """Two keys in [0, 1) per row of ``X``, (2, n_samples): independent uniform draws,
    functions of ``seed``, the row's values (as float64) and how many equal rows come before
    it in ``X`` (so that the copies of a repeated row are held out as rows are, at random)."""
    bits = (np.asarray(X, dtype=np.float64) + 0.0).view(np.uint64)  # + 0.0: -0.0 is 0.0
    with np.errstate(over="ignore"):
        h = np.repeat(_mix(np.arange(2, dtype=np.uint64) + np.uint64(2 * seed + 1))[:, None],
                      len(bits), axis=1)
        for column in bits.T:
            h = _mix(h ^ column)
        _, equal = np.unique(h[0], return_inverse=True)
        order = np.argsort(equal, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(equal[order]) != 0])
        before = np.empty(len(h[0]), dtype=np.uint64)
        before[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts,
                                                                                len(order)]))
        h = _mix(h ^ _mix(before + np.uint64(seed)))
    return (h >> np.uint64(11)) * 2.0 ** -53


def bottom_k(sample, keys, rows, k):
    """The ``k`` rows of smallest key among ``sample`` ``(keys, rows, counts)`` and the new
    ``keys``, ``rows``, each key once, in the order of their keys, with the times it was
    seen."""
    keys = np.concatenate([sample[0], keys])
    rows = np.concatenate([sample[1], np.asarray(rows, dtype=np.float32)])
    counts = np.concatenate([sample[2], np.ones(len(keys) - len(sample[0]), dtype=np.int64)])
    keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    counts = np.bincount(inverse, counts, len(keys)).astype(np.int64)
    return keys[:k], rows[first[:k]], counts[:k]


def percentile(values, q, weights=None):
    """``np.percentile(np.repeat(values, weights), q)`` (linear interpolation), without the
    copies."""
    if weights is None:
        return float(np.percentile(values, q))
    order = np.argsort(values, kind="stable")
    values, ends = np.asarray(values)[order], np.cumsum(np.asarray(weights)[order])
    position = q / 100 * (ends[-1] - 1)
    low, high = np.searchsorted(ends, [np.floor(position), np.ceil(position)], side="right")
    return float(values[low] + (position - np.floor(position)) * (values[high] - values[low]))


def nearest(z, reference, k):
    """Distances and indices of the ``k`` nearest ``reference`` codes (n_members, m, d) of
    each latent of ``z`` (n_members, n, d), nearest first, ``k <= m``. A row is not its own
    neighbour: of the ``k + 1`` nearest, the first reference code equal to the row's own
    (its copy, when the row is a kept row) is left out, else the farthest (with ``k = m``,
    none is). Rows are processed
    in blocks of a multiple of 16 holding about ``_DISTANCES_MEMORY`` bytes of distances,
    each member's by a plain 2-D product: a batched product rounds differently with the
    number of rows, and a row's score must not depend on its batch."""
    members, m, _ = reference.shape
    block = max(16, _DISTANCES_MEMORY // (4 * members * m) // 16 * 16)
    squared_ref = reference.square().sum(dim=-1)[:, None, :]
    distances, indices = [], []
    for zb in z.split(block, dim=1):
        # ||r||^2 - 2 z.r in one pass over the distances; ||z||^2, the same for a row's every
        # candidate, is added to the k kept
        partial = torch.stack([torch.addmm(sq, zm, rm.T, alpha=-2)
                               for zm, rm, sq in zip(zb, reference, squared_ref)])
        values, index = torch.topk(partial, min(k + 1, m), dim=-1, largest=False)
        values = values + zb.square().sum(dim=-1, keepdim=True)
        if k < m:
            candidates = torch.gather(reference, 1, index.flatten(1)[..., None].expand(
                -1, -1, reference.shape[-1])).view(*index.shape, -1)
            own = (candidates == zb[:, :, None, :]).all(dim=-1)
            own[..., -1] |= ~own.any(dim=-1)  # no copy among them: the farthest goes
            keep = ~(own & (own.cumsum(dim=-1) == 1))  # the first copy alone is left out
            values, index = (t[keep].view(*t.shape[:2], k) for t in (values, index))
        distances.append(values.clamp_min(0).sqrt())
        indices.append(index)
    return torch.cat(distances, dim=1), torch.cat(indices, dim=1)


def lof_fit(reference, k):
    """LOF's fitted part: each reference code's k-distance and local reachability density
    among the other codes (itself left out by :func:`nearest`), shapes (n_members, m)."""
    distances, index = nearest(reference, reference, k)
    k_distance = distances[..., -1]
    reach = torch.maximum(distances, torch.gather(k_distance, 1, index.flatten(1))
                          .view_as(index))
    return k_distance, 1 / (reach.mean(dim=-1) + 1e-10)


class DetectorMixin:
    """The outlier API of :class:`~skflowgen._base.BaseLatentFlow` (as
    :class:`~sklearn.covariance.EllipticEnvelope`), with the state it keeps."""

    # Parameters that act on training alone (n_prior_components on sample alone): set on a
    # fitted model, they change no score (novelty decides which rows train and calibrate:
    # offset_ refuses a change of it).
    _training_parameters = frozenset({
        "n_components", "hidden_layer_sizes", "n_flow_blocks", "n_prior_components",
        "feature_scaling",
        "covariance_type", "support_fraction", "n_estimators", "max_iter", "batch_size",
        "learning_rate_init", "tol", "n_iter_no_change", "early_stopping",
        "validation_fraction", "novelty", "warm_start", "verbose", "random_state", "device"})

    def _scoring_key(self, codes_only=False, ignore=()):
        """The parameters a score depends on (``codes_only``: those the codes depend on),
        less ``ignore``, as a comparable value."""
        skip = self._training_parameters | (_SCORE_ONLY if codes_only else frozenset()) \
            | frozenset(ignore)
        return tuple((name, repr(value)) for name, value in
                     sorted(self.get_params(deep=False).items()) if name not in skip)

    @property
    def _holds_out(self):
        """Whether training holds rows out: for ``novelty``'s offset or ``early_stopping``'s
        validation."""
        return self.novelty or self.early_stopping

    def _split_held_out(self, X, generator):
        """``fit``'s split: where :attr:`_holds_out`, set ``validation_fraction`` of the rows
        (at most ``_HELD_OUT_ROWS``) drawn at random aside as ``_held_out_rows``, none where
        that rounds to no row or leaves none to train on (then a ``novelty`` offset comes
        from the training rows), which ``early_stopping`` refuses; return the rows to train
        on."""
        n_held = min(int(round(self.validation_fraction * len(X))), _HELD_OUT_ROWS) \
            if self._holds_out else 0
        if (n_held < 1 or n_held >= len(X)) and self.early_stopping:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no "
                             f"rows to train or to validate on with {len(X)} samples.")
        n_held = n_held if 0 < n_held < len(X) else 0
        order = torch.randperm(len(X), generator=generator, device=generator.device).cpu()
        held = np.sort(order[:n_held].numpy())
        self._held_out_rows, self._held_out_counts = X[held], None
        return np.delete(X, held, axis=0)

    def _sample_rows(self, X, seed):
        """``fit``'s reference sample of ``X``, random rows in their order: with ``novelty``,
        of the training rows, enough to make ``_REFERENCE_ROWS`` with the held-out rows;
        without, of all the rows given to ``fit`` (all of them up to ``_REFERENCE_ROWS``)."""
        n_kept = _REFERENCE_ROWS - (len(self._held_out_rows) if self.novelty else 0)
        return X[np.sort(np.random.RandomState(seed).permutation(len(X))[:max(0, n_kept)])]

    def _split_block(self, X, seed, fresh=False):
        """``partial_fit``'s split of ``X``: update the bottom-k samples of held-out rows
        (where :attr:`_holds_out`) and of training rows (see the module docstring; empty
        ones, keyed by ``seed``, on a ``fresh`` model or after ``fit``) and return the rows
        to train on."""
        if fresh or "_row_samples" not in vars(self):
            empty = (np.empty(0), np.empty((0, X.shape[1]), dtype=np.float32),
                     np.empty(0, dtype=np.int64))
            self._row_samples = {"seed": seed, "held": empty, "training": empty,
                                 "residuals": None}
        state = self._row_samples
        first, second = row_keys(X, state["seed"])
        keys = state["held"][0]
        largest = keys[-1] if len(keys) >= _HELD_OUT_ROWS else np.inf
        held = (first < self.validation_fraction) & (first <= largest) & self._holds_out
        state["held"] = bottom_k(state["held"], first[held], X[held], _HELD_OUT_ROWS)
        state["training"] = bottom_k(state["training"], second[~held], X[~held],
                                     _REFERENCE_ROWS)
        self._held_out_rows, self._held_out_counts = state["held"][1:]
        return X[~held]

    def _keep_rows(self, sample, counts=None):
        """Keep the rows a fitted detector scores against, and drop what was derived from
        earlier ones. ``sample``: rows ``fit`` was given (``novelty=False``) or trained on,
        each seen ``counts`` times (None: once).

        - ``novelty=True``: the reference rows are the held-out rows, then ``sample``, up to
          ``_REFERENCE_ROWS`` in all; the held-out rows calibrate ``offset_`` (``sample``
          where none were held out).
        - ``novelty=False``: ``sample`` is the reference and calibrates ``offset_``."""
        self._fitted_novelty = self.novelty
        self._held_out_rows = np.asarray(self._held_out_rows, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        if self.novelty and len(self._held_out_rows):
            sample = sample[:max(0, _REFERENCE_ROWS - len(self._held_out_rows))]
            self._reference_rows = np.concatenate([self._held_out_rows, sample])
            self._reference_counts = None
        else:
            self._reference_rows, self._reference_counts = sample[:_REFERENCE_ROWS], counts
            if self.novelty:  # nothing held out: the training rows calibrate
                self._held_out_rows, self._held_out_counts = self._reference_rows, counts
        self._derived_state = {}

    def _derived(self, name, key, compute):
        """``compute()``, kept under ``name`` until ``key`` changes."""
        kept = self._derived_state.get(name)
        if kept is None or kept[0] != key:
            kept = self._derived_state[name] = (key, compute())
        return kept[1]

    def _training_codes(self, device, space=None):
        """The codes of the reference rows, (n_members, m, n_components_), as the current
        inference parameters give them, or their points in another ``space(model, x, mask,
        z)`` (n_members, n, h), such as :func:`skflowgen.scores.feature_maps` (``z`` None:
        the space infers the codes where it needs them); without the held-out fold being
        scored while the offset is set."""
        def infer():
            if space is None:
                return np.ascontiguousarray(
                    self._inferred_codes(self._reference_rows, data=True), dtype=np.float32)
            points = self._apply(lambda xb: space(self, *self._observed(xb), None)
                                 .transpose(0, 1), self._reference_rows, data=True,
                                 dtype=np.float32)
            return np.ascontiguousarray(points.transpose(1, 0, 2))
        name = "codes" if space is None else space.__name__
        codes = self._derived(name, self._scoring_key(codes_only=True), infer)
        fold = self.__dict__.get("_scoring_fold")
        if fold is not None:
            keep = np.ones(codes.shape[1], dtype=bool)
            keep[fold:len(self._held_out_rows):2] = False
            codes = codes[:, keep]
        return torch.as_tensor(codes, device=device)

    def _lof_fit(self, k, device, space=None):
        """:func:`lof_fit` of the training codes (or their points in ``space``) with ``k``
        neighbours (one for the reference of new rows, one for each held-out fold's)."""
        def fit():
            codes = self._training_codes(torch.device("cpu"), space)
            return tuple(t.numpy() for t in lof_fit(codes, k))
        fold = self.__dict__.get("_scoring_fold")
        name = ("lof", fold) if space is None else ("lof", fold, space.__name__)
        fitted = self._derived(name, (self._scoring_key(codes_only=True), k), fit)
        return tuple(torch.as_tensor(a, device=device) for a in fitted)

    def _standardisation(self, parts, device):
        """Median and interquartile range over the reference rows (evenly spaced ones, at
        most ``_STANDARDISATION_ROWS``: quartiles within about 2% of the spread) of each of
        the scores ``parts(model, x, mask, z)`` (n_parts, n_members, n) that a combined
        score standardises, each row scored as a new row (its copy left out of its
        neighbours), kept until the codes change: two tensors (n_parts, n_members, 1). A
        spread of 0 falls back to the standard deviation, then to 1."""
        def evaluate(xb):
            x, mask = self._observed(xb)
            return parts(self, x, mask, self._infer_latent(x, mask)).permute(2, 0, 1)

        def compute():
            fold = self.__dict__.pop("_scoring_fold", None)  # every reference row counts
            try:
                rows = self._reference_rows
                rows = rows[::-(-len(rows) // _STANDARDISATION_ROWS)]
                values = self._apply(evaluate, rows, data=True)
            finally:
                if fold is not None:
                    self._scoring_fold = fold
            low, center, high = np.percentile(values, [25, 50, 75], axis=0)
            spread = np.where(high > low, high - low, values.std(axis=0))
            return center[..., None], np.where(spread > 0, spread, 1.0)[..., None]
        fitted = self._derived(("standardisation", parts.__name__),
                               self._scoring_key(codes_only=True), compute)
        return tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in fitted)

    def _calibration_scores(self):
        """``novelty=False``: the scores of the rows given to ``fit`` (kept from ``fit``) or,
        after ``set_params`` of a parameter that moves them, of the reference rows, with the
        times each row was seen: ``(scores, weights)``."""
        return self._derived("calibration", self._scoring_key(ignore={"contamination"}),
                             lambda: (self._score_rows(self._reference_rows),
                                      self._reference_counts))

    @property
    def offset_(self):
        """Threshold of :meth:`decision_function`, for the current parameters (recomputed at
        first use after ``set_params`` of one that moves a score): the ``100 *
        contamination`` percentile of the ``score_samples`` of the rows given to ``fit``
        (``novelty=False``), or of the held-out rows, each fold of them against the
        reference codes of the other rows (``novelty=True``)."""
        if "_reference_rows" not in self.__dict__:
            raise AttributeError(f"This {type(self).__name__} is not fitted: no offset_.")
        if self.novelty != self._fitted_novelty:
            raise ValueError(f"This {type(self).__name__} was fitted with "
                             f"novelty={self._fitted_novelty}, which decides the rows that "
                             f"train and set offset_; fit it again with novelty={self.novelty}.")

        def compute():
            if not self.novelty:
                scores, weights = self._calibration_scores()
                return percentile(scores, 100 * self.contamination, weights)
            scores = []
            for fold in (0, 1):
                rows = self._held_out_rows[fold::2]
                self._scoring_fold = fold
                try:
                    scores.extend(self._score_rows(rows) if len(rows) else [])
                finally:
                    del self._scoring_fold
            counts = self._held_out_counts  # None: each row once
            weights = None if counts is None else np.r_[counts[0::2], counts[1::2]]
            return percentile(scores, 100 * self.contamination, weights)
        return self._derived("offset", self._scoring_key(), compute)

    def _fit_offset(self, X):
        """After ``fit``: without ``novelty``, keep the scores of ``X`` (the rows it was given,
        all of them, where the reference rows are a sample); then ``offset_``."""
        if not self.novelty:
            self._derived("calibration", self._scoring_key(ignore={"contamination"}),
                          lambda: (self._score_rows(X), None))
        return self.offset_

    def _no_novelty(self):
        if self.novelty:
            raise AttributeError("fit_predict is not available with novelty=True: offset_ "
                                 "then comes from rows held out of training. Use "
                                 "novelty=False to flag the rows given to fit.")
        return True

    @available_if(_no_novelty)
    def fit_predict(self, X, y=None):
        """Fit, then flag the rows of ``X`` (``novelty=False`` only): ``fit(X).predict(X)``,
        scoring ``X`` once. ``contamination`` of the rows are flagged (ties aside).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 for inliers, -1 for outliers.
        """
        scores, _ = self.fit(X)._calibration_scores()
        return np.where(scores < self.offset_, -1, 1)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers (``decision_function < 0``). With
        ``novelty=False``, ``contamination`` of the rows given to ``fit`` are flagged (as
        :meth:`fit_predict` flags them); new rows score lower than the rows the networks
        trained on, so more of them are. With ``novelty=True``, about ``contamination`` of
        new rows of the training distribution are, and fewer of the training rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) < 0, -1, 1)
