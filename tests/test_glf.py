"""GenerativeLatentFlow behaviour: the stop-gradient, the fitted noise, sampling, model selection."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from skflowgen import GenerativeLatentFlow
from skflowgen.flows import CouplingFlow

from .conftest import DEVICE, TINY

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _encoder_grads(model, x, stop_gradient):
    """Encoder gradients of one training step, with the optimizer step suppressed."""
    model.set_params(stop_gradient=stop_gradient)

    def backward_only(*losses, optimizers=None):  # support_fraction=1: the means
        sum(rows.mean() for rows in losses).backward()
        return losses[0].detach().mean()
    model._optimize = backward_only
    for p in model.encoder_.parameters():
        p.grad = None
    model._prepare_rows(x, torch.arange(len(x)), None)  # one batch, the flow's group
    model._train_step(x, None, None)
    return [p.grad.clone() for p in model.encoder_.parameters()]


def test_stop_gradient_keeps_flow_nll_out_of_encoder(blob):
    model = GenerativeLatentFlow(max_iter=2, random_state=0, **TINY).fit(blob)
    x = torch.tensor(blob[:32], dtype=torch.float32, device=DEVICE)
    stopped = _encoder_grads(model, x, True)
    # reference: gradient of the reconstruction term alone
    for p in model.encoder_.parameters():
        p.grad = None
    ((x - model.decoder_(model.encoder_(x))).square().sum(dim=-1).mean()).backward()
    recon_only = [p.grad.clone() for p in model.encoder_.parameters()]
    through = _encoder_grads(model, x, False)
    for a, b in zip(stopped, recon_only):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(through, recon_only))


def test_noise_variance_is_mean_squared_training_residual(blob):
    model = GenerativeLatentFlow(n_estimators=1, max_iter=3, random_state=0, **TINY).fit(blob)
    held = {tuple(r) for r in model._held_out_rows}
    training = blob[[tuple(r) not in held for r in blob.astype(np.float32)]]
    assert len(training) == len(blob) - len(held)
    residual = training - model.inverse_transform(model.transform(training))
    np.testing.assert_allclose(model.noise_variance_, np.mean(residual ** 2, axis=0)[None],
                               rtol=1e-4)


def test_training_reduces_reconstruction_error(blob):
    short = GenerativeLatentFlow(max_iter=1, random_state=0, **TINY).fit(blob)
    long = GenerativeLatentFlow(max_iter=60, random_state=0, **TINY).fit(blob)

    def mse(m):
        return np.mean((blob - m.inverse_transform(m.transform(blob))) ** 2)
    assert mse(long) < mse(short)


def test_far_points_score_lower(blob):
    model = GenerativeLatentFlow(max_iter=30, random_state=0, **TINY).fit(blob)
    far = blob[:20] + 5 * blob.std(axis=0)
    assert model.score_samples(far).max() < np.median(model.score_samples(blob))


def test_sample_reproducible_and_fresh(blob):
    model = GenerativeLatentFlow(max_iter=2, random_state=0, **TINY).fit(blob)
    np.testing.assert_array_equal(model.sample(5, random_state=1), model.sample(5, random_state=1))
    assert not np.allclose(model.sample(5, random_state=1), model.sample(5, random_state=2))
    assert model.sample(7).shape == (7, blob.shape[1])


def test_bce_decoder_outputs_probabilities(digits01):
    X = digits01[0][:200]
    model = GenerativeLatentFlow(reconstruction="bce", max_iter=2, random_state=0, **TINY).fit(X)
    out = model.sample(50, random_state=0)
    assert out.min() >= 0 and out.max() <= 1
    assert np.isfinite(model.score_samples(X)).all()


def test_image_shape_uses_convolutions_that_learn_the_digits(digits01):
    """``image_shape`` switches to a convolutional autoencoder, which learns the images:
    held-out digits reconstruct closer than the mean image."""
    X = digits01[0]
    train, test = X[:1000], X[1000:1200]
    model = GenerativeLatentFlow(image_shape=(1, 8, 8), n_components=8, n_estimators=1,
                                 max_iter=10, random_state=0, device=DEVICE).fit(train)
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.encoder_.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder_.modules())
    decoded = model.inverse_transform(model.transform(test))
    assert np.mean((decoded - test) ** 2) < np.mean((train.mean(axis=0) - test) ** 2)


def test_early_stopping_stops_after_the_best_epoch_and_keeps_its_weights(monkeypatch, blob):
    """With ``early_stopping`` the validation score of each epoch is recorded, training
    stops ``n_iter_no_change`` epochs after the best one, and the model keeps the best
    epoch's networks (its noise variance is then refitted to them, as after any fit)."""
    networks = ("encoder_", "decoder_", "flow_")
    epochs = []
    end_epoch = GenerativeLatentFlow._end_epoch

    def recording(model, stats, n_rows):
        end_epoch(model, stats, n_rows)
        epochs.append({name: {k: v.clone() for k, v in getattr(model, name).state_dict().items()}
                       for name in networks})
    monkeypatch.setattr(GenerativeLatentFlow, "_end_epoch", recording)
    model = GenerativeLatentFlow(max_iter=60, early_stopping=True, tol=0.0, n_iter_no_change=3,
                                 learning_rate_init=0.01, random_state=0, **TINY).fit(blob)
    scores = model.validation_scores_
    best = int(np.argmax(scores))
    assert best < model.n_iter_ - 1, "the run must pass its best epoch for this test to bite"
    assert model.n_iter_ == best + 1 + 3 < 60

    def same(state, model):
        return all(torch.equal(state[name][k], v) for name in networks
                   for k, v in getattr(model, name).state_dict().items())
    assert same(epochs[best], model)
    assert not same(epochs[-1], model)


def test_warm_start_continues(blob):
    model = GenerativeLatentFlow(max_iter=2, warm_start=True, random_state=0, **TINY).fit(blob)
    encoder = model.encoder_
    model.fit(blob)
    assert model.n_iter_ == 4 and len(model.loss_curve_) == 4
    assert model.encoder_ is encoder


def test_grid_search_parallel_matches_serial(blob):
    grid = {"n_components": [2, 8]}
    est = GenerativeLatentFlow(max_iter=3, random_state=0, **TINY)
    serial = GridSearchCV(est, grid, cv=3, n_jobs=1).fit(blob)
    parallel = GridSearchCV(est, grid, cv=3, n_jobs=2).fit(blob)
    assert serial.best_params_ == parallel.best_params_
    np.testing.assert_allclose(serial.cv_results_["mean_test_score"],
                               parallel.cv_results_["mean_test_score"], rtol=1e-5)
    assert np.isfinite(serial.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize("batch_size, stop_gradient, flow_rows", [
    (6, True, [12] * 6),        # groups of two batches: 'auto' is 16 rows for 72
    (6, False, [6] * 12),       # the NLL trains the encoder: a flow step per batch
    (32, True, [32, 32, 8]),    # batches above 'auto': a flow step per batch
])
def test_flow_steps_once_per_group_of_small_batches(monkeypatch, blob, batch_size, stop_gradient,
                                                    flow_rows):
    """With the stop-gradient, the flow takes one step on the codes of each group of batches
    of about 'auto' rows, the autoencoder one per batch: as many flow steps whatever the
    batch size."""
    model = GenerativeLatentFlow(max_iter=2, random_state=0, stop_gradient=stop_gradient,
                                 **{**TINY, "batch_size": batch_size})
    seen = []
    log_prob = CouplingFlow.log_prob

    def recording(flow, z):
        if torch.is_grad_enabled():
            seen.append(z.shape[1])
        return log_prob(flow, z)
    monkeypatch.setattr(CouplingFlow, "log_prob", recording)
    model.fit(blob[:72])  # every row trains (nothing needs rows held out)
    assert seen == flow_rows * 2
    autoencoder, flow = (optimizer for optimizer, _ in model._optimizers)
    steps = [int(state["step"]) for state in (next(iter(o.state.values())) for o in
                                              (autoencoder, flow))]
    assert steps == [2 * -(-72 // batch_size), 2 * len(flow_rows)]
    assert not hasattr(model, "_codes") and not hasattr(model, "_group_rows")
