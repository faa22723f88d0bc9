"""The dictionary-learning objective L(D, Z, b) of SPEC §1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .devices import placement
from .paired_blocks import block_rows_for, padded_blocks
from .precision import full_precision
from .sparse_codes import SparseCodes
from .stationarity import combine, jit_block_sums
from .store import as_store, is_store_like
from .validate import check_lam, check_matrix, check_vector, check_weights


@jax.jit
def relative_gap(gap_abs, bound):
    """The one meaning of a relative gap in widelimit: (L − W_low)/|W_low| = gap_abs/|bound|
    (0 when gap_abs is 0, also for a zero bound). A negative gap (a loss below its certified
    bound: rounding, or a bug) stays negative, and a NaN stays NaN, so neither can pass for a
    closed gap."""
    tiny = jnp.finfo(jnp.result_type(bound)).tiny
    return jnp.where(gap_abs == 0, 0 * gap_abs, gap_abs / jnp.maximum(jnp.abs(bound), tiny))


def check_dictionary(X, atoms, codes, bias, *, finite: bool = True):
    """Validate (X, atoms, codes, bias) shapes; returns JAX arrays in one float dtype."""
    X = check_matrix(X, "X", check_finite=finite)
    n, d = X.shape
    atoms = check_matrix(atoms, "atoms", check_finite=finite)
    if atoms.shape[1] != d:
        raise ValueError(f"`atoms` has {atoms.shape[1]} features but `X` has {d}")
    codes = check_matrix(codes, "codes", check_finite=finite)
    if codes.shape != (n, atoms.shape[0]):
        raise ValueError(
            f"`codes` must have shape (n_samples, width) = ({n}, {atoms.shape[0]}), got "
            f"{tuple(codes.shape)}"
        )
    if bias is None:
        bias = jnp.zeros((d,), X.dtype)
    elif finite:
        bias = check_vector(bias, d, X.dtype, "bias")
    else:
        bias = jnp.asarray(bias, X.dtype)
        if bias.shape != (d,):
            raise ValueError(f"`bias` must have shape ({d},), got {tuple(bias.shape)}")
    dt = jnp.result_type(X.dtype, atoms.dtype, codes.dtype)
    return X.astype(dt), atoms.astype(dt), codes.astype(dt), bias.astype(dt)


def is_out_of_core(X, codes) -> bool:
    """True when X or the codes are read block by block: X a path, ``ActivationStore`` or
    iterable (a memmap is an array: wrap it in an ``ActivationStore`` to stream it); codes
    ``SparseCodes`` (concrete) or a ``CodeStore``."""
    if is_store_like(X) or hasattr(codes, "block_codes"):
        return True
    return isinstance(codes, SparseCodes) and not isinstance(codes.values, jax.core.Tracer)


def densify(codes):
    """Dense codes of ``SparseCodes`` (inside a caller's ``jit``), anything else unchanged."""
    return codes.todense() if isinstance(codes, SparseCodes) else codes


def check_sparse(codes) -> None:
    """ValueError for ``SparseCodes`` whose indices fall outside [0, width)."""
    if isinstance(codes, SparseCodes) and not isinstance(codes.indices, jax.core.Tracer):
        idx = np.asarray(codes.indices)
        if idx.size and (idx.min() < 0 or idx.max() >= codes.width):
            raise ValueError(f"`codes` has indices outside [0, {codes.width})")


def streamed_dictionary(X, atoms, codes, bias):
    """(store, atoms, codes, bias) checked for a block-by-block analysis; one float dtype."""
    atoms = check_matrix(atoms, "atoms")
    K, d = atoms.shape
    store = as_store(X, chunk_rows=2 * block_rows_for(K, d))
    if store.n_features != d:
        raise ValueError(f"`atoms` has {d} features but `X` has {store.n_features}")
    check_sparse(codes)
    dt = jnp.result_type(jnp.dtype(store.dtype), atoms.dtype, jnp.dtype(codes.dtype))
    if not jnp.issubdtype(dt, jnp.floating) or jnp.finfo(dt).bits < 32:
        dt = jnp.result_type(jnp.float32)
    b = jnp.zeros((d,), dt) if bias is None else check_vector(bias, d, dt, "bias")
    return store, atoms.astype(dt), codes, b


def streamed_sums_of(
    store, atoms, codes, b, lam, weights=None, scale=None, wants=False, devices=None, shard="rows"
):
    """``BlockSums`` of all rows (and, with ``wants``, the mask ||r_n|| > λ), block by block (each
    block's rows, or with ``shard="atoms"`` the atoms, split over ``devices`` when given)."""
    sums, masks = None, []
    place = placement(devices, shard, atoms.shape[0])
    if place is not None:
        (atoms,), (b, lam) = place.atoms(atoms), place.replicated(b, jnp.asarray(lam))
        scale = None if scale is None else place.atoms(scale)[0]
    for _, m, xp, zp, wp in padded_blocks(store, atoms, codes, b, weights=weights, place=place):
        if scale is not None:
            zp = zp * scale[None, :]
        part, rn = jit_block_sums(xp, atoms, zp, b, lam, wp)
        sums = combine(sums, part)
        if wants:
            masks.append(np.asarray(rn[:m] > lam))
    return sums, (np.concatenate(masks) if wants else None)


def loss_from_sums(sums, lam) -> float:
    """L from the row sums of a streamed pass: (½ Σ w||r||² + λ Σ w||z||₁)/Σ w."""
    return (0.5 * sums.wrr + float(lam) * sums.wl1) / sums.n


@jax.jit
def residuals(X, atoms, codes, bias):
    """r_n = x_n − b − Dz_n, shape (n_samples, n_features)."""
    return X - bias - codes @ atoms


@jax.jit
def loss_terms(X, atoms, codes, bias, lam, w):
    """(reconstruction, sparsity) parts of L; L is their sum."""
    n = jnp.sum(w)
    r = residuals(X, atoms, codes, bias)
    rec = 0.5 * jnp.sum(w * jnp.sum(r * r, axis=1)) / n
    sparse = lam * jnp.sum(w * jnp.sum(jnp.abs(codes), axis=1)) / n
    return rec, sparse


def loss_value(X, atoms, codes, bias, lam, w):
    """L(D, Z, b) without input checks (the traceable core of ``dictionary_loss``)."""
    rec, sparse = loss_terms(X, atoms, codes, bias, lam, w)
    return rec + sparse


@full_precision
def dictionary_loss(
    X: Float[ArrayLike, "n_samples n_features"],
    atoms: Float[ArrayLike, "width n_features"],
    codes: Float[ArrayLike, "n_samples width"],
    bias: Float[ArrayLike, " n_features"] | None,
    lam: float,
    *,
    weights: Float[ArrayLike, " n_samples"] | None = None,
) -> Float[Array, ""]:
    """L = (1/2N) Σ w_n||x_n − b − D z_n||² + (λ/N) Σ w_n||z_n||₁ (``bias=None`` means b = 0).

    X may be an ``ActivationStore`` (or anything it reads) and codes ``SparseCodes`` or a
    ``CodeStore``: the loss is then summed block by block in O(block × width) memory."""
    if is_out_of_core(X, codes):
        store, atoms, codes, b = streamed_dictionary(X, atoms, codes, bias)
        lam = check_lam(lam, atoms.dtype)
        s, _ = streamed_sums_of(store, atoms, codes, b, lam, weights)
        return jnp.asarray(loss_from_sums(s, lam), atoms.dtype)
    X, atoms, codes, bias = check_dictionary(X, atoms, densify(codes), bias)
    lam = check_lam(lam, X.dtype)
    w = check_weights(weights, X.shape[0], X.dtype)
    return loss_value(X, atoms, codes, bias, lam, w)
