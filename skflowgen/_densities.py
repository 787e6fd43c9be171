"""The model's densities and how they are evaluated: the observation noise, ``log p(x | z)``,
``log p(x, z)``, the scores of :mod:`skflowgen.scores`, and the streaming of every
evaluation over chunks of rows sized by memory.
"""

import numpy as np
import torch

from .networks import member_mean
from .scores import SCORES
from ._training import torch_generator

_EVAL_MEMORY = 64 * 2 ** 20  # bytes of activations per evaluation chunk
_DRAWS_MEMORY = 4 * 2 ** 20  # bytes of the importance draws' working set per block of rows


class DensityMixin:
    """Densities, scores and streamed evaluation of :class:`~skflowgen._base.BaseLatentFlow`."""

    # ------------------------------------------------------------ the observation noise
    @property
    def noise_variance_(self):
        return self.noise_.variance[:, 0].cpu().numpy().astype(np.float64) * self._scale ** 2

    def _initial_noise_variance(self):
        """``sigma_j^2`` before training: the data variance (a model that explains nothing)."""
        return self._data_variance

    @staticmethod
    def _residual_stats(x, x_hat, mask):
        """Over the batch: each member's mean squared residual per feature (flattened), then
        the observed fraction of each feature."""
        sq = (x - x_hat).square()
        if mask is None:
            return torch.cat([sq.mean(dim=1).flatten(), sq.new_ones(x.shape[1])])
        return torch.cat([(sq * mask).mean(dim=1).flatten(), mask.float().mean(dim=0)])

    def _split_residual_stats(self, stats):
        """``(mean_squared (n_members, p), observed (p,))`` from an epoch's ``stats``, which
        start with the ``_loss_terms``."""
        p, m, t = self.n_features_in_, self._n_members, len(self._loss_terms)
        return stats[t:t + m * p].reshape(m, p), stats[t + m * p:t + (m + 1) * p]

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


    def _log_joint(self, x, mask, z):
        """``log p(x | z) + log p(z)`` per row."""
        return self._log_likelihood(x, self._decode(z), mask) + self.flow_.log_prob(z)

    def _inferred_codes(self, x, data=False):
        """The inferred latents of rows ``x`` (the data's units with ``data``, else the
        networks'), streamed: an array (n_members, n, n_components_)."""
        return self._apply(lambda xb: self._infer_latent(*self._observed(xb)).transpose(0, 1),
                           x, data=data).transpose(1, 0, 2)

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

    # ------------------------------------------------------------ streamed evaluation
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
        leaves = [m for name in self._network_names for m in getattr(self, name).modules()
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
            with torch.no_grad(), self._threads():
                result = fn(chunk)[:n]
            yield start, result

    def _apply(self, fn, X, data=False, dtype=np.float64):
        """:meth:`_stream` into one preallocated array of ``dtype``: memory stays flat in
        rows."""
        out = None
        for start, result in self._stream(fn, X, data):
            result = result.cpu().numpy()
            if out is None:
                out = np.empty((len(X), *result.shape[1:]), dtype=dtype)
            out[start:start + len(result)] = result
        return out
