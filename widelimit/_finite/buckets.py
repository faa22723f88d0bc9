"""Width buckets: a full-batch fit of K atoms runs at the bucket size K_b ≥ K, the K_b − K extra
atoms zero rows, so that the fits of a sweep (or a user's new width) reuse compiled programs.

Buckets are 2^j and 3·2^(j−1) (1, 2, 3, 4, 6, 8, 12, 16, 24, …): at most a third of a bucket is
padding, and widths up to K use O(log K) buckets. A zero atom is inert in every step of a fit: its
correlation ⟨0, r_n⟩ = 0 < λ keeps its codes 0 (nonnegative lasso), its statistics A_kk, B_k are 0
so the atom update leaves it 0, its polish gradient is 0, and ``_resample_dead`` and the dead
count skip it (a fitted atom always has a unit row). The returned fit has its K atoms only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._core.validate import to_device


def width_bucket(k: int) -> int:
    """The smallest bucket 2^j or 3·2^(j−1) that holds k ≥ 1 atoms."""
    p = 1 << max(int(k) - 1, 0).bit_length()  # the power of two ≥ k
    three = 3 * p // 4
    return three if p >= 4 and three >= k else p


def _pad(a, kb: int, axis: int, fill):
    """Host array ``a`` with ``fill`` appended along ``axis`` up to kb entries."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, kb - a.shape[axis])
    return np.pad(a, pad, constant_values=fill)


def pad_atoms(D, kb: int):
    """D (…, K, d) with zero rows up to kb atoms (padded on the host: an eager ``jnp.pad`` would
    compile a program for every width)."""
    if kb == D.shape[-2]:
        return D
    D = np.asarray(D)
    return to_device(_pad(D, kb, D.ndim - 2, 0), D.dtype)


def pad_parents(parents, kb: int):
    """Parent indices (…, K) padded with −1 (no parent) to kb."""
    parents = np.asarray(parents, np.int32)
    return _pad(parents, kb, parents.ndim - 1, -1)


def unpad_fit(fit, k: int):
    """The fit of the first k atoms (the rest are the bucket's zero atoms, with zero codes)."""
    if fit.atoms.shape[0] == k:
        return fit
    return dataclasses.replace(
        fit, atoms=fit.atoms[:k], codes=fit.codes[:, :k], parents=fit.parents[:k]
    )
