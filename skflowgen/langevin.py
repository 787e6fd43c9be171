"""Short-run Langevin dynamics for latent inference (batched, masking done by the density)."""

import torch


def langevin(log_density, z, n_steps, step_size, noise=None, max_drift=None):
    """Run ``n_steps`` of Langevin dynamics on ``log_density`` from ``z``.

    ``z <- z + clip((s^2 / 2) * grad_z log_density(z)) + s * xi_k``

    where ``clip`` shortens a row's drift to the norm ``max_drift`` when it is longer: a guard
    against stiff directions (a feature with a tiny noise variance), where a step that suits
    the others would overshoot and run away to infinity.

    Each step is one forward and one backward pass of ``log_density`` for the
    whole batch. Gradients are taken with respect to ``z`` only, so no network
    parameter accumulates a gradient, and nothing is copied to the host.

    Parameters
    ----------
    log_density : callable
        Maps latents of shape (..., n, d) to per-row log-densities of shape (..., n).
        Rows must not interact.
    z : torch.Tensor of shape (..., n, d)
        Starting point (leading dimensions: e.g. the members of an ensemble).
    n_steps : int
        Number of steps K.
    step_size : float or torch.Tensor broadcasting against ``z``
        Step size s.
    noise : torch.Tensor of shape (n_steps, *z.shape), optional
        Standard normal draws ``xi_k``; None runs noise-free gradient ascent.
    max_drift : float or torch.Tensor broadcasting against ``z``, optional
        Longest drift of a row in one step; None does not clip.

    Returns
    -------
    z : torch.Tensor of the shape of ``z``, detached.
    """
    z = z.detach().clone().requires_grad_(True)
    drift = 0.5 * step_size ** 2
    with torch.enable_grad():
        for k in range(n_steps):
            (grad,) = torch.autograd.grad(log_density(z).sum(), z)
            with torch.no_grad():
                grad.mul_(drift)
                if max_drift is not None:
                    grad.mul_((max_drift / grad.norm(dim=-1, keepdim=True)).clamp_(max=1.0))
                z.add_(grad)
                if noise is not None:
                    z.add_(noise[k] * step_size)
    return z.detach()
