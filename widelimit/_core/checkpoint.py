"""Atomic checkpoints of a long fit: pytree leaves (equinox serialisation) plus a JSON manifest.

A checkpoint is only resumed when its fingerprint (X hashed in full, the PRNG key, λ and every
option) matches; a mismatch raises ``ValueError`` before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os

import equinox as eqx
import numpy as np

from .atomic import atomic_write_bytes, write_json

_LEAVES = "state-{}.eqx"  # formatted with the history capacity (its arrays' length)
_MANIFEST = "manifest.json"


def digest(a) -> str:
    """SHA-256 of an array's shape, dtype and every byte (streamed in 64 MiB slices)."""
    a = np.asarray(a)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    flat = a.reshape(-1) if a.ndim else a.reshape(1)
    step = max(1, (64 << 20) // max(a.itemsize, 1))
    for i in range(0, flat.size, step):
        h.update(np.ascontiguousarray(flat[i : i + step]).tobytes())
    return h.hexdigest()


def key_data(key) -> list | None:
    """A PRNG key (raw uint32 or typed) as a JSON list, or None."""
    if key is None:
        return None
    import jax

    k = (
        key
        if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
        else (jax.random.key_data(key))
    )
    return np.asarray(k).astype(np.int64).ravel().tolist()


def _option(v):
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if hasattr(v, "shape") and hasattr(v, "dtype"):  # arrays: their full digest
        return digest(v)
    return v


def fingerprint(X, *, key=None, **options) -> dict:
    """Everything that changes a resumable result: X hashed in full (every byte, not a sample), the
    PRNG key, and every option (arrays by their digest). Stopping rules (``max_epochs``, ``tol``)
    are left out on purpose: a rerun with a larger budget continues the stored run."""
    Xn = np.asarray(X)
    return {
        "shape": list(Xn.shape),
        "dtype": str(Xn.dtype),
        "sha256": digest(Xn),
        "key": key_data(key),
        **{k: _option(v) for k, v in options.items()},
    }


def _leaves_file(directory):
    names = [f for f in os.listdir(directory) if f.startswith("state-") and f.endswith(".eqx")]
    return os.path.join(directory, names[0]) if names else None


def saved_capacity(directory: str | None) -> int | None:
    """History capacity of the saved state in ``directory`` (None if there is none)."""
    if directory is None or not os.path.isdir(directory):
        return None
    path = _leaves_file(directory)
    return None if path is None else int(os.path.basename(path)[6:-4])


def across_processes(
    fp: dict, rows: tuple[str, ...] = ("shape", "dtype", "sha256", "source")
) -> dict:
    """The fingerprint of a ``jax.distributed`` job, the same on every process: its options
    (``fp`` without the ``rows`` fields) and, in process order, the SHA-256 of each process's whole
    ``fp`` (its own rows): a resume with other rows or options on any process is refused."""
    from .processes import bytes_of_processes

    own = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).digest()
    return {
        **{k: v for k, v in fp.items() if k not in rows},
        "processes": [b.hex() for b in bytes_of_processes(own)],
    }


def of_job(fp: dict | None, distributed: bool) -> tuple[dict | None, bool]:
    """A job's checkpoint fingerprint and whether this process writes the checkpoint: in a
    ``jax.distributed`` job, ``across_processes(fp)`` and process 0 only (every process reads
    what it writes); otherwise ``fp`` as it is, and this process."""
    from .processes import is_writer

    if distributed and fp is not None:
        fp = across_processes(fp)
    return fp, is_writer(distributed)


def fingerprint_difference(old, new) -> str:
    """The fields of two fingerprints that differ, as 'field: stored → requested'."""
    if not isinstance(old, dict):
        return "the stored fingerprint is unreadable"
    keys = sorted(set(old) | set(new))
    diff = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diff)


def read_json(path: str) -> dict:
    """The JSON at ``path``; ValueError naming the file if it cannot be read or parsed."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path!r} is unreadable: {e}") from e


def check_manifest(path: str, fp: dict) -> dict | None:
    """The JSON manifest at ``path`` (None if absent); ValueError if unreadable or if its
    fingerprint differs from ``fp`` (the directory holds another problem)."""
    if not os.path.exists(path):
        return None
    manifest = read_json(path)
    old = manifest.get("fingerprint")
    if old != fp:
        raise ValueError(
            f"{os.path.dirname(path)!r} holds results of a different problem "
            f"({fingerprint_difference(old, fp)}); use another directory"
        )
    return manifest


def load(directory: str | None, like, fp: dict):
    """Return (state, manifest) from ``directory`` or (None, None); ValueError on a mismatch."""
    if directory is None:
        return None, None
    manifest = check_manifest(os.path.join(directory, _MANIFEST), fp)
    path = _leaves_file(directory) if manifest is not None else None
    if path is None:  # no checkpoint, or a run killed before its first state reached the disk
        return None, None
    try:
        state = eqx.tree_deserialise_leaves(path, like)
    except Exception as e:  # noqa: BLE001 - any failure means an unusable checkpoint
        raise ValueError(
            f"checkpoint in {directory!r} is corrupt or was written by another version of "
            f"widelimit (its state has another layout): {e}"
        ) from e
    return state, manifest


def save(directory: str, state, manifest: dict, capacity: int):
    """Write the manifest (first time only) and the state, each atomically (write, then rename)."""
    os.makedirs(directory, exist_ok=True)
    mpath = os.path.join(directory, _MANIFEST)
    if not os.path.exists(mpath):
        write_json(mpath, manifest)
    old = _leaves_file(directory)
    new = os.path.join(directory, _LEAVES.format(capacity))
    atomic_write_bytes(new, lambda f: eqx.tree_serialise_leaves(f, state))
    if old is not None and old != new:
        os.remove(old)
