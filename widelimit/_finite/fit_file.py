"""Saving and loading fitted dictionaries (``.npz``, written atomically)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._core.atomic import atomic_write_bytes
from .._core.code_store import CodeStore
from .._core.results import RESULTS
from .._core.sparse_codes import SparseCodes
from .epochs import History
from .fit import DictionaryFit

_FIT_KEYS = ("atoms", "bias", "codes", "loss", "wide_bound", "lam", "n_epochs", "parents")
_HIST_KEYS = ("loss", "gap", "l0", "dead", "resampled")


def save_fit(fit: DictionaryFit, path: str) -> None:
    """Write a ``DictionaryFit`` to ``path`` (.npz) atomically (``SparseCodes`` codes as their
    indices and values; a ``CodeStore`` is read into them)."""
    codes = fit.codes.load() if isinstance(fit.codes, CodeStore) else fit.codes
    arrays = {k: np.asarray(getattr(fit, k)) for k in _FIT_KEYS if k != "codes"}
    if isinstance(codes, SparseCodes):
        arrays |= {"codes_indices": np.asarray(codes.indices), "codes_values": np.asarray(codes.values),
                   "codes_width": np.asarray(codes.width)}  # fmt: skip
    else:
        arrays["codes"] = np.asarray(codes)
    arrays |= {f"history_{k}": np.asarray(getattr(fit.history, k)) for k in _HIST_KEYS}
    arrays["fit_bias"] = np.asarray(fit.fit_bias)
    arrays["result"] = np.asarray(result_name(fit.result))
    for k in _STATUS_KEYS:
        arrays[k] = np.asarray(float(getattr(fit, k)))
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


def load_fit(path: str) -> DictionaryFit:
    """Read a ``DictionaryFit`` written by ``save_fit``; ValueError if the file is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: jnp.asarray(z[k]) for k in _FIT_KEYS if k != "codes"}
            if "codes_indices" in z:
                a["codes"] = SparseCodes(
                    jnp.asarray(z["codes_indices"]), jnp.asarray(z["codes_values"]),
                    int(z["codes_width"]),
                )  # fmt: skip
            else:
                a["codes"] = jnp.asarray(z["codes"])
            h = History(*(jnp.asarray(z[f"history_{k}"]) for k in _HIST_KEYS))
            fit_bias = bool(z["fit_bias"])
            # status fields (absent from files written before they existed)
            status = {k: float(z[k]) for k in _STATUS_KEYS if k in z}
            if "result" in z:
                status["result"] = getattr(RESULTS, str(z["result"]))
    except Exception as e:  # noqa: BLE001 - zip, pickle-free npz and key errors all mean a bad file
        raise ValueError(f"{path!r} is not a widelimit fit file: {e}") from e
    return DictionaryFit(history=h, fit_bias=fit_bias, **a, **status)


_STATUS_KEYS = ("code_kkt", "atom_stationarity", "bias_residual", "seconds", "compile_seconds")


def result_name(result) -> str:
    """The ``RESULTS`` member's name (``successful``, ``max_steps_reached``, …)."""
    for name in ("successful", "max_steps_reached", "nonfinite", "out_of_range", "stalled"):
        if bool(result == getattr(RESULTS, name)):
            return name
    raise ValueError(f"unknown result {result!r}")
