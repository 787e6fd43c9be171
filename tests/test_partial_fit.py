"""``partial_fit``: blockwise training as good as ``fit``, one epoch a call, bounded kept rows
that never were trained on, resumable through pickling, robust to bad blocks."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator, outlier

from .conftest import TINY, manifold
from .test_reliability import (CLASSES, X, StepHook, all_finite, assert_same_outputs,
                               assert_same_weights, make, outputs, poison)


def blockwise(model, data, passes=1, n_blocks=4):
    """``partial_fit`` over ``data`` in ``n_blocks`` blocks, ``passes`` times."""
    for _ in range(passes):
        for block in np.array_split(data, n_blocks):
            model.partial_fit(block)
    return model


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("data", ["table", "digits"])
def test_blockwise_training_is_as_good_as_fit(digits01, est, data):
    """``partial_fit`` over 4 blocks for as many passes as ``fit``'s epochs (a batch as
    large as a block, so as many steps, GLF's flow's included: it steps once per group of
    batches of about 256 rows in a call, of ``n_samples // 10`` in ``fit``) scores new rows
    (the mean ``log p(x)`` of ``score``) as well as ``fit`` does, up to the spread of
    ``fit`` over three random states."""
    if data == "table":
        rows, shape = manifold(1200), None
    else:
        rows = digits01[0][np.random.RandomState(0).permutation(len(digits01[0]))]
        shape = (1, 8, 8)
    train, new = rows[:-300], rows[-300:]
    cls = CLASSES[est]
    params = dict(TINY, n_estimators=1, max_iter=4, image_shape=shape, n_prior_components=1,
                  batch_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [cls(random_state=seed, **params).fit(train).score(new) for seed in range(3)]
    blocks = blockwise(cls(random_state=0, **params), train, passes=params["max_iter"])
    assert blocks.n_iter_ == 4 * params["max_iter"]
    assert blocks.score(new) >= min(fits) - (max(fits) - min(fits))


@pytest.mark.parametrize("est", CLASSES)
def test_each_call_runs_one_epoch_on_scaling_from_the_first_block(est):
    model = make(est)
    first, second = X[:20], X[20:]
    model.partial_fit(first)
    np.testing.assert_allclose(model._center, np.median(first, axis=0))
    center, scale = model._center.copy(), model._scale.copy()
    model.partial_fit(second)
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    np.testing.assert_array_equal(model._center, center)
    np.testing.assert_array_equal(model._scale, scale)
    assert not any(name in vars(model) for name in model._fit_state)  # no per-row state kept


@pytest.mark.parametrize("est", CLASSES)
def test_pickling_between_calls_changes_nothing(est):
    """A model pickled between two calls and restored continues as if it never stopped:
    weights, optimizer state, kept rows and per-call draws alike."""
    straight = make(est).partial_fit(X[:20]).partial_fit(X[20:])
    resumed = pickle.loads(pickle.dumps(make(est).partial_fit(X[:20]))).partial_fit(X[20:])
    assert_same_weights(straight, resumed)
    assert_same_outputs(straight, resumed)


@pytest.mark.parametrize("est", CLASSES)
def test_a_block_of_another_width_is_refused_and_changes_nothing(est):
    model = make(est).partial_fit(X[:20])
    before = outputs(model)
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3 features"):
        model.partial_fit(X[20:, :2])
    after = outputs(model)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    model.partial_fit(X[20:])
    assert_same_outputs(model, make(est).partial_fit(X[:20]).partial_fit(X[20:]))


@pytest.mark.parametrize("est", CLASSES)
def test_fit_after_partial_fit_starts_afresh(est):
    model = make(est).partial_fit(X[:20]).partial_fit(X[20:])
    fit = make(est).fit(X[::-1])
    assert_same_outputs(model.fit(X[::-1]), fit)


@pytest.mark.parametrize("est", CLASSES)
def test_partial_fit_continues_a_fitted_model(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make(est).fit(X)
    epochs = model.n_iter_
    model.partial_fit(X)
    assert model.n_iter_ == epochs + 1 and len(model.loss_curve_) == epochs + 1
    assert np.isfinite(model.score_samples(X)).all()


@pytest.mark.parametrize("est", CLASSES)
def test_a_diverging_call_leaves_the_estimator_as_before_it(monkeypatch, est):
    """All or nothing: a call whose epoch diverges restores weights, optimizer state and
    learning rates, kept rows, noise variance, offset_ and the counts, and says so."""
    model = make(est, learning_rate_init=1e-3).partial_fit(X[:20])
    before, kept = outputs(model), state_of(model)
    StepHook(monkeypatch, CLASSES[est], lambda call, run, model: poison(run, model))
    with pytest.warns(RuntimeWarning, match="diverged .* left as it was before the call"):
        model.partial_fit(X[20:])
    assert all_finite(model)
    for key, value in outputs(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert_same_state(state_of(model), kept)
    for optimizer, _ in model._optimizers:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def state_of(model):
    """What a call changes beyond the outputs: counts, kept rows, optimizer state."""
    return {"n_iter_": model.n_iter_, "n_samples_seen_": model.n_samples_seen_,
            "loss_curve_": list(model.loss_curve_),
            "reference": model._reference_rows.copy(),
            "held": model._row_samples["held"][1].copy(),
            "training": model._row_samples["training"][1].copy(),
            "optimizers": [{k: v.clone() for k, v in group.items()}
                           for optimizer, _ in model._optimizers
                           for group in optimizer.state.values()]}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in ("n_iter_", "n_samples_seen_", "loss_curve_"):
        assert a[key] == b[key], key
    for key in ("reference", "held", "training"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for group_a, group_b in zip(a["optimizers"], b["optimizers"], strict=True):
        for name in group_a:
            assert torch.equal(group_a[name], group_b[name]), name


@pytest.mark.parametrize("est", CLASSES)
def test_infinite_values_raise_before_anything_changes(est):
    """An infinite entry is refused (NaN stays a missing value), the model untouched."""
    model = make(est).partial_fit(X[:20])
    before, kept = outputs(model), state_of(model)
    block = X[20:].copy()
    block[3, 1] = np.inf
    with pytest.raises(ValueError, match="[Ii]nf"):
        model.partial_fit(block)
    for key, value in outputs(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert_same_state(state_of(model), kept)


@settings(max_examples=8, deadline=None)
@given(est=st.sampled_from(sorted(CLASSES)), novelty=st.booleans(),
       sequence=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([None, 1e18, 1e30])),
                         min_size=1, max_size=5))
def test_property_poisoned_blocks_change_nothing(est, novelty, sequence):
    """Over any sequence of clean blocks and blocks of finite values scaled far beyond the
    data (1e18, as a unit mix-up can give, or 1e30): every poisoned call warns and is
    undone, so the estimator predicts and scores new rows exactly as the one that saw the
    clean blocks alone, in the same order."""
    rows = manifold(300, seed=1)
    blocks, new = np.array_split(rows[:240], 3), rows[240:]
    first = make(est, novelty=novelty, n_components=2).partial_fit(blocks[0])
    clean = pickle.loads(pickle.dumps(first))
    for index, scale in sequence:
        if scale is None:
            first.partial_fit(blocks[index])
            clean.partial_fit(blocks[index])
        else:
            with pytest.warns(RuntimeWarning, match="diverged"):
                first.partial_fit(blocks[index] * scale)
    for name in ("predict", "score_samples", "decision_function"):
        np.testing.assert_array_equal(getattr(first, name)(new), getattr(clean, name)(new),
                                      err_msg=name)
    assert first.n_samples_seen_ == clean.n_samples_seen_


@settings(max_examples=30, deadline=None,  # the monkeypatched values are the same for all
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(1, 120), n_blocks=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       fraction=st.floats(0.05, 0.9), passes=st.integers(2, 3), data=st.data())
def test_property_kept_rows_are_bounded_never_trained_on_and_free_of_the_blocks(
        monkeypatch, n_rows, n_blocks, seed, fraction, passes, data):
    """Over repeated passes in any block order: no held-out row is ever returned for training,
    the held-out rows are the (at most ``_HELD_OUT_ROWS``) rows of smallest first key below
    ``validation_fraction``, each seen once a pass, and the reference sample the
    ``_REFERENCE_ROWS`` other rows of smallest second key, whatever the blocks."""
    monkeypatch.setattr(outlier, "_HELD_OUT_ROWS", 7)
    monkeypatch.setattr(outlier, "_REFERENCE_ROWS", 11)
    rows = np.random.RandomState(seed).randn(n_rows, 3).astype(np.float32)
    model = GenerativeLatentFlow(validation_fraction=fraction, novelty=True)
    blocks = np.array_split(rows, n_blocks)
    trained = set()
    for _ in range(passes):
        for index in data.draw(st.permutations(range(n_blocks))):
            trained |= {r.tobytes() for r in model._split_block(blocks[index], seed)}
    first, second = outlier.row_keys(rows, seed)
    candidates = np.flatnonzero(first < fraction)
    held = candidates[np.argsort(first[candidates])][:7]
    others = np.setdiff1d(np.arange(n_rows), held)
    reference = others[np.argsort(second[others])][:11]
    np.testing.assert_array_equal(model._held_out_rows, rows[held])
    np.testing.assert_array_equal(model._held_out_counts, np.full(len(held), passes))
    np.testing.assert_array_equal(model._row_samples["training"][1], rows[reference])
    assert not trained & {r.tobytes() for r in rows[held]}
    assert trained == {r.tobytes() for r in rows[others]}


def test_copies_of_a_repeated_row_are_held_out_as_rows_are():
    """A row that is half of the data: about ``validation_fraction`` of its copies are held
    out (within 5 standard deviations), the same copies in every pass, and each kept copy
    counts once a pass."""
    rng = np.random.RandomState(0)
    rows = np.vstack([np.repeat(rng.randn(1, 3), 2000, axis=0), rng.randn(2000, 3)])
    blocks = np.array_split(rows[rng.permutation(len(rows))], 4)
    model = GenerativeLatentFlow(validation_fraction=0.2, novelty=True)
    trained = [[len(model._split_block(block, 0)) for block in blocks] for _ in range(2)]
    assert trained[0] == trained[1]
    copies = (model._held_out_rows == rows[0].astype(np.float32)).all(axis=1)
    held_copies = model._held_out_counts[copies].sum() / 2
    assert abs(held_copies - 400) < 5 * np.sqrt(2000 * 0.2 * 0.8)
    assert model._held_out_counts.sum() == 2 * (len(rows) - sum(trained[0]))


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), data=st.data(),
       q=st.floats(0, 100))
def test_property_weighted_percentile_is_that_of_the_repeated_values(values, data, q):
    weights = data.draw(st.lists(st.integers(1, 5), min_size=len(values),
                                 max_size=len(values)))
    np.testing.assert_allclose(outlier.percentile(np.array(values), q, np.array(weights)),
                               np.percentile(np.repeat(values, weights), q), rtol=1e-9,
                               atol=1e-6)


@given(st.integers(0, 2 ** 31 - 1))
@settings(max_examples=20, deadline=None)
def test_property_row_keys_follow_the_values_alone(seed):
    rows = np.random.RandomState(seed % 1000).randn(50, 4)
    keys = outlier.row_keys(rows, seed)
    assert keys.shape == (2, 50) and ((keys >= 0) & (keys < 1)).all()
    np.testing.assert_array_equal(outlier.row_keys(rows[::-1].astype(np.float32)
                                                   .astype(np.float64), seed)[:, ::-1],
                                  outlier.row_keys(rows.astype(np.float32), seed))
    np.testing.assert_array_equal(outlier.row_keys(rows[10:20], seed), keys[:, 10:20])
    assert len(np.unique(keys)) == 100  # distinct rows, distinct keys
    assert not np.array_equal(outlier.row_keys(rows, seed + 1), keys)


def test_keys_are_uniform():
    """The held-out share follows ``validation_fraction``: the keys of 20,000 distinct rows
    are uniform (each decile within 5 standard deviations of a tenth)."""
    keys = outlier.row_keys(np.random.RandomState(0).randn(20_000, 5), 3)
    for column in keys:
        counts = np.histogram(column, bins=10, range=(0, 1))[0]
        assert np.all(np.abs(counts - 2000) < 5 * np.sqrt(2000 * 0.9))
    assert abs(np.corrcoef(keys)[0, 1]) < 5 / np.sqrt(20_000)


def test_langevin_chains_start_from_the_encoder_each_call(monkeypatch):
    """LFP's chains cannot follow a row across calls: every call runs ``n_steps`` from the
    inference network for each of its rows."""
    starts = []
    original = LangevinFlowPriorGenerator._training_start

    def start(model, x, *args):
        starts.append(len(x))
        return original(model, x, *args)
    monkeypatch.setattr(LangevinFlowPriorGenerator, "_training_start", start)
    model = make("LFP", validation_fraction=0.1)
    blockwise(model, X, passes=2, n_blocks=2)
    trained = len(X) - len(model._row_samples["held"][1])
    assert sum(starts) == 2 * trained


def test_code_mixture_is_fitted_at_the_first_sample_after_partial_fit(digits01):
    """With ``n_prior_components > 1`` a call leaves the codes' mixture to the next
    ``sample`` (fitting it every call would cost more than the epoch), which fits it once,
    from the kept rows, the same before and after pickling; the next call drops it."""
    model = GenerativeLatentFlow(image_shape=(1, 8, 8), n_prior_components=3, n_estimators=1,
                                 random_state=0, **TINY).partial_fit(digits01[0][:300])
    assert "code mixture" not in model._derived_state
    restored = pickle.loads(pickle.dumps(model))
    drawn = model.sample(5, random_state=0)
    assert model._derived_state["code mixture"][1][0].shape == (1, 3)
    np.testing.assert_array_equal(model.sample(5, random_state=0), drawn)
    np.testing.assert_array_equal(restored.sample(5, random_state=0), drawn)
    model.partial_fit(digits01[0][300:600])
    assert "code mixture" not in model._derived_state
    assert not np.array_equal(model.sample(5, random_state=0), drawn)


@pytest.mark.parametrize("est", CLASSES)
def test_auto_batch_size_is_that_of_large_data(monkeypatch, est):
    """``batch_size='auto'``: a call's rows are part of data of unknown size, so as many
    batches as 256 rows a batch need (``fit``'s size on large data), not ``fit``'s ten or
    more steps an epoch; of about equal size, so that no short last batch of a block takes a
    full step (on skin's blocks of 560 rows, a batch of 48 rows cost GLF 5 AUROC)."""
    sizes = []
    original = CLASSES[est]._train_step

    def step(model, x, *args):
        sizes.append(len(x))
        return original(model, x, *args)
    monkeypatch.setattr(CLASSES[est], "_train_step", step)
    model = make(est, batch_size="auto").partial_fit(manifold(1000))
    trained = 1000 - len(model._row_samples["held"][1])
    assert len(sizes) == -(-trained // 256)
    assert sum(sizes) == trained and max(sizes) - min(sizes) < len(sizes)


@pytest.mark.parametrize("est", CLASSES)
def test_a_block_where_a_feature_is_constant_keeps_its_noise_variance(est):
    """``sigma_j^2`` after a call pools the residuals of the calls before it: a last block in
    which one feature never varies does not give that feature a variance near zero (which
    would make every later row where it varies look anomalous)."""
    rows = np.random.RandomState(0).standard_normal((1000, 8)).astype(np.float32)
    rows[800:, 0] = 0.0
    model = make(est, n_components=2)
    blockwise(model, rows, n_blocks=5)
    variance = model.noise_variance_.mean(axis=0)
    assert variance[0] > 0.1 * np.median(variance[1:])
