"""Bad input and bad parameters: every public method of both estimators must refuse them
with a ValueError that names the problem (or NotFittedError before fit).

The cases are tables; each row says what is passed, to which method of which estimator,
and a word the error message must contain.
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

from .conftest import DEVICE

N_FEATURES = 4
_rng = np.random.RandomState(0)
X = _rng.randn(30, N_FEATURES)
X01 = _rng.rand(30, N_FEATURES)

SMALL = dict(hidden_layer_sizes=(8,), n_flow_blocks=2, max_iter=2, batch_size=32,
             random_state=0, device=DEVICE)
FACTORIES = {
    "GLF": lambda **kw: GenerativeLatentFlow(**{**SMALL, **kw}),
    "LFP": lambda **kw: LangevinFlowPriorGenerator(**{**SMALL, "n_steps": 3, **kw}),
}


def _fit(estimator, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(data)


@pytest.fixture(scope="module")
def fitted():
    """Fitted models, built once per module and never modified by a test."""
    cache = {}

    def get(name, **params):
        key = (name, tuple(sorted(params.items())))
        if key not in cache:
            data = X01 if params.get("reconstruction") == "bce" else X
            cache[key] = _fit(FACTORIES[name](**params), data)
        return cache[key]
    return get


def _with(value, row=1, col=2):
    out = X[:3].copy()
    out[row, col] = value
    return out


# ---------------------------------------------------------------- bad X
# (name, X, word in the message, estimators it is bad for)
BAD_X = [
    ("empty", np.empty((0, N_FEATURES)), "0 sample", ("GLF", "LFP")),
    ("no_features", np.empty((5, 0)), "0 feature", ("GLF", "LFP")),
    ("scalar", 3.0, "2D array", ("GLF", "LFP")),
    ("1d", X[0], "2D array", ("GLF", "LFP")),
    ("3d", X[:4].reshape(4, 2, 2), "dim 3", ("GLF", "LFP")),
    ("strings", np.array([["a", "b", "c", "d"]] * 3), "string", ("GLF", "LFP")),
    ("mixed_object", np.array([[1.0, "x", 2.0, 3.0]] * 3, dtype=object), "string",
     ("GLF", "LFP")),
    ("complex", X[:3] + 1j, "Complex", ("GLF", "LFP")),
    ("inf", _with(np.inf), "infinity", ("GLF", "LFP")),
    ("neg_inf", _with(-np.inf), "infinity", ("GLF", "LFP")),
    # no "nan" case: both estimators take NaN as a missing value (below)
]
# Bad only once the width is fixed by fit.
BAD_WIDTH = [
    ("too_narrow", X[:3, :3], "features"),
    ("too_wide", np.hstack([X[:3], X[:3, :1]]), "features"),
]
FIT_METHODS = ("fit", "fit_predict")
PREDICT_METHODS = ("score_samples", "score", "decision_function", "predict", "transform")


def _methods(name):
    return PREDICT_METHODS + ("impute",)


X_CASES = (
    [pytest.param(est, meth, bad, match, id=f"{est}-{meth}-{case}")
     for case, bad, match, ests in BAD_X for est in ests
     for meth in FIT_METHODS + _methods(est)]
    + [pytest.param(est, meth, bad, match, id=f"{est}-{meth}-{case}")
       for case, bad, match in BAD_WIDTH for est in FACTORIES for meth in _methods(est)]
)


@pytest.mark.parametrize("est, method, bad, match", X_CASES)
def test_bad_X_raises(fitted, est, method, bad, match):
    model = FACTORIES[est]() if method in FIT_METHODS else fitted(est)
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(bad)


def test_warm_start_fit_with_wrong_width_raises():
    model = _fit(FACTORIES["GLF"](warm_start=True), X)
    with pytest.raises(ValueError, match="features"):
        model.fit(X[:, :3])


@pytest.mark.parametrize("est", FACTORIES)
def test_fit_on_all_nan_X_raises(est):
    """Nothing is observed: there is nothing to learn, and the fitted state would be NaN."""
    with pytest.raises(ValueError, match=r"(?i)nan|missing|observed"):
        _fit(FACTORIES[est](), np.full((30, N_FEATURES), np.nan))


@pytest.mark.parametrize("est", FACTORIES)
@pytest.mark.parametrize("fit", ["fit", "partial_fit"])
def test_fit_on_one_row_raises_naming_the_count(est, fit):
    """One row gives no spread to scale by and no rows to rank: refused, the count named."""
    with pytest.raises(ValueError, match="1 sample"):
        getattr(FACTORIES[est](), fit)(X[:1])


@pytest.mark.parametrize("est", FACTORIES)
def test_a_column_with_no_observed_value_warns_naming_it(est):
    """As ``SimpleImputer`` does: the column is named (the model still fits the others)."""
    data = X.copy()
    data[:, 2] = np.nan
    with pytest.warns(UserWarning, match=r"Features \[2\] have no observed value"):
        model = _fit(FACTORIES[est](), data)
    assert np.isfinite(model.score_samples(data)).all()


@pytest.mark.parametrize("est", FACTORIES)
def test_accepts_nan_as_missing(fitted, est):
    """A NaN is a missing value: fit learns from the row, every method returns finite
    values for it, and impute keeps its observed entries."""
    bad = _with(np.nan)
    model = _fit(FACTORIES[est](), np.vstack([X, bad]))
    assert np.isfinite(model.score_samples(bad)).all()
    assert np.isfinite(model.transform(bad)).all()
    filled = fitted(est).impute(bad)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[~np.isnan(bad)], bad[~np.isnan(bad)])


# ---------------------------------------------------------------- bad parameters
# (estimators, parameters, word in the message, data to fit)
BAD_PARAMS = [
    (("GLF", "LFP"), {"n_components": 0}, "n_components", X),
    (("GLF", "LFP"), {"n_components": 1.5}, "n_components", X),
    (("GLF", "LFP"), {"batch_size": 0}, "batch_size", X),
    (("GLF", "LFP"), {"contamination": 0}, "contamination", X),
    (("GLF", "LFP"), {"contamination": 0.6}, "contamination", X),
    (("GLF", "LFP"), {"contamination": -0.1}, "contamination", X),
    (("GLF", "LFP"), {"support_fraction": 0}, "support_fraction", X),
    (("GLF", "LFP"), {"support_fraction": 1.5}, "support_fraction", X),
    (("GLF", "LFP"), {"support_fraction": "all"}, "support_fraction", X),
    (("GLF", "LFP"), {"max_iter": 0}, "max_iter", X),
    (("GLF", "LFP"), {"learning_rate_init": 0}, "learning_rate_init", X),
    (("GLF", "LFP"), {"learning_rate_init": -1e-3}, "learning_rate_init", X),
    (("GLF", "LFP"), {"n_flow_blocks": 0}, "n_flow_blocks", X),
    (("GLF", "LFP"), {"tol": -1.0}, "tol", X),
    (("GLF", "LFP"), {"n_iter_no_change": 0}, "n_iter_no_change", X),
    (("GLF", "LFP"), {"validation_fraction": 1.0}, "validation_fraction", X),
    (("GLF", "LFP"), {"early_stopping": True, "validation_fraction": 0.01},
     "validation_fraction", X),
    (("GLF", "LFP"), {"score_method": "exact"}, "score_method", X),
    (("GLF", "LFP"), {"hidden_layer_sizes": (0,)}, "hidden_layer_sizes", X),
    (("GLF", "LFP"), {"hidden_layer_sizes": ()}, "hidden_layer_sizes", X),
    (("GLF", "LFP"), {"hidden_layer_sizes": (8, -1)}, "hidden_layer_sizes", X),
    (("GLF", "LFP"), {"hidden_layer_sizes": (8.5,)}, "hidden_layer_sizes", X),
    (("GLF", "LFP"), {"image_shape": (1, 2, 3)}, "image_shape", X),   # 6 values, 4 features
    (("GLF", "LFP"), {"image_shape": (2, 2)}, "image_shape", X),
    (("GLF", "LFP"), {"image_shape": (1, 2, 2, 1)}, "image_shape", X),
    (("GLF", "LFP"), {"image_shape": (-1, -2, 2)}, "image_shape", X),  # product 4 = n_features
    (("GLF", "LFP"), {"device": "tpu"}, "device", X),
    (("GLF", "LFP"), {"device": "gpu:x"}, "device", X),
    (("GLF", "LFP"), {"device": "cuda:x"}, "device", X),
    (("GLF", "LFP"), {"device": "meta"}, "device", X),
    (("GLF", "LFP"), {"device": 0}, "device", X),
    (("LFP",), {"step_size": -1}, "step_size", X),
    (("LFP",), {"step_size": 0}, "step_size", X),
    (("LFP",), {"sigma": -1}, "sigma", X),
    (("LFP",), {"sigma": 0}, "sigma", X),
    (("LFP",), {"sigma": "fit"}, "sigma", X),
    (("LFP",), {"n_steps": 0}, "n_steps", X),
    (("LFP",), {"inference_steps": 0}, "inference_steps", X),
    (("LFP",), {"chain_init": "zeros"}, "chain_init", X),
    (("GLF", "LFP"), {"max_iter": "long"}, "max_iter", X),
    (("GLF", "LFP"), {"n_importance_samples": 0}, "n_importance_samples", X),
    (("GLF",), {"reconstruction": "bce"}, "bce", X),                # X outside [0, 1]
    (("GLF",), {"reconstruction": "bce"}, "bce", np.vstack([X01, X01 + 0.5])),
    (("GLF",), {"reconstruction": "l1"}, "reconstruction", X),
    (("GLF",), {"beta": 0}, "beta", X),
]
PARAM_CASES = [
    pytest.param(est, params, match, data, id=f"{est}-" + "-".join(f"{k}={v!r}"
                                                                   for k, v in params.items())
                 + ("" if data is X else "-shifted"))
    for ests, params, match, data in BAD_PARAMS for est in ests
]


@pytest.mark.parametrize("est, params, match, data", PARAM_CASES)
@pytest.mark.parametrize("method", FIT_METHODS)
def test_bad_params_raise(est, params, match, data, method):
    model = FACTORIES[est](**params)
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(data)


@pytest.mark.parametrize("method", PREDICT_METHODS)
def test_bce_model_refuses_data_outside_unit_interval(fitted, method):
    model = fitted("GLF", reconstruction="bce")
    with pytest.raises(ValueError, match="bce"):
        getattr(model, method)(X01[:3] * 2 - 0.5)


@pytest.mark.parametrize("est", FACTORIES)
@pytest.mark.parametrize("device", ["tpu", "gpu:x"])
def test_bad_device_set_after_fit_raises_at_call(fitted, est, device):
    model = copy.deepcopy(fitted(est)).set_params(device=device)
    with pytest.raises(ValueError, match="device"):
        model.score_samples(X[:3])


# ---------------------------------------------------------------- inverse_transform and sample
BAD_Z = [
    ("wide", lambda d: np.zeros((3, d + 1)), "n_components"),
    ("narrow", lambda d: np.zeros((3, d - 1)), "n_components"),
    ("1d", lambda d: np.zeros(d), "2D array"),
    ("empty", lambda d: np.zeros((0, d)), "0 sample"),
    ("nan", lambda d: np.full((2, d), np.nan), "NaN"),
    ("inf", lambda d: np.full((2, d), np.inf), "infinity"),
    ("strings", lambda d: np.full((2, d), "z"), "string"),
]


@pytest.mark.parametrize("est", FACTORIES)
@pytest.mark.parametrize("case, make_z, match", BAD_Z, ids=[c[0] for c in BAD_Z])
def test_inverse_transform_bad_Z_raises(fitted, est, case, make_z, match):
    model = fitted(est)
    with pytest.raises(ValueError, match=match):
        model.inverse_transform(make_z(model.n_components_))


@pytest.mark.parametrize("est", FACTORIES)
@pytest.mark.parametrize("n_samples", [0, -1, 1.5, "3", None])
def test_sample_bad_n_samples_raises(fitted, est, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        fitted(est).sample(n_samples)


# ---------------------------------------------------------------- not fitted
UNFITTED_CALLS = {
    "score_samples": lambda m: m.score_samples(X),
    "score": lambda m: m.score(X),
    "decision_function": lambda m: m.decision_function(X),
    "predict": lambda m: m.predict(X),
    "transform": lambda m: m.transform(X),
    "inverse_transform": lambda m: m.inverse_transform(np.zeros((3, 2))),
    "sample": lambda m: m.sample(3),
    "impute": lambda m: m.impute(X),
}


@pytest.mark.parametrize(
    "est, method",
    [(e, m) for e in FACTORIES for m in UNFITTED_CALLS])
def test_unfitted_raises_not_fitted(est, method):
    with pytest.raises(NotFittedError):
        UNFITTED_CALLS[method](FACTORIES[est]())


# ---------------------------------------------------------------- missing CUDA
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("est", FACTORIES)
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_missing_cuda_warns_and_runs_on_cpu(est, device):
    reference = _fit(FACTORIES[est](), X)
    model = FACTORIES[est](device=device)
    with pytest.warns(UserWarning, match="CUDA"):
        _fit(model, X)
    for name in model._network_names:
        assert all(p.device.type == "cpu" for p in getattr(model, name).parameters())
    with pytest.warns(UserWarning, match="CUDA"):
        scores = model.score_samples(X)
    np.testing.assert_array_equal(scores, reference.score_samples(X))
