"""Full float32 matrix products for every public numerical entry point.

On GPUs XLA may run float32 products in TF32 (10-bit mantissa) and on TPUs in bfloat16 passes.
Certified gaps, KKT residuals and lower bounds at 1e-6 need true float32 products, so each public
function traces its computation under ``jax.default_matmul_precision("float32")``. On CPU this changes
nothing. The setting is part of jit's cache key, so it also holds inside a caller's ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax


def full_precision(fn):
    """Run ``fn`` (and trace whatever it compiles) with float32-exact matrix products."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision("float32"):
            return fn(*args, **kwargs)

    wrapper.full_precision = True
    return wrapper
