"""Saving and loading fitted dictionaries (``.npz``, written atomically) and SAELens SAEs."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from ._dictionary import DictionaryFit
from ._epochs import History
from ._sae import ReluSAE

_FIT_KEYS = ("atoms", "bias", "codes", "loss", "wide_bound", "lam", "n_epochs", "parents")
_HIST_KEYS = ("loss", "gap", "l0", "dead", "resampled")


def atomic_save(path: str, write) -> None:
    """write(tmp_path), fsync, then rename over ``path``: readers never see a partial file."""
    tmp = path + ".tmp"
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_fit(fit: DictionaryFit, path: str) -> None:
    """Write a ``DictionaryFit`` to ``path`` (.npz) atomically."""
    arrays = {k: np.asarray(getattr(fit, k)) for k in _FIT_KEYS}
    arrays |= {f"history_{k}": np.asarray(getattr(fit.history, k)) for k in _HIST_KEYS}
    arrays["fit_bias"] = np.asarray(fit.fit_bias)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_save(path, write)


def load_fit(path: str) -> DictionaryFit:
    """Read a ``DictionaryFit`` written by ``save_fit``; ValueError if the file is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: jnp.asarray(z[k]) for k in _FIT_KEYS}
            h = History(*(jnp.asarray(z[f"history_{k}"]) for k in _HIST_KEYS))
            fit_bias = bool(z["fit_bias"])
    except Exception as e:  # noqa: BLE001 - zip, pickle-free npz and key errors all mean a bad file
        raise ValueError(f"{path!r} is not a widelimit fit file: {e}") from e
    return DictionaryFit(history=h, fit_bias=fit_bias, **a)


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - safetensors ships with the cli/dev extras
        raise ImportError("SAELens files need safetensors: pip install 'widelimit[cli]'") from e
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
    atomic_save(path, lambda tmp: save_file(tensors, tmp))
