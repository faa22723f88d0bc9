"""Reading and writing SAELens SAEs (``sae_weights.safetensors``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._core.atomic import atomic_write
from ._sae.relu import ReluSAE


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - safetensors ships with the io/cli/dev extras
        raise ImportError("SAELens files need safetensors: pip install 'widelimit[io]'") from e
    return safetensors.numpy


def load_saelens(path: str, *, dtype=None) -> ReluSAE:
    """A ReLU SAE from a SAELens ``sae_weights.safetensors`` (W_enc (d, K), b_enc (K,),
    W_dec (K, d), b_dec (d,)). Decoder rows are kept as stored (check them with
    ``check_optimality(..., normalise=True)`` if they are not unit-norm)."""
    load_file = _safetensors().load_file
    try:
        t = load_file(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"cannot read {path!r} as safetensors: {e}") from e
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(t)
    if missing:
        raise ValueError(f"{path!r} is not a SAELens SAE: missing {sorted(missing)}")
    W_enc, b_enc, W_dec, b_dec = (np.asarray(t[k]) for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    k, d = W_dec.shape if W_dec.ndim == 2 else (0, 0)
    if W_enc.shape != (d, k) or b_enc.shape != (k,) or b_dec.shape != (d,) or k == 0:
        raise ValueError(
            f"{path!r}: inconsistent SAE shapes W_enc {W_enc.shape}, b_enc {b_enc.shape}, "
            f"W_dec {W_dec.shape}, b_dec {b_dec.shape}"
        )
    dt = dtype or jnp.result_type(W_dec.dtype, jnp.float32)
    return ReluSAE(*(jnp.asarray(a, dt) for a in (W_enc.T, b_enc, W_dec, b_dec)))


def save_saelens(sae: ReluSAE, path: str) -> None:
    """Write ``sae`` in SAELens's safetensors layout (atomically)."""
    save_file = _safetensors().save_file
    tensors = {
        "W_enc": np.ascontiguousarray(np.asarray(sae.W_enc).T),
        "b_enc": np.asarray(sae.b_enc),
        "W_dec": np.asarray(sae.W_dec),
        "b_dec": np.asarray(sae.b_dec),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
