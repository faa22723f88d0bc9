"""Absorption that means absorption (issue 19): precision and recall of ``classify_pairs``'s
absorption and split-sibling calls against ground truth, beside the rule it replaced (every
candidate pair, nearly parallel siblings included, ranked by missing fraction alone).

Ground truth:
1. ``datasets.planted_pairs``: a dictionary's codes with planted partial/full absorption
   (parent, child), split siblings and hard negatives (rarer atoms leaning on a parent, never
   active with it: no test on codes and cosines can tell them from full absorption);
2. toy hierarchies (``datasets.hierarchy``, 3 chains, depth 2, 3 and 4, child codes at the
   parent's magnitude so the data lie on rays): dictionaries fitted at K = the number of rays
   (one atom per ray: each deeper ray's atom absorbs its ancestors, the paper's wide-limit
   arrangement). Each atom is matched to its nearest ray (cosine ≥ 0.95); a true absorption is a
   (parent ray, child ray) pair of one chain, one level apart. (Wider fits of noise-free rays
   give duplicate atoms that fire together, not split siblings; siblings are scored on 1.)
3. Real activations: the bundled set (``datasets.activations``) has words but no taxonomy, and
   nothing can be downloaded, so there is no ground truth to score against; not run.

Writes ``benchmarks/results/absorption.json``.

    python benchmarks/absorption.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import write  # noqa: E402

import widelimit as wl  # noqa: E402


def pr(called, truth):
    """Precision and recall of a set of called pairs against the true ones."""
    called, truth = set(called), set(truth)
    hit = len(called & truth)
    return {
        "called": len(called),
        "true": len(truth),
        "hits": hit,
        "precision": hit / len(called) if called else float("nan"),
        "recall": hit / len(truth) if truth else float("nan"),
    }


def unordered(pairs):
    return {tuple(sorted(p)) for p in np.asarray(pairs).reshape(-1, 2).tolist()}


def scored(c, absorbed, siblings, old_rule):
    """Absorption scored as unordered pairs (is the relation found?) and, among the hits, the share
    whose (parent, child) direction is right; siblings as unordered pairs; the old rule beside."""
    truth = unordered(absorbed)
    called = {tuple(p) for p in c.absorption.tolist()}
    hits = [p for p in called if tuple(sorted(p)) in truth]
    directed = {tuple(p) for p in np.asarray(absorbed).reshape(-1, 2).tolist()}
    right = sum(p in directed for p in hits) / len(hits) if hits else float("nan")
    return {
        "absorption": pr(unordered(c.absorption), truth) | {"direction_right": right},
        "siblings": pr(unordered(c.siblings), unordered(siblings)),
        "old_rule_absorption": pr(unordered(old_rule), truth),
    }


def old_candidates(codes, atoms):
    """The rule before this change: cosine ≥ 0.3, child rarer, parent missing on ≥ 10 % of it
    (nearly parallel siblings and cousins included)."""
    Z, D = np.asarray(codes) > 0, np.asarray(atoms, np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    co = Z.T.astype(np.int64) @ Z
    s = np.diag(co)
    C = D @ D.T
    frac = 1 - co / np.maximum(s[None, :], 1)
    both = (s[:, None] > 0) & (s[None, :] > 0) & ~np.eye(len(s), dtype=bool)
    return np.argwhere(both & (C >= 0.3) & (s[None, :] < s[:, None]) & (frac >= 0.1))


def planted(seeds):
    rows = []
    for s in range(seeds):
        p = wl.datasets.planted_pairs(jax.random.key(s))
        c = wl.classify_pairs(p.codes, p.atoms)
        rows.append(scored(c, p.absorbed, p.siblings, old_candidates(p.codes, p.atoms)))
        rows[-1]["neighbours_called"] = len(
            {tuple(x) for x in p.neighbours.tolist()} & {tuple(x) for x in c.absorption.tolist()}
        )
    return rows


def hierarchy(levels, seed):
    h = wl.datasets.hierarchy(
        jax.random.key(seed), n_samples=3000, n_pairs=3, n_features=16, levels=levels,
        p_parent=0.9, p_child=0.6,
    )  # fmt: skip
    R = np.asarray(h.rays)
    n_rays = len(R)
    K = n_rays
    lam = 0.05
    fit = wl.fit_dictionary(
        h.X, K, lam, key=jax.random.key(seed), fit_bias=False, max_epochs=300, progress=False
    )
    A = np.asarray(fit.atoms)
    cos = A @ R.T
    ray_of = np.where(cos.max(1) >= 0.95, cos.argmax(1), -1)
    chain, depth = np.arange(n_rays) // levels, np.arange(n_rays) % levels
    live = np.asarray(fit.codes).sum(0) > 0
    absorbed, siblings = [], []  # no siblings on noise-free rays
    for i in range(K):
        for j in range(K):
            ri, rj = ray_of[i], ray_of[j]
            if i == j or ri < 0 or rj < 0 or not (live[i] and live[j]):
                continue
            if chain[ri] == chain[rj] and depth[ri] + 1 == depth[rj]:  # a direct parent/child
                absorbed.append((i, j))
    c = wl.classify_pairs(fit.codes, fit.atoms)
    row = scored(c, absorbed, siblings, old_candidates(fit.codes, fit.atoms))
    return {"levels": levels, "width": K, "n_rays": n_rays, "matched_atoms": int((ray_of >= 0).sum()),
            "gap": float(fit.gap), **row}  # fmt: skip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    seeds = 2 if args.quick else 5
    out = {"planted": planted(seeds), "hierarchy": []}
    for levels in (2,) if args.quick else (2, 3, 4):
        out["hierarchy"].append(hierarchy(levels, seed=levels))
        r = out["hierarchy"][-1]
        print(
            f"depth {levels}, K = {r['width']}: {r['absorption']}; old rule {r['old_rule_absorption']}"
        )
    for r in out["planted"]:
        print(
            f"planted: absorption {r['absorption']}, siblings {r['siblings']}, old {r['old_rule_absorption']}"
        )
    out["real_activations"] = "not run: the bundled set has no taxonomy (see the docstring)"
    print(write("absorption_quick" if args.quick else "absorption", out))


if __name__ == "__main__":
    main()
