"""The latent prior: an affine coupling normalizing flow.

A bijection ``f: z -> u`` on R^d with a standard normal base density gives

    log p(z) = log N(f(z); 0, I) + log |det df/dz|,

and sampling is ``z = f^{-1}(u)``, ``u ~ N(0, I)``. Both directions are exact
and batched. Each block is ActNorm, a fixed random rotation and an affine
coupling (Dinh et al., RealNVP) whose log-scale is soft-clamped to
``(-SCALE_BOUND, SCALE_BOUND)`` so that the density cannot run to infinity.

A flow holds ``n_members`` independent flows evaluated together (an ensemble):
latents are (n_members, n, d) and per-row results (n_members, n).
"""

import math

import torch
from torch import nn

from .networks import Linear, member_matmul

SCALE_BOUND = 2.0
_LOG_2PI = math.log(2 * math.pi)


class ActNorm(nn.Module):
    """Per-dimension affine map ``u = (z + bias) * exp(log_scale)``.

    :meth:`initialize` sets ``bias`` and ``log_scale`` from a batch so that it
    comes out with zero mean and unit variance (Kingma & Dhariwal, Glow).
    """

    def __init__(self, n_members, n_dims):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_members, 1, n_dims))
        self.log_scale = nn.Parameter(torch.zeros(n_members, 1, n_dims))

    @torch.no_grad()
    def initialize(self, z):
        std = (z.std(dim=1, unbiased=False, keepdim=True) if z.shape[1] > 1
               else torch.ones_like(z[:, :1]))
        self.bias.copy_(-z.mean(dim=1, keepdim=True))
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))

    def forward(self, z):
        return (z + self.bias) * self.log_scale.exp(), \
            self.log_scale.sum(dim=-1).expand(z.shape[:-1])

    def inverse(self, u):
        return u * torch.exp(-self.log_scale) - self.bias


class Rotation(nn.Module):
    """A fixed random orthogonal matrix: mixes all dimensions, ``log|det| = 0``."""

    def __init__(self, n_members, n_dims, generator=None):
        super().__init__()
        q, r = torch.linalg.qr(torch.randn(n_members, n_dims, n_dims, generator=generator))
        self.register_buffer("weight", q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
                             .unsqueeze(-2))

    def forward(self, z):
        return member_matmul(z, self.weight.mT, self.training), z.new_zeros(z.shape[:-1])

    def inverse(self, u):
        return member_matmul(u, self.weight, self.training)


class AffineCoupling(nn.Module):
    """Affine coupling ``u = m * z + (1 - m) * (z * exp(s) + t)``, ``(s, t) = net(m * z)``.

    The mask ``m`` keeps half of the dimensions (for d = 1 none, which leaves
    a learned elementwise affine map). The conditioner's last layer starts at
    zero, so each block starts as the identity.
    """

    def __init__(self, n_members, n_dims, mask, hidden_size=64, generator=None):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(
            Linear(n_members, n_dims, hidden_size, generator=generator),
            nn.SiLU(),
            Linear(n_members, hidden_size, hidden_size, generator=generator),
            nn.SiLU(),
            Linear(n_members, hidden_size, 2 * n_dims, zero=True),
        )

    def _scale_shift(self, z_kept):
        s, t = self.net(z_kept).chunk(2, dim=-1)
        free = 1 - self.mask
        return free * SCALE_BOUND * torch.tanh(s / SCALE_BOUND), free * t

    def forward(self, z):
        s, t = self._scale_shift(z * self.mask)
        return z * s.exp() + t, s.sum(dim=-1)

    def inverse(self, u):
        s, t = self._scale_shift(u * self.mask)
        return (u - t) * torch.exp(-s)


class CouplingFlow(nn.Module):
    """Normalizing flow ``f = f_K o ... o f_1`` from latents ``z`` to ``u ~ N(0, I)``.

    Parameters
    ----------
    n_dims : int
        Dimension d of the latent space.
    n_blocks : int, default=5
        Number of (ActNorm, Rotation, AffineCoupling) blocks.
    hidden_size : int, default=64
        Width of each coupling conditioner.
    n_members : int, default=1
        Independent flows evaluated together: latents are (n_members, n, d).
    generator : torch.Generator, optional
        Draws the rotations and the initial weights reproducibly.
    """

    def __init__(self, n_dims, n_blocks=5, hidden_size=64, n_members=1, generator=None):
        super().__init__()
        self.n_dims = n_dims
        self.n_members = n_members
        half = torch.arange(n_dims) % 2 == 0
        layers = []
        for k in range(n_blocks):
            mask = (half if k % 2 == 0 else ~half).float()
            layers += [ActNorm(n_members, n_dims), Rotation(n_members, n_dims, generator),
                       AffineCoupling(n_members, n_dims, mask, hidden_size, generator)]
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def initialize(self, z):
        """Data-dependent initialisation: each ActNorm whitens what it sees of ``z``."""
        for layer in self.layers:
            if isinstance(layer, ActNorm):
                layer.initialize(z)
            z, _ = layer(z)

    def forward(self, z):
        """Map ``z -> u``; return ``(u, log|det df/dz|)``, the latter (n_members, n)."""
        log_det = z.new_zeros(z.shape[:-1])
        for layer in self.layers:
            z, ld = layer(z)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, u):
        """Map ``u -> z``, the exact inverse of :meth:`forward`."""
        for layer in reversed(self.layers):
            u = layer.inverse(u)
        return u

    def log_prob(self, z):
        """Per-row log-density ``log p_base(f(z)) + log|det df/dz|``, (n_members, n)."""
        u, log_det = self(z)
        return -0.5 * (u.square().sum(dim=-1) + self.n_dims * _LOG_2PI) + log_det

    def radius(self):
        """Root-mean-square distance from 0 of the latents the first ActNorm is fitted to,
        ``sqrt(sum_j mean_j^2 + std_j^2)``: the scale at which each member's prior has its
        mass; shape (n_members, 1, 1)."""
        first = self.layers[0]
        return torch.sqrt((first.bias.square() + torch.exp(-2 * first.log_scale))
                          .sum(dim=-1, keepdim=True))
