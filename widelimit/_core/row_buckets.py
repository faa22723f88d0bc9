"""Row buckets: a small in-memory input is padded to one of few row counts, so that a new N reuses
the programs compiled for another N in its bucket (0.4–4 s of compiling at N = 10³, against a
solve of milliseconds to a second).

An eager call on X (N × d) with N·d ≤ 2²⁰ (``SMALL``) pads X on the host with copies of row 0 up
to ``row_bucket(N)`` rows (four sizes per octave: under a quarter more rows), with weight 0 where
the computation is weighted, and cuts the padded rows' outputs on the host (an eager concatenate
or slice would compile a program per N). Larger arrays are not padded: there the copy and the
padded rows' work cost more than a compile (1000 × 384: 0.78 → 1.14 ms a warm wide solve;
20,001 × 768: 39 → 69 ms); streamed as an ``ActivationStore`` (fixed blocks) they compile nothing
for a new N either. Inside a user's ``jit``, ``vmap`` or ``grad`` nothing is padded.
"""

from __future__ import annotations

import jax
import numpy as np

from .validate import to_device

SMALL = 2**20


def row_bucket(n: int) -> int:
    """The smallest of 8 and P/2 + i·P/8 (i = 1…4, P the power of two ≥ n) that holds n rows: four
    sizes per octave, so padding is under a quarter of n and row counts up to N use O(log N)."""
    if n <= 8:
        return 8
    step = (1 << (n - 1).bit_length()) // 8
    return -(-n // step) * step


def block_cap(rows: int, n_rows: int | None, multiple: int = 1) -> int:
    """Rows per padded block of a streamed pass over a store of ``n_rows`` rows: ``rows``, or the
    store's ``row_bucket`` (rounded up to ``multiple``) when that is smaller. A small store's
    blocks are then not padded to a large block (200 rows of d = 2 were padded to a 4·10⁶-row
    block in every pass), and a store of another size in the same bucket compiles nothing."""
    if n_rows is None:
        return rows
    cap = -(-row_bucket(max(int(n_rows), 1)) // multiple) * multiple
    return min(rows, cap)


def _on_host_path(a) -> bool:
    """Whether ``a`` is padded and cut on the host: concrete, and not split over devices."""
    if isinstance(a, jax.core.Tracer):
        return False
    return not isinstance(a, jax.Array) or len(a.sharding.device_set) == 1


def padded_rows(*arrays, width: int = 0) -> int | None:
    """The bucket to pad the rows of ``arrays`` (N × …, concrete, on one device) to, or None when
    they stay as they are: traced, sharded, already a bucket, or over ``SMALL`` entries per row
    count N·max(d, ``width``)."""
    n, d = arrays[0].shape[:2]
    if not all(_on_host_path(a) for a in arrays):
        return None
    nb = row_bucket(n)
    return None if nb == n or n * max(d, width) > SMALL else nb


def pad_rows(a, nb: int, fill=None):
    """``a`` (N × …) with rows appended up to nb on the host: copies of row 0, or ``fill``."""
    h = np.asarray(a)
    n = h.shape[0]
    extra = np.broadcast_to(
        h[:1] if fill is None else np.asarray(fill, h.dtype), (nb - n, *h.shape[1:])
    )
    return to_device(np.concatenate([h, extra]), h.dtype)


def cut_rows(a, n: int, axis: int = 0):
    """The first n entries of ``a`` along ``axis`` (the real rows), sliced on the host when concrete
    and on one device (an eager slice compiles a program per shape)."""
    if a.shape[axis] == n:
        return a
    index = (slice(None),) * axis + (slice(0, n),)
    if not _on_host_path(a):
        return a[index]
    h = np.asarray(a)[index]
    return to_device(h, h.dtype)
