"""The flow's data-dependent initialisation."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skflowgen.flows import ActNorm, AffineCoupling, CouplingFlow


def test_initialize_whitens_what_each_actnorm_sees():
    """Each member's ActNorm whitens that member's latents (two members, two spreads)."""
    g = torch.Generator().manual_seed(0)
    z = torch.stack([5 + 3 * torch.randn(500, 4, generator=g) @ torch.randn(4, 4, generator=g),
                     -2 + 0.1 * torch.randn(500, 4, generator=g)])
    flow = CouplingFlow(4, n_blocks=3, n_members=2, generator=g)
    flow.initialize(z)
    h = z
    for layer in flow.layers:
        if isinstance(layer, ActNorm):
            out, _ = layer(h)
            torch.testing.assert_close(out.mean(1), torch.zeros(2, 4), atol=1e-4, rtol=0)
            torch.testing.assert_close(out.std(1, unbiased=False), torch.ones(2, 4), atol=1e-4,
                                       rtol=0)
        h, _ = layer(h)


@given(shift=st.floats(-20, 20), scale=st.floats(0.01, 50), n_dims=st.integers(1, 6))
@settings(max_examples=20, deadline=None)
def test_radius_is_the_root_mean_square_norm_of_the_initialising_latents(shift, scale, n_dims):
    g = torch.Generator().manual_seed(0)
    z = shift + scale * torch.randn(1, 400, n_dims, generator=g, dtype=torch.float64)
    flow = CouplingFlow(n_dims, n_blocks=2, generator=g).double()
    flow.initialize(z)
    expected = z.square().sum(dim=-1).mean().sqrt()
    torch.testing.assert_close(flow.radius(), expected.reshape(1, 1, 1), rtol=1e-6, atol=0)


def _mixture_flow(n_dims, seed=0):
    """A flow with a 3-component mixture base, initialised on three clusters, its couplings
    moved off the identity so that the whole map is nonlinear."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(3, n_dims, generator=g, dtype=torch.float64)
    z = (centres[torch.arange(600) % 3] + torch.randn(600, n_dims, generator=g,
                                                      dtype=torch.float64))[None]
    flow = CouplingFlow(n_dims, n_blocks=2, hidden_size=8, generator=g, n_mixture=3).double()
    flow.initialize(z, g)
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, AffineCoupling):
                layer.net[-1].weight.normal_(0, 0.3, generator=g)
    return flow, z, g


def test_mixture_base_density_integrates_to_one():
    """``log_prob`` with a mixture base is a density: on a fine grid over its mass (two
    dimensions, a nonlinear flow) it integrates to 1."""
    flow, _, _ = _mixture_flow(2)
    axis = torch.linspace(-25, 25, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)[None]
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3


def test_mixture_draws_follow_the_density():
    """``draw`` samples the density ``log_prob`` evaluates: the mean and covariance of 40,000
    draws match those of the density on a grid."""
    flow, _, g = _mixture_flow(2, seed=1)
    axis = torch.linspace(-25, 25, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        weight = flow.log_prob(grid[None])[0].exp()
        weight = weight / weight.sum()
        draws = flow.draw(torch.randn(40_000, 2, generator=g, dtype=torch.float64),
                          torch.rand(40_000, generator=g, dtype=torch.float64))[0]
    mean = weight @ grid
    covariance = (grid - mean).T @ ((grid - mean) * weight[:, None])
    spread = covariance.diagonal().sqrt()
    torch.testing.assert_close(draws.mean(0), mean, atol=float(0.03 * spread.max()), rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), covariance,
                               atol=float(0.05 * covariance.abs().max()), rtol=0)


def test_fit_never_ends_below_em_on_the_held_out_codes():
    """``fit`` keeps the weights best for the held-out codes among its checks and its EM
    start: its held-out log-density is at least that of the same start (same seed) without
    the training steps."""
    flow, z, _ = _mixture_flow(3)
    held = z[:, ::5]
    start = CouplingFlow(3, n_blocks=2, hidden_size=8, generator=torch.Generator()
                         .manual_seed(5), n_mixture=3).double()
    start.load_state_dict(flow.state_dict())
    start.fit(z, held[:, :0], torch.Generator().manual_seed(7))  # EM alone
    flow.fit(z, held, torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert float(flow.log_prob(held).mean()) >= float(start.log_prob(held).mean())


def test_widen_scales_each_component_about_its_mean():
    """``GaussianMixtureBase.widen(t)``: with the same standard normal and uniform draws,
    a base point moves to ``mu_k + t (u - mu_k)`` (``eps = 0`` gives the means), and the
    flow's density still integrates to 1."""
    flow, _, g = _mixture_flow(2, seed=2)
    eps = torch.randn(500, 2, generator=g, dtype=torch.float64)
    uniform = torch.rand(500, generator=g, dtype=torch.float64)
    before = flow.base.draw(eps, uniform)
    means = flow.base.draw(torch.zeros_like(eps), uniform)
    flow.base.widen(1.3)
    torch.testing.assert_close(flow.base.draw(torch.zeros_like(eps), uniform), means)
    torch.testing.assert_close(flow.base.draw(eps, uniform), means + 1.3 * (before - means))
    axis = torch.linspace(-30, 30, 961, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)[None]
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3
