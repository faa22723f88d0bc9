"""``DictionaryLearner``: a thin scikit-learn-style estimator over ``fit_dictionary``."""

from __future__ import annotations

import jax
import numpy as np

from .codes import encode
from .fit import fit_dictionary


class DictionaryLearner:
    """sklearn-style wrapper: ``fit(X)`` returns self; fitted ``components_`` (n_atoms, n_features),
    ``bias_``, ``codes_``, ``loss_``, ``n_iter_``; ``transform(X)`` gives exact codes."""

    def __init__(
        self,
        n_atoms: int,
        lam: float,
        *,
        bias: bool = True,
        max_epochs: int = 100,
        batch_size: int | None = None,
        tol: float = 1e-6,
        random_state: int = 0,
        progress: bool = False,
    ):
        self.n_atoms, self.lam, self.bias = n_atoms, lam, bias
        self.max_epochs, self.batch_size, self.tol = max_epochs, batch_size, tol
        self.random_state, self.progress = random_state, progress

    def fit(self, X, y=None):
        fit = fit_dictionary(
            X,
            self.n_atoms,
            self.lam,
            key=jax.random.PRNGKey(self.random_state),
            bias=self.bias,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            tol=self.tol,
            progress=self.progress,
        )
        self.fit_ = fit
        self.components_ = np.asarray(fit.atoms)
        self.bias_ = np.asarray(fit.bias)
        self.codes_ = np.asarray(fit.codes)
        self.loss_ = float(fit.loss)
        self.n_iter_ = int(fit.n_epochs)
        return self

    def transform(self, X):
        if not hasattr(self, "components_"):
            raise RuntimeError("DictionaryLearner is not fitted; call fit(X) first")
        return np.asarray(encode(self.components_, self.bias_ if self.bias else None, X, self.lam))

    def fit_transform(self, X, y=None):
        return self.fit(X).codes_

    def inverse_transform(self, codes):
        return np.asarray(codes) @ self.components_ + (self.bias_ if self.bias else 0)
