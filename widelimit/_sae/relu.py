"""A plain ReLU sparse autoencoder judged by the dictionary-learning objective L (SPEC §1).

z = ReLU(W_enc (x − b_dec) + b_enc), x̂ = b_dec + W_decᵀ z with unit-norm decoder rows; the loss is
L(W_dec, Z, b_dec) = (1/2N)Σ||x − x̂||² + (λ/N)Σ||z||₁, the same L as a dictionary, so its codes can be
compared with exact codes (``amortisation_gap``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core.objective import loss_value
from .._core.precision import full_precision
from .._core.validate import check_lam, check_matrix, check_positive_int
from .._finite.atoms import normalise_rows
from .._finite.codes import encode
from .._wide.solve import solve_wide


class ReluSAE(eqx.Module):
    """ReLU SAE with W_enc (n_atoms, n_features), b_enc (n_atoms,), W_dec (n_atoms, n_features)
    (unit rows: the atoms) and b_dec (n_features,) (the bias)."""

    W_enc: Float[Array, "n_atoms n_features"]
    b_enc: Float[Array, " n_atoms"]
    W_dec: Float[Array, "n_atoms n_features"]
    b_dec: Float[Array, " n_features"]

    def encode(self, X: Float[Array, "n_samples n_features"]) -> Float[Array, "n_samples n_atoms"]:
        return jax.nn.relu((X - self.b_dec) @ self.W_enc.T + self.b_enc)

    def decode(self, Z: Float[Array, "n_samples n_atoms"]) -> Float[Array, "n_samples n_features"]:
        return Z @ self.W_dec + self.b_dec

    def __call__(self, X):
        return self.decode(self.encode(X))

    @property
    def atoms(self):
        return self.W_dec

    @property
    def bias(self):
        return self.b_dec


@full_precision
def sae_loss(sae: ReluSAE, X, lam, w=None):
    """L(W_dec, encode(X), b_dec)."""
    w = jnp.ones(X.shape[0], X.dtype) if w is None else w
    return loss_value(X, sae.W_dec, sae.encode(X), sae.b_dec, lam, w)


def init_sae(X, width: int, b_dec, key) -> ReluSAE:
    """Decoder rows at data directions from b_dec, encoder = decoder (tied init), b_enc = 0."""
    n, d = X.shape
    idx = jax.random.choice(key, n, (width,), replace=width > n)
    noise = 1e-2 * jax.random.normal(jax.random.fold_in(key, 1), (width, d), X.dtype)
    D = normalise_rows(X[idx] - b_dec + noise * jnp.std(X))
    return ReluSAE(D, jnp.zeros(width, X.dtype), D, b_dec)


@full_precision
def train_sae(
    X: Float[ArrayLike, "n_samples n_features"],
    width: int,
    lam: float,
    *,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    b_dec_init: str = "wide",
) -> tuple[ReluSAE, Float[Array, " steps"]]:
    """Train a ``ReluSAE`` on L with minibatch ``optimizer`` (default ``optax.adam(1e-3)``).

    The decoder rows are renormalised after every step; b_dec starts at the wide-limit bias
    (``"wide"``, the Huber location) or the geometric median (``"median"``). Returns the model and
    the per-step minibatch losses.
    """
    X = check_matrix(X, "X")
    width = check_positive_int(width, "width")
    steps = check_positive_int(steps, "steps")
    batch_size = min(check_positive_int(batch_size, "batch_size"), X.shape[0])
    lam = check_lam(lam, X.dtype)
    if b_dec_init not in ("wide", "median"):
        raise ValueError(f"`b_dec_init` must be 'wide' or 'median', got {b_dec_init!r}")
    lam_b = lam if b_dec_init == "wide" else lam * 1e-6
    b0 = solve_wide(X, lam_b, rtol=1e-5, max_steps=5000, throw=False).bias
    k_init, k_run = jax.random.split(key)
    sae = init_sae(X, width, b0, k_init)
    opt = optax.adam(1e-3) if optimizer is None else optimizer
    params, static = eqx.partition(sae, eqx.is_array)
    opt_state = opt.init(params)

    def step(carry, k):
        params, opt_state = carry
        idx = jax.random.choice(k, X.shape[0], (batch_size,), replace=False)
        loss, g = jax.value_and_grad(lambda p: sae_loss(eqx.combine(p, static), X[idx], lam))(
            params
        )
        upd, opt_state = opt.update(g, opt_state, params)
        params = optax.apply_updates(params, upd)
        params = eqx.tree_at(lambda p: p.W_dec, params, normalise_rows(params.W_dec))
        return (params, opt_state), loss

    run = eqx.filter_jit(lambda c, ks: jax.lax.scan(step, c, ks))
    (params, _), losses = run((params, opt_state), jax.random.split(k_run, steps))
    return eqx.combine(params, static), losses


@full_precision
def amortisation_gap(
    sae: ReluSAE, X: Float[ArrayLike, "n_samples n_features"], lam: float, **encode_kw
):
    """L(SAE codes) − L(exact codes on the same decoder and bias) ≥ 0 (exact codes are optimal)."""
    X = check_matrix(X, "X")
    lam = check_lam(lam, X.dtype)
    Z = encode(sae.W_dec, sae.b_dec, X, lam, **encode_kw)
    w = jnp.ones(X.shape[0], X.dtype)
    return sae_loss(sae, X, lam, w) - loss_value(X, sae.W_dec, Z, sae.b_dec, lam, w)
