"""The mixture of the codes that ``sample`` draws from with ``n_prior_components > 1``."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skflowgen._sampling import draw_codes, fit_code_mixture


@given(seed=st.integers(0, 2 ** 31 - 1), n_dims=st.integers(1, 4))
@settings(max_examples=10, deadline=None)
def test_fit_code_mixture_is_each_clusters_moments_widened(seed, n_dims):
    """Three clusters far apart, of 400, 800 and 1,200 codes, two members: each member's
    mixture has the clusters' shares as weights, their means, and their covariances
    widened by the temperature squared (EM's fit of separated clusters is their
    moments, up to scikit-learn's ``reg_covar``)."""
    rng = np.random.RandomState(seed)
    sizes = np.array([400, 800, 1200])
    label = np.repeat(np.arange(3), sizes)
    codes = np.stack([100 * label[:, None] * rng.choice([-1, 1], size=n_dims)
                      + rng.randn(len(label), n_dims) @ (np.eye(n_dims) + rng.rand(n_dims, n_dims))
                      for _ in range(2)])
    cumulative, means, scales = fit_code_mixture(codes, 3, seed, 1.3)
    for m in range(2):
        nearest = [label[np.argmin(np.linalg.norm(codes[m] - mean, axis=1))]
                   for mean in means[m]]
        assert sorted(nearest) == [0, 1, 2]
        weights = np.diff(cumulative[m], prepend=0)
        for k, c in enumerate(nearest):
            rows = codes[m][label == c]
            scale = np.abs(rows).max()
            np.testing.assert_allclose(weights[k], sizes[c] / sizes.sum(), atol=1e-5)
            np.testing.assert_allclose(means[m, k], rows.mean(axis=0), atol=1e-5 * scale)
            covariance = np.cov(rows.T, bias=True).reshape(n_dims, n_dims)
            np.testing.assert_allclose(scales[m, k] @ scales[m, k].T,
                                       1.3 ** 2 * covariance,
                                       atol=1e-4 * np.abs(covariance).max())


def test_draw_codes_follow_the_mixture():
    """``draw_codes`` samples the mixture it is given: of 60,000 draws, each member's share
    of each component (picked by the uniform draw) matches its weight, and each component's
    draws have its mean and covariance ``L_k L_k^T``."""
    g = torch.Generator().manual_seed(0)
    cumulative = np.array([[0.2, 0.5, 1.0], [0.6, 0.9, 1.0]], dtype=np.float32)
    means = 10 * torch.randn(2, 3, 2, generator=g).numpy()
    scales = torch.tril(torch.randn(2, 3, 2, 2, generator=g)).numpy()
    eps, uniform = torch.randn(60_000, 2, generator=g), torch.rand(60_000, generator=g)
    draws = draw_codes(tuple(map(torch.as_tensor, (cumulative, means, scales))), eps,
                       uniform).numpy()
    for m in range(2):
        for k in range(3):
            picked = np.searchsorted(cumulative[m], uniform.numpy()) == k
            assert abs(picked.mean() - np.diff(cumulative[m], prepend=0)[k]) < 0.01
            rows = draws[m, picked]
            covariance = scales[m, k] @ scales[m, k].T
            spread = np.sqrt(np.diag(covariance)).max()
            np.testing.assert_allclose(rows.mean(axis=0), means[m, k], atol=0.05 * spread)
            np.testing.assert_allclose(np.cov(rows.T), covariance,
                                       atol=0.05 * np.abs(covariance).max())


@given(seed=st.integers(0, 2 ** 31 - 1), shrink=st.sampled_from([1.0, 0.8, 0.6]))
@settings(max_examples=10, deadline=None)
def test_choose_widening_makes_up_for_what_the_round_trip_narrows(seed, shrink):
    """Codes of two members, standard normal; a decoder and encoder whose features of a
    draw ``z`` are ``shrink * z`` (a decoder that narrows what it draws), of the training
    rows the codes themselves: each member's widening is the grid's nearest to
    ``1 / shrink``, up to a step; with ``shrink = 1``, no widening."""
    from skflowgen._sampling import _WIDENINGS, choose_widening
    rng = np.random.RandomState(seed)
    codes = rng.randn(2, 4000, 3)
    mixture = fit_code_mixture(codes, 1, seed, 1.0)
    widening = choose_widening(mixture, codes, lambda z: shrink * z.numpy(), seed)
    grid = np.asarray(_WIDENINGS)
    nearest = grid[np.argmin(np.abs(grid - 1 / shrink))]
    assert widening.shape == (2,)
    assert np.all(np.abs(widening - nearest) <= 0.1 + 1e-9), (widening, nearest)
    if shrink == 1.0:
        assert np.all(widening <= 1.1)
