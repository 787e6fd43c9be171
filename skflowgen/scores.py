"""The anomaly scores of a fitted latent-flow model, one small function each.

``score_method`` picks one of :data:`SCORES` for ``score_samples``, ``decision_function``
and ``predict``; ``score`` (model selection) always uses :func:`marginal`, the one estimate
of ``log p(x)`` that is comparable across latent sizes.

Each score takes a chunk of rows ``x`` in the networks' units (``mask``: their observed
entries, or None when all are), their inferred latents ``z`` of shape (n_members, n, d) and
the call's importance draws ``draws`` (shared by every row, so that a row's score never
depends on its chunk), and returns each member's score (n_members, n), higher = more normal.

- ``'joint'``, the papers' anomaly score: the log joint at the inferred latent,
  ``log p(x, z~) = log N(x; g(z~), diag(sigma^2)) + log p(z~)``. Cheap (no decoder pass
  beyond the inference), but a density over x *and* the d latent coordinates: its values
  shift with ``n_components``, so it cannot compare models of different latent sizes.
  Choose it on tables when scoring cost matters (GLF's default).
- ``'marginal'``: ``log p(x) = log E_q[p(x, z) / q(z)]`` by importance sampling with
  ``q = N(z~, tau^2 I)`` around the inferred latent (``tau`` the approximate posterior
  scale): a density of x alone, comparable across ``n_components``, step sizes and the
  other hyperparameters; it costs a decoder and flow pass per draw. Choose it on tables
  with LFP (its default), and to compare models (``score`` always uses it).
- ``'knn'``: the k-nearest-neighbour density estimate of the inferred code among the codes of
  the training rows (Loftsgaarden and Quesenberry 1965), ``log p_knn(z~) = log k - log m -
  log V_d - d log r_k``, ``r_k`` the distance from ``z~`` to its k-th nearest training code,
  ``m`` the training codes kept, ``V_d`` the volume of the unit ball. A density of the code
  alone, local rather than the flow's smooth global one: it asks whether a row's code lies
  among the codes of training rows, not how well the row is reconstructed, so it does not
  rank images by how simple they are (Nalisnick et al. 2019), and an unseen kind of image
  lands away from the training codes even where the flow's density is high. On images, where
  the two likelihoods above rank simple pictures as normal, it ranked held-out digits of
  ``load_digits`` best of these scores and held-out Fashion-MNIST classes below ``'lof'``
  and below LOF on the pixels (benchmarks/RESULTS.md, "Images: load_digits" and
  "Images: Fashion-MNIST").
- ``'lof'``: minus the local outlier factor of the inferred code among the same training
  codes (Breunig et al. 2000; ``LocalOutlierFactor(n_neighbors=5, novelty=True)
  .score_samples`` on the codes): the mean ratio of the local densities of the code's
  neighbours to its own, so that a code in a sparse but known region (a class whose images
  vary more) is not flagged as a code in a sparse region of a dense class is. About -1 for
  an inlier. Of the single scores the one ahead of LOF on the pixels on both image tasks
  (Fashion-MNIST: first of them; ``load_digits``: second to ``'knn'``), the image default
  before ``'local'``. Its 5 neighbours, those of ``'knn'``, were chosen against 10 and 20 on
  both tasks (same sections).

- ``'fused'``: the mean of two scores of opposite kinds, each standardised by its median and
  interquartile range over the rows the model keeps (each row scored as a new row): the
  ``'knn'`` log-density of the code, which asks whether the row lies where training rows lie
  *along* the learned manifold, and the reconstruction term ``log p(x | z~)`` (of the
  ensemble's reconstruction, the members' mean decoding), which asks how far the row lies
  *off* it. A row unusual in either way is flagged: the one score
  where the other misses (on the ADBench sets the code's neighbours found the anomalies of
  annthyroid and vowels that the reconstruction missed, and the reconstruction those of
  cardio and skin). Standardising, as score-combination studies do (Aggarwal and Sathe
  2015), weighs the two alike whatever their units. Not a density: its values are in
  standardised units. The default on tables (``'auto'``): of the single scores and their
  combinations measured it ranked the anomalies of the 18 ADBench sets best, or tied for
  best, for both estimators (benchmarks/RESULTS.md, "Detection study on ADBench").

- ``'local'``: the mean of the two local scores of the code, standardised like ``'fused'``'s:
  ``'lof'`` (is the code as dense as its neighbours?) and the log-density of the code by its
  *nearest* kept code, ``'knn'`` with one neighbour (is there a training row like this one?).
  LOF alone misses an unseen kind of image whose codes gather in a cluster of their own
  (they are as dense as each other); the nearest code alone misses one that lands in a
  sparse region of known images. GLF's default on images (``score_method='auto'`` with
  ``image_shape``): of the scores and combinations of the codes in the image detection study
  (benchmarks/RESULTS.md, "Image detection study") the one ahead of ``'lof'`` and of kNN
  and LOF on the pixels on both image tasks, for both estimators at 40 epochs.

- ``'local_features'``: the mean of ``'local'``'s two scores of the code and the same two
  in the space of the encoder's last feature maps (the output of its last convolution,
  flattened; its last hidden layer on tables), all four standardised alike. As PatchCore
  scores images by neighbours among intermediate features rather than a bottleneck (Roth et
  al. 2022), the maps keep where in the image a pattern lies, which the code compresses
  away; the code keeps what the generator learned of the whole image. Each space finds
  anomalies the other misses (held-out Fashion-MNIST trousers by the maps, dresses by the
  code). LFP's default on images: after its 80 epochs its code's ``'local'`` ranked held-out
  digits lower than after 40 and its maps did not, and the mean of both spaces ranked held-out
  classes above kNN and LOF on the pixels on both image tasks (benchmarks/DEFAULTS.md,
  "Images"). It keeps the maps of the kept rows (channels x height x width floats a row and
  member), left out of a pickle and recomputed from the rows at first use.

The codes (or maps) of the rows that the local scores compare with, and the neighbour
search itself, live in :mod:`skflowgen.outlier`: a row is never its own neighbour
(its copy among them is left out), so a row given to ``fit`` is scored as a new row like it
would be.
"""

import math
from typing import Callable, NamedTuple

import torch

from .networks import hidden_features, member_mean
from .outlier import nearest

N_NEIGHBORS = 5  # of the 'knn' and 'lof' scores
_LOG_2PI = math.log(2 * math.pi)


def joint(model, x, mask, z, draws):
    """``log p(x | z~) + log p(z~)``."""
    return model._log_joint(x, mask, z)


def marginal(model, x, mask, z, draws):
    """Importance-sampled ``log p(x)`` with proposal ``N(z~, tau^2 I)``, one draw of
    ``draws`` (m, d) per importance sample. The rows go through in blocks of
    ``model._chunk_size(m)`` rows, a power of two (a whole chunk keeps the latents'
    inference at its own, larger size): within a chunk of a multiple of 16 rows, every block
    has 16 rows or more, so that a row's score does not depend on its block."""
    tau = model._posterior_scale()
    members, n, d = z.shape
    m = len(draws)
    log_q = -0.5 * draws.square().sum(dim=-1) - d * (torch.log(tau) + 0.5 * _LOG_2PI)
    rep = (lambda t: None if t is None else t.repeat_interleave(m, dim=0))
    block = model._chunk_size(m)
    scores = []
    for start in range(0, n, block):
        rows = slice(start, start + block)
        zb = z[:, rows]
        zs = (zb[:, :, None, :] + tau[..., None] * draws).flatten(1, 2)
        log_joint = model._log_joint(rep(x[rows]), rep(None if mask is None else mask[rows]),
                                     zs).view(members, -1, m)
        scores.append(torch.logsumexp(log_joint - log_q, dim=-1) - math.log(m))
    return torch.cat(scores, dim=1)


def knn(model, x, mask, z, draws):
    """``log p_knn(z~)`` among the codes of the training rows the model keeps."""
    return _knn_log_density(model, z, N_NEIGHBORS)


def _knn_log_density(model, z, n_neighbors, space=None):
    """``log k - log m - log V_d - d log r_k`` with ``k = n_neighbors`` (at most ``m - 1``),
    of the codes ``z`` or of points ``z`` of ``space`` (the kept rows' points in it)."""
    reference = model._training_codes(z.device, space)
    members, m, d = reference.shape
    k = max(1, min(n_neighbors, m - 1))
    radius = nearest(z, reference, k)[0][..., -1].clamp_min(1e-30)
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return math.log(k) - math.log(m) - log_ball - d * torch.log(radius)


def lof(model, x, mask, z, draws):
    """Minus the local outlier factor of ``z~`` among the kept training codes: the mean
    ratio of its ``N_NEIGHBORS`` nearest codes' local reachability density to its own."""
    return _local_outlier_factor(model, z)


def _local_outlier_factor(model, z, space=None):
    """Minus the LOF of the codes ``z``, or of points ``z`` of ``space``."""
    reference = model._training_codes(z.device, space)
    k = max(1, min(N_NEIGHBORS, reference.shape[1] - 1))
    k_distance, density = model._lof_fit(k, z.device, space)
    distances, index = nearest(z, reference, k)
    flat = index.flatten(1)
    reach = torch.maximum(distances, torch.gather(k_distance, 1, flat).view_as(index))
    own = 1 / (reach.mean(dim=-1) + 1e-10)
    return -torch.gather(density, 1, flat).view_as(index).mean(dim=-1) / own


def feature_maps(model, x, mask, z):
    """Each member's encoder feature maps of ``x``, flat (n_members, n, h): the last
    convolution's output on images, the last hidden layer on tables; a missing entry is
    filled by the member's decoding of its code ``z`` (None: inferred here, only then)."""
    if mask is not None:
        z = model._infer_latent(x, mask) if z is None else z
        x = torch.where(mask, x, model._decode(z))
    return hidden_features(model.encoder_, x, maps=True)


def _fused_parts(model, x, mask, z):
    """The two scores ``'fused'`` combines, (2, 1, n): the members' mean ``'knn'`` score
    and ``log p(x | z~)`` of the ensemble's reconstruction (the members' mean decoding, as
    ``inverse_transform(transform(x))``), averaged over the members' noise variances."""
    x_hat = member_mean(model._decode(z))[None]
    return torch.stack([member_mean(knn(model, x, mask, z, None)),
                        member_mean(model._log_likelihood(x, x_hat, mask))])[:, None]


def _local_parts(model, x, mask, z):
    """The two scores ``'local'`` combines, (2, 1, n): the members' mean ``'lof'`` score and
    the members' mean log-density of the code by its nearest kept code (``'knn'`` with one
    neighbour)."""
    return torch.stack([member_mean(lof(model, x, mask, z, None)),
                        member_mean(_knn_log_density(model, z, 1))])[:, None]


def _local_feature_parts(model, x, mask, z):
    """The four scores ``'local_features'`` combines, (4, 1, n): ``'local'``'s two of the
    code and the same two in the space of :func:`feature_maps`."""
    h = feature_maps(model, x, mask, z)
    return torch.cat([_local_parts(model, x, mask, z), torch.stack([
        member_mean(_local_outlier_factor(model, h, feature_maps)),
        member_mean(_knn_log_density(model, h, 1, feature_maps))])[:, None]])


def _standardised_mean(model, parts, x, mask, z):
    """Mean of the scores ``parts(model, x, mask, z)``, each minus its median over the kept
    rows, divided by its interquartile range there."""
    center, spread = model._standardisation(parts, z.device)
    return ((parts(model, x, mask, z) - center) / spread).mean(dim=0)


def fused(model, x, mask, z, draws):
    """Standardised mean of the ``'knn'`` score and ``log p(x | z~)``."""
    return _standardised_mean(model, _fused_parts, x, mask, z)


def local(model, x, mask, z, draws):
    """Standardised mean of the ``'lof'`` score and the nearest code's log-density."""
    return _standardised_mean(model, _local_parts, x, mask, z)


def local_features(model, x, mask, z, draws):
    """Standardised mean of ``'local'``'s two scores of the code and of the encoder's last
    feature maps."""
    return _standardised_mean(model, _local_feature_parts, x, mask, z)


class Score(NamedTuple):
    """A score function with what its evaluation needs: ``density`` (a log-density of x,
    which gets the log-Jacobian of the feature scaling to be in the data's units) and
    ``importance`` (it takes the model's ``n_importance_samples`` draws per row)."""
    function: Callable
    density: bool
    importance: bool = False


SCORES = {
    "joint": Score(joint, density=True),
    "marginal": Score(marginal, density=True, importance=True),
    "knn": Score(knn, density=False),
    "lof": Score(lof, density=False),
    "fused": Score(fused, density=False),
    "local": Score(local, density=False),
    "local_features": Score(local_features, density=False),
}
