"""The flow's data-dependent initialisation."""

import torch

from skflowgen.flows import ActNorm, CouplingFlow


def test_initialize_whitens_what_each_actnorm_sees():
    g = torch.Generator().manual_seed(0)
    z = 5 + 3 * torch.randn(500, 4, generator=g) @ torch.randn(4, 4, generator=g)
    flow = CouplingFlow(4, n_blocks=3, generator=g)
    flow.initialize(z)
    h = z
    for layer in flow.layers:
        if isinstance(layer, ActNorm):
            out, _ = layer(h)
            torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
            torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(4), atol=1e-4,
                                       rtol=0)
        h, _ = layer(h)
