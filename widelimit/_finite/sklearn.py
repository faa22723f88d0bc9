"""``DictionaryLearner``: a scikit-learn estimator over ``fit_dictionary`` (optional: needs
``pip install 'widelimit[sklearn]'``; ``widelimit.DictionaryLearner`` imports it on first use)."""

from __future__ import annotations

import jax
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .codes import encode
from .fit import fit_dictionary


class DictionaryLearner(TransformerMixin, BaseEstimator):
    """min_{D, b, Z ≥ 0} (1/2N) Σ ||x_n − b − D z_n||² + α (1/N) Σ ||z_n||₁ with unit atom rows.

    Named as scikit-learn's ``MiniBatchDictionaryLearning``: ``n_components`` atoms, sparsity
    weight ``alpha`` (widelimit's λ), ``random_state`` (None, int or ``RandomState``; it draws the
    JAX key). ``fit`` returns self with ``components_`` (n_components, n_features), ``bias_``,
    ``loss_``, ``n_iter_``, ``n_features_in_``; ``transform`` gives the exact nonnegative codes;
    ``partial_fit`` runs ``max_epochs`` more epochs on a batch, starting from the current atoms.
    ``tol`` is the relative loss decrease that ends the alternating epochs (``fit_dictionary``'s
    ``loss_tol``); full-batch fits then polish until their first-order conditions hold.
    """

    def __init__(
        self,
        n_components: int = 8,
        *,
        alpha: float = 1.0,
        fit_bias: bool = True,
        max_epochs: int = 100,
        batch_size: int | None = None,
        tol: float = 1e-6,
        random_state=None,
        progress: bool = False,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.fit_bias = fit_bias
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.tol = tol
        self.random_state = random_state
        self.progress = progress

    def _key(self):
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return jax.random.PRNGKey(seed)

    def _fit(self, X, init, init_bias, reset: bool):
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset)
        batch = None if self.batch_size is None else min(self.batch_size, X.shape[0])
        fit = fit_dictionary(
            X,
            self.n_components,
            self.alpha,
            key=self._key(),
            fit_bias=self.fit_bias,
            init=init,
            init_bias=init_bias,
            max_epochs=self.max_epochs,
            batch_size=batch,
            loss_tol=self.tol,
            progress=self.progress,
        )
        self.fit_ = fit
        self.components_ = np.asarray(fit.atoms, dtype=X.dtype)
        self.bias_ = np.asarray(fit.bias, dtype=X.dtype)
        self.loss_ = float(fit.loss)
        self.n_iter_ = getattr(self, "n_iter_", 0) * (not reset) + int(fit.n_epochs)
        return fit, X

    def fit(self, X, y=None):
        self._fit(X, None, None, reset=True)
        return self

    def partial_fit(self, X, y=None):
        first = not hasattr(self, "components_")
        init = None if first else self.components_
        init_bias = None if first or not self.fit_bias else self.bias_
        self._fit(X, init, init_bias, reset=first)
        return self

    def fit_transform(self, X, y=None):
        fit, X = self._fit(X, None, None, reset=True)
        return np.asarray(fit.codes, dtype=X.dtype)

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        b = self.bias_ if self.fit_bias else None
        return np.asarray(encode(self.components_, b, X, self.alpha), dtype=X.dtype)

    def inverse_transform(self, codes):
        check_is_fitted(self)
        out = np.asarray(codes) @ self.components_
        return out + self.bias_ if self.fit_bias else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
