"""Ensembles (``n_estimators > 1``): members trained and evaluated together along a leading
member dimension, each one a model of its own, combined as the docstring says."""

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen._training import torch_generator
from skflowgen.scores import SCORES

from .conftest import TINY

N_MEMBERS = 3
CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}


def make(est, **kw):
    extra = {"n_steps": 5} if est == "LFP" else {}
    return CLASSES[est](**{**TINY, "max_iter": 5, "random_state": 0, **extra, **kw})


@pytest.fixture(scope="module")
def ensembles(blob):
    cache = {}

    def get(est, score_method="joint"):
        if (est, score_method) not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                cache[est, score_method] = make(est, n_estimators=N_MEMBERS,
                                                score_method=score_method).fit(blob)
        return cache[est, score_method]
    return get


def member(model, k):
    """Member ``k`` of a fitted ensemble as a one-member model of its own: every tensor of the
    networks sliced at ``k`` along the member dimension (the couplings' masks have none)."""
    single = copy.deepcopy(model).set_params(n_estimators=1)
    single._n_members = 1
    single._build_modules(torch_generator(0, "cpu"))
    for name in model._network_names:
        state = {key: value if key.endswith("mask") else value[k:k + 1]
                 for key, value in getattr(model, name).state_dict().items()}
        getattr(single, name).load_state_dict(state)
    single._row_activations = single._count_row_activations()
    single._derived_state = {}  # its codes and offset: of its own member, from the kept rows
    return single


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("score_method", [s for s in SCORES
                                          if s not in ("fused", "local", "local_features")])
def test_ensemble_is_the_mean_of_its_members(ensembles, blob, est, score_method):
    """Each member, cut out as a model of its own, gives the ensemble's outputs: the score is
    the members' mean (the combined ``'fused'``, ``'local'`` and ``'local_features'`` aside:
    they standardise the members' mean parts), ``transform`` their latents side by
    side, ``inverse_transform`` the mean of their decodings."""
    model = ensembles(est, score_method)
    members = [member(model, k) for k in range(N_MEMBERS)]
    np.testing.assert_allclose(model.score_samples(blob),
                               np.mean([m.score_samples(blob) for m in members], axis=0),
                               rtol=1e-4, atol=1e-4)
    Z = model.transform(blob)
    d = model.n_components_
    assert Z.shape == (len(blob), N_MEMBERS * d)
    for k, m in enumerate(members):
        np.testing.assert_allclose(Z[:, k * d:(k + 1) * d], m.transform(blob),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.inverse_transform(Z),
        np.mean([m.inverse_transform(Z[:, k * d:(k + 1) * d]) for k, m in enumerate(members)],
                axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("est", CLASSES)
def test_fused_score_of_an_ensemble_standardises_its_knn_and_its_reconstruction(ensembles,
                                                                                blob, est):
    """An ensemble's ``'fused'`` combines the ensemble's own two scores, not its members'
    fused scores: the members' mean ``'knn'`` and the mean over the members' noise
    variances of ``log N(x; x_hat, sigma_m^2)``, with ``x_hat`` the ensemble's
    reconstruction ``inverse_transform(transform(x))`` (the members' mean decoding); each
    standardised by its median and interquartile range over the rows given to ``fit``.
    Computed here in the data's units (a constant apart from the networks', which the
    median takes away), on rows the model did not fit."""
    model = ensembles(est, "fused")
    new = blob[::3] + np.random.default_rng(0).normal(0, 0.2, blob[::3].shape)

    def parts(X):
        model.set_params(score_method="knn")
        knn = model.score_samples(X)
        model.set_params(score_method="fused")
        x_hat = model.inverse_transform(model.transform(X))
        variance = model.noise_variance_[:, None, :]
        log_lik = -0.5 * ((X - x_hat) ** 2 / variance + np.log(2 * np.pi * variance)).sum(-1)
        return np.stack([knn, log_lik.mean(axis=0)])
    reference, values = parts(blob), parts(new)
    low, center, high = np.percentile(reference, [25, 50, 75], axis=1)
    expected = ((values - center[:, None]) / (high - low)[:, None]).mean(axis=0)
    np.testing.assert_allclose(model.score_samples(new), expected, rtol=1e-3, atol=1e-3)
    members = [member(model, k) for k in range(N_MEMBERS)]
    assert not np.allclose(model.score_samples(new),
                           np.mean([m.score_samples(new) for m in members], axis=0), atol=1e-2)


@pytest.mark.parametrize("est", CLASSES)
def test_members_start_from_different_weights_and_learn_their_own_noise(ensembles, est):
    model = ensembles(est)
    for name in model._network_names:
        for key, value in getattr(model, name).state_dict().items():
            if key.endswith("mask") or not value.any():
                continue
            assert not torch.equal(value[0], value[1]), f"{name}.{key}"
    assert model.noise_variance_.shape == (N_MEMBERS, model.n_features_in_)
    assert len(np.unique(model.noise_variance_[:, 0])) == N_MEMBERS


@pytest.mark.parametrize("est", CLASSES)
def test_sample_draws_each_row_from_one_member(ensembles, est):
    """With one member's decoder pinned to a constant far from the data, and its noise to
    none, about a third of the rows are exactly that constant and the others nowhere near
    it."""
    model = copy.deepcopy(ensembles(est))
    decoder = model.decoder_ if est == "GLF" else model.generator_
    with torch.no_grad():
        decoder[-1].weight[1] = 0.0
        decoder[-1].bias[1] = 100.0
        model.noise_.variance[1] = 0.0
    rows = model.sample(600, random_state=0)
    pinned = (np.abs(rows) > 50).all(axis=1)  # the constant, mapped back to the data's units
    assert (rows[pinned] == rows[pinned][0]).all()
    assert (np.abs(rows[~pinned]) < 50).all()
    assert 0.25 < pinned.mean() < 0.42  # 1/3, with 4 standard errors of a binomial share


@pytest.mark.parametrize("est", CLASSES)
def test_feature_names_and_inverse_transform_width_follow_the_members(ensembles, blob, est):
    model = ensembles(est)
    names = model.get_feature_names_out()
    assert len(names) == N_MEMBERS * model.n_components_
    with pytest.raises(ValueError, match="n_estimators \\* n_components_"):
        model.inverse_transform(np.zeros((2, model.n_components_)))


@pytest.mark.parametrize("est", CLASSES)
def test_warm_start_with_another_member_count_fails(blob, est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make(est, n_estimators=2, warm_start=True).fit(blob)
    with pytest.raises(ValueError, match="warm_start"):
        model.set_params(n_estimators=3).fit(blob)
