"""scikit-learn's own estimator checks over both estimators and the imputer, and the
'auto' rules the two estimators share."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import skflowgen._auto
from skflowgen import GenerativeImputer, GenerativeLatentFlow, LangevinFlowPriorGenerator

from .conftest import DEVICE, TINY

SMALL = dict(max_iter=3, hidden_layer_sizes=(16,), n_flow_blocks=2, device=DEVICE)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([GenerativeLatentFlow(**SMALL),  # the default ensemble of five
                          LangevinFlowPriorGenerator(n_steps=5, **SMALL),
                          GenerativeLatentFlow(n_estimators=1, **SMALL),
                          GenerativeLatentFlow(n_estimators=2, n_prior_components=3, **SMALL),
                          LangevinFlowPriorGenerator(n_estimators=2, n_prior_components=3,
                                                     n_steps=5, **SMALL),
                          LangevinFlowPriorGenerator(persistent_steps=None, n_steps=5, **SMALL),
                          GenerativeImputer(GenerativeLatentFlow(n_estimators=2, **SMALL))])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator_class", [GenerativeLatentFlow, LangevinFlowPriorGenerator])
def test_auto_max_iter_trains_the_table_epochs_and_enough_images_with_image_shape(
        monkeypatch, digits01, estimator_class):
    """``max_iter='auto'`` trains the estimator's table epochs on a table (GLF 1, LFP 5);
    with ``image_shape`` at least its ``_image_min_epochs`` and enough for ``_IMAGE_ROWS_SEEN``
    training rows in all (here all 40 rows train: nothing needs rows held out); an int is
    kept as given."""
    images = estimator_class._image_min_epochs + 5  # the rows, not the minimum, decide
    monkeypatch.setattr(skflowgen._auto, "_IMAGE_ROWS_SEEN", images * 40 - 5)
    X = digits01[0][:40]
    table = {GenerativeLatentFlow: 1, LangevinFlowPriorGenerator: 5}[estimator_class]
    cases = ((None, "auto", table), ((1, 8, 8), "auto", images), ((1, 8, 8), 3, 3))
    for image_shape, max_iter, epochs in cases:
        model = estimator_class(2, image_shape=image_shape, max_iter=max_iter,
                                n_estimators=1, n_prior_components=1, random_state=0, **TINY)
        if estimator_class is LangevinFlowPriorGenerator:
            model.set_params(n_steps=1, persistent_steps=1)
        model.fit(X)
        assert model.max_iter == max_iter
        assert model.n_iter_ == len(model.loss_curve_) == epochs
