"""Generation: ``sample`` and the flow it draws latents from (``sampling_flow_`` where
``n_prior_components > 1``, else the prior ``flow_``).
"""

import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._training import torch_generator

# The sampling flow's mixture, fitted by maximum likelihood to the training codes, is narrower
# than their distribution: the held-out codes' likelihood peaks with its covariances widened
# by 1.05**2 to 1.3**2 (benchmarks/DEFAULTS.md, "Generating").
_SAMPLING_TEMPERATURE = 1.1


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

    def sample(self, n_samples=1, random_state=None):
        """Generate rows ``g(f^{-1}(u))``, ``u`` drawn from the flow's base density: that of
        ``flow_``, ``N(0, I)``, or with ``n_prior_components > 1`` a component of
        ``sampling_flow_``'s mixture; with
        ``n_estimators > 1``, each row from a member drawn uniformly (the members' mixture).

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
        return self._apply(generate, torch.cat([u, member.float(), component], dim=1))

