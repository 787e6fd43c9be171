"""The latent prior: an affine coupling normalizing flow.

A bijection ``f: z -> u`` on R^d with a standard normal base density gives

    log p(z) = log N(f(z); 0, I) + log |det df/dz|,

and sampling is ``z = f^{-1}(u)``, ``u ~ N(0, I)``. Both directions are exact
and batched. Each block is ActNorm, a fixed random rotation and an affine
coupling (Dinh et al., RealNVP) whose log-scale is soft-clamped to
``(-SCALE_BOUND, SCALE_BOUND)`` so that the density cannot run to infinity.

A flow holds ``n_members`` independent flows evaluated together (an ensemble):
latents are (n_members, n, d) and per-row results (n_members, n).

With ``n_mixture > 1`` the base density is a Gaussian mixture with full covariances
(FlowGMM, Izmailov et al., ICML 2020) instead of ``N(0, I)``: codes that form separate
clusters (an autoencoder's codes of different classes) then need no mass between them,
which a bijection of one Gaussian cannot avoid. :meth:`CouplingFlow.fit` fits a new flow to
given codes: the mixture by EM on the whitened codes, then everything by maximum likelihood
until held-out codes stop improving.
"""

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from .networks import Linear, member_matmul

SCALE_BOUND = 2.0
_LOG_2PI = math.log(2 * math.pi)
# the maximum-likelihood training of fit: Adam, batches of codes, checks of the held-out
# codes' mean log-density every _CHECK_EVERY steps, stopped after _PATIENCE checks without
# improvement (the best weights kept) or at _MAX_STEPS
_FIT_RATE, _FIT_BATCH, _CHECK_EVERY, _PATIENCE, _MAX_STEPS = 1e-3, 256, 50, 10, 3000


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


class GaussianMixtureBase(nn.Module):
    """Base density ``sum_k w_k N(u; mu_k, L_k L_k^T)`` of each member: weights
    ``softmax(logits)``, ``L_k`` lower triangular with a positive diagonal."""

    def __init__(self, n_members, n_dims, n_mixture):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_members, n_mixture))
        self.means = nn.Parameter(torch.zeros(n_members, n_mixture, n_dims))
        self.log_diagonal = nn.Parameter(torch.zeros(n_members, n_mixture, n_dims))
        self.lower = nn.Parameter(torch.zeros(n_members, n_mixture, n_dims, n_dims))

    def cholesky(self):
        return torch.tril(self.lower, -1) + torch.diag_embed(self.log_diagonal.exp())

    @torch.no_grad()
    def fit(self, u, seeds):
        """EM on each member's ``u`` (n_members, n, d): scikit-learn's ``GaussianMixture``
        with full covariances, seeded by ``seeds``."""
        for m, (rows, seed) in enumerate(zip(u.cpu().double().numpy(), seeds)):
            n_mixture = min(self.logits.shape[1], len(rows))
            with warnings.catch_warnings():  # EM only starts the fit: its stalling is not ours
                warnings.simplefilter("ignore", ConvergenceWarning)
                mixture = GaussianMixture(n_mixture, reg_covar=1e-2,
                                          random_state=int(seed)).fit(rows)
            cholesky = np.linalg.cholesky(mixture.covariances_)
            self.logits[m] = -torch.inf  # components a tiny fit leaves out
            self.logits[m, :n_mixture] = torch.as_tensor(np.log(mixture.weights_))
            self.means[m, :n_mixture] = torch.as_tensor(mixture.means_)
            self.log_diagonal[m, :n_mixture] = torch.as_tensor(
                np.log(np.diagonal(cholesky, axis1=-2, axis2=-1)))
            self.lower[m, :n_mixture] = torch.as_tensor(np.tril(cholesky, -1))

    @torch.no_grad()
    def widen(self, temperature):
        """Scale every component's covariance by ``temperature**2`` (its Cholesky factor
        by ``temperature``), keeping means and weights: draws ``mu_k + temperature L_k eps``."""
        self.log_diagonal += math.log(temperature)
        self.lower *= temperature

    def log_prob(self, u):
        """Per-row log-density of ``u`` (n_members, n, d). The whitened residuals
        ``L_k^{-1} (u - mu_k)`` of all components are one product per member, so that a
        row's value does not depend on the other rows."""
        members, n_mixture, d = self.means.shape
        inverse = torch.linalg.inv(self.cholesky())  # (members, K, d, d)
        weight = inverse.reshape(members, n_mixture * d, d)
        bias = -(inverse @ self.means[..., None]).reshape(members, 1, n_mixture * d)
        white = member_matmul(u, weight, self.training, bias).unflatten(-1, (n_mixture, d))
        log_normal = -0.5 * (white.square().sum(dim=-1) + d * _LOG_2PI) \
            - self.log_diagonal.sum(dim=-1)[:, None, :]
        return torch.logsumexp(log_normal + torch.log_softmax(self.logits, dim=-1)[:, None],
                               dim=-1)

    def draw(self, eps, uniform):
        """Base points of every member, (n_members, n, d), from standard normal draws ``eps``
        (n, d) and uniform draws ``uniform`` (n,) that pick each row's component."""
        cumulative = torch.softmax(self.logits, dim=-1).cumsum(dim=-1)
        component = torch.searchsorted(cumulative, uniform.expand(len(cumulative), -1)
                                       .contiguous()).clamp_max(cumulative.shape[1] - 1)
        members = torch.arange(len(cumulative), device=eps.device)[:, None]
        scale = self.cholesky()[members, component]  # (members, n, d, d)
        return self.means[members, component] + (scale @ eps[None, :, :, None])[..., 0]


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
    n_mixture : int, default=1
        Components of the base density: 1 is ``N(0, I)``, more a
        :class:`GaussianMixtureBase` fitted by EM when the flow is initialised.
    """

    def __init__(self, n_dims, n_blocks=5, hidden_size=64, n_members=1, generator=None,
                 n_mixture=1):
        super().__init__()
        self.n_dims = n_dims
        self.n_members = n_members
        self.base = GaussianMixtureBase(n_members, n_dims, n_mixture) if n_mixture > 1 else None
        half = torch.arange(n_dims) % 2 == 0
        layers = []
        for k in range(n_blocks):
            mask = (half if k % 2 == 0 else ~half).float()
            layers += [ActNorm(n_members, n_dims), Rotation(n_members, n_dims, generator),
                       AffineCoupling(n_members, n_dims, mask, hidden_size, generator)]
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def initialize(self, z, generator=None):
        """Data-dependent initialisation: each ActNorm whitens what it sees of ``z``; a
        mixture base is fitted by EM to the flow's output (seeded from ``generator``)."""
        for layer in self.layers:
            if isinstance(layer, ActNorm):
                layer.initialize(z)
            z, _ = layer(z)
        if self.base is not None:
            self.base.fit(z, torch.randint(2 ** 31 - 1, (self.n_members,), generator=generator))

    def fit(self, z, z_held, generator):
        """Fit this flow to the codes ``z`` (n_members, n, d): :meth:`initialize` on ``z``
        (the couplings of a new flow are the identity), then Adam on the mean log-density
        of batches of ``z``, stopped when that of ``z_held`` stops improving. The weights
        kept are the best for ``z_held`` among the checks and the start, so the fit never
        ends below EM's fit of the held-out codes (without held-out codes, EM alone)."""
        self.initialize(z, generator)
        if z_held.shape[1] == 0:
            return
        optimizer = torch.optim.Adam(self.parameters(), lr=_FIT_RATE)

        def held_out():
            with torch.no_grad():
                return float(self.log_prob(z_held).mean())
        best, checks = held_out(), 0
        best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        self.train()
        for step in range(1, _MAX_STEPS + 1):
            rows = torch.randint(z.shape[1], (_FIT_BATCH,), generator=generator,
                                 device=generator.device).to(z.device)
            loss = -self.log_prob(z[:, rows]).mean(dim=1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % _CHECK_EVERY:
                continue
            held = held_out()
            if held > best:
                best, checks = held, 0
                best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
            else:
                checks += 1
                if checks >= _PATIENCE:
                    break
        self.eval()
        self.load_state_dict(best_state)

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
        if self.base is not None:
            return self.base.log_prob(u) + log_det
        return -0.5 * (u.square().sum(dim=-1) + self.n_dims * _LOG_2PI) + log_det

    def draw(self, eps, uniform):
        """Latents of every member, (n_members, n, d), from standard normal draws ``eps``
        (n, d) and, with a mixture base, uniform draws ``uniform`` (n,) that pick the
        components."""
        u = eps if self.base is None else self.base.draw(eps, uniform)
        return self.inverse(u)

    def radius(self):
        """Root-mean-square distance from 0 of the latents the first ActNorm is fitted to,
        ``sqrt(sum_j mean_j^2 + std_j^2)``: the scale at which each member's prior has its
        mass; shape (n_members, 1, 1)."""
        first = self.layers[0]
        return torch.sqrt((first.bias.square() + torch.exp(-2 * first.log_scale))
                          .sum(dim=-1, keepdim=True))
