"""One training loop for every SAE architecture: minibatch ``optimizer`` steps on the model's own
``loss``, each followed by its ``after_step`` (unit decoder rows; BatchTopK moves its threshold).

Initialisation (all architectures): decoder rows at data directions from b_dec, encoder tied to the
decoder, encoder biases 0; b_dec starts at the wide-limit bias (the Huber location, ``"wide"``) or
the geometric median (``"median"``). JumpReLU thresholds start at √(2λ), the point where a unit atom's
code z gains z²/2 of reconstruction for its L0 cost λ.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core.precision import full_precision
from .._core.validate import check_lam, check_matrix, check_positive_int
from .._finite.atoms import normalise_rows
from .._wide.solve import solve_wide
from .base import AbstractSAE
from .batchtopk import BatchTopKSAE, MatryoshkaSAE
from .gated import GatedSAE
from .jumprelu import JumpReLUSAE
from .standard import ReluSAE
from .topk import AbsTopKSAE, TopKSAE

# architecture name → (class, needs λ, needs k)
ARCHITECTURES = {
    "standard": (ReluSAE, True, False),
    "topk": (TopKSAE, False, True),
    "abstopk": (AbsTopKSAE, False, True),
    "batchtopk": (BatchTopKSAE, False, True),
    "matryoshka_batchtopk": (MatryoshkaSAE, False, True),
    "jumprelu": (JumpReLUSAE, True, False),
    "gated": (GatedSAE, True, False),
}
_ALIASES = {"relu": "standard", "matryoshka": "matryoshka_batchtopk"}


class SAETraining(NamedTuple):
    """What ``train_sae`` returns: the model, the per-step minibatch losses and the wall time (s,
    compilation included)."""

    sae: AbstractSAE
    losses: Float[Array, " steps"]
    seconds: float


def default_widths(width: int) -> tuple[int, ...]:
    """Matryoshka prefixes width/8, width/4, width/2, width (those ≥ 1, distinct)."""
    return tuple(sorted({max(1, width // f) for f in (8, 4, 2)} | {width}))


def init_sae(
    X, width: int, b_dec, key, architecture: str = "standard", *, k=None, lam=None, widths=None
) -> AbstractSAE:
    """An untrained SAE of ``architecture``: decoder rows at data directions from ``b_dec``."""
    arch = _ALIASES.get(architecture, architecture)
    n, d = X.shape
    idx = jax.random.choice(key, n, (width,), replace=width > n)
    noise = 1e-2 * jax.random.normal(jax.random.fold_in(key, 1), (width, d), X.dtype)
    D = normalise_rows(X[idx] - b_dec + noise * jnp.std(X))
    zeros = jnp.zeros(width, X.dtype)
    if arch == "standard":
        return ReluSAE(D, zeros, D, b_dec)
    if arch in ("topk", "abstopk"):
        return ARCHITECTURES[arch][0](D, zeros, D, b_dec, k=int(k))
    if arch == "batchtopk":
        return BatchTopKSAE(D, zeros, D, b_dec, zeros, k=float(k))
    if arch == "matryoshka_batchtopk":
        w = default_widths(width) if widths is None else tuple(int(v) for v in widths)
        return MatryoshkaSAE(D, zeros, D, b_dec, zeros, widths=w, k=float(k))
    if arch == "jumprelu":
        theta = math.sqrt(2 * float(lam))
        return JumpReLUSAE(D, zeros, D, b_dec, zeros + theta, bandwidth=0.5 * theta)
    if arch == "gated":
        return GatedSAE(D, zeros, zeros, zeros, D, b_dec)
    raise ValueError(f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}")


@full_precision
def train_sae(
    X: Float[ArrayLike, "n_samples n_features"],
    width: int | AbstractSAE,
    lam: float | None = None,
    *,
    key: PRNGKeyArray,
    architecture: str = "standard",
    k: float | None = None,
    widths=None,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    b_dec_init: str | None = None,
) -> SAETraining:
    """Train an SAE of ``architecture`` (standard, topk, abstopk, batchtopk, matryoshka_batchtopk,
    jumprelu, gated) with minibatch ``optimizer`` (default ``optax.adam(1e-3)``) on its own loss.

    ``lam`` is the L1 weight (standard, gated) or the L0 weight (jumprelu); ``k`` the codes per row
    (topk, abstopk) or per row on average over a batch (batchtopk, matryoshka); ``widths`` the
    Matryoshka prefixes. ``width`` may instead be an SAE to continue training.
    """
    X = check_matrix(X, "X")
    steps = check_positive_int(steps, "steps")
    batch_size = min(check_positive_int(batch_size, "batch_size"), X.shape[0])
    t0 = time.perf_counter()
    if isinstance(width, AbstractSAE):
        sae = width
        arch = sae.architecture
    else:
        width = check_positive_int(width, "width")
        arch = _ALIASES.get(architecture, architecture)
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}"
            )
        _, needs_lam, needs_k = ARCHITECTURES[arch]
        if needs_lam and lam is None:
            raise ValueError(f"architecture {arch!r} needs `lam` (its sparsity weight)")
        if needs_k:
            if k is None or not 0 < k <= width:
                raise ValueError(
                    f"architecture {arch!r} needs `k` in (0, width = {width}], got {k}"
                )
        b_dec_init = b_dec_init or ("wide" if lam is not None else "median")
        if b_dec_init not in ("wide", "median"):
            raise ValueError(f"`b_dec_init` must be 'wide' or 'median', got {b_dec_init!r}")
        if b_dec_init == "wide" and lam is None:
            raise ValueError("`b_dec_init='wide'` needs `lam`")
        scale = float(jnp.median(jnp.linalg.norm(X - jnp.mean(X, 0), axis=1)))
        lam_b = check_lam(lam, X.dtype) if b_dec_init == "wide" else max(scale, 1e-30) * 1e-6
        b0 = solve_wide(X, lam_b, rtol=1e-5, max_steps=5000, throw=False).bias
        k_init, key = jax.random.split(key)
        sae = init_sae(X, width, b0, k_init, arch, k=k, lam=lam, widths=widths)
    lam_v = jnp.asarray(0.0 if lam is None else check_lam(lam, X.dtype), X.dtype)
    opt = optax.adam(1e-3) if optimizer is None else optimizer
    sae, losses = _run(sae, X, lam_v, key, opt, steps, batch_size)
    losses.block_until_ready()
    return SAETraining(sae, losses, time.perf_counter() - t0)


def _run(sae, X, lam, key, opt, steps, batch_size):
    params, static = eqx.partition(sae, eqx.is_inexact_array)
    opt_state = opt.init(params)

    def step(carry, k):
        params, opt_state = carry
        idx = jax.random.choice(k, X.shape[0], (batch_size,), replace=False)

        def loss(p):
            return eqx.combine(p, static).loss(X[idx], lam)

        (value, aux), g = jax.value_and_grad(loss, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        model = eqx.combine(optax.apply_updates(params, upd), static).after_step(aux)
        return (eqx.filter(model, eqx.is_inexact_array), opt_state), value

    run = eqx.filter_jit(lambda c, ks: jax.lax.scan(step, c, ks))
    (params, _), losses = run((params, opt_state), jax.random.split(key, steps))
    return eqx.combine(params, static), losses
