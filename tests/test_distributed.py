"""Model selection on a dask.distributed cluster gives the same answer as a local run."""

import numpy as np
import pytest
from joblib import parallel_backend
from sklearn.model_selection import GridSearchCV

from skflowgen import LangevinFlowPriorGenerator

from .conftest import TINY

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
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-6)
