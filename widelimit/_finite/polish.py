"""The polish of a full-batch fit: L-BFGS on the reduced loss g(D, b) = min_{Z ≥ 0} L(D, Z, b).

Alternating minimisation (``epochs``) slows to a crawl near a local optimum: codes and atoms are
coupled, and each block step is exact for the other block's last value. The polish moves atoms and
bias jointly. At exact codes the envelope theorem gives
    ∇_D g = −(1/N) Σ_n w_n z_n r_nᵀ (projected onto the tangent space of the unit rows),
    ∇_b g = −(1/N) Σ_n w_n r_n,
so each evaluation is one warm-started exact code solve (the epochs' compiled program). A step is
retracted onto the unit rows by normalising them. The initial inverse Hessian is γ·P with
P = diag(1/a_k) per atom, a_k = (1/N) Σ_n w_n z_nk² (atom k's curvature at fixed codes), and 1 for
the bias, γ = sᵀy / yᵀPy of the newest pair. optax's L-BFGS scales by γ·I only: on the real
activations at K = 256 that took 187 iterations to the conditions against 40 with P.

The line search backtracks (Armijo, c = 1e-4) on the loss change computed from the residual change,
ΔL = (1/N) Σ w (⟨Δr, r⟩ + ½||Δr||²) + (λ/N) Σ w ΔZ, which float32 resolves far below the rounding
of L itself (near the optimum the decreases are ~1e-8·L). The memory is fixed-shape (a ring of
``MEMORY`` pairs), so the direction is one compiled program for every iteration.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._core.stationarity import block_sums, first_order_from_sums
from .._core.validate import to_device
from .atoms import normalise_rows
from .epochs import _Config, _encode_and_accept, _State

MEMORY = 10
ARMIJO = 1e-4


class Point(eqx.Module):
    """An evaluated point of the polish: the (tangent) gradient of g, the per-atom curvature a_k,
    and the worst first-order residual max(code KKT, atom stationarity, bias) in units of λ."""

    gD: Array
    gb: Array
    curv: Array
    worst: Array


class Memory(eqx.Module):
    """The last ``MEMORY`` pairs (s, y) of atoms and bias, a ring written at ``n % MEMORY``."""

    s: Array
    sb: Array
    y: Array
    yb: Array
    n: Array

    @staticmethod
    def empty(D) -> Memory:
        k, d = D.shape
        z = jnp.zeros((MEMORY, k, d), D.dtype)
        zb = jnp.zeros((MEMORY, d), D.dtype)
        return Memory(z, zb, z, zb, jnp.zeros((), jnp.int32))


def _evaluate(cfg: _Config, D, b, X, w, Z):
    """``Point`` at (D, b) with exact codes Z."""
    sums, _ = block_sums(X, D, Z, b, cfg.lam, w)
    kkt, _, stat, _, bres, _ = first_order_from_sums(sums, D, cfg.lam, cfg.fit_bias)
    n = sums.n
    S = sums.S
    gD = -(S - jnp.sum(S * D, axis=1, keepdims=True) * D) / n
    gb = -sums.wr / n if cfg.fit_bias else jnp.zeros_like(b)
    curv = jnp.sum(w[:, None] * Z * Z, axis=0) / n
    worst = jnp.maximum(jnp.maximum(kkt, jnp.max(stat, initial=0.0)), bres)
    return Point(gD, gb, curv, worst)


@eqx.filter_jit
def _trial_point(cfg: _Config, s: _State, pD, pb, step):
    """(normalise(D + step·pD), b + step·pb)."""
    D = normalise_rows(s.D + step * pD)
    return D, (s.b + step * pb if cfg.fit_bias else s.b)


@eqx.filter_jit
def _measure(cfg: _Config, s: _State, new: _State, X, w):
    """The ``Point`` at ``new`` and its loss change from ``s``, ΔL = (1/N) Σ w (⟨Δr, r⟩ + ½||Δr||²)
    + (λ/N) Σ w ΔZ (resolved far below the rounding of L)."""
    D, b, Z = new.D, new.b, new.Z
    R = X - s.b - s.Z @ s.D
    dR = -(b - s.b) - (Z - s.Z) @ D - s.Z @ (D - s.D)
    n = jnp.sum(w)
    rec = jnp.sum(w * jnp.sum(dR * (R + 0.5 * dR), axis=1))
    delta = (rec + cfg.lam * jnp.sum(w * jnp.sum(Z - s.Z, axis=1))) / n
    return _evaluate(cfg, D, b, X, w, Z), delta


def trial(cfg: _Config, s: _State, pD, pb, step, X, w, wide_bound):
    """The polish's point at (normalise(D + step·pD), b + step·pb): exact codes warm-started at the
    state's, the loss change ΔL from the state, the ``Point``, and the state with it recorded as
    one epoch. Returns (state, point, ΔL, support size of each row).

    The codes are the epochs' program (``_encode_and_accept`` of the new atoms, the plain update
    left out): the polish compiles no code solve of its own (one was 0.8 of the 1.1 s that
    ``trial`` took to compile at K = 256)."""
    D, b = _trial_point(cfg, s, pD, pb, step)
    fresh = to_device(np.zeros(D.shape[0], np.bool_), np.bool_)
    new, _, supports = _encode_and_accept(cfg, s, X, w, D, s.Z, b, D, fresh, wide_bound, False)
    point, delta = _measure(cfg, s, new, X, w)
    return new, point, delta, supports


def _pair_dot(aD, ab, bD, bb):
    return jnp.vdot(aD, bD) + jnp.vdot(ab, bb)


@eqx.filter_jit
def direction(mem: Memory, pt: Point, D):
    """The L-BFGS direction −H g (two-loop recursion over the ring, newest pair first) projected
    onto the tangent space at D, and its slope ⟨g, p⟩; the preconditioned gradient step when the
    memory is empty or the direction is not a descent direction."""
    m = jnp.minimum(mem.n, MEMORY)
    P = jnp.where(pt.curv > 0, 1 / jnp.where(pt.curv > 0, pt.curv, 1), 1)[:, None]

    def rho(j):
        sy = _pair_dot(mem.s[j], mem.sb[j], mem.y[j], mem.yb[j])
        return 1 / jnp.where(sy > 0, sy, 1)

    def back(i, carry):
        qD, qb, alpha = carry
        j = (mem.n - 1 - i) % MEMORY
        a = jnp.where(i < m, rho(j) * _pair_dot(mem.s[j], mem.sb[j], qD, qb), 0)
        return qD - a * mem.y[j], qb - a * mem.yb[j], alpha.at[j].set(a)

    alpha0 = jnp.zeros(MEMORY, pt.gD.dtype)
    qD, qb, alpha = jax.lax.fori_loop(0, MEMORY, back, (pt.gD, pt.gb, alpha0))
    newest = (mem.n - 1) % MEMORY
    yPy = _pair_dot(mem.y[newest], mem.yb[newest], P * mem.y[newest], mem.yb[newest])
    sy = _pair_dot(mem.s[newest], mem.sb[newest], mem.y[newest], mem.yb[newest])
    gamma = jnp.where((m > 0) & (yPy > 0), sy / jnp.where(yPy > 0, yPy, 1), 1)
    rD, rb = gamma * P * qD, gamma * qb

    def forward(i, carry):
        rD, rb = carry
        j = (mem.n - m + i) % MEMORY
        beta = rho(j) * _pair_dot(mem.y[j], mem.yb[j], rD, rb)
        c = jnp.where(i < m, alpha[j] - beta, 0)
        return rD + c * mem.s[j], rb + c * mem.sb[j]

    rD, rb = jax.lax.fori_loop(0, MEMORY, forward, (rD, rb))
    pD, pb = -rD, -rb
    pD = pD - jnp.sum(pD * D, axis=1, keepdims=True) * D
    slope = _pair_dot(pt.gD, pt.gb, pD, pb)
    gD_step, gb_step = -P * pt.gD, -pt.gb
    descent = slope < 0
    pD = jnp.where(descent, pD, gD_step)
    pb = jnp.where(descent, pb, gb_step)
    slope = jnp.where(descent, slope, _pair_dot(pt.gD, pt.gb, gD_step, gb_step))
    return pD, pb, slope


@eqx.filter_jit
def remember(mem: Memory, old: _State, new: _State, pt_old: Point, pt_new: Point) -> Memory:
    """``mem`` with the pair (s, y) of an accepted step, unless sᵀy ≤ 1e-10·||s||·||y|| (no
    curvature information: the pair would break the positive definiteness of H)."""
    sD, sb = new.D - old.D, new.b - old.b
    yD, yb = pt_new.gD - pt_old.gD, pt_new.gb - pt_old.gb
    sy = _pair_dot(sD, sb, yD, yb)
    ok = sy > 1e-10 * jnp.sqrt(_pair_dot(sD, sb, sD, sb) * _pair_dot(yD, yb, yD, yb))
    j = mem.n % MEMORY

    def put(a, v):
        return jnp.where(ok, a.at[j].set(v), a)

    return Memory(
        put(mem.s, sD), put(mem.sb, sb), put(mem.y, yD), put(mem.yb, yb),
        mem.n + ok.astype(jnp.int32),
    )  # fmt: skip
