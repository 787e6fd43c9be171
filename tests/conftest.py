"""Small data and tiny configurations shared by the tests."""

import os

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

# The tests' networks are tiny: one thread runs them fastest and keeps CI times steady.
torch.set_num_threads(1)

# The device the tests fit on: the CPU, or e.g. ``SKFLOWGEN_TEST_DEVICE=cuda`` on a GPU machine.
DEVICE = os.environ.get("SKFLOWGEN_TEST_DEVICE", "cpu")
TINY = dict(hidden_layer_sizes=(16,), n_flow_blocks=2, batch_size=64, device=DEVICE)


def manifold(n_rows=1500, seed=0):
    """Rows on a smooth 3-dimensional manifold in 20 features, plus a little noise."""
    rng = np.random.RandomState(seed)
    z = rng.randn(n_rows, 3)
    w1, w2 = rng.randn(3, 32), rng.randn(32, 20) / 4
    return np.tanh(z @ w1) @ w2 + 0.05 * rng.randn(n_rows, 20)


@pytest.fixture(scope="session")
def digits01():
    """load_digits scaled to [0, 1], as float64 rows of 64 pixels, and labels."""
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="session")
def blob():
    """200 rows of a correlated 5-D Gaussian."""
    rng = np.random.RandomState(0)
    return rng.randn(200, 5) @ rng.randn(5, 5) * 0.3
