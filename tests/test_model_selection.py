"""Model selection and the outlier API: ``score`` compares models of any latent size, and
``offset_`` follows ``score_method`` and ``contamination`` after ``set_params``."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen.scores import SCORES

from .conftest import DEVICE, TINY

CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}


def manifold(n_rows=1500, seed=0):
    """Rows on a smooth 3-dimensional manifold in 20 features, plus a little noise."""
    rng = np.random.RandomState(seed)
    z = rng.randn(n_rows, 3)
    w1, w2 = rng.randn(3, 32), rng.randn(32, 20) / 4
    return np.tanh(z @ w1) @ w2 + 0.05 * rng.randn(n_rows, 20)


@pytest.mark.parametrize("est", CLASSES)
def test_grid_search_with_the_default_score_finds_the_latent_dimension(est):
    """``score`` is a log-likelihood of x alone, so the search over ``n_components`` picks
    the manifold's dimension whatever ``score_method`` is (a log joint, whose latent density
    changes dimension with ``n_components``, picked the largest)."""
    X = manifold()
    search = GridSearchCV(CLASSES[est](random_state=0, device=DEVICE),
                          {"n_components": [1, 2, 3, 6, 12]}, cv=3).fit(X)
    assert search.best_params_ == {"n_components": 3}
    model = search.best_estimator_
    scores = {}
    for method in SCORES:
        model.set_params(score_method=method)
        scores[method] = model.score(X[:300])
    assert len(set(scores.values())) == 1, scores


@pytest.fixture(scope="module")
def fitted(blob):
    cache = {}

    def get(est):
        if est not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                cache[est] = CLASSES[est](max_iter=3, random_state=0, **TINY).fit(blob)
        return cache[est]
    return get


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("method", SCORES)
@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_predict_flags_the_contamination_share_after_set_params(fitted, blob, est, method,
                                                                contamination):
    model = fitted(est)
    fit_method, fit_contamination = model.score_method, model.contamination
    try:
        model.set_params(score_method=method, contamination=contamination)
        flagged = int((model.predict(blob) == -1).sum())
        np.testing.assert_array_equal(model.decision_function(blob),
                                      model.score_samples(blob) - model.offset_)
    finally:
        model.set_params(score_method=fit_method, contamination=fit_contamination)
    assert abs(flagged - contamination * len(blob)) <= 1


@pytest.mark.parametrize("est", CLASSES)
def test_offset_of_another_score_comes_from_kept_training_rows(monkeypatch, blob, est):
    """Above ``_OFFSET_ROWS`` training rows, another score's offset is the percentile over a
    random subset of that many, the same subset every time."""
    import skflowgen._base as base
    monkeypatch.setattr(base, "_OFFSET_ROWS", 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = CLASSES[est](max_iter=2, random_state=0, **TINY).fit(blob)
    assert model._offset_rows.shape == (50, blob.shape[1])
    assert {tuple(r) for r in model._offset_rows} <= {tuple(r) for r in blob.astype(np.float32)}
    other = "joint" if model._score_method == "marginal" else "marginal"
    model.set_params(score_method=other)
    expected = np.percentile(model.score_samples(model._offset_rows), 10)
    assert model.offset_ == pytest.approx(expected)


@pytest.mark.parametrize("est", CLASSES)
def test_a_pickle_with_a_single_offset_still_loads(fitted, blob, est):
    """A model pickled before offsets followed ``score_method`` keeps its one offset and
    says what to do when asked for another."""
    model = fitted(est)
    state = model.__getstate__()
    state["offset_"] = state.pop("_offsets")[model._score_method, model.contamination]
    state["score_method"] = model._score_method  # older versions had no 'auto'
    del state["_offset_rows"]
    old = type(model).__new__(type(model))
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    np.testing.assert_array_equal(old.predict(blob), model.predict(blob))
    old.set_params(score_method="joint" if model._score_method == "marginal" else "marginal")
    with pytest.raises(ValueError, match="refit"):
        old.predict(blob)


@pytest.mark.parametrize("est", CLASSES)
def test_knn_score_is_the_knn_log_density_of_the_code_among_training_codes(monkeypatch, blob,
                                                                           est):
    """``score_method='knn'``: ``log k - log m - log V_d - d log r_k``, with ``r_k`` the
    distance from a row's code to the k-th nearest code of the kept training rows (here a
    random 120 of 200); each member's, averaged."""
    import math

    from sklearn.neighbors import NearestNeighbors

    import skflowgen._base as base
    from skflowgen.scores import N_NEIGHBORS
    monkeypatch.setattr(base, "_REFERENCE_ROWS", 120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = CLASSES[est](n_estimators=2, max_iter=2, score_method="knn", random_state=0,
                             **TINY).fit(blob)
    kept = model.transform(blob)  # the codes of every training row, members side by side
    d = model.n_components_
    # which rows were kept: their codes are the reference codes of the first member
    reference = model._reference_codes
    assert reference.shape == (2, 120, d)
    rows = [np.flatnonzero(np.all(np.isclose(kept[:, :d], code, atol=1e-6), axis=1))[0]
            for code in reference[0]]
    assert len(set(rows)) == 120
    test = blob[:7] + 0.5
    codes = model.transform(test)
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    expected = 0
    for m in range(2):
        neighbours = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(kept[rows, m * d:(m + 1) * d])
        r_k = neighbours.kneighbors(codes[:, m * d:(m + 1) * d])[0][:, -1]
        expected = expected + (math.log(N_NEIGHBORS) - math.log(120) - log_ball
                               - d * np.log(r_k)) / 2
    np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("est", CLASSES)
def test_lof_score_is_local_outlier_factor_of_the_code_among_training_codes(fitted, blob, est):
    """``score_method='lof'`` equals scikit-learn's ``LocalOutlierFactor(novelty=True,
    n_neighbors=5).score_samples`` on the codes (each member's, averaged)."""
    from sklearn.neighbors import LocalOutlierFactor
    model = fitted(est)
    d = model.n_components_
    members = model._reference_codes.shape[0]
    test = np.r_[blob[:7] + 0.5, blob[:3]]
    codes = model.transform(test)
    expected = np.mean([LocalOutlierFactor(n_neighbors=5, novelty=True)
                        .fit(model._reference_codes[m])
                        .score_samples(codes[:, m * d:(m + 1) * d]) for m in range(members)],
                       axis=0)
    method = model.score_method
    try:
        model.set_params(score_method="lof")
        np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-4)
    finally:
        model.set_params(score_method=method)


@pytest.mark.parametrize("est, table_method", [("GLF", "joint"), ("LFP", "marginal")])
def test_auto_score_is_lof_for_images_and_the_table_default_otherwise(digits01, blob, est,
                                                                      table_method):
    """``score_method='auto'`` (the default) ranks images by ``'lof'`` and table rows by the
    estimator's table score, with the offset of the score it stands for."""
    X = digits01[0][:300]
    settings = dict(max_iter=1, n_components=4, random_state=0, device=DEVICE)
    for model, data, method in [
            (CLASSES[est](image_shape=(1, 8, 8), **settings), X, "lof"),
            (CLASSES[est](**settings, **{k: v for k, v in TINY.items() if k != "device"}),
             blob, table_method)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(data)
        assert model.get_params()["score_method"] == "auto"
        auto_scores, auto_offset = model.score_samples(data[:20]), model.offset_
        model.set_params(score_method=method)
        np.testing.assert_array_equal(model.score_samples(data[:20]), auto_scores)
        assert model.offset_ == auto_offset


@pytest.mark.parametrize("est", CLASSES)
def test_auto_batch_size_gives_images_more_steps_an_epoch(digits01, est):
    """``batch_size='auto'``: 10 or more optimizer steps an epoch on tables, 32 or more with
    ``image_shape`` (read from the optimizers' step counts after one epoch)."""
    X = digits01[0][:640]
    steps = {}
    for image_shape in (None, (1, 8, 8)):
        model = CLASSES[est](image_shape=image_shape, max_iter=1, n_components=4,
                             random_state=0, device=DEVICE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X)
        steps[image_shape] = max(int(state["step"]) for optimizer, _ in model._optimizers
                                 for state in optimizer.state.values())
    assert 10 <= steps[None] < 32 <= steps[(1, 8, 8)]
