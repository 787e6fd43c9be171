"""The training loop both estimators share: epochs of shuffled mini-batches, the trimmed
loss, the convergence test and early stopping, rollback on divergence and on interruption.

A model fills ``_train_step`` (one mini-batch: inference, losses, :meth:`_optimize`) and may
hook ``_prepare_rows`` (per-row state advanced ahead of the batches, such as LFP's persistent
chains), ``_end_epoch`` and ``_convergence_loss``.
"""

import copy
import math
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

_MAX_ROLLBACKS = 3


def adam(params, **kwargs):
    """``torch.optim.Adam`` with the fused kernel: one kernel for all parameters rather than
    a loop over tensors, which dominates the step of small networks (benchmarks/RESULTS.md,
    "Profile: fit and inference")."""
    return torch.optim.Adam(params, fused=True, **kwargs)


def _clone(state):
    """A copy of a nested state dict: tensors cloned, containers rebuilt, the rest shared
    (immutable numbers and strings)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _clone(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(value) for value in state)
    return state


def torch_generator(seed, device):
    """A private generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


class EpochProgress:
    """What ``verbose`` shows of a fit: the loss's terms by name after each epoch, with the
    time spent and an estimate of the time left (epochs left times the mean epoch so far);
    a progress bar where ``tqdm`` is installed, a line an epoch otherwise. ``partial_fit``'s
    one epoch a call prints a line."""

    def __init__(self, total, partial=False):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.bar = None
        if not partial:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="epoch", desc="fit")
            except ImportError:
                pass

    def update(self, epoch, values):
        self.done += 1
        shown = ", ".join(f"{name} = {value:.5g}" for name, value in values.items())
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=False)
            self.bar.update()
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        print(f"Epoch {epoch}, {shown} ({elapsed:.1f} s"
              + (f", about {left:.0f} s left)" if self.total > self.done else ")"), flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class TrainingMixin:
    """The epoch loop of :class:`~skflowgen._base.BaseLatentFlow`'s ``fit``."""

    def _train(self, x_train, x_val, generator, partial=False):
        """Epoch loop: convergence test, early stopping, rollback on divergence and on Ctrl-C.

        An epoch counts as good when its loss and a scoring pass at its final weights are
        finite; otherwise the fit rolls back to the last good epoch and halves the learning
        rates, a bounded number of times. ``partial`` (``partial_fit``): one epoch at a
        constant learning rate, without the convergence test; a non-finite epoch raises
        ``FloatingPointError`` and Ctrl-C goes through, for ``partial_fit`` to restore the
        whole estimator.
        """
        best, no_improvement, rollbacks = np.inf, 0, 0
        good = best_state = self._state()
        tol = None if partial else self.tol
        max_iter = 1 if partial else self._resolved_max_iter(len(x_train))
        progress = EpochProgress(max_iter, partial) if self.verbose else None
        try:
            for _ in range(max_iter):
                rates = self._learning_rates()
                # partial_fit: an epoch of the data's rows, of unknown number
                stats = self._run_epoch(x_train, generator, None if partial else len(x_train))
                if not np.all(np.isfinite(stats)):
                    if partial:  # all or nothing: partial_fit restores the whole estimator
                        raise FloatingPointError("non-finite loss")
                    rollbacks += 1
                    self._load_state(good)
                    if rollbacks > _MAX_ROLLBACKS:
                        warnings.warn(
                            f"Training diverged {rollbacks} times (non-finite loss); stopped "
                            f"after {self.n_iter_} epochs with the last good weights. Lower "
                            "learning_rate_init" + self._divergence_hint + ".",
                            ConvergenceWarning, stacklevel=3)
                        break
                    self._set_learning_rates([0.5 * rate for rate in rates])
                    warnings.warn(f"Non-finite loss in epoch {self.n_iter_ + 1}: rolled back to "
                                  "the last good weights and halved the learning rates.",
                                  RuntimeWarning, stacklevel=3)
                    continue
                self._end_epoch(stats, len(x_train))
                if not partial:  # the schedules count fit's epochs
                    for _, scheduler in self._optimizers:
                        scheduler.step()
                self.n_iter_ += 1
                terms = dict(zip(self._loss_terms, stats[:len(self._loss_terms)].tolist()))
                self.loss_curve_.append(sum(terms.values()))
                criterion = self._convergence_loss(stats)
                if x_val is not None:
                    self.validation_scores_.append(float(self._score_rows(
                        x_val, data=False, method=self._likelihood_score).mean()))
                    criterion = -self.validation_scores_[-1]
                    terms["validation score"] = self.validation_scores_[-1]
                if progress is not None:
                    progress.update(self.n_iter_, {"loss": self.loss_curve_[-1], **terms})
                good = self._state()
                if tol is not None:  # None: a fixed budget of max_iter epochs
                    improved = criterion < best - tol
                    no_improvement = 0 if improved else no_improvement + 1
                if criterion < best:
                    best, best_state = criterion, good
                if tol is not None and no_improvement >= self.n_iter_no_change:
                    break
            else:
                if tol is not None:
                    warnings.warn(f"Stopped at max_iter={max_iter} epochs without "
                                  "converging; increase max_iter.", ConvergenceWarning,
                                  stacklevel=3)
        except KeyboardInterrupt:
            if partial:
                raise
            self._load_state(good)
            warnings.warn(f"Fit interrupted: keeping the weights of the last completed epoch "
                          f"(n_iter_={self.n_iter_}).", RuntimeWarning, stacklevel=3)
        finally:
            if progress is not None:
                progress.close()
            for name in self._network_names:
                getattr(self, name).eval()
        if x_val is not None:
            self._load_state(best_state)

    _divergence_hint = ""

    # Attributes that live only during a fit (per-row or per-group training state); dropped
    # when training ends, however it ends.
    _fit_state = ()

    def _run_epoch(self, x, generator, n_rows):
        """One pass over shuffled mini-batches of ``x`` (each :meth:`_lookahead_rows` of them
        first handed to :meth:`_prepare_rows`), sized for an epoch of ``n_rows`` rows (None:
        of unknown size, then as many batches of about equal size), then a scoring pass of
        the last batch at the final weights (a step can leave weights that only fail on the
        next forward pass). The only host sync is at the end."""
        for name in self._network_names:
            getattr(self, name).train()
        perm = torch.randperm(len(x), generator=generator, device=x.device)
        batch_size = self._batch_size(n_rows)
        if n_rows is None:  # partial_fit: as many batches, of about equal size (no short one)
            batch_size = -(-len(x) // -(-len(x) // batch_size))
        lookahead = self._lookahead_rows(batch_size, n_rows)
        totals = 0
        for start in range(0, len(x), batch_size):
            if start % lookahead == 0:
                self._prepare_rows(x, perm[start:start + lookahead], generator)
            rows = perm[start:start + batch_size]
            xb = x[rows]
            totals = totals + self._train_step(*self._observed(xb), generator, rows) * len(xb)
        with torch.no_grad():
            x_last, mask = self._observed(xb)
            probe = self._log_joint(x_last, mask, self._infer_latent(x_last, mask)).sum()
        return torch.cat([totals / len(x), probe[None]]).cpu().numpy()

    def _lookahead_rows(self, batch_size, n_rows):
        """Rows (a multiple of ``batch_size``) that :meth:`_prepare_rows` gets at a time,
        of the ``n_rows`` of an epoch."""
        return batch_size

    def _prepare_rows(self, x, rows, generator):
        """Hook before the training steps on ``x[rows]``, the next rows of the epoch's
        shuffle: per-row state a model keeps (LFP's persistent chains) is advanced here,
        for many batches at once."""

    def _optimize(self, *losses, optimizers=None):
        """One step of ``optimizers`` (default: every network's) on the sum of the trimmed
        means of the per-row ``losses`` (each (n_members, n), n free to differ): for each
        member, the mean over the ``support_fraction`` share of the rows with its lowest
        loss (least trimmed squares; None keeps ``1 - contamination``). The members' means
        are summed, so each member follows its own gradient. Returns the untrimmed mean of
        the first."""
        support = (1 - self.contamination if self.support_fraction is None
                   else self.support_fraction)
        loss = 0
        for rows in losses:
            kept = max(1, math.ceil(support * rows.shape[-1]))
            kept_rows = rows if kept == rows.shape[-1] else \
                torch.topk(rows, kept, dim=-1, largest=False, sorted=False).values
            loss = loss + kept_rows.mean(dim=-1).sum()
        optimizers = [o for o, _ in self._optimizers] if optimizers is None else optimizers
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        return losses[0].detach().mean()

    # the names of the terms of the loss (per row) that ``_train_step`` returns first
    _loss_terms = ("loss",)

    def _convergence_loss(self, stats):
        """The epoch quantity whose stalling stops training: the mean loss."""
        return float(np.sum(stats[:len(self._loss_terms)]))

    def _end_epoch(self, stats, n_rows):
        """Refit each ``sigma_j^2`` by maximum likelihood from the epoch's residuals.

        ``stats`` starts with the epoch mean of ``_train_step``'s output over ``n_rows`` rows:
        ``[loss, *residual_stats]`` (see :meth:`_residual_stats`).
        """
        if self._fits_noise:
            self._fit_noise_variance(stats, n_rows)

    def _fit_noise_variance(self, stats, n_rows):
        """``sigma_j^2`` from residual ``stats`` (means over ``n_rows`` rows). With
        ``partial_fit``, pooled with the earlier calls' over about one pass: as many rows in
        all as the distinct training rows seen (at most the 10,000 kept), the calls before
        weighted by the rows they stand for, as ``fit`` takes them from an epoch. A call of a
        few hundred rows alone gave a feature constant in its block a variance near zero
        (pooled residuals kept in ``_row_samples['residuals']`` at the end of a call)."""
        mean_squared, observed = self._split_residual_stats(stats)
        samples = vars(self).get("_row_samples")
        if samples is not None:  # partial_fit
            if samples["residuals"] is not None:
                n_before, (squared_before, observed_before) = samples["residuals"]
                weight = min(n_before, max(0, len(samples["training"][0]) - n_rows))
                mean_squared, observed = (
                    (n_rows * now + weight * before) / (n_rows + weight) for now, before in
                    ((mean_squared, squared_before), (observed, observed_before)))
                n_rows += weight
            samples["pending residuals"] = n_rows, (mean_squared, observed)
        self._set_noise_variance(mean_squared, observed)

    def _after_fit(self, x_train):
        """Hook after training, before ``offset_`` is set."""

    def _learning_rates(self):
        return [g["lr"] for optimizer, _ in self._optimizers for g in optimizer.param_groups]

    def _set_learning_rates(self, rates):
        groups = [g for optimizer, _ in self._optimizers for g in optimizer.param_groups]
        for group, rate in zip(groups, rates):
            group["lr"] = rate

    def _snapshot(self):
        """Everything a ``partial_fit`` call may change: the attributes (containers copied
        one level: the call replaces their items) and the networks' and optimizers' state."""
        attributes = {name: copy.copy(value) if isinstance(value, (dict, list)) else value
                      for name, value in vars(self).items()}
        return attributes, self._state() if "flow_" in attributes else None

    def _restore(self, snapshot):
        """Put the estimator back as :meth:`_snapshot` found it."""
        attributes, state = snapshot
        vars(self).clear()
        vars(self).update(attributes)
        if state is not None:
            self._load_state(state)

    def _state(self):
        """A copy of everything training changes, for rollback."""
        return _clone({
            "modules": {n: getattr(self, n).state_dict() for n in self._network_names},
            "optimizers": [(o.state_dict(), s.state_dict()) for o, s in self._optimizers],
        })

    def _load_state(self, state):
        for name, module_state in state["modules"].items():
            getattr(self, name).load_state_dict(module_state)
        for (optimizer, scheduler), (o_state, s_state) in zip(self._optimizers,
                                                              state["optimizers"]):
            optimizer.load_state_dict(o_state)
            scheduler.load_state_dict(s_state)
