"""Generation: ``sample`` and the flow it draws latents from (``sampling_flow_`` where
``n_prior_components > 1``, else the prior ``flow_``).
"""

import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._training import torch_generator

# Each component of the sampling flow's mixture, fitted to the training codes, is widened by
# this factor (its covariance by the square), chosen on images that no fit saw and no test
# split: FD against them was lowest from 1.0 to 1.1 on load_digits and fell on to 1.3 on
# Fashion-MNIST (benchmarks/DEFAULTS.md, "Generating").
_SAMPLING_TEMPERATURE = 1.1
# On tables, a column that took at most this many distinct values in training, and at most
# half as many as its observed entries (binary flags, small counts, coded categories), is
# drawn on those values, as tabular synthesizers treat discrete columns apart.
_MAX_SUPPORT = 20


class SamplingMixin:
    """``sample`` of :class:`~skflowgen._base.BaseLatentFlow`, and the sampling flow a fit
    leaves."""

    def _fit_sampling_flow(self, x_train, x_held, generator):
        """``n_prior_components > 1``: ``sampling_flow_``, a flow with a Gaussian-mixture
        base fitted to the codes the final weights give the training rows, early-stopped on
        the held-out rows' codes (:meth:`~skflowgen.flows.CouplingFlow.fit`), then each
        component's covariance widened by ``_SAMPLING_TEMPERATURE**2``; the prior trained
        with the model, ``flow_``, stays the prior of inference and of the scores. With 1
        component, ``sample`` draws from ``flow_``."""
        vars(self).pop("sampling_flow_", None)
        vars(self).pop("_sampling_flow_pending", None)
        if self._prior_components == 1:
            return
        z = torch.as_tensor(self._inferred_codes(x_train), dtype=torch.float32,
                            device=x_train.device)
        z_held = z[:, :0] if len(x_held) == 0 else torch.as_tensor(
            self._inferred_codes(x_held), dtype=torch.float32, device=x_train.device)
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator,
                                 device=generator.device))
        flow = self._new_flow(torch_generator(seed, "cpu"), self._prior_components)
        with self._threads():
            flow.to(x_train.device).fit(z, z_held, generator)
        flow.base.widen(_SAMPLING_TEMPERATURE)
        self.sampling_flow_ = flow.eval()

    def _fit_support(self, X, continuing):
        """On tables, ``_support``: the sorted values each column of ``X`` took (None past
        ``_MAX_SUPPORT`` of them) and its count of observed entries, united with those of
        the earlier calls when ``continuing`` (``partial_fit``'s blocks, ``warm_start``)."""
        if self.image_shape is not None:
            self._support = None
            return
        before = vars(self).get("_support") if continuing else {
            "values": [np.empty(0)] * X.shape[1], "counts": np.zeros(X.shape[1], dtype=int)}
        if before is None:  # pickled before supports were kept: every column continuous
            return
        observed = ~np.isnan(X)
        values = [None if old is None else np.union1d(old, column[seen])
                  for old, column, seen in zip(before["values"], X.T, observed.T)]
        self._support = {"values": [v if v is not None and len(v) <= _MAX_SUPPORT else None
                                    for v in values],
                         "counts": before["counts"] + observed.sum(axis=0)}

    def _on_support(self, X):
        """Each discrete column of the rows ``X`` (see ``_MAX_SUPPORT``) moved to its
        nearest training value."""
        support = vars(self).get("_support") or {"values": (), "counts": ()}
        for j, (values, count) in enumerate(zip(support["values"], support["counts"])):
            if values is not None and 0 < len(values) <= count / 2:
                X[:, j] = values[np.abs(X[:, j, None] - values).argmin(axis=1)]
        return X

    def sample(self, n_samples=1, random_state=None):
        """Generate rows ``g(f^{-1}(u))``, ``u`` drawn from the flow's base density: that of
        ``flow_``, ``N(0, I)``, or with ``n_prior_components > 1`` a component of
        ``sampling_flow_``'s mixture; with
        ``n_estimators > 1``, each row from a member drawn uniformly (the members' mixture).
        On tables, a column that took at most 20 distinct values in training, each seen
        twice or more on average (binary flags, small counts, coded categories), is drawn on
        those values: each sampled value moved to the nearest of them, as tabular
        synthesizers treat discrete columns apart (continuous draws of such a column give a
        sample away).

        Two densities of the codes: ``sample`` draws from ``sampling_flow_`` where a fit left
        one; inference, ``score`` and the density scores of :meth:`score_samples`
        (``'joint'``, ``'marginal'``) read ``flow_``, the prior trained with the model. On
        load_digits ``flow_``'s draws are far from the data (FD against validation images
        GLF 6.96, LFP 6.51; ``sampling_flow_``'s 2.59 and 3.27). ``flow_`` stays the density
        of the scores as LFP's inference climbs it, and a prior refitted for inference
        pulled the codes into its components' cores (``'lof'`` on held-out digits: 93.4 to
        88.6 mean AUPRC), though in ``flow_``'s place ``sampling_flow_`` ranks held-out
        digits higher (GLF ``'joint'`` 88.9 to 92.3, LFP ``'marginal'`` 90.8 to 94.2; one
        seed). benchmarks/RESULTS.md, "Density study, samples: load_digits" and "Density
        study, scores: load_digits".

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
        if vars(self).get("_sampling_flow_pending"):  # after partial_fit: from the kept rows
            self._fit_sampling_flow(
                self._to_device(self._row_samples["training"][1], device),
                self._to_device(self._row_samples["held"][1], device),
                torch_generator(self._inference_seed + self.n_iter_, device))
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        generator = torch_generator(seed, "cpu")  # the same draws on any device
        d = self.n_components_
        u = torch.randn(n_samples, d, generator=generator)
        member = torch.randint(self._n_members, (n_samples, 1), generator=generator)
        component = torch.rand(n_samples, 1, generator=generator)  # picks a mixture's component
        flow = vars(self).get("sampling_flow_", self.flow_)

        def generate(rows):
            x = self._decode(flow.draw(rows[:, :d], rows[:, d + 1]))
            return self._to_data(x[rows[:, d].long(), torch.arange(len(rows), device=device)])
        return self._on_support(
            self._apply(generate, torch.cat([u, member.float(), component], dim=1)))

