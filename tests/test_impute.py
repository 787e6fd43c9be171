"""Missing values for both estimators: inference from the observed entries, impute, and
GenerativeImputer as a pipeline step."""

import numpy as np
import pytest
import torch

import skflowgen.impute
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skflowgen import GenerativeImputer, GenerativeLatentFlow, LangevinFlowPriorGenerator

from .conftest import DEVICE, TINY

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CLASSES = {"GLF": GenerativeLatentFlow, "LFP": LangevinFlowPriorGenerator}


def make(est, **params):
    extra = {"n_steps": 10} if est == "LFP" else {}
    return CLASSES[est](**{"random_state": 0, "device": DEVICE, **extra, **params})


@pytest.mark.parametrize("est", CLASSES)
def test_missing_entries_do_not_influence_inference(est, blob):
    model = make(est, max_iter=5, **TINY).fit(blob)
    X = blob[:10].copy()
    X[:, 2] = np.nan
    other = blob[:10].copy()
    other[:, 2] = 1e3  # a wild value where the entry is missing must not matter
    x, mask = model._observed(torch.tensor(X, dtype=torch.float32, device=DEVICE))
    z_nan = model._infer_latent(x, mask)
    z_other = model._infer_latent(torch.tensor(other, dtype=torch.float32, device=DEVICE), mask)
    torch.testing.assert_close(z_nan, z_other)
    assert not np.allclose(model.transform(X), model.transform(other))


@pytest.mark.parametrize("est", CLASSES)
@pytest.mark.parametrize("missing_in_training", [False, True])
def test_impute_keeps_observed_and_beats_column_means(digits01, est, missing_in_training):
    X, _ = digits01
    rng = np.random.RandomState(0)
    train, test = X[:1200], X[1200:1500]
    if missing_in_training:
        train = np.where(rng.rand(*train.shape) < 0.3, np.nan, train)
    model = make(est, n_components=8, max_iter=15).fit(train)
    holes = rng.rand(*test.shape) < 0.3
    corrupted = np.where(holes, np.nan, test)
    filled = model.impute(corrupted)
    np.testing.assert_array_equal(filled[~holes], test[~holes])
    assert np.isfinite(filled).all()
    mean_fill = SimpleImputer().fit(train).transform(corrupted)
    rmse = np.sqrt(np.mean((filled - test)[holes] ** 2))
    rmse_mean = np.sqrt(np.mean((mean_fill - test)[holes] ** 2))
    assert rmse < rmse_mean


def test_generative_imputer_in_a_pipeline_before_a_classifier(digits01):
    """The imputer hands the classifier complete rows filled by its fitted model (closer to
    the hidden truth than column means, observed entries untouched), and the classifier
    learns from them."""
    X_full, y = digits01
    rng = np.random.RandomState(0)
    holes = rng.rand(*X_full.shape) < 0.3
    X = np.where(holes, np.nan, X_full)
    train, test = slice(0, 1200), slice(1200, None)
    imputer = GenerativeImputer(GenerativeLatentFlow(max_iter=10, random_state=0, device=DEVICE))
    pipeline = make_pipeline(imputer, LogisticRegression(max_iter=500))
    pipeline.fit(X[train], y[train])
    filled = pipeline[0].transform(X[test])
    truth, hidden = X_full[test], holes[test]
    np.testing.assert_array_equal(filled[~hidden], truth[~hidden])
    # the best fill that is constant in each column (SimpleImputer's kind, whatever its
    # statistic): the mean of the hidden true values of that column
    best_constant = np.where(hidden, np.nanmean(np.where(hidden, truth, np.nan), axis=0), truth)

    def rmse(fill):
        return np.sqrt(np.mean((fill - truth)[hidden] ** 2))
    assert rmse(filled) < rmse(best_constant)
    accuracy = pipeline.score(X[test], y[test])
    chance = DummyClassifier().fit(X[train], y[train]).score(X[test], y[test])
    assert accuracy > chance + 0.5


def test_generative_imputer_defaults_to_a_denoising_glf_as_wide_as_the_row(monkeypatch,
                                                                          digits01):
    """Without an estimator the imputer fits GenerativeLatentFlow with ``n_components`` the
    row's width and ``_DEFAULT_MODEL``'s parameters (here made small), seeded by its own
    ``random_state``, and fills with its impute."""
    small = dict(hidden_layer_sizes=(16,), mask_fraction=0.2, max_iter=3)
    monkeypatch.setattr(skflowgen.impute, "_DEFAULT_MODEL", small)
    X, _ = digits01
    X = np.where(X[:300] > 0.9, np.nan, X[:300])
    imputer = GenerativeImputer(random_state=0).fit(X)
    model = imputer.estimator_
    assert type(model) is GenerativeLatentFlow
    assert {**model.get_params(), "random_state": None} == \
        GenerativeLatentFlow(X.shape[1], **small).get_params()
    assert model.n_iter_ == 3
    np.testing.assert_array_equal(imputer.transform(X), model.impute(X))
    again = GenerativeImputer(random_state=0).fit(X).transform(X)
    np.testing.assert_allclose(again, imputer.transform(X), atol=1e-5)


def test_early_stopping_keeps_the_round_with_the_best_held_out_fills(digits01):
    """Rounds of ``_ROUND_EPOCHS`` epochs, stopped ``n_iter_no_change`` rounds after the best
    (or at ``max_iter``); the kept model is the best round's and keeps the parameters given;
    the held-out entries are scored in every round."""
    X, _ = digits01
    X = np.where(np.random.RandomState(1).rand(400, 64) < 0.2, np.nan, X[:400])
    rounds = skflowgen.impute._ROUND_EPOCHS
    given = GenerativeLatentFlow(max_iter=8 * rounds, learning_rate_init=3e-2,
                                 random_state=0, **TINY)
    imputer = GenerativeImputer(given, n_iter_no_change=2, random_state=0).fit(X)
    errors = imputer.validation_rmse_
    best = int(np.argmin(errors))
    assert len(errors) - 1 - best == 2 or len(errors) == 8
    assert imputer.estimator_.n_iter_ == rounds * (best + 1)
    assert imputer.estimator_.get_params() == given.get_params()
    plain = GenerativeImputer(given, early_stopping=False).fit(X)
    assert plain.validation_rmse_ is None and plain.estimator_.n_iter_ == 8 * rounds


def test_mask_fraction_hides_observed_entries_from_the_encoder_in_training(monkeypatch, blob):
    """Each training batch's encoder sees every observed entry but a ``mask_fraction`` share
    of them (binomial spread), while the loss counts them all; scoring sees them all."""
    seen = []
    encode = GenerativeLatentFlow._encode

    def spy(self, x, mask):
        seen.append(torch.ones_like(x, dtype=torch.bool) if mask is None else mask)
        return encode(self, x, mask)
    monkeypatch.setattr(GenerativeLatentFlow, "_encode", spy)
    X = np.where(np.random.RandomState(0).rand(*blob.shape) < 0.1, np.nan, blob)
    model = make("GLF", mask_fraction=0.3, max_iter=2, n_estimators=1, **TINY)
    model._train_step = lambda x, mask, *a, **k: (seen.append("step"), GenerativeLatentFlow
                                                  ._train_step(model, x, mask, *a, **k))[1]
    model.fit(X)
    # the masks the encoder got inside training steps: after each "step" marker
    during = [m for before, m in zip(seen, seen[1:]) if isinstance(before, str)]
    shown = torch.cat([m.flatten() for m in during]).float().mean().item()
    observed = 0.9
    assert abs(shown - observed * 0.7) < 0.05
    seen.clear()
    model.score_samples(X)
    assert torch.cat([m.flatten() for m in seen]).float().mean().item() > observed - 0.05
