"""The flow's data-dependent initialisation."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skflowgen.flows import ActNorm, CouplingFlow


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
