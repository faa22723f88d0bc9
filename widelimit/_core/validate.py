"""Input checks shared by every public entry point.

Structural mistakes (shape, dtype, sign of λ, bad weights, non-finite values) raise ``ValueError`` or
``TypeError`` naming the argument, before any solver work or file write happens.
"""

from __future__ import annotations

import math
import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def to_device(x, dtype):
    """``jnp.asarray(x, dtype)`` without compiling a program: host values are converted by numpy
    and transferred (``jnp.asarray`` of a host array compiles a small program per shape)."""
    if isinstance(x, jax.Array):
        return x if x.dtype == dtype else jnp.asarray(x, dtype=dtype)
    if not _is_concrete(x):
        return jnp.asarray(x, dtype=dtype)
    return jax.device_put(np.asarray(x, dtype=np.dtype(dtype)))


# arrays up to this many entries are checked on the host (``host_view``)
_HOST_CHECK_MAX = 2**24


def host_view(x) -> np.ndarray | None:
    """``x`` as a numpy array when it is one, or a concrete JAX array on the CPU of at most 2²⁴
    entries (a view, no copy); else None. Checks of such arrays (finite, nonnegative, their
    maximum) run in numpy: an eager ``jnp`` reduction compiles a small program for each new shape
    (~20 ms each, the larger part of a small call's time)."""
    if isinstance(x, np.ndarray):
        return x
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) or x.size > _HOST_CHECK_MAX:
        return None
    try:
        on_cpu = all(d.platform == "cpu" for d in x.devices())
    except Exception:  # a deleted or otherwise unreadable buffer: let JAX raise its own error
        return None
    return np.asarray(x) if on_cpu and x.is_fully_addressable else None


def all_finite(x) -> bool:
    """Whether a concrete array has no NaN or Inf (numpy for ``host_view`` arrays)."""
    h = host_view(x)
    return bool(np.isfinite(h).all()) if h is not None else bool(_all_finite(x))


def max_abs(x) -> float:
    """max |x| of a concrete, nonempty array (numpy for ``host_view`` arrays)."""
    h = host_view(x)
    return float(np.max(np.abs(h))) if h is not None else float(_max_abs(x))


def any_negative(x) -> bool:
    """Whether a concrete array has an entry < 0 (numpy for ``host_view`` arrays)."""
    h = host_view(x)
    return bool(np.any(h < 0)) if h is not None else bool(_any_negative(x))


_max_abs = jax.jit(lambda x: jnp.max(jnp.abs(x)))
_any_negative = jax.jit(lambda x: jnp.any(x < 0))
_warned_x64: list = []


def float_dtype(x, name: str):
    """The floating dtype to compute in: float32/float64 kept, ints and half precisions promoted."""
    dt = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
    if dt == np.float64:
        if jax.config.jax_enable_x64:
            return jnp.float64
        if not _warned_x64:
            _warned_x64.append(True)
            warnings.warn(
                f"`{name}` is float64 but jax_enable_x64 is off, so widelimit computes in float32 "
                "(and certifies only to float32 accuracy); enable x64 with "
                "jax.config.update('jax_enable_x64', True) for float64 (said once per process)",
                stacklevel=4,
            )
        return jnp.float32
    if dt == np.float32:
        return jnp.float32
    if dt.kind in "iu" or dt in (np.float16, jnp.bfloat16):
        return jnp.float32
    raise TypeError(
        f"`{name}` has dtype {dt}; widelimit accepts real floating (float16/32/64, bfloat16) "
        "or integer arrays"
    )


def check_matrix(x, name: str = "X", *, check_finite: bool = True, min_rows: int = 1):
    """Return ``x`` as a 2-D floating JAX array after checking shape, dtype and finiteness."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}")
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    dtype = float_dtype(x, name)
    if len(x.shape) != 2:
        raise ValueError(
            f"`{name}` must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}"
        )
    if x.shape[0] < min_rows:
        raise ValueError(f"`{name}` has {x.shape[0]} rows; at least {min_rows} required")
    if x.shape[1] < 1:
        raise ValueError(f"`{name}` has no columns (shape {tuple(x.shape)})")
    host = isinstance(x, np.ndarray)  # checked by numpy: no small program to compile
    if check_finite and host and not np.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or Inf")
    x = to_device(x, dtype)
    return ensure_finite(x, name) if check_finite and not host else x


_all_finite = jax.jit(lambda x: jnp.isfinite(x).all())


def ensure_finite(x, name: str):
    """``x`` after checking it is finite: ``ValueError`` when the check is concrete, and
    ``eqx.error_if`` inside a caller's ``jit``/``vmap``/``grad`` (also for captured constants)."""
    if isinstance(x, np.ndarray):
        if not np.isfinite(x).all():
            raise ValueError(f"`{name}` contains NaN or Inf")
        return x
    ok = _all_finite(x)  # a tracer inside a caller's trace, also for a captured constant
    if isinstance(ok, jax.core.Tracer):
        return eqx.error_if(x, ~ok, f"`{name}` contains NaN or Inf")
    if not bool(ok):
        raise ValueError(f"`{name}` contains NaN or Inf")
    return x


def check_vector(v, n: int, dtype, name: str):
    """A finite vector of shape (n,) in ``dtype`` (a bias, an initial bias)."""
    if isinstance(v, (str, bytes)):
        raise TypeError(f"`{name}` must be an array, got {type(v).__name__}")
    v = v if hasattr(v, "shape") else np.asarray(v)
    if np.dtype(v.dtype).kind not in "iuf":
        raise TypeError(f"`{name}` must be a real array, got dtype {v.dtype}")
    if tuple(v.shape) != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {tuple(v.shape)}")
    return ensure_finite(to_device(v, dtype), name)


def check_lam(lam, dtype=jnp.float32, name: str = "lam"):
    """λ must be a finite scalar > 0."""
    if isinstance(lam, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a positive real number, got a bool")
    if isinstance(lam, numbers.Real) or (hasattr(lam, "shape") and np.ndim(lam) == 0):
        if _is_concrete(lam):
            v = float(lam)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"`{name}` must be finite and > 0, got {v}")
        return to_device(lam, dtype)
    raise TypeError(f"`{name}` must be a scalar, got {type(lam).__name__}")


def check_lams(lams, dtype=jnp.float32, name: str = "lams"):
    """A 1-D array of λ > 0."""
    arr = np.asarray(lams) if _is_concrete(lams) else lams
    if np.ndim(arr) != 1 or arr.shape[0] < 1:
        raise ValueError(f"`{name}` must be a non-empty 1-D array, got shape {np.shape(arr)}")
    if _is_concrete(arr):
        a = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"`{name}` must be finite and > 0 everywhere")
    return jnp.asarray(arr, dtype=dtype)


def check_weights(weights, n: int, dtype=jnp.float32, name: str = "weights"):
    """Weights w_n ≥ 0, not all zero, normalised so that Σ w_n = n. ``None`` means all ones."""
    if weights is None:
        return to_device(np.ones(n, np.dtype(dtype)), dtype)
    w = weights if hasattr(weights, "shape") else np.asarray(weights)
    if np.dtype(w.dtype).kind not in "iuf":
        raise TypeError(f"`{name}` must be a real array, got dtype {w.dtype}")
    if w.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {tuple(w.shape)}")
    if not _is_concrete(w):
        w = jnp.asarray(w, dtype=dtype)
        return w * (n / jnp.sum(w))
    wn = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(wn)):
        raise ValueError(f"`{name}` contains NaN or Inf")
    if np.any(wn < 0):
        raise ValueError(f"`{name}` must be >= 0")
    if not np.any(wn > 0):
        raise ValueError(f"`{name}` are all zero")
    return to_device(wn * (n / wn.sum()), dtype)


def check_positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {v}")
    return int(v)


def check_number(v, name: str, *, positive: bool) -> float:
    """A finite real number, > 0 (``positive``) or ≥ 0; TypeError for bools and non-numbers."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {type(v).__name__}")
    if not (math.isfinite(v) and (v > 0 if positive else v >= 0)):
        raise ValueError(f"`{name}` must be finite and {'> 0' if positive else '>= 0'}, got {v}")
    return float(v)
