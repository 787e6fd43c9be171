"""scikit-learn's own estimator checks over both estimators and the imputer."""

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflowgen import GenerativeImputer, GenerativeLatentFlow, LangevinFlowPriorGenerator

from .conftest import DEVICE

SMALL = dict(max_iter=3, hidden_layer_sizes=(16,), n_flow_blocks=2, device=DEVICE)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([GenerativeLatentFlow(**SMALL),  # the default ensemble of five
                          LangevinFlowPriorGenerator(n_steps=5, **SMALL),
                          GenerativeLatentFlow(n_estimators=1, **SMALL),
                          LangevinFlowPriorGenerator(n_estimators=2, n_steps=5, **SMALL),
                          LangevinFlowPriorGenerator(persistent_steps=None, n_steps=5, **SMALL),
                          GenerativeImputer(GenerativeLatentFlow(n_estimators=2, **SMALL))])
def test_sklearn_compatible(estimator, check):
    check(estimator)
