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


def pad_atoms(D, kb: int):
    """D (…, K, d) with zero rows up to kb atoms (padded on the host: an eager ``jnp.pad`` would
    compile a program for every width)."""
    k = D.shape[-2]
    if kb == k:
        return D
    pad = [(0, 0)] * D.ndim
    pad[-2] = (0, kb - k)
    D = np.asarray(D)
    return to_device(np.pad(D, pad), D.dtype)


def pad_parents(parents, kb: int):
    """Parent indices (…, K) padded with −1 (no parent) to kb."""
    parents = np.asarray(parents, np.int32)
    k = parents.shape[-1]
    pad = [(0, 0)] * parents.ndim
    pad[-1] = (0, kb - k)
    return np.pad(parents, pad, constant_values=-1)


def unpad_fit(fit, k: int):
    """The fit of the first k atoms (the rest are the bucket's zero atoms, with zero codes)."""
    if fit.atoms.shape[0] == k:
        return fit
    return dataclasses.replace(
        fit, atoms=fit.atoms[:k], codes=fit.codes[:, :k], parents=fit.parents[:k]
    )
