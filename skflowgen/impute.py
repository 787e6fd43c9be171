"""A pipeline step that fills missing values with a fitted latent-flow model."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from .glf import GenerativeLatentFlow


class GenerativeImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Imputation step for a :class:`~sklearn.pipeline.Pipeline`: ``transform`` fills the NaN
    entries of ``X`` with the ``impute`` of a latent-flow model fitted on ``X``.

    The estimators' own ``transform`` returns latent codes; this wrapper is the way to use
    one of them where scikit-learn expects an imputer (``SimpleImputer``, ``KNNImputer``),
    e.g. before a classifier that does not take NaN.

    Parameters
    ----------
    estimator : GenerativeLatentFlow or LangevinFlowPriorGenerator, default=None
        The model to fit (a clone of it is fitted; NaN entries count as missing). None
        uses ``GenerativeLatentFlow(max_iter=10)``, the faster of the two, which imputed
        both the digits and, with ``image_shape``, the Fashion-MNIST squares better
        (``benchmarks/RESULTS.md``, "Imputation"); ten epochs, as the estimators' table
        default (one epoch for GLF) is set for anomaly ranking. On the digits table neither
        beats :class:`~sklearn.impute.KNNImputer` at ten epochs; a longer fit imputes
        better. On twelve tables at 20% missing completely at random GLF ranks behind
        missForest and :class:`~sklearn.impute.IterativeImputer` by RMSE
        (``benchmarks/RESULTS.md``, "Imputation suite").

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone of ``estimator``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skflowgen import GenerativeImputer
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> X = np.where(np.random.RandomState(0).rand(*X.shape) < 0.3, np.nan, X)
    >>> model = make_pipeline(GenerativeImputer(), LogisticRegression(max_iter=1000))
    >>> model.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    def __init__(self, estimator=None):
        self.estimator = estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y=None):
        """Fit a clone of ``estimator`` on ``X`` (NaN = missing).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=[np.float32, np.float64], ensure_all_finite="allow-nan")
        estimator = GenerativeLatentFlow(max_iter=10) if self.estimator is None \
            else self.estimator
        self.estimator_ = clone(estimator).fit(X)
        return self

    def transform(self, X):
        """``X`` with every NaN filled by ``estimator_.impute``; observed entries unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], ensure_all_finite="allow-nan",
                          reset=False)
        return self.estimator_.impute(X)
