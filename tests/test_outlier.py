"""The outlier API: with ``novelty=False`` (the default) ``fit_predict`` and ``predict`` flag
``contamination`` of the rows given to ``fit``; with ``novelty=True`` ``predict`` flags about
``contamination`` of new rows of the training distribution, for every score and after
``set_params`` of every parameter that moves a score; what is derived from the kept rows
never goes stale, and a row is never its own neighbour."""

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
SETTINGS = dict(max_iter=5, n_estimators=1, validation_fraction=0.5, novelty=True,
                random_state=0, **TINY)


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
    changes the codes, and the kept codes and offset (of ``'lof'``, which
    ``held_out_scores`` recomputes) follow."""
    model = fit_quietly(LangevinFlowPriorGenerator(
        4, image_shape=(1, 8, 8), n_steps=3, max_iter=1, novelty=True, score_method="lof",
        random_state=0, **TINY), digits01[0][:200])
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
    "stop_gradient": [False], "beta": [3.0], "mask_fraction": [0.3], "sigma": [0.1],
    "persistent_steps": [None],
    "novelty": [True],  # refused on a fitted model: test_a_change_of_novelty_after_fit_...
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
    for parameter in model._training_parameters - {"novelty"}:
        current = model.get_params()[parameter]
        model.set_params(**{parameter: next(v for v in ALTERNATIVES[parameter]
                                            if v != current)})
    for got, want in zip((model.score_samples(blob), model.transform(blob), model.offset_),
                         expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("est", CLASSES)
def test_held_out_rows_are_never_trained_on(monkeypatch, blob, est):
    """With ``novelty=True``, ``validation_fraction`` of the rows is set aside before
    training: no training step sees
    one, every other row is trained on, the local scores' reference rows are the held-out
    rows followed by training rows, and ``offset_`` is the ``contamination`` percentile of the
    held-out rows' scores (by ``'joint'``, which compares a row with no other row)."""
    seen = []
    cls = CLASSES[est]
    original = cls._train_step

    def step(model, x, *args):
        seen.append(x.detach().clone())
        return original(model, x, *args)
    monkeypatch.setattr(cls, "_train_step", step)
    model = fit_quietly(cls(max_iter=1, feature_scaling=None, validation_fraction=0.25,
                            novelty=True, score_method="joint", random_state=0, **TINY), blob)
    rows = {tuple(r) for r in blob.astype(np.float32)}
    trained = {tuple(r) for r in torch.cat(seen).numpy()}
    held = {tuple(r) for r in model._held_out_rows}
    assert len(held) == 50 and held <= rows
    assert trained == rows - held
    np.testing.assert_array_equal(model._reference_rows[:50], model._held_out_rows)
    assert {tuple(r) for r in model._reference_rows[50:]} == rows - held
    np.testing.assert_array_equal(model.offset_, np.percentile(
        model.score_samples(model._held_out_rows), 100 * model.contamination))


@pytest.mark.parametrize("est, likelihood", [("GLF", "joint"), ("LFP", "marginal")])
def test_early_stopping_on_images_validates_on_the_held_out_likelihood(monkeypatch, digits01,
                                                                      est, likelihood):
    """With ``image_shape`` (default score ``'lof'``, which needs the training codes of a
    finished fit) early stopping fits and predicts; each epoch is validated by the held-out
    rows' log-likelihood (GLF's joint, LFP's marginal)."""
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
    assert [method for method, _ in validation] == [likelihood] * 3
    for _, rows in validation:
        np.testing.assert_array_equal(rows, model._held_out_rows)  # images: no scaling
    labels = model.predict(digits01[0][300:400])
    assert set(np.unique(labels)) <= {-1, 1} and (labels == 1).any()


@pytest.mark.parametrize("est", CLASSES)
def test_a_change_of_novelty_after_fit_is_refused(blob, est):
    """``novelty`` decides which rows train and set ``offset_``: a fitted model says so
    rather than serve an offset calibrated for the other meaning."""
    model = fit_quietly(CLASSES[est](max_iter=2, random_state=0, **TINY), blob)
    model.set_params(novelty=True)
    with pytest.raises(ValueError, match="fitted with novelty=False"):
        model.predict(blob)
    model.set_params(novelty=False)
    assert set(np.unique(model.predict(blob))) == {-1, 1}


@pytest.mark.parametrize("est", CLASSES)
def test_fit_predict_is_unavailable_with_novelty(est):
    model = CLASSES[est](novelty=True)
    assert not hasattr(model, "fit_predict")
    with pytest.raises(AttributeError, match="fit_predict") as error:
        model.fit_predict(np.zeros((4, 2)))
    assert "novelty=False to flag the rows given to fit" in str(error.value.__cause__)


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("score_method", SCORES)
@pytest.mark.parametrize("n_kept", [None, 60])
def test_without_novelty_the_rows_given_to_fit_are_flagged_at_contamination(
        monkeypatch, blob, est, score_method, n_kept):
    """``novelty=False``: every row trains, ``fit_predict(X)`` is ``fit(X).predict(X)`` and
    flags ``contamination`` of ``X`` (the ``np.percentile`` of its scores), for every score,
    also where ``fit`` is given more rows than the model keeps (``n_kept``: 60 of 200), and
    again after ``set_params`` of ``contamination`` and of a parameter that moves the scores
    (then from the rows kept: all of them where ``fit`` had no more)."""
    from skflowgen import outlier
    if n_kept:
        monkeypatch.setattr(outlier, "_REFERENCE_ROWS", n_kept)
    seen = []
    cls = CLASSES[est]
    original = cls._train_step

    def step(model, x, *args):
        seen.append(len(x))
        return original(model, x, *args)
    monkeypatch.setattr(cls, "_train_step", step)
    model = cls(max_iter=2, score_method=score_method, random_state=0, **TINY)
    labels = model.fit_predict(blob)
    assert sum(seen) == 2 * len(blob)  # two epochs of every row
    assert len(model._reference_rows) == (n_kept or len(blob))
    np.testing.assert_array_equal(labels, model.predict(blob))
    mover = {"GLF": {"n_importance_samples": 16}, "LFP": {"inference_steps": 5}}[est]
    for parameters in ({"contamination": 0.25}, mover):
        model.set_params(**parameters)
        scores = model.score_samples(blob)
        expected = np.sum(scores < np.percentile(scores, 100 * model.contamination))
        assert abs(expected / len(blob) - model.contamination) <= 1 / len(blob)
        if n_kept is None:  # the offset now comes from the rows kept
            assert np.sum(model.predict(blob) == -1) == expected


@pytest.mark.parametrize("est", CLASSES)
def test_a_training_row_is_not_its_own_neighbour(blob, est):
    """The local scores of the rows given to ``fit`` are scikit-learn's for training rows:
    ``LocalOutlierFactor().fit(codes).negative_outlier_factor_`` and the k-th neighbour
    distance of ``NearestNeighbors.kneighbors()``, both of which leave the row itself out; a
    new row that repeats a training row is scored as that row."""
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    model = fit_quietly(CLASSES[est](max_iter=2, n_estimators=1, score_method="lof",
                                     random_state=0, **TINY), blob)
    codes = model.transform(blob)
    np.testing.assert_allclose(model.score_samples(blob), LocalOutlierFactor(
        n_neighbors=N_NEIGHBORS).fit(codes).negative_outlier_factor_, rtol=1e-4)
    model.set_params(score_method="knn")
    m, d = codes.shape
    r_k = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(codes).kneighbors()[0][:, -1]
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    expected = math.log(N_NEIGHBORS) - math.log(m) - log_ball - d * np.log(r_k)
    np.testing.assert_allclose(model.score_samples(blob), expected, rtol=1e-4)
    copies = np.vstack([blob[:5], blob[:5]])
    np.testing.assert_array_equal(model.score_samples(copies)[5:],
                                  model.score_samples(blob[:5]))


def clusters(n_rows, seed=0):
    """Three Gaussian clusters of unequal spread in 8 features."""
    rng = np.random.RandomState(seed)
    centers, spreads = 3 * rng.randn(3, 8), np.array([0.3, 1.0, 2.0])
    which = rng.randint(3, size=n_rows)
    return centers[which] + spreads[which, None] * rng.randn(n_rows, 8)


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("data", ["clusters", "digits"])
def test_novelty_with_early_stopping_flags_the_share_of_new_rows(digits01, est, data):
    """``novelty=True`` with ``early_stopping`` (the held-out rows validate and calibrate) on
    a second table and on images: about ``contamination`` of new rows flagged for every
    score (900 held-out rows of the table, 448 of the digits, and 900 new ones: a standard
    deviation of the share near 0.014 and 0.017)."""
    if data == "clusters":
        rows, shape = clusters(3600), None
    else:
        rows = digits01[0][np.random.RandomState(0).permutation(len(digits01[0]))]
        shape = (1, 8, 8)
    train, new = rows[:-900][:1800], rows[-900:]
    extra = {"n_steps": 5} if est == "LFP" else {}
    model = fit_quietly(CLASSES[est](**{**SETTINGS, "max_iter": 3}, early_stopping=True,
                                     image_shape=shape, **extra), train)
    assert len(model.validation_scores_) == 3
    for score_method in SCORES:
        model.set_params(score_method=score_method)
        assert abs(flagged(model, new) - model.contamination) <= TOLERANCE, score_method
