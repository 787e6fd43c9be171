"""Feature scaling: the units the networks see (``feature_scaling``), and the way back to
the data's units, including the log-Jacobian that keeps densities in the data's units.
"""

import warnings

import numpy as np
import torch


class FeatureScalingMixin:
    """``feature_scaling`` of :class:`~skflowgen._base.BaseLatentFlow`: each feature centred
    and divided by a spread learned in ``fit`` (``_center``, ``_scale``)."""

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

    def _to_device(self, rows, device):
        """Rows in the data's units to a float32 tensor on ``device`` in the networks'."""
        return self._to_model(torch.as_tensor(np.asarray(rows, dtype=np.float32),
                                              device=device))

    def _to_data(self, x):
        """Rows in the networks' units back to the data's units."""
        return x * x.new_tensor(self._scale) + x.new_tensor(self._center)

    def _log_jacobian(self, x, mask):
        """``sum_j log s_j`` over each row's observed entries: ``log p`` in the networks'
        units minus this is ``log p`` in the data's. Summed row by row whether or not
        ``mask`` is None, so that a row's value does not depend on the rest of its chunk."""
        observed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        log_scale = torch.as_tensor(np.log(self._scale), dtype=x.dtype, device=x.device)
        return torch.where(observed, log_scale, 0.0).sum(dim=-1)
