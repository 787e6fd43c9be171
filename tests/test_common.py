"""scikit-learn's own estimator checks over both estimators and the imputer, and the
'auto' rules the two estimators share."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import skflowgen._auto
from skflowgen import GenerativeImputer, GenerativeLatentFlow, LangevinFlowPriorGenerator

from .conftest import DEVICE, TINY

SMALL = dict(max_iter=3, hidden_layer_sizes=(16,), n_flow_blocks=2, device=DEVICE)

# offset_ comes from rows held out of training, so that predict flags about contamination of
# *new* rows; the training rows score higher and fewer than that share of them are flagged.
# These two checks count the flagged training rows, as LocalOutlierFactor(novelty=True) would
# fail them (scikit-learn skips them for it through its novelty parameter).
_HELD_OUT_OFFSET = ("offset_ is the contamination percentile of held-out rows' scores; "
                    "fewer training rows than that share are flagged")


def expected_failed_checks(estimator):
    if isinstance(estimator, GenerativeImputer):
        return {}
    return {"check_outliers_train": _HELD_OUT_OFFSET,
            "check_outliers_fit_predict": _HELD_OUT_OFFSET}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([GenerativeLatentFlow(**SMALL),  # the default ensemble of five
                          LangevinFlowPriorGenerator(n_steps=5, **SMALL),
                          GenerativeLatentFlow(n_estimators=1, **SMALL),
                          GenerativeLatentFlow(n_estimators=2, n_prior_components=3, **SMALL),
                          LangevinFlowPriorGenerator(n_estimators=2, n_prior_components=3,
                                                     n_steps=5, **SMALL),
                          LangevinFlowPriorGenerator(persistent_steps=None, n_steps=5, **SMALL),
                          GenerativeImputer(GenerativeLatentFlow(n_estimators=2, **SMALL))],
                         expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator_class", [GenerativeLatentFlow, LangevinFlowPriorGenerator])
def test_auto_max_iter_trains_ten_epochs_on_tables_and_enough_images_with_image_shape(
        monkeypatch, digits01, estimator_class):
    """``max_iter='auto'`` trains 10 epochs on a table; with ``image_shape`` at least 10 and
    enough for ``_IMAGE_ROWS_SEEN`` training rows in all (here 32 rows, 8 of the 40 held out);
    an int is kept as given."""
    monkeypatch.setattr(skflowgen._auto, "_IMAGE_ROWS_SEEN", 15 * 32 - 5)
    X = digits01[0][:40]
    cases = ((None, "auto", 10), ((1, 8, 8), "auto", 15), ((1, 8, 8), 3, 3))
    for image_shape, max_iter, epochs in cases:
        model = estimator_class(2, image_shape=image_shape, max_iter=max_iter,
                                n_estimators=1, n_prior_components=1, random_state=0, **TINY)
        if estimator_class is LangevinFlowPriorGenerator:
            model.set_params(n_steps=1, persistent_steps=1)
        model.fit(X)
        assert model.max_iter == max_iter
        assert model.n_iter_ == len(model.loss_curve_) == epochs
