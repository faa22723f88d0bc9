"""First-order residuals of a dictionary (X, D, Z, b) at λ (SPEC §4, conditions 1–4), as sums over
row blocks: what ``check_optimality`` reports and what ``fit_dictionary`` records at its end.

code KKT: max over entries of |⟨d_i, r_n⟩ − λ|/λ where z_i(n) > 0, (⟨d_i, r_n⟩ − λ)₊/λ elsewhere;
atom stationarity: ||Σ_n w z_i(n) r_n − λ(Σ_n w z_i(n)) d_i|| / (λ Σ_n w z_i(n));
bias: ||Σ_n w r_n||/(Nλ); wide certificate: max_n ||r_n||/λ.
Every quantity is a sum or a max over rows (``BlockSums``), so data larger than memory are
checked block by block (``combine``) with the same formulas as one in-memory block.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class BlockSums(NamedTuple):
    """Row sums and maxima of one block (``block_sums``); ``combine`` merges two blocks."""

    kkt_k: jax.Array  # (K,) max_n KKT violation of atom k, in units of λ
    S: jax.Array  # (K, d) Σ_n w z_k(n) r_n
    mass: jax.Array  # (K,) Σ_n w z_k(n)
    wr: jax.Array  # (d,) Σ_n w r_n
    wx: jax.Array  # (d,) Σ_n w (x_n − b)
    wrx: jax.Array  # Σ_n w ⟨r_n, x_n − b⟩ (centred at b for accuracy; b = 0 without a bias)
    wrr: jax.Array  # Σ_n w ||r_n||²
    wl1: jax.Array  # Σ_n w ||z_n||₁
    n: jax.Array  # Σ_n w
    rmax: jax.Array  # max_{n: w_n > 0} ||r_n||


_MAX_FIELDS = ("kkt_k", "rmax")


def over_processes(sums: BlockSums) -> BlockSums:
    """``sums`` of every process of a ``jax.distributed`` run (float64; the identity in one)."""
    from .processes import max_over_processes, sum_over_processes

    return BlockSums(
        *(
            (max_over_processes if f in _MAX_FIELDS else sum_over_processes)(getattr(sums, f))
            for f in BlockSums._fields
        )
    )


def block_sums(X, D, Z, b, lam, w):
    """``BlockSums`` of rows (X, Z, w) and their residual norms ||r_n|| (traceable)."""
    R = X - b - Z @ D
    corr = R @ D.T  # ⟨d_i, r_n⟩
    kkt = jnp.where(Z > 0, jnp.abs(corr - lam), jnp.maximum(corr - lam, 0)) / lam
    WZ = w[:, None] * Z
    rn = jnp.linalg.norm(R, axis=1)
    sums = BlockSums(
        kkt_k=jnp.max(kkt, axis=0, initial=0.0),
        S=WZ.T @ R,
        mass=jnp.sum(WZ, axis=0),
        wr=w @ R,
        wx=w @ (X - b),
        wrx=jnp.sum(w * jnp.sum(R * (X - b), axis=1)),
        wrr=jnp.sum(w * rn**2),
        wl1=jnp.sum(w * jnp.sum(jnp.abs(Z), axis=1)),
        n=jnp.sum(w),
        rmax=jnp.max(jnp.where(w > 0, rn, 0), initial=0.0),
    )
    return sums, rn


jit_block_sums = eqx.filter_jit(block_sums)


def combine(a: BlockSums | None, b: BlockSums) -> BlockSums:
    """Merge the sums of two disjoint row sets on the host, in float64."""
    b = BlockSums(*(np.asarray(v, np.float64) for v in b))
    if a is None:
        return b
    return BlockSums(
        *(
            np.maximum(x, y) if f in _MAX_FIELDS else x + y
            for f, x, y in zip(BlockSums._fields, a, b, strict=True)
        )
    )


@functools.partial(jax.jit, static_argnames="fit_bias")
def first_order_from_sums(s: BlockSums, D, lam, fit_bias: bool):
    """(code KKT max, code KKT per atom, atom stationarity per atom, unit unabsorbed direction per
    atom, bias residual (0 without a bias), wide certificate) from the sums over all rows."""
    dt = D.dtype
    S, mass = jnp.asarray(s.S, dt), jnp.asarray(s.mass, dt)
    tang = S - jnp.sum(S * D, axis=1, keepdims=True) * D
    resid = S - lam * mass[:, None] * D
    atom_stat = jnp.where(
        mass > 0, jnp.linalg.norm(resid, axis=1) / (lam * jnp.where(mass > 0, mass, 1)), 0
    )
    tn = jnp.linalg.norm(tang, axis=1, keepdims=True)
    direction = jnp.where(tn > 0, tang / jnp.where(tn > 0, tn, 1), 0)
    n = jnp.asarray(s.n, dt)
    bias_res = jnp.linalg.norm(jnp.asarray(s.wr, dt)) / (n * lam) if fit_bias else jnp.zeros((), dt)
    kkt_k = jnp.asarray(s.kkt_k, dt)
    return (
        jnp.max(kkt_k, initial=0.0),
        kkt_k,
        atom_stat,
        direction,
        bias_res,
        jnp.asarray(s.rmax, dt) / lam,
    )


@eqx.filter_jit
def first_order_residuals(X, D, Z, b, lam, w, fit_bias: bool):
    """``first_order_from_sums`` of all rows in memory, plus the mask of points with ||r_n|| > λ."""
    sums, rn = block_sums(X, D, Z, b, lam, w)
    return (*first_order_from_sums(sums, D, lam, fit_bias), rn > lam)
