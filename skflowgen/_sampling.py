"""Generation: ``sample`` and the density of the codes it draws latents from (with
``n_prior_components > 1`` a Gaussian mixture of the training codes, else the prior ``flow_``).
"""

import numbers
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._training import torch_generator
from .networks import hidden_features

# The widenings of the codes' mixture (each component's scale; its covariance by the square)
# that sample() chooses among, per member, and the draws it judges each by (see
# choose_widening; benchmarks/DEFAULTS.md, "Generating").
_WIDENINGS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 2.0)
_WIDENING_DRAWS = 1000
# On tables, a column that took at most this many distinct values in training, and at most
# half as many as its observed entries (binary flags, small counts, coded categories), is
# drawn on those values, as tabular synthesizers treat discrete columns apart.
_MAX_SUPPORT = 20


def fit_code_mixture(codes, n_mixture, seed, temperature):
    """Per member, :class:`~sklearn.mixture.GaussianMixture` with ``n_mixture`` full
    covariances (at most one per code; its other defaults) fitted by EM to that member's
    ``codes`` (n_members, n, d), each component's covariance widened by
    ``temperature**2``. Returns float32 arrays: the cumulative weights
    (n_members, K), the means (n_members, K, d) and the widened Cholesky factors ``L_k``
    of the covariances (n_members, K, d, d)."""
    n_mixture = min(n_mixture, codes.shape[1])
    fits = []
    for rows, member_seed in zip(np.asarray(codes, dtype=np.float64),
                                 np.random.RandomState(seed).randint(2 ** 31 - 1, size=len(codes))):
        with warnings.catch_warnings():  # EM's stalling changes no draw's validity
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(GaussianMixture(n_mixture, random_state=member_seed).fit(rows))
    cumulative = np.stack([np.cumsum(f.weights_) / f.weights_.sum() for f in fits])
    means = np.stack([f.means_ for f in fits])
    scales = temperature * np.linalg.cholesky(np.stack([f.covariances_ for f in fits]))
    return tuple(a.astype(np.float32) for a in (cumulative, means, scales))


def moments(rows):
    """The mean and covariance of a set of rows (a float64 array (n, h))."""
    return rows.mean(axis=0), np.cov(rows, rowvar=False)


def frechet_distance(a, b):
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between two sets of rows
    given by their :func:`moments`: the Frechet distance of the Gaussians with those means
    and covariances; the eigenvalues of ``S_a S_b`` (a product of two positive
    semi-definite matrices) are real and non-negative up to rounding."""
    (mu_a, s_a), (mu_b, s_b) = a, b
    root = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * root)


def choose_widening(mixture, reference, decoded_features, seed):
    """Per member, the widening of :data:`_WIDENINGS` whose decoded draws the model's own
    encoder sees most like the training rows: the lowest :func:`frechet_distance` between
    ``decoded_features`` of :data:`_WIDENING_DRAWS` draws (codes (n_members, m, d) to the
    member's encoder features of their decoded rows, (n_members, m, h)) and ``reference``,
    those features of the training rows (n_members, n, h). FID's idea with the model's
    own features in the classifier's place: a decoder that drops detail draws rows whose
    features vary less than the data's, and a wider mixture makes up for it (it chose 1.2
    to 1.3 on load_digits and 1.6 to 1.7 on Fashion-MNIST after 40 epochs; DEFAULTS.md,
    "Generating"). ``mixture``: a :func:`fit_code_mixture` at width 1. Returns an array
    (n_members,)."""
    generator = torch_generator(seed, "cpu")
    cumulative, means, scales = (torch.as_tensor(a) for a in mixture)
    eps = torch.randn(_WIDENING_DRAWS, means.shape[-1], generator=generator)
    uniform = torch.rand(_WIDENING_DRAWS, generator=generator)
    reference = [moments(r) for r in np.asarray(reference, dtype=np.float64)]  # once
    distances = []
    for widening in _WIDENINGS:
        drawn = np.asarray(decoded_features(
            draw_codes((cumulative, means, widening * scales), eps, uniform)), dtype=np.float64)
        distances.append([frechet_distance(moments(d), r) for d, r in zip(drawn, reference)])
    return np.asarray(_WIDENINGS)[np.argmin(distances, axis=0)]


def draw_codes(mixture, eps, uniform):
    """Codes of every member, (n_members, n, d), from a :func:`fit_code_mixture` mixture (as
    tensors on the device of ``eps``): ``mu_k + L_k eps`` for standard normal draws ``eps``
    (n, d), the component ``k`` of each row picked by its uniform draw ``uniform`` (n,)."""
    cumulative, means, scales = mixture
    component = torch.searchsorted(cumulative, uniform.expand(len(cumulative), -1)
                                   .contiguous()).clamp_max(cumulative.shape[1] - 1)
    members = torch.arange(len(cumulative), device=eps.device)[:, None]
    return means[members, component] + (scales[members, component]
                                        @ eps[None, :, :, None])[..., 0]


class SamplingMixin:
    """``sample`` of :class:`~skflowgen._base.BaseLatentFlow`, and the mixture of the codes
    it draws from."""

    def _code_mixture(self):
        """``n_prior_components > 1``: :func:`fit_code_mixture` of the codes of the reference
        rows (every row given to ``fit`` up to 10,000, or ``partial_fit``'s kept sample, and
        the held-out rows with ``novelty``), as the current inference gives them; fitted at
        the first :meth:`sample` after a fit and kept until the codes or the component count
        change. None with 1 component: ``sample`` then draws from ``flow_``."""
        if self._prior_components == 1:
            return None
        key = (self._scoring_key(codes_only=True), self._prior_components)
        return self._derived("code mixture", key, self._fit_code_mixture)

    def _fit_code_mixture(self):
        """:func:`fit_code_mixture` of the training codes, each member's components widened
        by :func:`choose_widening` (the reference rows' missing entries at 0 in the
        networks' units, where the encoder's chains start)."""
        codes = self._training_codes(torch.device("cpu")).numpy()
        cumulative, means, scales = fit_code_mixture(codes, self._prior_components,
                                                     self._inference_seed, 1.0)
        device = self._device()
        with torch.no_grad():
            reference = self._apply(lambda x: hidden_features(
                self.encoder_, torch.nan_to_num(x)).transpose(0, 1),
                self._reference_rows, data=True).transpose(1, 0, 2)
            widening = choose_widening(
                (cumulative, means, scales), reference,
                lambda z: hidden_features(self.encoder_, self._clip(self._decode(
                    z.to(device)))).cpu(), self._inference_seed)
        return cumulative, means, (scales * widening[:, None, None, None]).astype(np.float32)

    def _clip(self, x):
        """With ``image_shape``, decoded images ``x`` clipped to the range of the pixels of
        the reference rows (images are drawn as images are stored; the range kept until the
        next fit); rows unchanged on tables."""
        if self.image_shape is None:
            return x
        return x.clamp(*self._derived("pixel range", None, lambda: (
            float(np.nanmin(self._reference_rows)), float(np.nanmax(self._reference_rows)))))

    def _fit_support(self, X, continuing):
        """On tables, ``_support``: the sorted values each column of ``X`` took (None past
        ``_MAX_SUPPORT`` of them) and its count of observed entries, united with those of
        the earlier calls when ``continuing`` (``partial_fit``'s blocks, ``warm_start``)."""
        if self.image_shape is not None:
            self._support = None
            return
        before = vars(self).get("_support") if continuing else {
            "values": [np.empty(0)] * X.shape[1], "counts": np.zeros(X.shape[1], dtype=int)}
        if before is None:  # pickled before supports were kept: every column continuous
            return
        observed = ~np.isnan(X)
        values = [None if old is None else np.union1d(old, column[seen])
                  for old, column, seen in zip(before["values"], X.T, observed.T)]
        self._support = {"values": [v if v is not None and len(v) <= _MAX_SUPPORT else None
                                    for v in values],
                         "counts": before["counts"] + observed.sum(axis=0)}

    def _on_support(self, X):
        """Each discrete column of the rows ``X`` (see ``_MAX_SUPPORT``) moved to its
        nearest training value."""
        support = vars(self).get("_support") or {"values": (), "counts": ()}
        for j, (values, count) in enumerate(zip(support["values"], support["counts"])):
            if values is not None and 0 < len(values) <= count / 2:
                X[:, j] = values[np.abs(X[:, j, None] - values).argmin(axis=1)]
        return X

    def sample(self, n_samples=1, random_state=None):
        """Generate rows from the model: a latent ``z``, then on tables ``x ~ N(g(z),
        diag(noise_variance_))``, the model's density of a row given its latent, and with
        ``image_shape`` its mean ``g(z)`` (independent pixel noise is not how images vary:
        image generators show the decoded mean). With ``n_prior_components > 1``, ``z`` is
        drawn from a Gaussian mixture of the training codes (``transform`` of the rows
        ``fit`` kept), each member's components widened by the factor, from %(widenings)s,
        whose decoded draws the member's encoder sees most like its training rows (the
        Frechet distance of its last hidden layer, as FID's of a classifier's; chosen at the
        first ``sample``); with 1, ``z = f^{-1}(u)``, ``u ~ N(0, I)``, from ``flow_``. With
        ``image_shape``, pixels are clipped to the range of the training images'. With
        ``n_estimators > 1``, each row from a member drawn uniformly (the members' mixture).
        On tables, a column that took at most 20 distinct values in training, each seen
        twice or more on average (binary flags, small counts, coded categories), is drawn on
        those values: each sampled value moved to the nearest of them, as tabular
        synthesizers treat discrete columns apart (continuous draws of such a column give a
        sample away).

        Two densities of the codes: inference, ``score`` and the density scores of
        :meth:`score_samples` (``'joint'``, ``'marginal'``) read ``flow_``, the prior
        trained with the model; ``sample`` reads the codes' mixture where there is one. On
        load_digits ``flow_``'s draws are far from the data (FD against validation images
        GLF 6.56, LFP 6.53; the codes' mixture, widened by 1.1, 2.20 and 2.28); a flow with
        a mixture base refitted to the codes by maximum likelihood never drew closer than
        the mixture alone. ``flow_`` stays the density of the scores as LFP's inference
        climbs it, and a prior refitted for inference pulled the codes into its components'
        cores (``'lof'`` on held-out digits: 93.4 to 88.6 mean AUPRC). benchmarks/RESULTS.md,
        "Density study, samples: load_digits" and "Samples: load_digits".

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the private generator; None draws fresh samples each call.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        device = self._device()
        mixture = self._code_mixture()
        if mixture is not None:  # on the device once, not per chunk of rows
            mixture = tuple(torch.as_tensor(a, device=device) for a in mixture)
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        generator = torch_generator(seed, "cpu")  # the same draws on any device
        d = self.n_components_
        u = torch.randn(n_samples, d, generator=generator)
        member = torch.randint(self._n_members, (n_samples, 1), generator=generator)
        component = torch.rand(n_samples, 1, generator=generator)  # picks a mixture's component
        noise = torch.randn(n_samples, self.n_features_in_ if self._draws_noise else 0,
                            generator=generator)

        def generate(rows):
            z = self.flow_.inverse(rows[:, :d]) if mixture is None else \
                draw_codes(mixture, rows[:, :d], rows[:, d + 1])
            picked = rows[:, d].long()
            x = self._clip(self._decode(z)[picked, torch.arange(len(rows), device=device)])
            if self._draws_noise:
                x = x + self.noise_.variance[picked, 0].sqrt() * rows[:, d + 2:]
            return self._to_data(x)
        return self._on_support(
            self._apply(generate, torch.cat([u, member.float(), component, noise], dim=1)))

    sample.__doc__ = sample.__doc__ % {"widenings": f"{_WIDENINGS[0]} to {_WIDENINGS[-1]}"}
