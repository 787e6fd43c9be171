"""LangevinFlowPriorGenerator behaviour: missing values, inference, noise model, model selection."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skflowgen import LangevinFlowPriorGenerator
from skflowgen.langevin import langevin

from .conftest import DEVICE, TINY

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def fitted(blob):
    return LangevinFlowPriorGenerator(max_iter=20, n_steps=10, random_state=0, **TINY).fit(blob)


def test_inference_accumulates_no_parameter_gradient(fitted, blob):
    for module in (fitted.generator_, fitted.flow_):
        module.zero_grad(set_to_none=True)
    fitted.transform(blob)
    fitted.score_samples(blob)
    for module in (fitted.generator_, fitted.flow_):
        assert all(p.grad is None for p in module.parameters())


def test_fit_on_incomplete_rows_learns_the_distribution(blob):
    """Fitted on rows with 30% of their entries missing, the model still learns the data: it
    ranks complete rows of the distribution above the same rows with one feature moved far
    out (imputation quality: tests/test_impute.py)."""
    rng = np.random.RandomState(1)
    X = blob.copy()
    X[rng.rand(*X.shape) < 0.3] = np.nan
    model = LangevinFlowPriorGenerator(max_iter=20, n_steps=5, random_state=0, **TINY).fit(X)
    shifted = blob.copy()
    shifted[np.arange(len(blob)), rng.randint(blob.shape[1], size=len(blob))] += 3.0
    assert np.mean(model.score_samples(blob) > model.score_samples(shifted)) > 0.9
    assert not np.isnan(model.impute(X)).any()


def test_fixed_sigma_is_kept(blob):
    model = LangevinFlowPriorGenerator(sigma=0.3, feature_scaling=None, max_iter=2, n_steps=5,
                                       random_state=0, **TINY).fit(blob)
    np.testing.assert_allclose(model.noise_variance_, np.full((1, blob.shape[1]), 0.09),
                               rtol=1e-6)


def test_auto_sigma_is_fitted_to_the_noise_in_the_data():
    """``sigma='auto'`` estimates the observation noise: on the same 2-dimensional signal in
    5 features, three times the noise gives a clearly larger fitted variance, both well
    below the data's variance, where the estimate starts (a fixed sigma would not move)."""
    rng = np.random.RandomState(0)
    signal, noise = rng.randn(200, 2) @ rng.randn(2, 5), rng.randn(200, 5)

    def fitted_variance(level):
        model = LangevinFlowPriorGenerator(n_components=2, max_iter=30, learning_rate_init=0.01,
                                           n_steps=5, random_state=0, **TINY)
        return model.fit(signal + level * noise).noise_variance_.mean()
    quiet, loud = fitted_variance(0.1), fitted_variance(0.3)
    assert loud > 2 * quiet
    assert loud < 0.5 * (signal + 0.3 * noise).var(axis=0).mean()


def test_inference_is_deterministic_and_batch_independent(fitted, blob):
    np.testing.assert_array_equal(fitted.transform(blob), fitted.transform(blob))
    np.testing.assert_array_equal(fitted.transform(blob)[5:9], fitted.transform(blob[5:9]))


@pytest.mark.parametrize("score_method", ["marginal", "joint"])
def test_scores_are_finite_and_deterministic(fitted, blob, score_method):
    original = fitted.score_method
    fitted.set_params(score_method=score_method)
    try:
        a, b = fitted.score_samples(blob), fitted.score_samples(blob)
    finally:
        fitted.set_params(score_method=original)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_grid_search_parallel_matches_serial(blob):
    grid = {"n_components": [2, 8], "step_size": [0.05, 0.1]}
    est = LangevinFlowPriorGenerator(max_iter=2, n_steps=5, random_state=0, **TINY)
    serial = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(blob)
    parallel = GridSearchCV(est, grid, cv=2, n_jobs=2).fit(blob)
    assert serial.best_params_ == parallel.best_params_
    assert np.isfinite(serial.cv_results_["mean_test_score"]).all()
    np.testing.assert_allclose(serial.cv_results_["mean_test_score"],
                               parallel.cv_results_["mean_test_score"], rtol=1e-5)


def test_images_use_transposed_convolutions_that_learn_the_digits(digits01):
    """``image_shape`` switches to a transposed-convolution generator, which learns the
    images: held-out digits decode from their inferred latents closer than the mean image."""
    X = digits01[0]
    train, test = X[:1000], X[1000:1200]
    model = LangevinFlowPriorGenerator(image_shape=(1, 8, 8), n_components=8, max_iter=10,
                                       random_state=0, device=DEVICE).fit(train)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.generator_.modules())
    decoded = model.inverse_transform(model.transform(test))
    assert np.mean((decoded - test) ** 2) < np.mean((train.mean(axis=0) - test) ** 2)


def test_a_constant_training_feature_keeps_fit_and_scores_finite(digits01):
    # digits' border pixels are 0 in every training row: their noise variance sits at its
    # floor, so the likelihood is very stiff along them; a test row that lights them up
    # must get a finite, low score rather than a run-away chain
    X = digits01[0][:500]
    assert (X.std(axis=0) == 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no rollback on the way
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LangevinFlowPriorGenerator(8, max_iter=8, random_state=0, **TINY).fit(X)
    odd = X[:20].copy()
    odd[:, X.std(axis=0) == 0] = 1.0
    for method in ("joint", "marginal"):
        model.set_params(score_method=method)
        normal, lit = model.score_samples(X[:20]), model.score_samples(odd)
        assert np.isfinite(normal).all() and np.isfinite(lit).all()
        assert (lit < normal).all()


def _record_chains(monkeypatch, noisy):
    """Record ``(n_steps, start, end)`` of every Langevin run, training chains (noisy) or
    inference (noise-free)."""
    import skflowgen.langevin_flow_prior as lfp_module
    calls = []

    def recording(log_density, z, n_steps, step_size, noise=None, max_drift=None):
        out = langevin(log_density, z, n_steps, step_size, noise, max_drift)
        if (noise is not None) == noisy:
            calls.append((n_steps, z.clone(), out.clone()))
        return out
    monkeypatch.setattr(lfp_module, "langevin", recording)
    return calls


def _record_starts(monkeypatch):
    """Record ``(rows, start)`` of every training chain started by ``_training_start``
    (the rows in the networks' units)."""
    starts = []
    training_start = LangevinFlowPriorGenerator._training_start

    def recording(self, x, mask, generator):
        starts.append((x, training_start(self, x, mask, generator)))
        return starts[-1][1]
    monkeypatch.setattr(LangevinFlowPriorGenerator, "_training_start", recording)
    return starts


@pytest.mark.parametrize("chain_init", ["encoder", "prior"])
def test_persistent_chains_start_once_then_resume_with_fewer_steps(monkeypatch, blob,
                                                                   chain_init):
    """Training chains: a row's first visit starts its chain (``_training_start``: the
    encoder's proposal, or a prior draw) and runs n_steps, later visits resume from the
    row's previous latent for persistent_steps, advanced for whole batches of the epoch's
    rows at a time (``_CHAIN_ROWS``); inference keeps n_steps, and no chain outlives the fit."""
    import skflowgen.langevin_flow_prior as lfp_module
    calls = _record_chains(monkeypatch, noisy=True)
    monkeypatch.setattr(lfp_module, "_CHAIN_ROWS", 40)  # two batches of 16 (not three)
    starts = _record_starts(monkeypatch)
    X = blob[:80]  # 80 training rows: every row trains
    model = LangevinFlowPriorGenerator(n_steps=6, persistent_steps=2, max_iter=3,
                                       chain_init=chain_init, random_state=0,
                                       **{**TINY, "batch_size": 16})
    model.fit(X)
    assert [n for n, _, _ in calls] == [6] * 3 + [2] * 6
    assert [len(z[0]) for _, z, _ in calls] == [32, 32, 16] * 3
    assert len(starts) == 3  # started in the first epoch only, from _training_start
    for (_, start, _), (_, expected) in zip(calls, starts):
        torch.testing.assert_close(start, expected, rtol=0, atol=0)
    # the second epoch's chains start where the first epoch's ended (rows reordered by the
    # shuffle, so compare as sets of rows)
    rows = (lambda latents: {tuple(r) for z in latents for r in np.round(z[0].cpu().numpy(), 5)})
    assert rows(end for _, _, end in calls[:3]) == rows(start for _, start, _ in calls[3:6])
    assert not hasattr(model, "_chains")
    calls.clear()
    model.transform(X)
    assert calls == []  # inference is noise-free and keeps n_steps



@pytest.mark.parametrize("chain_init, inference_steps", [("encoder", 3), ("prior", "auto")])
def test_chain_init_sets_where_inference_starts(monkeypatch, fitted, blob, chain_init,
                                                inference_steps):
    """``transform``, ``score_samples`` and ``impute`` ascend from the encoder's proposal
    ``encoder_(x)`` or from the prior's mode 0, as ``chain_init`` says, also when it is
    changed on a fitted model (the encoder is trained either way), for ``inference_steps``
    steps (``'auto'`` on a table: 2)."""
    calls = _record_chains(monkeypatch, noisy=False)
    model = pickle.loads(pickle.dumps(fitted)).set_params(chain_init=chain_init,
                                                          inference_steps=inference_steps)
    X = blob[:32]
    model.transform(X)
    (n_steps, start, end), = calls
    assert n_steps == (2 if inference_steps == "auto" else inference_steps)
    x = model._to_model(torch.as_tensor(X, dtype=torch.float32))
    expected = model.encoder_(x) if chain_init == "encoder" else torch.zeros_like(start)
    torch.testing.assert_close(start, expected.detach())
    np.testing.assert_allclose(model.transform(X), end[0].numpy(), rtol=1e-6, atol=1e-6)


def test_encoder_is_fitted_to_the_chain_endpoints(monkeypatch, blob):
    """The encoder regresses the training chains' latents: after the fit its proposal for
    a row lies closer to the row's last training latent than the mean latent does (the
    best constant guess)."""
    calls = _record_chains(monkeypatch, noisy=True)
    starts = _record_starts(monkeypatch)
    model = LangevinFlowPriorGenerator(max_iter=20, persistent_steps=None, random_state=0,
                                       learning_rate_init=0.01, **{**TINY, "batch_size": 20})
    model.fit(blob)
    x = torch.cat([rows for rows, _ in starts[-10:]])  # the last epoch: every row once
    latents = torch.cat([end for _, _, end in calls[-10:]], dim=1)
    with torch.no_grad():
        error = (model.encoder_(x) - latents).square().sum(dim=-1).mean()
    assert error < (latents - latents.mean(dim=1, keepdim=True)).square().sum(dim=-1).mean()


def test_more_importance_samples_raise_the_marginal_estimate(fitted, blob):
    """``n_importance_samples`` draws average inside the log: by Jensen's inequality the
    estimate of ``log p(x)`` is biased low and rises towards it with more draws."""
    model = pickle.loads(pickle.dumps(fitted))
    few = model.set_params(n_importance_samples=2).score(blob)
    many = model.set_params(n_importance_samples=256).score(blob)
    assert many > few


def test_the_marginal_is_the_log_of_the_mean_weight(fitted, blob):
    """The estimate is ``log mean_i p(x, z_i) / q(z_i)``: drawing every importance sample
    twice leaves it unchanged (a sum of the weights, without ``- log m``, would rise by
    ``log 2``), and one draw at the proposal's centre gives ``log p(x, z~) - log q(z~)``."""
    from skflowgen.scores import marginal
    x = torch.as_tensor(fitted._to_model(torch.as_tensor(blob[:32], dtype=torch.float32)))
    with torch.no_grad():
        z = fitted._infer_latent(x, None)
        draws = torch.randn(8, fitted.n_components_, generator=torch.Generator().manual_seed(0))
        once = marginal(fitted, x, None, z, draws)
        twice = marginal(fitted, x, None, z, torch.cat([draws, draws]))
        centre = marginal(fitted, x, None, z, draws[:1] * 0)
        tau = fitted._posterior_scale()
        log_q = -fitted.n_components_ * (torch.log(tau[..., 0]) + 0.5 * np.log(2 * np.pi))
        expected_centre = fitted._log_joint(x, None, z) - log_q
    torch.testing.assert_close(twice, once, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(centre, expected_centre, rtol=1e-5, atol=1e-4)


def test_auto_inference_steps_are_few_on_tables_and_n_steps_on_images(monkeypatch, digits01):
    """``inference_steps='auto'`` runs 2 steps from the encoder's proposal on a table and
    ``n_steps`` on images, whose ``'lof'`` score wants codes nearer the posterior mode."""
    calls = _record_chains(monkeypatch, noisy=False)
    X = digits01[0][:64]
    for image_shape, expected in ((None, 2), ((1, 8, 8), 7)):
        model = LangevinFlowPriorGenerator(4, image_shape=image_shape, n_steps=7, max_iter=1,
                                           random_state=0, **TINY).fit(X)
        calls.clear()
        model.transform(X[:16])
        assert [n for n, _, _ in calls] == [expected]
