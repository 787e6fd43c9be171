"""Reliability: divergence rollback, interruption, pickling, determinism, and property tests
of the estimators and of the coupling flow."""

import io
import math
import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.exceptions import ConvergenceWarning

import skflowgen._persistence as persistence
from skflowgen._sampling import _MAX_SUPPORT
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator
from skflowgen.flows import AffineCoupling, CouplingFlow, Rotation
from skflowgen.scores import SCORES

from .conftest import (DEVICE, assert_close_across_processes,
                       assert_same_labels_across_processes)

N_FEATURES = 3
_rng = np.random.RandomState(0)
X = _rng.randn(40, N_FEATURES)
X_TEST = _rng.randn(7, N_FEATURES)
X_MISSING = X_TEST.copy()
X_MISSING[[0, 2, 5], [1, 0, 2]] = np.nan

SMALL = dict(hidden_layer_sizes=(8,), n_flow_blocks=2, max_iter=3, batch_size=64,
             random_state=0, device=DEVICE)
CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}


def make(est, **kw):
    extra = {"n_steps": 5} if est == "LFP" else {}
    return CLASSES[est](**{**SMALL, **extra, **kw})


def fit_quietly(model, data=X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(data)


def modules(model):
    return [getattr(model, name) for name in model._network_names]


def all_finite(model):
    return all(torch.isfinite(t).all() for m in modules(model) for t in m.state_dict().values()
               if t.is_floating_point())


def assert_same_weights(a, b):
    for ma, mb in zip(modules(a), modules(b)):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key].cpu(), sb[key].cpu()), key  # a restored model may
            # hold its weights on the CPU until its next call moves them


def outputs(model):
    """Everything a fitted model computes, for exact comparisons."""
    out = {
        "score_samples": model.score_samples(X_TEST),
        "decision_function": model.decision_function(X_TEST),
        "predict": model.predict(X),
        "transform": model.transform(X_TEST),
        "inverse_transform": model.inverse_transform(
            np.linspace(-1, 1, 2 * len(model.get_feature_names_out())).reshape(2, -1)),
        "sample": model.sample(5, random_state=0),
        "offset": np.array(model.offset_),
        "noise_variance": np.array(model.noise_variance_),
    }
    out["impute"] = model.impute(X_MISSING)
    out["score_missing"] = model.score_samples(X_MISSING)
    return out


def assert_same_outputs(a, b):
    oa, ob = outputs(a), outputs(b)
    assert oa.keys() == ob.keys()
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)


class StepHook:
    """Wraps ``_train_step`` of a class: ``action(call_number, run_original)`` decides."""

    def __init__(self, monkeypatch, cls, action):
        self.calls = 0
        original = cls._train_step
        hook = self

        def step(model, *args):
            hook.calls += 1
            return action(hook.calls, lambda: original(model, *args), model)
        monkeypatch.setattr(cls, "_train_step", step)


def poison(run, model):
    """Take the real step, then wreck every weight and report a NaN loss."""
    stats = run()
    with torch.no_grad():
        for module in modules(model):
            for p in module.parameters():
                p.fill_(float("nan"))
    return stats * float("nan")


# ================================================================ divergence
@pytest.mark.parametrize("est", CLASSES)
def test_nan_epoch_is_rolled_back(monkeypatch, est):
    """One epoch (one batch) goes NaN and leaves NaN weights: they must be rolled back."""
    StepHook(monkeypatch, CLASSES[est],
             lambda call, run, model: poison(run, model) if call == 2 else run())
    model = make(est, learning_rate_init=1e-3)
    with pytest.warns(RuntimeWarning, match="Non-finite"):
        fit_quietly(model)
    assert model.n_iter_ == 2                       # epochs 1 and 3 completed
    assert len(model.loss_curve_) == 2 and np.isfinite(model.loss_curve_).all()
    assert all_finite(model)
    assert np.isfinite(model.score_samples(X)).all()
    assert np.isfinite(model.offset_)
    if est == "GLF":   # StepLR does not move in 3 epochs: the rollback halved the rate
        for optimizer, _ in model._optimizers:
            assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)


@pytest.mark.parametrize("est", CLASSES)
def test_consecutive_rollbacks_keep_halving_the_learning_rate(monkeypatch, est):
    """Two NaN epochs in a row warn "halved the learning rates" twice: the retry after the
    second must run at a quarter of the rate, not at the same half as the first retry."""
    reference = fit_quietly(make(est, max_iter=2))   # the same two completed epochs, no NaN
    StepHook(monkeypatch, CLASSES[est],
             lambda call, run, model: poison(run, model) if call in (2, 3) else run())
    model = make(est, max_iter=4)
    with pytest.warns(RuntimeWarning, match="halved"):
        fit_quietly(model)
    assert model.n_iter_ == 2 and all_finite(model)
    for (optimizer, _), (ref_optimizer, _) in zip(model._optimizers, reference._optimizers):
        for group, ref_group in zip(optimizer.param_groups, ref_optimizer.param_groups):
            assert group["lr"] == pytest.approx(0.25 * ref_group["lr"])


@pytest.mark.parametrize("est", CLASSES)
def test_repeated_divergence_stops_with_last_good_weights(monkeypatch, est):
    reference = fit_quietly(make(est, max_iter=1))  # the last good state is epoch 1's
    hook = StepHook(monkeypatch, CLASSES[est],
                    lambda call, run, model: poison(run, model) if call >= 2 else run())
    model = make(est, max_iter=8)
    with pytest.warns(ConvergenceWarning, match="learning_rate_init"):
        with pytest.warns(RuntimeWarning, match="Non-finite"):
            model.fit(X)
    assert hook.calls < 8                           # it stopped, it did not run out max_iter
    assert model.n_iter_ == 1
    assert all_finite(model)
    assert_same_weights(model, reference)
    np.testing.assert_array_equal(model.score_samples(X), reference.score_samples(X))


@pytest.mark.parametrize("est", CLASSES)
def test_real_divergence_keeps_a_model_that_scores(est):
    """A learning rate far too large: the fit must warn, stop, and keep weights that score."""
    model = make(est, learning_rate_init=1e10, max_iter=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    categories = {w.category for w in caught}
    assert RuntimeWarning in categories
    assert any(issubclass(w.category, ConvergenceWarning)
               and "learning_rate_init" in str(w.message) for w in caught)
    assert all_finite(model)
    assert np.isfinite(model.noise_variance_).all()
    assert np.isfinite(model.score_samples(X)).all()
    assert np.isfinite(model.offset_)
    assert np.isfinite(model.transform(X)).all()


# ================================================================ stopping
@pytest.mark.parametrize("est", CLASSES)
def test_max_iter_reached_with_a_tolerance_warns(est):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        model = make(est, max_iter=2, tol=1e-4, n_iter_no_change=10).fit(X)
    assert model.n_iter_ == 2


@pytest.mark.parametrize("est", CLASSES)
def test_tolerance_stops_training_when_the_loss_stalls(est):
    """No epoch improves by 1e10: the count starts after the first epoch and stops the fit
    two epochs later, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = make(est, max_iter=8, tol=1e10, n_iter_no_change=2).fit(X)
    assert model.n_iter_ == 3


@pytest.mark.parametrize("est", CLASSES)
def test_no_tolerance_trains_the_whole_budget_without_warning(est):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = make(est, max_iter=4, tol=None, n_iter_no_change=1).fit(X)
    assert model.n_iter_ == 4 and len(model.loss_curve_) == 4


# ================================================================ interruption
@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("interrupt_at_call, completed", [(2, 0), (4, 1), (6, 2)])
def test_keyboard_interrupt_keeps_last_completed_epoch(monkeypatch, est, interrupt_at_call,
                                                       completed):
    """40 rows, all trained on, in batches of 20: 2 steps per epoch, so the interrupt at an
    epoch's second step comes after that epoch already moved the weights."""
    def interrupt_at(n):
        def action(call, run, model):
            if call == n:
                raise KeyboardInterrupt
            return run()
        return action

    with monkeypatch.context() as patch:
        if completed:
            reference = fit_quietly(make(est, batch_size=20, max_iter=completed))
        else:   # interrupted before any step: the initial weights
            StepHook(patch, CLASSES[est], interrupt_at(1))
            with pytest.warns(RuntimeWarning, match="interrupted"):
                reference = make(est, batch_size=20, max_iter=5).fit(X)
            assert reference.n_iter_ == 0
    StepHook(monkeypatch, CLASSES[est], interrupt_at(interrupt_at_call))
    model = make(est, batch_size=20, max_iter=5)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        model.fit(X)                                # returns, does not raise
    assert model.n_iter_ == completed
    assert len(model.loss_curve_) == completed
    assert_same_weights(model, reference)
    assert_same_outputs(model, reference)
    labels = model.predict(X)
    assert labels.shape == (len(X),) and set(np.unique(labels)) <= {-1, 1}


# ================================================================ pickling
@pytest.fixture(scope="module")
def fitted():
    cache = {}

    def get(est, score_method="joint", **kw):
        key = (est, score_method, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = fit_quietly(make(est, score_method=score_method, **kw))
        return cache[key]
    return get


def pickle_round_trip(model):
    return pickle.loads(pickle.dumps(model))


def joblib_round_trip(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("score_method", SCORES)
@pytest.mark.parametrize("round_trip", [pickle_round_trip, joblib_round_trip],
                         ids=["pickle", "joblib"])
@pytest.mark.parametrize("n_estimators", [1, 3])
def test_round_trip_gives_identical_outputs(fitted, est, score_method, round_trip,
                                            n_estimators):
    model = fitted(est, score_method, n_estimators=n_estimators)
    before = outputs(model)
    restored = round_trip(model)
    assert type(restored) is type(model)
    assert restored.get_params() == model.get_params()
    assert_same_weights(restored, model)
    assert_same_outputs(restored, model)
    # the original is untouched by pickling
    for key, value in outputs(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize("est", CLASSES)
def test_pickle_holds_state_dict_bytes_not_modules(fitted, est):
    model = fitted(est)
    state = model.__getstate__()
    assert isinstance(state["_torch_state"], bytes)
    assert state["_state_format"] == persistence._STATE_FORMAT
    for name in model._network_names:
        assert name not in state
    assert not any(isinstance(v, (torch.nn.Module, torch.optim.Optimizer, torch.Tensor))
                   for v in state.values())
    blob = pickle.dumps(model)
    assert b"torch.nn.modules" not in blob
    assert b"skflowgen.flows" not in blob
    assert b"skflowgen.networks" not in blob
    # the original still holds its modules
    assert all(isinstance(m, torch.nn.Module) for m in modules(model))


@pytest.mark.parametrize("est", CLASSES)
def test_pickle_leaves_out_the_kept_rows_feature_maps_and_scores_the_same(fitted, est):
    """``'local_features'`` keeps the feature maps of the rows it compares with (3,136
    floats a row on 28 x 28 images): a pickle leaves them out, and the restored model,
    which recomputes them from the kept rows, scores new rows as the original does."""
    model = fitted(est, "local_features")
    X = np.random.default_rng(0).normal(size=(30, model.n_features_in_))
    scores = model.score_samples(X)
    restored = pickle.loads(pickle.dumps(model))
    assert "feature_maps" not in restored._derived_state
    np.testing.assert_allclose(restored.score_samples(X), scores, rtol=1e-5, atol=1e-5)
    assert "feature_maps" in model._derived_state  # the original keeps its maps


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("offset", [-persistence._STATE_FORMAT, -1, 1])
def test_pickle_of_another_format_fails_naming_version(fitted, est, monkeypatch, offset):
    """A real pickle written by a version of another state format (older or newer) fails on
    loading, naming the version, instead of restoring state this version cannot read."""
    model = fitted(est)
    with monkeypatch.context() as patch:
        patch.setattr(persistence, "_STATE_FORMAT", persistence._STATE_FORMAT + offset)
        blob = pickle.dumps(model)
    with pytest.raises(ValueError, match="version"):
        pickle.loads(blob)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).score_samples(X_TEST),
                                  model.score_samples(X_TEST))


@pytest.mark.parametrize("est", CLASSES)
def test_pickle_written_by_an_earlier_release_of_this_format_loads_and_predicts(est):
    """``tests/data/fitted_state_format_4.pkl``: models of each class pickled by the code of
    state format 4 before the base class was split into modules, with their outputs on
    ``load_wine``. A refactor that moves a class or renames fitted state breaks users'
    pickles; this load says so. (A new state format refuses these files by design: write
    the file again with that version and rename it.)"""
    path = Path(__file__).parent / "data" / f"fitted_state_format_{persistence._STATE_FORMAT}.pkl"
    saved = pickle.loads(path.read_bytes())[CLASSES[est].__name__]
    model = pickle.loads(saved["model"])
    X = load_wine().data  # outputs of another process, maybe of another CPU: up to rounding
    for name in ("score_samples", "transform"):
        assert_close_across_processes(getattr(model, name)(X), saved[name], err_msg=name)
    assert_same_labels_across_processes(model.predict(X), saved["predict"],
                                        saved["score_samples"], model.offset_)
    assert_close_across_processes(model.sample(4, random_state=0), saved["sample"])


@pytest.mark.parametrize("est", CLASSES)
def test_code_mixture_moves_the_samples_alone(fitted, est):
    """The mixture of ``n_prior_components > 1`` is drawn from by ``sample`` alone:
    inference and the scores keep the prior trained with the model, so every output but
    ``sample`` is bit-identical to the model with one component, and the samples differ;
    set on a fitted model, it moves the samples without a refit."""
    plain = outputs(fitted(est))
    mixture = outputs(fitted(est, n_prior_components=3))
    assert not np.allclose(plain["sample"], mixture["sample"])
    for key in plain:
        if key != "sample":
            np.testing.assert_array_equal(mixture[key], plain[key], err_msg=key)
    model = pickle_round_trip(fitted(est))
    np.testing.assert_array_equal(model.set_params(n_prior_components=3).sample(
        len(mixture["sample"]), random_state=0), mixture["sample"])


@pytest.mark.parametrize("est", CLASSES)
def test_code_mixture_is_the_fitted_mixture_widened_by_the_chosen_factor(fitted, est,
                                                                         monkeypatch):
    """The codes' mixture is the unwidened fit (``_WIDENINGS`` of 1 alone) with each
    member's Cholesky factors scaled by what ``choose_widening`` chose for that member:
    the same weights and means, the scales times the choice (set here to 1.7 and 1.3)."""
    import skflowgen._sampling as sampling
    model = pickle_round_trip(fitted(est, n_prior_components=3, n_estimators=2))
    monkeypatch.setattr(sampling, "_WIDENINGS", (1.0,))
    narrow = model._code_mixture()
    model._derived_state.clear()
    chosen = np.array([1.7, 1.3])
    monkeypatch.setattr(sampling, "choose_widening", lambda *args: chosen)
    wide = model._code_mixture()
    assert wide[0].shape == (2, 3)
    np.testing.assert_array_equal(wide[0], narrow[0])
    np.testing.assert_array_equal(wide[1], narrow[1])
    np.testing.assert_allclose(wide[2], narrow[2] * chosen[:, None, None, None], rtol=1e-6)


@pytest.mark.parametrize("est", CLASSES)
def test_image_samples_lie_in_the_range_of_the_training_pixels(est):
    """With ``image_shape``, ``sample`` clips each pixel to the range the training images
    took (within [0.2, 0.7]), some at its ends under a wide mixture."""
    import skflowgen._sampling as sampling
    rng = np.random.RandomState(0)
    images = 0.2 + 0.5 * rng.rand(40, 16)
    model = fit_quietly(make(est, image_shape=(1, 4, 4), n_components=2,
                             n_prior_components=3), images)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "_WIDENINGS", (3.0,))
        drawn = model.sample(500, random_state=0)
    low, high = images.min(), images.max()
    assert drawn.min() >= low - 1e-6 and drawn.max() <= high + 1e-6
    assert np.isclose(drawn, low, atol=1e-6).any() or np.isclose(drawn, high, atol=1e-6).any()


def test_code_mixture_draws_no_blends_of_separate_clusters():
    """Two clusters of rows far apart: the codes' mixture draws few
    samples between them, the prior trained with the model (one Gaussian through a flow)
    many. GLF alone: its decoder maps codes back to rows as an autoencoder does, so the
    samples show where the latents were drawn."""
    rng = np.random.RandomState(0)
    centres = np.zeros((2, 4))
    centres[1, 0] = 6.0
    rows = np.concatenate([c + 0.5 * rng.randn(150, 4) for c in centres])

    def between(samples):  # share of samples in the middle half of the centres' segment
        t = (samples - centres[0]) @ (centres[1] - centres[0]) / 36.0
        return np.mean((t > 0.25) & (t < 0.75))
    model = fit_quietly(make("GLF", hidden_layer_sizes=(16,), max_iter=30, batch_size=16,
                             n_components=2, n_estimators=1, n_prior_components=2), rows)
    prior = pickle_round_trip(model).set_params(n_prior_components=1)  # draws from flow_
    assert between(rows) == 0
    assert between(model.sample(2000, random_state=0)) < \
        between(prior.sample(2000, random_state=0)) / 2


@pytest.mark.parametrize("est", CLASSES)
def test_sample_draws_few_valued_columns_on_their_training_values(est):
    """A binary and a five-valued column come out of ``sample`` on the values they took in
    training, the continuous columns as drawn (no training value repeated)."""
    rng = np.random.RandomState(0)
    rows = np.c_[rng.randint(2, size=200), 10 * rng.randint(5, size=200), rng.randn(200, 2)]
    model = fit_quietly(make(est, max_iter=5), rows)
    drawn = model.sample(300, random_state=0)
    assert set(drawn[:, 0]) <= {0.0, 1.0}
    assert set(drawn[:, 1]) <= {0.0, 10.0, 20.0, 30.0, 40.0}
    assert not np.isin(drawn[:, 2:], rows[:, 2:]).any()


@pytest.mark.parametrize("est", CLASSES)
def test_sample_draws_the_observation_noise_on_tables_alone(fitted, est):
    """On tables ``sample`` draws ``x ~ N(g(z), diag(noise_variance_))``: with the noise
    variance made four times larger, the same draws move by the noise itself, whose
    variance per column is that of the members' mixture; with ``image_shape`` the
    samples are the decoded mean, whatever the noise."""
    table = pickle_round_trip(fitted(est, n_estimators=2))
    wider = pickle_round_trip(table)
    wider.noise_.variance *= 4  # the noise draw doubles, nothing else moves
    noise = wider.sample(8000, random_state=0) - table.sample(8000, random_state=0)
    np.testing.assert_allclose(noise.var(axis=0), table.noise_variance_.mean(axis=0), rtol=0.1)
    assert np.all(np.abs(noise.mean(axis=0)) < 4 * np.sqrt(table.noise_variance_.max() / 8000))
    rng = np.random.RandomState(0)
    images = fit_quietly(make(est, image_shape=(1, 4, 4), n_components=2), rng.rand(40, 16))
    wider = pickle_round_trip(images)
    wider.noise_.variance *= 4
    np.testing.assert_array_equal(wider.sample(50, random_state=0),
                                  images.sample(50, random_state=0))


@pytest.mark.parametrize("est", CLASSES)
def test_code_mixture_survives_pickling(fitted, est):
    """``n_prior_components > 1``: a model pickled before its first ``sample`` and one
    pickled after draw the same samples as the model (the mixture, fitted at the first
    ``sample``, is the same from the kept rows), and score alike."""
    model = pickle_round_trip(fitted(est, n_prior_components=3))
    before = pickle_round_trip(model)
    drawn = model.sample(7, random_state=0)
    after = pickle_round_trip(model)
    for restored in (before, after):
        np.testing.assert_array_equal(restored.score_samples(X_TEST),
                                      model.score_samples(X_TEST))
        np.testing.assert_array_equal(restored.sample(7, random_state=0), drawn)


@pytest.mark.parametrize("est", CLASSES)
def test_corrupt_torch_state_fails_with_value_error(fitted, est):
    state = fitted(est).__getstate__()
    state["_torch_state"] = state["_torch_state"][: len(state["_torch_state"]) // 2]
    restored = CLASSES[est].__new__(CLASSES[est])
    with pytest.raises(ValueError, match="restore"):
        restored.__setstate__(state)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("est", CLASSES)
def test_model_with_cuda_device_unpickles_on_cpu(fitted, est):
    model = fitted(est)
    expected = model.score_samples(X_TEST)
    cuda_model = pickle_round_trip(model).set_params(device="cuda")
    restored = pickle_round_trip(cuda_model)
    assert restored.device == "cuda"
    with pytest.warns(UserWarning, match="CUDA"):
        scores = restored.score_samples(X_TEST)
    np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize("est", CLASSES)
def test_warm_start_continues_after_unpickling(est):
    model = fit_quietly(make(est, warm_start=True, max_iter=2))
    restored = pickle_round_trip(model)
    before = model.score_samples(X_TEST)
    fit_quietly(model)
    fit_quietly(restored)
    assert restored.n_iter_ == 4 and len(restored.loss_curve_) == 4
    assert not np.array_equal(restored.score_samples(X_TEST), before)   # it trained on
    # the optimizer and scheduler state travelled: both continuations are identical
    assert restored.loss_curve_ == model.loss_curve_
    assert_same_weights(restored, model)
    assert_same_outputs(restored, model)


@pytest.mark.parametrize("est", CLASSES)
def test_unfitted_estimator_pickles(est):
    model = make(est, n_components=2)
    restored = pickle_round_trip(model)
    assert restored.get_params() == model.get_params()
    assert not hasattr(restored, "flow_")
    np.testing.assert_array_equal(fit_quietly(restored).score_samples(X_TEST),
                                  fit_quietly(model).score_samples(X_TEST))


# ================================================================ determinism
@pytest.mark.parametrize("est", CLASSES)
def test_same_random_state_same_model(fitted, est):
    a = fitted(est)
    b = fit_quietly(make(est, score_method=a.score_method))
    assert_same_weights(a, b)
    assert_same_outputs(a, b)
    c = fit_quietly(clone(a))
    assert_same_weights(a, c)
    assert_same_outputs(a, c)


@pytest.mark.parametrize("est", CLASSES)
def test_different_random_state_different_model(fitted, est):
    a = fitted(est)
    b = fit_quietly(make(est, random_state=1))
    assert not np.array_equal(a.score_samples(X_TEST), b.score_samples(X_TEST))


@pytest.mark.parametrize("est", CLASSES)
def test_set_device_cpu_after_fit(est):
    model = fit_quietly(make(est, device="auto"))
    expected = outputs(model)
    model.set_params(device="cpu")
    for key, value in outputs(model).items():
        if torch.cuda.is_available():  # fitted on the GPU: its kernels round differently
            np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-4, err_msg=key)
        else:
            np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("score_method", SCORES)
def test_row_scores_do_not_depend_on_the_batch(fitted, est, score_method):
    model = fitted(est, score_method, batch_size=4)   # 7 test rows: two chunks, one padded
    data = X_MISSING
    together = model.score_samples(data)
    alone = np.array([model.score_samples(row[None])[0] for row in data])
    np.testing.assert_array_equal(together, alone)
    reordered = model.score_samples(data[::-1])[::-1]
    np.testing.assert_array_equal(together, reordered)
    np.testing.assert_array_equal(model.transform(data), model.transform(data[::-1])[::-1])


@pytest.mark.parametrize("est", CLASSES)
def test_fitted_model_scores_deterministically_without_random_state(est):
    model = fit_quietly(make(est, random_state=None, score_method="marginal"))
    np.testing.assert_array_equal(model.score_samples(X_TEST), model.score_samples(X_TEST))
    np.testing.assert_array_equal(model.transform(X_TEST), model.transform(X_TEST))
    np.testing.assert_array_equal(model.sample(3, random_state=0), model.sample(3, random_state=0))
    assert not np.array_equal(model.sample(3), model.sample(3))


@pytest.mark.parametrize("est", CLASSES)
def test_global_rngs_untouched(est):
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    model = fit_quietly(make(est, score_method="marginal"))
    model.score_samples(X_TEST)
    model.transform(X_TEST)
    model.sample(3, random_state=0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1])
    assert np_state[2:] == after[2:]


# ================================================================ properties: estimators
PROPERTY_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])
ESTIMATOR_KINDS = [(e, s) for e in CLASSES for s in SCORES]


def finite_rows(max_rows=12, bound=1e6):
    return arrays(np.float64, st.tuples(st.integers(1, max_rows), st.just(N_FEATURES)),
                  elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False))


@st.composite
def rows_with_missing(draw):
    data = draw(finite_rows())
    missing = draw(arrays(np.bool_, data.shape))
    return np.where(missing, np.nan, data)


def columns_with_few_values():
    """Rows whose columns take 1 to 30 distinct values, some NaN."""
    return st.integers(1, 30).flatmap(lambda k: arrays(
        np.float64, st.tuples(st.integers(2, 60), st.just(3)),
        elements=st.sampled_from([np.nan, *np.linspace(-5, 5, k)])))


@PROPERTY_SETTINGS
@given(first=columns_with_few_values(), second=columns_with_few_values(),
       drawn=arrays(np.float64, st.tuples(st.integers(1, 10), st.just(3)),
                    elements=st.floats(-10, 10)))
def test_property_support_of_blocks_is_that_of_their_union(first, second, drawn):
    """The discrete columns kept block by block (``partial_fit``) are those of the blocks'
    rows at once, and a drawn value of such a column moves to its nearest training value;
    the other columns are left as drawn."""
    by_blocks, at_once = GenerativeLatentFlow(), GenerativeLatentFlow()
    by_blocks._fit_support(first, continuing=False)
    by_blocks._fit_support(second, continuing=True)
    rows = np.vstack([first, second])
    at_once._fit_support(rows, continuing=False)
    moved = by_blocks._on_support(drawn.copy())
    np.testing.assert_array_equal(moved, at_once._on_support(drawn.copy()))
    for j, column in enumerate(rows.T):
        values = np.unique(column[~np.isnan(column)])
        if 0 < len(values) <= min(_MAX_SUPPORT, np.sum(~np.isnan(column)) / 2):
            assert np.isin(moved[:, j], values).all()
            np.testing.assert_allclose(np.abs(moved[:, j] - drawn[:, j]),
                                       np.abs(drawn[:, j, None] - values).min(axis=1))
        else:
            np.testing.assert_array_equal(moved[:, j], drawn[:, j])


@pytest.mark.parametrize("est, score_method", ESTIMATOR_KINDS)
@PROPERTY_SETTINGS
@given(data=finite_rows())
def test_property_scores_finite_with_right_shape(fitted, est, score_method, data):
    model = fitted(est, score_method)
    scores = model.score_samples(data)
    assert scores.shape == (len(data),)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(model.decision_function(data), scores - model.offset_)
    np.testing.assert_array_equal(model.predict(data), np.where(scores < model.offset_, -1, 1))


@pytest.mark.parametrize("est, score_method", ESTIMATOR_KINDS)
@PROPERTY_SETTINGS
@given(data=rows_with_missing())
def test_property_scores_and_imputes_missing(fitted, est, score_method, data):
    model = fitted(est, score_method)
    scores = model.score_samples(data)
    assert scores.shape == (len(data),) and np.isfinite(scores).all()
    filled = model.impute(data)
    assert filled.shape == data.shape and np.isfinite(filled).all()
    observed = ~np.isnan(data)
    np.testing.assert_array_equal(filled[observed], data[observed])


@pytest.mark.parametrize("est", CLASSES)
@PROPERTY_SETTINGS
@given(data=finite_rows(), z=arrays(np.float64, st.tuples(st.integers(1, 12), st.just(1)),
                                    elements=st.floats(-1e3, 1e3)))
def test_property_transform_inverse_transform_shapes(fitted, est, data, z):
    model = fitted(est)
    d = model.n_estimators * model.n_components_  # the members' latents side by side
    latents = model.transform(data)
    assert latents.shape == (len(data), d) and np.isfinite(latents).all()
    decoded = model.inverse_transform(np.repeat(z, d, axis=1))
    assert decoded.shape == (len(z), N_FEATURES) and np.isfinite(decoded).all()
    assert model.sample(len(z), random_state=0).shape == (len(z), N_FEATURES)
    names = model.get_feature_names_out()
    assert len(names) == d


@pytest.mark.parametrize("est", CLASSES)
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(contamination=st.floats(0.01, 0.5), n_rows=st.integers(20, 40))
def test_property_offset_is_the_percentile_of_the_calibration_rows(est, contamination, n_rows):
    """Whatever the contamination and the number of rows, ``offset_`` is the
    ``100 * contamination`` percentile of the scores of the rows given to ``fit``
    (``novelty=False``: ``fit_predict`` is ``fit`` then ``predict``) or of the held-out rows
    (``novelty=True``; scored by ``'joint'``, which compares a row with no other: the local
    scores score each held-out fold against the other rows): ``predict`` flags that share of
    them."""
    data = X[:n_rows]
    model = fit_quietly(make(est, contamination=contamination, max_iter=1), data)
    assert model.offset_ == np.percentile(model.score_samples(data), 100 * contamination)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        np.testing.assert_array_equal(clone(model).fit_predict(data), model.predict(data))
    model = fit_quietly(make(est, contamination=contamination, max_iter=1, novelty=True,
                             score_method="joint"), data)
    held = model.score_samples(model._held_out_rows)
    assert len(held) == round(0.2 * n_rows)
    assert model.offset_ == np.percentile(held, 100 * contamination)


@pytest.mark.parametrize("est", CLASSES)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(losses=arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 50)),
                     elements=st.floats(-1e3, 1e3, width=32), unique=True),
       support=st.one_of(st.none(), st.floats(0.01, 1.0)), contamination=st.floats(0.01, 0.5))
def test_property_trimmed_loss_trains_on_the_most_likely_rows(est, losses, support,
                                                              contamination):
    """Each member's gradient reaches exactly the ceil(support * n) rows of its lowest loss
    (support defaults to 1 - contamination), each with weight 1 / kept, and nothing of the
    other members' rows; the step reports the mean loss."""
    model = make(est, support_fraction=support, contamination=contamination)
    model._optimizers = []  # the step itself, without networks to update
    rows = torch.tensor(losses, requires_grad=True)
    reported = model._optimize(rows)
    kept = math.ceil((1 - contamination if support is None else support) * losses.shape[1])
    expected = np.zeros(losses.shape)
    for member, member_losses in enumerate(losses):
        expected[member, np.argsort(member_losses, kind="stable")[:kept]] = 1 / kept
    np.testing.assert_allclose(rows.grad.numpy(), expected, rtol=1e-6)
    assert reported.item() == pytest.approx(rows.detach().mean().item(), rel=1e-6)


@pytest.mark.parametrize("est", CLASSES)
def test_trimmed_fit_leaves_planted_outliers_unlearned(est):
    """Rows far from a tight cluster, 10% of the training set: a fit trimmed at the
    contamination share never trains on them, so it scores them below the cluster, and lower
    than a fit on all rows does, relative to the cluster (which, as tight as the cluster, it
    may learn as well)."""
    rng = np.random.RandomState(1)
    inliers = 0.1 * rng.randn(180, N_FEATURES)
    outliers = 3.0 + 0.1 * rng.randn(20, N_FEATURES)
    data = np.vstack([inliers, outliers])
    gaps = {}
    for support in (None, 1.0):
        model = fit_quietly(make(est, contamination=0.1, support_fraction=support, max_iter=30,
                                 batch_size=50, score_method="joint"), data)
        scores = model.score_samples(data)
        gaps[support] = np.median(scores[:180]) - np.median(scores[180:])
    assert gaps[None] > 0 and gaps[None] > gaps[1.0]


# ================================================================ properties: the flow
def make_flow(d, n_blocks, seed, scale, batch):
    """A flow with non-trivial couplings and ActNorm initialised from ``batch`` (one member
    per leading slice), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    flow = CouplingFlow(d, n_blocks, hidden_size=8, n_members=len(batch), generator=generator)
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, AffineCoupling):
                last = layer.net[-1]
                last.weight.copy_(scale * torch.randn(last.weight.shape, generator=generator))
                last.bias.copy_(scale * torch.randn(last.bias.shape, generator=generator))
    flow.initialize(batch)                        # ActNorm data-dependent initialisation
    return flow


flow_cases = st.fixed_dictionaries({
    "d": st.integers(1, 6), "n_blocks": st.integers(1, 4), "seed": st.integers(0, 2**31 - 1),
    "scale": st.floats(0.1, 2.0), "n": st.integers(1, 16), "spread": st.floats(0.1, 10.0),
    "members": st.integers(1, 3)})


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=flow_cases)
def test_property_flow_inverse_of_forward(case):
    generator = torch.Generator().manual_seed(case["seed"])
    m = case["members"]
    init = case["spread"] * torch.randn(m, 32, case["d"], generator=generator)
    flow = make_flow(case["d"], case["n_blocks"], case["seed"], case["scale"], init)
    z = case["spread"] * torch.randn(m, case["n"], case["d"], generator=generator)
    with torch.no_grad():
        u, log_det = flow(z)
        back = flow.inverse(u)
    assert u.shape == z.shape and log_det.shape == (m, case["n"])
    assert torch.isfinite(u).all() and torch.isfinite(log_det).all()
    torch.testing.assert_close(back, z, atol=1e-4, rtol=1e-4)
    # and the other way round
    with torch.no_grad():
        again, _ = flow(flow.inverse(u))
    torch.testing.assert_close(again, u, atol=1e-4, rtol=1e-4)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(case=flow_cases)
def test_property_flow_log_det_equals_autograd_jacobian(case):
    d, m = min(case["d"], 4), case["members"]
    generator = torch.Generator().manual_seed(case["seed"])
    init = case["spread"] * torch.randn(m, 32, d, generator=generator)
    flow = make_flow(d, case["n_blocks"], case["seed"], case["scale"], init).double()
    # The rotations are drawn in float32, orthogonal only to ~1e-7; make them exactly
    # orthogonal in float64 so that their log|det| is 0 to float64 precision.
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, Rotation):
                q, r = torch.linalg.qr(layer.weight)
                layer.weight.copy_(q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
                                   .unsqueeze(-2))
    z = case["spread"] * torch.randn(m, 3, d, generator=generator, dtype=torch.float64)
    _, log_det = flow(z)
    for k in range(m):
        for i in range(z.shape[1]):
            jac = torch.autograd.functional.jacobian(
                lambda v: flow(z.index_put((torch.tensor(k), torch.tensor(i)), v))[0][k, i],
                z[k, i])
            sign, logabsdet = torch.linalg.slogdet(jac)
            assert sign != 0
            torch.testing.assert_close(log_det[k, i], logabsdet, atol=1e-8, rtol=1e-8)
    # log_prob is the change of variables with a standard normal base
    u, _ = flow(z)
    expected = (torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(dim=-1) + log_det)
    torch.testing.assert_close(flow.log_prob(z), expected, atol=1e-10, rtol=1e-10)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(case=flow_cases)
def test_property_flow_density_does_not_depend_on_the_batch(case):
    """A row's density depends neither on the other rows nor on the other members' latents."""
    m = case["members"]
    generator = torch.Generator().manual_seed(case["seed"])
    flow = make_flow(case["d"], case["n_blocks"], case["seed"], case["scale"],
                     torch.randn(m, 32, case["d"], generator=generator)).double()
    z = case["spread"] * torch.randn(m, case["n"], case["d"], generator=generator,
                                     dtype=torch.float64)
    with torch.no_grad():
        together = flow.log_prob(z)
        alone = torch.cat([flow.log_prob(z[:, i:i + 1]) for i in range(z.shape[1])], dim=1)
        others = z.clone()
        others[1:] = -others[1:]
        first = flow.log_prob(others)[0]
    torch.testing.assert_close(together, alone, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(first, together[0], atol=1e-10, rtol=1e-10)


# ================================================================ properties: feature scaling
@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("feature_scaling", ["robust", "standard"])
@settings(max_examples=4, deadline=None, derandomize=True)
@given(exponents=arrays(np.int64, N_FEATURES, elements=st.integers(-8, 8)))
def test_property_feature_scaling_makes_the_fit_free_of_units(est, feature_scaling, exponents):
    """Rescaling each feature by a power of two (exact in floating point) leaves the fitted
    networks unchanged: the same latents, the same default (``'fused'``) scores, the
    densities shifted by the log-Jacobian, decodings and samples in the new units. One
    column is mostly zero (robust spread 0: the full range is used)."""
    data = X.copy()
    data[:-3, 1] = 0.0
    factor = 2.0 ** exponents
    a = fit_quietly(make(est, feature_scaling=feature_scaling), data)
    b = fit_quietly(make(est, feature_scaling=feature_scaling), data * factor)
    np.testing.assert_array_equal(a.transform(data), b.transform(data * factor))
    np.testing.assert_allclose(b.score_samples(data * factor), a.score_samples(data),
                               rtol=1e-6, atol=1e-6)
    for model in (a, b):
        model.set_params(score_method="joint")
    np.testing.assert_allclose(b.score_samples(data * factor),
                               a.score_samples(data) - np.log(factor).sum(), rtol=1e-6,
                               atol=1e-5)  # the float32 sum of the shifted score
    Z = a.transform(X_TEST)
    np.testing.assert_allclose(b.inverse_transform(Z), a.inverse_transform(Z) * factor,
                               rtol=1e-6)
    np.testing.assert_allclose(b.sample(4, random_state=0), a.sample(4, random_state=0) * factor,
                               rtol=1e-6)
    np.testing.assert_allclose(b.noise_variance_, a.noise_variance_ * factor ** 2, rtol=1e-6)


def test_feature_scaling_off_depends_on_units():
    """Without feature scaling the same rescaling changes the fit (so the test above has
    something to show)."""
    factor = 2.0 ** np.arange(N_FEATURES)
    a = fit_quietly(make("GLF", feature_scaling=None))
    b = fit_quietly(make("GLF", feature_scaling=None), X * factor)
    assert not np.allclose(a.transform(X), b.transform(X * factor))


# ================================================================ threads
@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("n_jobs, threads", [(None, 1), (2, 2)])
def test_calls_run_torch_on_n_jobs_threads_and_restore_its_setting(monkeypatch, est, n_jobs,
                                                                     threads):
    """Training and scoring run torch on ``n_jobs`` threads (None: one; the networks are
    small, and more threads waited on each other, worst beside a busy process;
    benchmarks/RESULTS.md, "Threads"), whatever torch is set to, and leave that setting as
    they found it."""
    seen = {"train": [], "infer": []}
    cls = CLASSES[est]
    train_step, infer = cls._train_step, cls._infer_latent

    def recording(name, original):
        def method(model, *args, **kwargs):
            seen[name].append(torch.get_num_threads())
            return original(model, *args, **kwargs)
        return method
    monkeypatch.setattr(cls, "_train_step", recording("train", train_step))
    monkeypatch.setattr(cls, "_infer_latent", recording("infer", infer))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        model = fit_quietly(make(est, n_jobs=n_jobs))
        model.score_samples(X_TEST)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert after == 3
    assert set(seen["train"]) == set(seen["infer"]) == {threads}
