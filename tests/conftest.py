"""Small data and tiny configurations shared by the tests."""

import os

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

# The tests' networks are tiny: one thread runs them fastest and keeps CI times steady.
# SKFLOWGEN_TEST_THREADS=2 runs the suite at another thread count: no assertion may depend on
# it (summation order changes with the threads).
THREADS = int(os.environ.get("SKFLOWGEN_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)

# Outputs computed in two processes (a pickle written by an earlier release, a dask worker)
# agree up to rounding, not to the bit: another CPU, library build or thread count sums in
# another order. float32 rounds each operation to 6e-8 relative; a score sums hundreds of
# terms of either sign through a few layers, so its rounding is a few 1e-6 of the largest
# term, and 1e-4 of the largest value compared leaves a margin of 30 and more.
FLOAT32_RTOL = 1e-4


def assert_close_across_processes(actual, expected, err_msg=""):
    """``actual`` equals ``expected`` up to float32 rounding (``FLOAT32_RTOL`` of the largest
    magnitude among them): for outputs computed in two processes."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=FLOAT32_RTOL,
                               atol=FLOAT32_RTOL * np.abs(expected).max(), err_msg=err_msg)


def assert_same_labels_across_processes(actual, expected, scores, offset):
    """Labels agree wherever the score is farther from ``offset`` than float32 rounding can
    move it (as in :func:`assert_close_across_processes`): a row at the threshold may fall
    either way in another process."""
    scores = np.asarray(scores)
    clear = np.abs(scores - offset) > FLOAT32_RTOL * np.abs(scores).max()
    assert clear.mean() > 0.9, "too few rows away from the threshold to compare"
    np.testing.assert_array_equal(np.asarray(actual)[clear], np.asarray(expected)[clear])

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
