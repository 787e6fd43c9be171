"""The Langevin sampler against Gaussian targets, where the answer is known."""

import numpy as np
import torch

from skflowgen.langevin import langevin


def _gaussian(mean, std):
    return lambda z: -0.5 * ((z - mean) / std).square().sum(dim=1)


def test_noise_free_steps_reach_the_mode():
    mean = torch.tensor([1.5, -2.0, 0.5])
    z = langevin(_gaussian(mean, 1.0), torch.zeros(4, 3), n_steps=200, step_size=0.5)
    torch.testing.assert_close(z, mean.expand(4, 3), atol=1e-4, rtol=0)


def test_noisy_chain_matches_target_moments():
    g = torch.Generator().manual_seed(0)
    n, d, std, step, k = 4000, 2, 0.5, 0.2, 400
    noise = torch.randn(k, n, d, generator=g)
    z = langevin(_gaussian(torch.tensor([1.0, -1.0]), std), torch.zeros(n, d), k, step, noise)
    # unadjusted Langevin on N(m, s^2): stationary variance s^2 / (1 - h / (4 s^2)), h = step^2
    expected_var = std ** 2 / (1 - step ** 2 / (4 * std ** 2))
    se_mean = (expected_var / n) ** 0.5
    np.testing.assert_allclose(z.mean(0).numpy(), [1.0, -1.0], atol=5 * se_mean)
    se_var = expected_var * (2 / n) ** 0.5
    np.testing.assert_allclose(z.var(0).numpy(), expected_var, atol=5 * se_var)


def test_no_parameter_gradient_and_input_untouched():
    net = torch.nn.Linear(3, 3)
    z0 = torch.zeros(5, 3)
    langevin(lambda z: -net(z).square().sum(dim=1), z0, 3, 0.1)
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(z0, torch.zeros(5, 3))


def test_max_drift_bounds_each_step_and_keeps_a_stiff_target_finite():
    # one direction 1e4 times stiffer than the step suits: plain steps overshoot and grow
    # by a factor ~1e4 each, overflowing; clipped steps stay within max_drift of the start
    target = lambda z: -0.5 * (z * torch.tensor([1.0, 100.0])).square().sum(dim=1)  # noqa: E731
    z0 = torch.ones(3, 2)
    assert not torch.isfinite(langevin(target, z0, 30, 0.5)).all()
    for n_steps in (1, 30):
        z = langevin(target, z0, n_steps, 0.5, max_drift=0.25)
        assert torch.isfinite(z).all()
        assert (z - z0).norm(dim=1).max() <= 0.25 * n_steps + 1e-6
    # a drift shorter than max_drift is left as it is
    gentle = _gaussian(torch.zeros(2), 1.0)
    torch.testing.assert_close(langevin(gentle, z0, 5, 0.5, max_drift=10.0),
                               langevin(gentle, z0, 5, 0.5))
