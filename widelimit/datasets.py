"""Seeded toy datasets with their ground truth (SPEC §6). Each returns a ``ToyData``.

x_n = b + Σ_k z_k(n) d_k (+ noise), with true atoms d_k (rows of ``atoms``), true codes z ≥ 0 and
the data rays relative to b (``rays``; None when the data does not lie on finitely many rays).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._core.validate import check_positive_int


class ToyData(eqx.Module):
    """Data and ground truth. ``hierarchy`` lists (parent, child) atom pairs."""

    X: Float[Array, "n_samples n_features"]
    atoms: Float[Array, "width n_features"]
    codes: Float[Array, "n_samples width"]
    bias: Float[Array, " n_features"]
    rays: Float[Array, "n_rays n_features"] | None
    hierarchy: Int[np.ndarray, "n_pairs 2"]
    name: str = eqx.field(static=True)


def _unit_directions(key, k, d, dtype):
    """k random unit vectors; orthonormal when k ≤ d (QR of a Gaussian matrix)."""
    G = jax.random.normal(key, (d, max(k, 1)), dtype)
    if k <= d:
        return jnp.linalg.qr(G)[0][:, :k].T
    return (G / jnp.linalg.norm(G, axis=0)).T


def _finish(name, Z, D, b, rays, hierarchy=None, noise=0.0, key=None):
    X = b + Z @ D
    if noise:
        X = X + noise * jax.random.normal(key, X.shape, X.dtype)
    h = np.zeros((0, 2), np.int64) if hierarchy is None else np.asarray(hierarchy, np.int64)
    return ToyData(X, D, Z, b, rays, h, name)


def rays(
    key: PRNGKeyArray,
    n_samples: int = 600,
    n_rays: int = 6,
    n_features: int = 8,
    *,
    offset: float = 0.0,
    sigma: float = 0.75,
    dtype=jnp.float32,
) -> ToyData:
    """x = b + s·v_r: ray r uniform, scale s ~ lognormal(0, σ) (heavy-tailed), ‖b‖ = ``offset``
    along a random direction; directions orthonormal when n_rays ≤ n_features. Without a bias
    (offset 0) the wide optimum has exactly ``n_rays`` atoms."""
    n_samples, n_rays = (
        check_positive_int(n_samples, "n_samples"),
        check_positive_int(n_rays, "n_rays"),
    )
    kd, kr, ks, kb = jax.random.split(key, 4)
    V = _unit_directions(kd, n_rays, n_features, dtype)
    r = jax.random.randint(kr, (n_samples,), 0, n_rays)
    s = jnp.exp(sigma * jax.random.normal(ks, (n_samples,), dtype))
    Z = jax.nn.one_hot(r, n_rays, dtype=dtype) * s[:, None]
    b = offset * _unit_directions(kb, 1, n_features, dtype)[0]
    return _finish("rays", Z, V, b, V)


def hierarchy(
    key: PRNGKeyArray,
    n_samples: int = 800,
    n_pairs: int = 1,
    n_features: int = 8,
    *,
    levels: int = 2,
    p_parent: float = 0.6,
    p_child: float = 0.5,
    child_ratio: float | None = 1.0,
    sigma: float = 0.5,
    dtype=jnp.float32,
) -> ToyData:
    """Each point picks one of ``n_pairs`` chains uniformly; in it the parent ("dog") is active
    with probability p_parent and magnitude s ~ lognormal(0, σ); each
    next level ("labrador", …) active only where its parent is, with probability p_child.
    ``child_ratio`` r puts the child's code at r·s, so every point lies on one of ``levels`` rays
    per chain (dog, dog+lab, …); None draws the child's magnitude independently (no rays).
    Chains use orthonormal directions; ``hierarchy`` lists (parent, child) atoms; no bias."""
    n_samples = check_positive_int(n_samples, "n_samples")
    levels = check_positive_int(levels, "levels")
    k = n_pairs * levels
    if k > n_features:
        raise ValueError(f"n_pairs·levels = {k} atoms need n_features ≥ {k}")
    kd, ka, ks, kc = jax.random.split(key, 4)
    D = _unit_directions(kd, k, n_features, dtype)
    on = jax.random.uniform(ka, (n_samples, n_pairs, levels)) < jnp.asarray(
        [p_parent] + [p_child] * (levels - 1)
    )
    on = jnp.cumprod(on, axis=2).astype(dtype)  # a level is active only with all its ancestors
    chain = jax.random.randint(jax.random.fold_in(ka, 1), (n_samples,), 0, n_pairs)
    on = on * jax.nn.one_hot(chain, n_pairs, dtype=dtype)[:, :, None]  # one chain per point
    s = jnp.exp(sigma * jax.random.normal(ks, (n_samples, n_pairs, 1), dtype))
    if child_ratio is None:
        mag = jnp.exp(sigma * jax.random.normal(kc, (n_samples, n_pairs, levels), dtype))
        mag = mag.at[:, :, 0].set(s[:, :, 0])
    else:
        mag = s * jnp.asarray([1.0] + [child_ratio] * (levels - 1), dtype)
    Z = (on * mag).reshape(n_samples, k)
    pairs = [
        (p * levels + j, p * levels + j + 1) for p in range(n_pairs) for j in range(levels - 1)
    ]
    ray_list = None
    if child_ratio is not None:
        ray_list = []
        for p in range(n_pairs):
            coef = jnp.asarray([1.0] + [child_ratio] * (levels - 1), dtype)
            for depth in range(levels):
                v = (coef[: depth + 1, None] * D[p * levels : p * levels + depth + 1]).sum(0)
                ray_list.append(v / jnp.linalg.norm(v))
        ray_list = jnp.stack(ray_list)
    return _finish("hierarchy", Z, D, jnp.zeros(n_features, dtype), ray_list, pairs)


def mutually_exclusive(
    key: PRNGKeyArray,
    n_samples: int = 600,
    width: int = 4,
    n_features: int = 8,
    *,
    p_empty: float = 0.2,
    sigma: float = 0.5,
    dtype=jnp.float32,
) -> ToyData:
    """At most one feature per point: empty with probability p_empty, else one uniform feature
    with magnitude lognormal(0, σ); orthonormal atoms, no bias."""
    n_samples = check_positive_int(n_samples, "n_samples")
    kd, ke, kr, ks = jax.random.split(key, 4)
    D = _unit_directions(kd, width, n_features, dtype)
    r = jax.random.randint(kr, (n_samples,), 0, width)
    live = jax.random.uniform(ke, (n_samples,)) >= p_empty
    s = jnp.exp(sigma * jax.random.normal(ks, (n_samples,), dtype))
    Z = jax.nn.one_hot(r, width, dtype=dtype) * (s * live)[:, None]
    return _finish("mutually_exclusive", Z, D, jnp.zeros(n_features, dtype), D)


def one_d(
    key: PRNGKeyArray, n_samples: int = 400, kind: str = "gaussian", *, dtype=jnp.float32
) -> ToyData:
    """1-D data (N × 1): ``gaussian`` N(0.5, 1), ``uniform`` U(−1, 2) or ``bimodal`` ±1.5 + N(0, 0.3²).
    Ground truth: the antipodal atoms ±1 (the only unit atoms in 1-D), codes max(0, ±x)."""
    n_samples = check_positive_int(n_samples, "n_samples")
    if kind == "gaussian":
        x = 0.5 + jax.random.normal(key, (n_samples,), dtype)
    elif kind == "uniform":
        x = jax.random.uniform(key, (n_samples,), dtype, -1.0, 2.0)
    elif kind == "bimodal":
        k1, k2 = jax.random.split(key)
        sign = jnp.where(jax.random.bernoulli(k1, 0.5, (n_samples,)), 1.5, -1.5)
        x = sign + 0.3 * jax.random.normal(k2, (n_samples,), dtype)
    else:
        raise ValueError(f"`kind` must be 'gaussian', 'uniform' or 'bimodal', got {kind!r}")
    D = jnp.asarray([[1.0], [-1.0]], dtype)
    Z = jnp.stack([jnp.maximum(x, 0), jnp.maximum(-x, 0)], axis=1)
    return _finish(f"one_d_{kind}", Z, D, jnp.zeros(1, dtype), D)


def hull_panels(
    key: PRNGKeyArray, n_samples: int = 400, *, cosine: float = 0.0, dtype=jnp.float32
) -> dict[str, ToyData]:
    """The paper's three two-feature panels (2-D data, atoms at the given cosine):
    - ``A``: independent features, each on with probability ½, magnitudes Exp(1): while either
      is off the other covers [0, max] — stable;
    - ``B``: feature 1 large (Exp(1) + 1) only together with feature 0; alone it only takes
      values ≤ 0.1 — a missing chunk, so (0, 1) fails the hull test;
    - ``C``: mutually exclusive, each on with probability 0.4, Exp(1) magnitudes — stable."""
    n_samples = check_positive_int(n_samples, "n_samples")
    D = jnp.asarray([[1.0, 0.0], [cosine, float(np.sqrt(1 - cosine**2))]], dtype)
    ka, kb, kc = jax.random.split(key, 3)

    def exp(k, shape):
        return jax.random.exponential(k, shape, dtype)

    k1, k2 = jax.random.split(ka)
    ZA = (jax.random.uniform(k1, (n_samples, 2)) < 0.5) * exp(k2, (n_samples, 2))
    k1, k2, k3 = jax.random.split(kb, 3)
    u = jax.random.uniform(k1, (n_samples,))
    m = exp(k2, (n_samples, 2))
    both = u < 0.35
    zero_on = (u >= 0.35) & (u < 0.7)
    one_small = (u >= 0.7) & (u < 0.85)
    z0 = jnp.where(both | zero_on, m[:, 0], 0)
    z1 = jnp.where(
        both, m[:, 1] + 1, jnp.where(one_small, 0.1 * jax.random.uniform(k3, (n_samples,)), 0)
    )
    ZB = jnp.stack([z0, z1], axis=1).astype(dtype)
    k1, k2, k3 = jax.random.split(kc, 3)
    u = jax.random.uniform(k1, (n_samples,))
    ZC = jnp.stack([jnp.where(u < 0.4, 1, 0), jnp.where(u >= 0.6, 1, 0)], 1) * exp(
        k2, (n_samples, 2)
    )
    b = jnp.zeros(2, dtype)
    return {
        p: _finish(f"hull_panel_{p}", Z.astype(dtype), D, b, None)
        for p, Z in (("A", ZA), ("B", ZB), ("C", ZC))
    }


def sparse_coded(
    key: PRNGKeyArray,
    n_samples: int = 2000,
    width: int = 24,
    n_features: int = 16,
    *,
    density: float = 0.1,
    sigma: float = 0.5,
    offset: float = 2.0,
    noise: float = 0.01,
    dtype=jnp.float32,
) -> ToyData:
    """A planted dictionary: Gaussian unit atoms, each active with probability ``density`` with
    magnitude lognormal(0, σ), a bias b ~ N(0, 1)·offset/√d and isotropic noise."""
    n_samples = check_positive_int(n_samples, "n_samples")
    kd, ka, km, kb, kn = jax.random.split(key, 5)
    G = jax.random.normal(kd, (width, n_features), dtype)
    D = G / jnp.linalg.norm(G, axis=1, keepdims=True)
    on = jax.random.uniform(ka, (n_samples, width)) < density
    Z = on * jnp.exp(sigma * jax.random.normal(km, (n_samples, width), dtype))
    b = offset / np.sqrt(n_features) * jax.random.normal(kb, (n_features,), dtype)
    return _finish("sparse_coded", Z.astype(dtype), D, b, None, noise=noise, key=kn)


def hierarchy_plus_rays(
    key: PRNGKeyArray,
    n_samples: int = 800,
    n_rays: int = 4,
    n_features: int = 8,
    *,
    p_hierarchy: float = 0.4,
    p_child: float = 0.5,
    sigma: float = 0.5,
    dtype=jnp.float32,
) -> ToyData:
    """The demo set: with probability p_hierarchy a point comes from a parent/child chain ("dog",
    and "labrador" = dog + lab at the same magnitude with probability p_child), else from one of
    ``n_rays`` plain rays; all 2 + n_rays directions orthonormal, magnitudes lognormal(0, σ), no
    bias. The data lies on n_rays + 2 rays (dog, dog+lab, the plain rays): atoms 0, 1 are dog, lab."""
    n_samples = check_positive_int(n_samples, "n_samples")
    n_rays = check_positive_int(n_rays, "n_rays")
    if n_rays + 2 > n_features:
        raise ValueError(f"n_rays + 2 = {n_rays + 2} directions need n_features ≥ {n_rays + 2}")
    kd, kh, kc, kr, ks = jax.random.split(key, 5)
    D = _unit_directions(kd, n_rays + 2, n_features, dtype)
    in_h = jax.random.uniform(kh, (n_samples,)) < p_hierarchy
    child = in_h & (jax.random.uniform(kc, (n_samples,)) < p_child)
    ray = jax.random.randint(kr, (n_samples,), 0, n_rays)
    s = jnp.exp(sigma * jax.random.normal(ks, (n_samples,), dtype))
    Z = jnp.zeros((n_samples, n_rays + 2), dtype)
    Z = Z.at[:, 0].set(jnp.where(in_h, s, 0)).at[:, 1].set(jnp.where(child, s, 0))
    Z = Z.at[:, 2:].set(jax.nn.one_hot(ray, n_rays, dtype=dtype) * jnp.where(in_h, 0, s)[:, None])
    rays_ = jnp.concatenate([D[:1], ((D[0] + D[1]) / jnp.sqrt(2.0))[None], D[2:]])
    return _finish("hierarchy_plus_rays", Z, D, jnp.zeros(n_features, dtype), rays_, [(0, 1)])


__all__ = [
    "ToyData",
    "hierarchy",
    "hierarchy_plus_rays",
    "hull_panels",
    "mutually_exclusive",
    "one_d",
    "rays",
    "sparse_coded",
]


class PlantedPairs(NamedTuple):
    """A dictionary's codes with known pair relations (``planted_pairs``): X = Z D, the true
    ``absorbed`` (parent, child) pairs, ``siblings`` (split atom pairs) and ``neighbours``
    (related but not absorbed: a rarer atom leaning on another, never active with it)."""

    X: np.ndarray
    atoms: np.ndarray
    codes: np.ndarray
    absorbed: np.ndarray
    siblings: np.ndarray
    neighbours: np.ndarray


def planted_pairs(
    key: PRNGKeyArray,
    n_samples: int = 6000,
    n_features: int = 64,
    *,
    n_parents: int = 12,
    children: int = 2,
    n_split: int = 6,
    n_neighbours: int = 6,
) -> PlantedPairs:
    """Codes of a dictionary with planted absorption, split siblings and hard negatives.

    Each row activates one parent (probability 0.8; magnitude lognormal(0, 0.5)) and, half of the
    time, one of its ``children``. A child's atom is normalise(a·parent + own) with a ~ U(0.4, 1.5)
    (cosine 0.37–0.83 with the parent); on the child's rows the parent's atom is off with
    probability m ~ U(0.3, 1) per child (partial to full absorption). ``n_split`` features are
    each split into two atoms at cosine U(0.92, 0.99) that share their rows out; ``n_neighbours``
    rarer atoms lean on a parent (cosine U(0.3, 0.7)) but fire on rows of their own."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    n, d = check_positive_int(n_samples, "n_samples"), check_positive_int(n_features, "n_features")

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    atoms, absorbed, siblings, neighbours = [], [], [], []
    cols: list[np.ndarray] = []
    parent_of_row = rng.integers(0, n_parents, n)
    active = rng.random(n) < 0.8
    mag = np.exp(0.5 * rng.normal(size=n))
    has_child = active & (rng.random(n) < 0.5)
    which_child = rng.integers(0, children, n)
    for p in range(n_parents):
        P = unit(rng.normal(size=d))
        pi = len(atoms)
        atoms.append(P)
        rows_p = active & (parent_of_row == p)
        z_p = np.where(rows_p, mag, 0.0)
        for c in range(children):
            a = rng.uniform(0.4, 1.5)
            own = unit(rng.normal(size=d))  # the child's own direction
            atoms.append(unit(a * P + own))
            rows_c = rows_p & has_child & (which_child == c)
            m = rng.uniform(0.3, 1.0)
            off = rows_c & (rng.random(n) < m)
            z_p = np.where(off, 0.0, np.where(rows_c, 0.5 * z_p, z_p))  # partly or fully absorbed
            cols.append(np.where(rows_c, mag * np.exp(0.3 * rng.normal(size=n)), 0.0))
            absorbed.append((pi, len(atoms) - 1))
        cols.insert(len(cols) - children, z_p)
    for _ in range(n_split):
        F = unit(rng.normal(size=d))
        c = rng.uniform(0.92, 0.99)
        v = unit(rng.normal(size=d) - (rng.normal(size=d) @ F) * F)
        v = unit(v - (v @ F) * F)
        A, B = F, unit(c * F + np.sqrt(1 - c * c) * v)
        rows = rng.random(n) < 0.05
        half = rng.random(n) < 0.5
        siblings.append((len(atoms), len(atoms) + 1))
        atoms += [A, B]
        cols += [np.where(rows & half, mag, 0.0), np.where(rows & ~half, mag, 0.0)]
    taken = np.stack(cols, 1).sum(1) > 0
    for j in range(n_neighbours):
        pi = absorbed[j % len(absorbed)][0] if absorbed else 0
        P = atoms[pi]
        c = rng.uniform(0.3, 0.7)
        v = rng.normal(size=d)
        v = unit(v - (v @ P) * P)
        neighbours.append((pi, len(atoms)))
        atoms.append(unit(c * P + np.sqrt(1 - c * c) * v))
        cols.append(np.where(~taken & (rng.random(n) < 0.02), mag, 0.0))
    D = np.stack(atoms)
    Z = np.stack(cols, 1)
    arr = lambda x: np.asarray(x, np.int64).reshape(-1, 2)  # noqa: E731
    return PlantedPairs(Z @ D, D, Z, arr(absorbed), arr(siblings), arr(neighbours))


class Activations(NamedTuple):
    """Real activations shipped with widelimit: ``X`` (n_samples, 384) float32, the ``words`` they
    come from, the ``layer`` and the ``versions`` of what made them."""

    X: np.ndarray
    words: np.ndarray
    layer: int
    versions: dict


def activations(n_samples: int | None = None) -> Activations:
    """8000 real activations: all-MiniLM-L6-v2's residual stream after layer 3 of 6 (d = 384),
    averaged over the tokens of each of the 8000 most frequent English words (wordfreq).

    Made by ``benchmarks/data/make_activations.py`` (stored in float16, returned in float32);
    ``n_samples`` takes the first (most frequent) words. Nothing is downloaded.
    """
    import json
    from importlib.resources import files

    with files("widelimit").joinpath("data/activations.npz").open("rb") as f:
        z = np.load(f, allow_pickle=False)
        X, words, layer, versions = z["X"], z["words"], int(z["layer"]), str(z["versions"])
    if n_samples is not None:
        if not 1 <= int(n_samples) <= len(X):
            raise ValueError(f"`n_samples` must be in [1, {len(X)}], got {n_samples}")
        X, words = X[: int(n_samples)], words[: int(n_samples)]
    return Activations(X.astype(np.float32), words, layer, json.loads(versions))
