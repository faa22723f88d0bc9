"""Feature splitting across widths (SPEC §5): which atom at width K_t descends from which at K_{t−1}.

Links come from the split lineage of a warm-started sweep (``DictionaryFit.parents``) or, for fits
made independently, from decoder cosines (each atom's parent is the previous width's atom with the
largest cosine; several children may share a parent — that is a split). For each link it records
the cosine to the parent and the child's share of its parent's code mass, Σ_n z_child / Σ_n z_parent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float, Int

from .._core.code_store import code_usage


@dataclasses.dataclass(frozen=True)
class SplitTree:
    """Per width t: ``parents[t]`` (K_t,) indices into width t−1 (−1 at t = 0), ``cosine[t]``,
    ``share[t]`` (child mass / parent mass) and ``mass[t]`` (Σ_n z_k(n))."""

    widths: tuple[int, ...]
    parents: list[Int[np.ndarray, " k"]]
    cosine: list[Float[np.ndarray, " k"]]
    share: list[Float[np.ndarray, " k"]]
    mass: list[Float[np.ndarray, " k"]]
    method: str

    def children(self, t: int, parent: int) -> np.ndarray:
        """Indices at width index t whose parent (at t − 1) is ``parent``."""
        return np.flatnonzero(self.parents[t] == parent)

    def splits(self) -> list[dict]:
        """Every parent with two or more children: width, parent, children, shares and cosines."""
        out = []
        for t in range(1, len(self.widths)):
            for p in np.unique(self.parents[t]):
                ch = self.children(t, p)
                if p >= 0 and len(ch) >= 2:
                    out.append(
                        {
                            "width": self.widths[t],
                            "parent": int(p),
                            "children": ch.tolist(),
                            "share": self.share[t][ch].round(4).tolist(),
                            "cosine": self.cosine[t][ch].round(4).tolist(),
                        }
                    )
        return out


def _unit(a):
    a = np.asarray(a, np.float64)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1)


def split_tree(
    atoms: list, codes: list, parents: list | None = None, *, method: str | None = None
) -> SplitTree:
    """Build the tree from per-width atoms (K_t, d) and codes (N, K_t: dense, ``SparseCodes`` or a
    ``CodeStore``); ``parents`` (per width, indices into the previous width) use the lineage,
    otherwise (or ``method="cosine"``) the parent is the previous atom with the largest decoder
    cosine."""
    if len(atoms) != len(codes) or not atoms:
        raise ValueError("`atoms` and `codes` must be non-empty lists of the same length")
    method = method or ("lineage" if parents is not None else "cosine")
    if method not in ("lineage", "cosine"):
        raise ValueError(f"`method` must be 'lineage' or 'cosine', got {method!r}")
    D = [_unit(a) for a in atoms]
    mass = [code_usage(z)[1] for z in codes]  # dense, SparseCodes or a CodeStore
    par, cos, share = [-np.ones(len(D[0]), np.int64)], [np.ones(len(D[0]))], [np.ones(len(D[0]))]
    for t in range(1, len(D)):
        C = D[t] @ D[t - 1].T
        if method == "lineage":
            p = np.asarray(parents[t], np.int64)
            if (
                p.shape != (len(D[t]),)
                or p.min(initial=0) < -1
                or p.max(initial=0) >= len(D[t - 1])
            ):
                raise ValueError(
                    f"`parents[{t}]` must index the {len(D[t - 1])} atoms of width {t - 1}"
                )
        else:
            p = np.argmax(C, axis=1)
        ok = p >= 0
        c = np.where(ok, C[np.arange(len(p)), np.maximum(p, 0)], np.nan)
        pm = mass[t - 1][np.maximum(p, 0)]
        s = np.where(ok & (pm > 0), mass[t] / np.where(pm > 0, pm, 1), np.nan)
        par.append(p)
        cos.append(c)
        share.append(s)
    widths = tuple(len(d) for d in D)
    return SplitTree(widths, par, cos, share, mass, method)
