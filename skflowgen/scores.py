"""The anomaly scores of a fitted latent-flow model, one small function each.

``score_method`` picks one of :data:`SCORES` for ``score_samples``, ``decision_function``
and ``predict``; ``score`` (model selection) always uses :func:`marginal`, the one estimate
of ``log p(x)`` that is comparable across latent sizes.

Each score takes a chunk of rows ``x`` in the networks' units (``mask``: their observed
entries, or None when all are), their inferred latents ``z`` of shape (n_members, n, d) and
the call's importance draws ``draws`` (shared by every row, so that a row's score never
depends on its chunk), and returns each member's score (n_members, n), higher = more normal.

- ``'joint'``, the papers' anomaly score: the log joint at the inferred latent,
  ``log p(x, z~) = log N(x; g(z~), diag(sigma^2)) + log p(z~)``. Cheap (no decoder pass
  beyond the inference), but a density over x *and* the d latent coordinates: its values
  shift with ``n_components``, so it cannot compare models of different latent sizes.
- ``'marginal'``: ``log p(x) = log E_q[p(x, z) / q(z)]`` by importance sampling with
  ``q = N(z~, tau^2 I)`` around the inferred latent (``tau`` the approximate posterior
  scale): a density of x alone, comparable across ``n_components``, step sizes and the
  other hyperparameters; it costs a decoder and flow pass per draw.
"""

import math
from typing import Callable, NamedTuple

import torch

N_IMPORTANCE_SAMPLES = 128
_LOG_2PI = math.log(2 * math.pi)


def joint(model, x, mask, z, draws):
    """``log p(x | z~) + log p(z~)``."""
    return model._log_joint(x, mask, z)


def marginal(model, x, mask, z, draws):
    """Importance-sampled ``log p(x)`` with proposal ``N(z~, tau^2 I)``, one draw of
    ``draws`` (m, d) per importance sample."""
    tau = model._posterior_scale()
    members, n, d = z.shape
    m = len(draws)
    zs = (z[:, :, None, :] + tau[..., None] * draws).reshape(members, n * m, d)
    rep = (lambda t: None if t is None else t.repeat_interleave(m, dim=0))
    log_joint = model._log_joint(rep(x), rep(mask), zs).view(members, n, m)
    log_q = -0.5 * draws.square().sum(dim=-1) - d * (torch.log(tau) + 0.5 * _LOG_2PI)
    return torch.logsumexp(log_joint - log_q, dim=-1) - math.log(m)


class Score(NamedTuple):
    """A score function with what its evaluation needs: ``density`` (a log-density of x,
    which gets the log-Jacobian of the feature scaling to be in the data's units) and
    ``draws`` (importance draws per row, which size the evaluation chunks)."""
    function: Callable
    density: bool
    draws: int


SCORES = {
    "joint": Score(joint, density=True, draws=0),
    "marginal": Score(marginal, density=True, draws=N_IMPORTANCE_SAMPLES),
}
