"""Model selection and scoring on a dask.distributed cluster give the same answers as a local
run."""

import numpy as np
import pytest
from joblib import parallel_backend
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skflowgen import LangevinFlowPriorGenerator

from .conftest import (TINY, assert_close_across_processes,
                       assert_same_labels_across_processes)

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning",
                                        "ignore::DeprecationWarning", "ignore::UserWarning")


def test_grid_search_on_a_local_cluster_matches_local(blob):
    grid = {"n_components": [2, 4], "step_size": [0.5, 1.0]}
    est = LangevinFlowPriorGenerator(score_method="marginal", max_iter=2, n_steps=3,
                                     random_state=0, **TINY)
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(blob)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with parallel_backend("dask"):
            remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(blob)
    assert remote.best_params_ == local.best_params_
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        assert_close_across_processes(remote.cv_results_[key], local.cv_results_[key])


def test_scoring_a_dask_array_on_a_local_cluster_matches_local(blob):
    """A fitted model, shipped to the workers, scores a dask array block by block (blocks of
    an odd size) as one local call does, up to the rounding of another process (the
    workers run one thread): a row's score never depends on its block."""
    da = pytest.importorskip("dask.array")
    X = np.vstack([blob] * 3)
    model = LangevinFlowPriorGenerator(score_method="marginal", max_iter=2, n_steps=3,
                                       n_estimators=2, random_state=0, **TINY).fit(blob)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        blocks = da.from_array(X, chunks=(37, X.shape[1]))
        remote = blocks.map_blocks(model.score_samples, drop_axis=1, dtype=np.float64).compute()
    assert_close_across_processes(remote, model.score_samples(X))


def test_incremental_on_a_local_cluster_trains_as_partial_fit_does(blob):
    """``dask_ml.wrappers.Incremental`` hands the blocks of a dask array to ``partial_fit``
    on the workers, one after the other, and continues across its own calls (two blocks a
    call, as the README drives it): the model it returns is the one local calls over the
    same blocks give, and it scores the array block by block."""
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X = np.vstack([blob] * 3)
    est = LangevinFlowPriorGenerator(n_steps=3, n_estimators=2, random_state=0, **TINY)
    local = clone(est)
    for block in np.array_split(X, 4):
        local.partial_fit(block)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        blocks = da.from_array(X, chunks=(150, X.shape[1]))
        incremental = wrappers.Incremental(est, shuffle_blocks=False)
        for start in (0, 2):
            incremental.partial_fit(blocks.blocks[start:start + 2])
        remote = incremental.estimator_
        scores = blocks.map_blocks(remote.score_samples, drop_axis=1,
                                   dtype=np.float64).compute()
    assert remote.n_iter_ == local.n_iter_ == 4
    expected = local.score_samples(X)
    assert_close_across_processes(scores, expected)
    assert_same_labels_across_processes(remote.predict(X), local.predict(X), expected,
                                        local.offset_)
