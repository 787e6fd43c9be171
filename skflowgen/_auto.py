"""Every ``'auto'`` and None parameter value resolved, in one place.

A parameter keeps the value it was given (scikit-learn's rule: ``get_params`` returns what
the user set); the estimators read the resolved value from here, at the time of use, from
the other parameters and the data's shape. Each estimator names its own training length on
tables (``_table_max_iter``) and on images (``_image_min_epochs``), its image score
(``_image_score``) and its likelihood (``_likelihood_score``, which ``early_stopping``
validates by); the evidence behind each rule is cited in the parameter's docstring.
"""

import contextlib
import warnings

import numpy as np
import torch
from joblib import cpu_count

_TABLE_INFERENCE_STEPS = 2  # LFP's inference_steps='auto' on tables
_TABLE_SCORE = "fused"  # score_method='auto' on tables
_IMAGE_ROWS_SEEN = 50_000  # max_iter='auto' with image_shape: images trained on, at least
_IMAGE_PRIOR_COMPONENTS = 20  # n_prior_components='auto' with image_shape
_IMAGE_BATCH_SIZE = 16  # batch_size='auto' with image_shape: rows a training batch


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


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch intra-op threads, then restore torch's setting."""
    before = torch.get_num_threads()
    if n_threads == before:
        yield
        return
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def auto_batch_size(n_rows):
    """``batch_size='auto'`` on tables: ``min(256, max(16, n_rows // 10))`` rows, 10 or more
    optimizer steps an epoch; 256 for an epoch of unknown size (``n_rows=None``)."""
    return 256 if n_rows is None else min(256, max(16, n_rows // 10))


class ResolvedParameters:
    """The resolved values of the ``'auto'`` and None parameters of both estimators."""

    _table_max_iter = None  # max_iter='auto' on tables: each estimator's epochs
    _image_min_epochs = None  # max_iter='auto' with image_shape: its epochs, at least
    _image_score = None  # score_method='auto' with image_shape
    _likelihood_score = None  # each estimator's log-likelihood score, for early_stopping

    @property
    def _hidden_sizes(self):
        """``hidden_layer_sizes`` as a tuple (an int means one hidden layer)."""
        return tuple(int(h) for h in np.atleast_1d(self.hidden_layer_sizes))

    def _resolved_n_components(self, n_features):
        """``n_components=None``: ``min(20, max(1, n_features // 2))``."""
        if self.n_components is not None:
            return self.n_components
        return min(20, max(1, n_features // 2))

    def _resolved_max_iter(self, n_rows):
        """``max_iter='auto'`` for ``n_rows`` training rows: the estimator's
        ``_table_max_iter`` epochs on tables; with ``image_shape`` at least its
        ``_image_min_epochs`` and enough for ``_IMAGE_ROWS_SEEN`` rows in all."""
        if self.max_iter != "auto":
            return self.max_iter
        if self.image_shape is None:
            return self._table_max_iter
        return max(self._image_min_epochs, -(-_IMAGE_ROWS_SEEN // n_rows))

    def _auto_batch_size(self, n_rows):
        """``batch_size='auto'`` for ``n_rows`` training rows (None: of unknown number): 10
        or more steps an epoch on tables, ``_IMAGE_BATCH_SIZE`` rows with ``image_shape``."""
        return auto_batch_size(n_rows) if self.image_shape is None else _IMAGE_BATCH_SIZE

    def _batch_size(self, n_rows):
        """Rows per training batch of ``n_rows`` training rows."""
        return self.batch_size if self.batch_size != "auto" else self._auto_batch_size(n_rows)

    @property
    def _score_method(self):
        """``score_method='auto'``: the score of the release that fitted the model for images
        (``_auto_image_score``) or tables (``_auto_table_score``), so that a pickle written
        before a default changed keeps ranking rows as it did; its ``_image_score`` with
        ``image_shape`` and ``_TABLE_SCORE`` otherwise."""
        if self.score_method != "auto":
            return self.score_method
        if self.image_shape is not None:
            return vars(self).get("_auto_image_score", self._image_score)
        return vars(self).get("_auto_table_score", _TABLE_SCORE)

    @property
    def _inference_steps(self):
        """LFP's ``inference_steps='auto'``: ``_TABLE_INFERENCE_STEPS`` on tables, ``n_steps``
        with ``image_shape``."""
        if self.inference_steps != "auto":
            return self.inference_steps
        return self.n_steps if self.image_shape is not None else _TABLE_INFERENCE_STEPS

    @property
    def _prior_components(self):
        """Components of the density of the codes ``sample`` draws from: ``n_prior_components``
        (``'auto'``: ``_IMAGE_PRIOR_COMPONENTS`` with ``image_shape``, 1 on tables)."""
        if self.n_prior_components != "auto":
            return self.n_prior_components
        return _IMAGE_PRIOR_COMPONENTS if self.image_shape is not None else 1

    def _threads(self):
        """The context every training and evaluation runs in: ``n_jobs`` torch threads
        (None: 1; -1 every core joblib counts, -2 all but one...)."""
        n_jobs = 1 if self.n_jobs is None else self.n_jobs
        return torch_threads(n_jobs if n_jobs > 0 else max(1, cpu_count() + 1 + n_jobs))

    @property
    def _fits_noise(self):
        """Whether the noise variance is fitted by maximum likelihood: always for GLF, with
        LFP's ``sigma='auto'`` (a float fixes it)."""
        return getattr(self, "sigma", "auto") == "auto"
