"""Model selection and the outlier API: ``score`` compares models of any latent size, and
``offset_`` follows ``score_method`` and ``contamination`` after ``set_params``."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen.scores import SCORES

from .conftest import DEVICE, TINY, manifold

CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}


@pytest.mark.parametrize("est", CLASSES)
def test_grid_search_with_the_default_score_finds_the_latent_dimension(est):
    """``score`` is a log-likelihood of x alone, so the search over ``n_components`` picks
    the manifold's dimension whatever ``score_method`` is (a log joint, whose latent density
    changes dimension with ``n_components``, picked the largest). It compares trained
    models: ten epochs, as ``score``'s docstring asks for (the table default of two or five
    stops before the likelihood settles)."""
    X = manifold()
    search = GridSearchCV(CLASSES[est](max_iter=10, random_state=0, device=DEVICE),
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
def test_knn_score_is_the_knn_log_density_of_the_code_among_training_codes(monkeypatch, blob,
                                                                           est):
    """``score_method='knn'``: ``log k - log m - log V_d - d log r_k``, with ``r_k`` the
    distance from a row's code to the k-th nearest code of the kept rows (here the 40
    held-out rows and 80 of the 160 trained on); each member's, averaged."""
    import math

    from sklearn.neighbors import NearestNeighbors

    import skflowgen.outlier as outlier
    from skflowgen.scores import N_NEIGHBORS
    monkeypatch.setattr(outlier, "_REFERENCE_ROWS", 120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = CLASSES[est](n_estimators=2, max_iter=2, score_method="knn", novelty=True,
                             random_state=0, **TINY).fit(blob)
    kept = model._reference_rows
    assert kept.shape == (120, blob.shape[1])  # the 40 held-out rows, 80 training rows
    np.testing.assert_array_equal(kept[:40], model._held_out_rows)
    assert {tuple(r) for r in kept} <= {tuple(r) for r in blob.astype(np.float32)}
    codes, test = model.transform(kept), blob[:7] + 0.5
    d = model.n_components_
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    expected = 0
    for m in range(2):
        neighbours = NearestNeighbors(n_neighbors=N_NEIGHBORS).fit(codes[:, m * d:(m + 1) * d])
        r_k = neighbours.kneighbors(model.transform(test)[:, m * d:(m + 1) * d])[0][:, -1]
        expected = expected + (math.log(N_NEIGHBORS) - math.log(120) - log_ball
                               - d * np.log(r_k)) / 2
    np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("est", CLASSES)
def test_lof_score_is_local_outlier_factor_of_the_code_among_training_codes(fitted, blob, est):
    """``score_method='lof'`` equals scikit-learn's ``LocalOutlierFactor(novelty=True,
    n_neighbors=5).score_samples`` on the codes of the kept training rows (each member's,
    averaged) for new rows, and its ``negative_outlier_factor_`` for the rows given to
    ``fit`` (which leaves the row itself out of its neighbours)."""
    from sklearn.neighbors import LocalOutlierFactor
    model = fitted(est)
    d = model.n_components_
    reference = model.transform(model._reference_rows)
    np.testing.assert_array_equal(model._reference_rows, blob.astype(np.float32))
    test = np.r_[blob[:7] + 0.5, blob[:3]]
    codes = model.transform(test)
    members = [LocalOutlierFactor(n_neighbors=5, novelty=True)
               .fit(reference[:, m * d:(m + 1) * d]) for m in range(model.n_estimators)]
    expected = np.mean([lof.score_samples(codes[:7, m * d:(m + 1) * d]).tolist()
                        + lof.negative_outlier_factor_[:3].tolist()
                        for m, lof in enumerate(members)], axis=0)
    method = model.score_method
    try:
        model.set_params(score_method="lof")
        np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-4)
    finally:
        model.set_params(score_method=method)


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("most_rows", [None, 50])
def test_fused_score_is_the_mean_of_the_standardised_knn_and_reconstruction_scores(
        monkeypatch, blob, est, most_rows):
    """``score_method='fused'``: the mean of the ``'knn'`` score and ``log p(x | z~)``, each
    minus its median over the rows given to ``fit`` (scored as new rows: the kept rows'
    ``'knn'`` leaves the row out), divided by its interquartile range there. ``log p(x | z~)``
    is the joint less the flow's ``log p(z~)`` (up to the log-Jacobian of the scaling, a
    constant that the median takes away). Checked on rows the model did not fit; with more
    kept rows than ``_STANDARDISATION_ROWS`` (here 50 of 120), the quartiles come from evenly
    spaced ones (every third)."""
    import torch

    import skflowgen.outlier as outlier
    if most_rows is not None:
        monkeypatch.setattr(outlier, "_STANDARDISATION_ROWS", most_rows)
    rng = np.random.default_rng(0)
    X, new = blob[:120], blob[120:] + rng.normal(0, 0.3, blob[120:].shape)
    model = CLASSES[est](n_estimators=1, max_iter=2, random_state=0, **TINY).fit(X)

    def parts(rows):
        model.set_params(score_method="knn")
        knn = model.score_samples(rows)
        model.set_params(score_method="joint")
        codes = torch.as_tensor(model.transform(rows), dtype=torch.float32)[None]
        with torch.no_grad():
            prior = model.flow_.log_prob(codes)[0].numpy()
        return np.stack([knn, model.score_samples(rows) - prior])
    reference, values = parts(X), parts(new)
    if most_rows is not None:
        reference = reference[:, ::3]
    low, center, high = np.percentile(reference, [25, 50, 75], axis=1)
    expected = ((values - center[:, None]) / (high - low)[:, None]).mean(axis=0)
    model.set_params(score_method="fused")
    np.testing.assert_allclose(model.score_samples(new), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("est", CLASSES)
def test_local_score_is_the_mean_of_the_standardised_lof_and_nearest_code_scores(blob, est):
    """``score_method='local'``: the mean of the ``'lof'`` score and the log-density of the
    code by its nearest kept code (``-d log r_1`` up to a constant, which the median takes
    away), each minus its median over the rows given to ``fit`` (scored as new rows: a kept
    row is not its own neighbour), divided by its interquartile range there. Checked on
    rows the model did not fit, against scikit-learn's neighbour search."""
    from sklearn.neighbors import NearestNeighbors
    rng = np.random.default_rng(0)
    X, new = blob[:120], blob[120:] + rng.normal(0, 0.3, blob[120:].shape)
    model = CLASSES[est](n_estimators=1, max_iter=2, random_state=0, **TINY).fit(X)
    codes = NearestNeighbors(n_neighbors=1).fit(model.transform(X))
    d = model.n_components_

    def parts(rows, own):
        model.set_params(score_method="lof")
        radius = codes.kneighbors(None if own else model.transform(rows))[0][:, 0]
        return np.stack([model.score_samples(rows), -d * np.log(radius)])
    reference, values = parts(X, own=True), parts(new, own=False)
    low, center, high = np.percentile(reference, [25, 50, 75], axis=1)
    expected = ((values - center[:, None]) / (high - low)[:, None]).mean(axis=0)
    model.set_params(score_method="local")
    # the package's distances are ||r||^2 - 2 z.r + ||z||^2 in float32: the nearest one, the
    # smallest, keeps fewer digits than the fifth of 'fused'
    np.testing.assert_allclose(model.score_samples(new), expected, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("est", CLASSES)
def test_local_features_score_is_local_of_the_code_and_of_the_encoder_feature_maps(digits01,
                                                                                  est):
    """``score_method='local_features'``: ``'local'``'s two parts, minus scikit-learn's local
    outlier factor (5 neighbours) and minus the log distance to the nearest kept row, in the
    space of the codes and in that of the encoder's last feature maps, each standardised by
    its median and interquartile range over the rows given to ``fit`` (scored as new rows: a
    kept row is not its own neighbour, as ``LocalOutlierFactor`` scores its training rows),
    then averaged. Checked on images the model did not fit, with the maps computed by the
    encoder's own layers."""
    import torch
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    X, y = digits01
    train, new = X[y == 0][:120], np.r_[X[y == 0][120:150], X[y == 1][:30]]
    model = CLASSES[est](image_shape=(1, 8, 8), n_components=4, max_iter=2, n_estimators=1,
                         score_method="local_features", random_state=0, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train)
    encoder = model.encoder_.networks[0].net

    def maps(rows):
        x = model._to_model(torch.as_tensor(rows, dtype=torch.float32))
        with torch.no_grad():  # every layer up to the flattening and the last linear map
            return encoder[:-2](x.view(-1, 1, 8, 8)).flatten(1).numpy()
    reference, values = [], []
    for space in (model.transform, maps):
        lof = LocalOutlierFactor(n_neighbors=5, novelty=True).fit(space(train))
        nearest = NearestNeighbors(n_neighbors=1).fit(space(train))
        reference += [lof.negative_outlier_factor_, -np.log(nearest.kneighbors(None)[0][:, 0])]
        values += [lof.score_samples(space(new)),
                   -np.log(nearest.kneighbors(space(new))[0][:, 0])]
    reference, values = np.stack(reference), np.stack(values)
    low, center, high = np.percentile(reference, [25, 50, 75], axis=1)
    expected = ((values - center[:, None]) / (high - low)[:, None]).mean(axis=0)
    np.testing.assert_allclose(model.score_samples(new), expected, rtol=1e-3, atol=1e-2)


IMAGE_SCORES = {"GLF": "local", "LFP": "local_features"}


@pytest.mark.parametrize("est", CLASSES)
def test_auto_score_is_local_for_images_and_fused_on_tables(digits01, blob, est):
    """``score_method='auto'`` (the default) ranks images by ``'local'`` (GLF) or
    ``'local_features'`` (LFP) and table rows by ``'fused'``, with the offset of the score it
    stands for."""
    X = digits01[0][:300]
    settings = dict(max_iter=1, n_components=4, random_state=0, device=DEVICE)
    for model, data, method in [
            (CLASSES[est](image_shape=(1, 8, 8), **settings), X, IMAGE_SCORES[est]),
            (CLASSES[est](**settings, **{k: v for k, v in TINY.items() if k != "device"}),
             blob, "fused")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(data)
        assert model.get_params()["score_method"] == "auto"
        auto_scores, auto_offset = model.score_samples(data[:20]), model.offset_
        model.set_params(score_method=method)
        np.testing.assert_array_equal(model.score_samples(data[:20]), auto_scores)
        assert model.offset_ == auto_offset


@pytest.mark.parametrize("est", CLASSES)
def test_an_image_model_pickled_before_local_keeps_ranking_by_lof(monkeypatch, digits01, est):
    """A pickle written before ``'auto'`` meant ``'local'`` on images (fitted while it meant
    ``'lof'``, its state without ``_auto_image_score``) still ranks images by ``'lof'``, with
    the offset set at its fit."""
    X = digits01[0][:300]
    model = CLASSES[est](image_shape=(1, 8, 8), max_iter=1, n_components=4, random_state=0,
                         device=DEVICE)
    with monkeypatch.context() as former_release, warnings.catch_warnings():
        former_release.setattr(CLASSES[est], "_image_score", "lof")
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    state = model.__getstate__()
    del state["_auto_image_score"]
    former = CLASSES[est].__new__(CLASSES[est])
    former.__setstate__(state)
    assert former.get_params()["score_method"] == "auto"
    model.set_params(score_method="lof")
    np.testing.assert_array_equal(former.score_samples(X[:20]), model.score_samples(X[:20]))
    assert former.offset_ == model.offset_


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("n_rows, image_shape, batch", [
    (100, None, 16),            # 100 training rows // 10 = 10: the floor of 16
    (4000, None, 256),          # 4,000 // 10 = 400: the cap of 256
    (640, None, 64),            # 640 // 10: ten steps an epoch on tables
    (1000, (1, 8, 8), 16)])     # 16 rows with image_shape, whatever the number
def test_auto_batch_size_trains_on_its_rule(digits01, est, n_rows, image_shape, batch):
    """``batch_size='auto'``: ``min(256, max(16, n // 10))`` training rows a batch on tables,
    16 with ``image_shape``, read from the optimizers' step counts after one epoch
    (the training rows are those not held out: all of them here, where nothing needs rows
    held out)."""
    X = np.tile(digits01[0], (3, 1))[:n_rows]
    model = CLASSES[est](image_shape=image_shape, max_iter=1, n_components=4, n_estimators=1,
                         hidden_layer_sizes=(8,), n_flow_blocks=1, random_state=0,
                         device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    n_train = n_rows - len(model._held_out_rows)
    steps = max(int(state["step"]) for optimizer, _ in model._optimizers
                for state in optimizer.state.values())
    assert steps == -(-n_train // batch)
