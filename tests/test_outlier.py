"""The outlier API: ``predict`` flags about ``contamination`` of new rows of the training
distribution, for every score and after ``set_params`` of every parameter that moves a
score; what is derived from the kept rows never goes stale."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen.scores import N_NEIGHBORS, SCORES

from .conftest import DEVICE, TINY, manifold

CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}
# the tolerance the issue sets, and scikit-learn's own detectors meet on such splits
TOLERANCE = 0.05
# 1,500 held-out rows and 3,000 new ones: the share flagged has a standard deviation of about
# 0.01 around contamination, a fifth of the tolerance
SETTINGS = dict(max_iter=5, n_estimators=1, validation_fraction=0.5, random_state=0, **TINY)


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.fixture(scope="module")
def halves():
    """Rows to fit on, and as many new rows of the same distribution."""
    X = manifold(6000)
    return X[:3000], X[3000:]


@pytest.fixture(scope="module")
def fitted(halves):
    cache = {}

    def get(est):
        if est not in cache:
            extra = {"n_steps": 5} if est == "LFP" else {}
            cache[est] = fit_quietly(CLASSES[est](**SETTINGS, **extra), halves[0])
        return cache[est]
    return get


def flagged(model, X):
    return float(np.mean(model.predict(X) == -1))


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("score_method", SCORES)
def test_predict_flags_the_contamination_share_of_new_rows(fitted, halves, est, score_method):
    """Fit on one half, predict on the other: about ``contamination`` flagged. Offsets taken
    from the training rows' own scores flagged up to twice that (a training row is its own
    nearest code; the networks fit their own rows better)."""
    model = fitted(est)
    method = model.score_method
    try:
        model.set_params(score_method=score_method)
        share = flagged(model, halves[1])
    finally:
        model.set_params(score_method=method)
    assert abs(share - model.contamination) <= TOLERANCE


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("repeated", [False, True])
def test_predict_after_blockwise_training_flags_the_contamination_share(halves, est,
                                                                         repeated):
    """As after ``fit``: ``partial_fit`` over 5 blocks, 5 passes, holds its rows out by their
    keys (never trained on in any pass), so about ``contamination`` of new rows are flagged,
    for every score; also where one row is 60% of the rows (30% in ADBench's mammography),
    whose copies are held out as rows are, not all or none."""
    train, new = halves
    if repeated:
        rng = np.random.RandomState(0)
        train, new = train.copy(), new.copy()
        for rows in (train, new):
            rows[rng.rand(len(rows)) < 0.6] = halves[0][0]
    extra = {"n_steps": 5} if est == "LFP" else {}
    model = CLASSES[est](**{**SETTINGS, **extra})
    for _ in range(SETTINGS["max_iter"]):
        for block in np.array_split(train, 5):
            model.partial_fit(block)
    for score_method in SCORES if not repeated else ["auto"]:
        model.set_params(score_method=score_method)
        assert abs(flagged(model, new) - model.contamination) <= TOLERANCE, score_method


MOVERS = {
    "GLF": [("contamination", 0.05), ("contamination", 0.2), ("n_importance_samples", 16)],
    "LFP": [("contamination", 0.05), ("contamination", 0.2), ("n_importance_samples", 32),
            ("inference_steps", 20), ("chain_init", "prior"), ("step_size", 0.5)],
}


def held_out_scores(model):
    """The held-out rows' scores as new rows get them: for the local scores (one member), each
    fold of alternate held-out rows scored by scikit-learn against the other kept codes."""
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    if model._score_method not in ("knn", "lof"):
        return model.score_samples(model._held_out_rows)
    codes, n_held = model.transform(model._reference_rows), len(model._held_out_rows)
    scores = []
    for fold in (0, 1):
        mine = np.zeros(len(codes), dtype=bool)
        mine[fold:n_held:2] = True
        reference, rows = codes[~mine], codes[mine]
        if model._score_method == "lof":
            scores.append(LocalOutlierFactor(n_neighbors=N_NEIGHBORS, novelty=True)
                          .fit(reference).score_samples(rows))
            continue
        m, d = reference.shape
        r_k = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(reference).kneighbors(rows)[0]
        log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
        scores.append(math.log(N_NEIGHBORS) - math.log(m) - log_ball - d * np.log(r_k[:, -1]))
    return np.concatenate(scores)


def assert_derived_state_is_current(model):
    """The kept codes are what ``transform`` gives the reference rows now, and ``offset_`` the
    percentile of the held-out rows' scores now."""
    codes = model._training_codes(torch.device("cpu")).numpy()
    np.testing.assert_array_equal(np.concatenate(list(codes), axis=1),
                                  model.transform(model._reference_rows))
    np.testing.assert_allclose(model.offset_, np.percentile(
        held_out_scores(model), 100 * model.contamination), rtol=1e-4)


@pytest.mark.parametrize("est, parameter, value",
                         [(est, p, v) for est, movers in MOVERS.items() for p, v in movers])
@pytest.mark.parametrize("score_method", ["marginal", "knn", "lof"])
def test_a_parameter_that_moves_the_score_keeps_the_share(fitted, halves, est, parameter,
                                                          value, score_method):
    """After ``set_params`` on a fitted model, ``offset_`` and the training codes of the local
    scores are those of the new parameters: the share of new rows flagged stays near
    ``contamination`` (before, LFP flagged 30% after ``chain_init='prior'``)."""
    model = fitted(est)
    before = model.get_params()
    try:
        model.set_params(score_method=score_method, **{parameter: value})
        share = flagged(model, halves[1])
        assert_derived_state_is_current(model)
        contamination = model.contamination
    finally:
        model.set_params(**before)
    assert abs(share - contamination) <= TOLERANCE


def test_image_inference_follows_n_steps(digits01):
    """On images ``inference_steps='auto'`` is ``n_steps``: changing it on a fitted model
    changes the codes, and the kept codes and offset follow."""
    model = fit_quietly(LangevinFlowPriorGenerator(
        4, image_shape=(1, 8, 8), n_steps=3, max_iter=1, random_state=0, **TINY),
        digits01[0][:200])
    codes = model.transform(model._reference_rows)
    model.set_params(n_steps=12)
    assert not np.array_equal(model.transform(model._reference_rows), codes)
    assert_derived_state_is_current(model)


# valid values of every parameter that acts on training alone (the first that differs from
# the fitted model's is set)
ALTERNATIVES = {
    "n_components": [2], "hidden_layer_sizes": [(5, 5)], "n_flow_blocks": [3],
    "n_prior_components": [3],
    "feature_scaling": ["standard"], "covariance_type": ["diag", "spherical"],
    "support_fraction": [0.5], "n_estimators": [3], "max_iter": [4], "batch_size": [7],
    "learning_rate_init": [0.5], "tol": [1.0], "n_iter_no_change": [2],
    "early_stopping": [True], "validation_fraction": [0.5], "warm_start": [True],
    "verbose": [1], "random_state": [5], "device": [DEVICE + ":0" if ":" not in DEVICE
                                                    else DEVICE.split(":")[0]],
    "stop_gradient": [False], "beta": [3.0], "sigma": [0.1], "persistent_steps": [None],
}


@pytest.mark.parametrize("est", CLASSES)
def test_training_parameters_change_no_score(blob, est):
    """Every parameter the outlier state does not follow acts on training alone: set on a
    fitted model, it changes no score, code or offset (so nothing derived from them can go
    stale). A parameter added later follows by default; one added to
    ``_training_parameters`` must be listed here."""
    model = fit_quietly(CLASSES[est](max_iter=2, random_state=0, **TINY), blob)
    assert model._training_parameters <= set(ALTERNATIVES)
    expected = (model.score_samples(blob), model.transform(blob), model.offset_)
    for parameter in model._training_parameters:
        current = model.get_params()[parameter]
        model.set_params(**{parameter: next(v for v in ALTERNATIVES[parameter]
                                            if v != current)})
    for got, want in zip((model.score_samples(blob), model.transform(blob), model.offset_),
                         expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("est", CLASSES)
def test_held_out_rows_are_never_trained_on(monkeypatch, blob, est):
    """``validation_fraction`` of the rows is set aside before training: no training step sees
    one, every other row is trained on, the local scores' reference rows are the held-out
    rows followed by training rows, and ``offset_`` is the ``contamination`` percentile of the
    held-out rows' scores."""
    seen = []
    cls = CLASSES[est]
    original = cls._train_step

    def step(model, x, *args):
        seen.append(x.detach().clone())
        return original(model, x, *args)
    monkeypatch.setattr(cls, "_train_step", step)
    model = fit_quietly(cls(max_iter=1, feature_scaling=None, validation_fraction=0.25,
                            random_state=0, **TINY), blob)
    rows = {tuple(r) for r in blob.astype(np.float32)}
    trained = {tuple(r) for r in torch.cat(seen).numpy()}
    held = {tuple(r) for r in model._held_out_rows}
    assert len(held) == 50 and held <= rows
    assert trained == rows - held
    np.testing.assert_array_equal(model._reference_rows[:50], model._held_out_rows)
    assert {tuple(r) for r in model._reference_rows[50:]} == rows - held
    np.testing.assert_array_equal(model.offset_, np.percentile(
        model.score_samples(model._held_out_rows), 100 * model.contamination))


@pytest.mark.parametrize("est, table_method", [("GLF", "joint"), ("LFP", "marginal")])
def test_early_stopping_on_images_validates_on_the_held_out_likelihood(monkeypatch, digits01,
                                                                      est, table_method):
    """With ``image_shape`` (default score ``'lof'``, which needs the training codes of a
    finished fit) early stopping fits and predicts; each epoch is validated by the held-out
    rows' table log-likelihood."""
    cls = CLASSES[est]
    calls = []
    original = cls._score_rows

    def record(model, x, data=True, method=None):
        calls.append((method, x.detach().cpu().numpy() if torch.is_tensor(x) else x))
        return original(model, x, data, method)
    monkeypatch.setattr(cls, "_score_rows", record)
    model = fit_quietly(cls(4, image_shape=(1, 8, 8), early_stopping=True, max_iter=3,
                            n_estimators=1, random_state=0, **TINY), digits01[0][:300])
    assert len(model.validation_scores_) == model.n_iter_ == 3
    validation = calls[:3]
    assert [method for method, _ in validation] == [table_method] * 3
    for _, rows in validation:
        np.testing.assert_array_equal(rows, model._held_out_rows)  # images: no scaling
    labels = model.predict(digits01[0][300:400])
    assert set(np.unique(labels)) <= {-1, 1} and (labels == 1).any()
