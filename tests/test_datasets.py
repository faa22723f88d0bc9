"""Toy datasets: recipes hold (X = b + Z D), ground truth is consistent, seeds reproduce."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl
from widelimit import datasets


@pytest.mark.parametrize(
    "make",
    [
        lambda k: datasets.rays(k, offset=1.0),
        lambda k: datasets.hierarchy(k, n_pairs=2, levels=3),
        lambda k: datasets.hierarchy(k, child_ratio=None),
        lambda k: datasets.mutually_exclusive(k),
        lambda k: datasets.one_d(k, kind="bimodal"),
        lambda k: datasets.hierarchy_plus_rays(k),
        lambda k: datasets.hull_panels(k)["B"],
    ],
)
def test_recipe_and_reproducibility(make):
    a, b = make(jax.random.key(0)), make(jax.random.key(0))
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, make(jax.random.key(1)).X)
    np.testing.assert_allclose(a.X, a.bias + a.codes @ a.atoms, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a.atoms, axis=1), 1, atol=1e-6)
    assert float(a.codes.min()) >= 0 and a.X.dtype == jnp.float32
    if a.rays is not None:  # every nonzero point lies on one of the rays (relative to b)
        P = np.asarray(a.X - a.bias, np.float64)
        P = P[np.linalg.norm(P, axis=1) > 0]
        cos = (P / np.linalg.norm(P, axis=1, keepdims=True)) @ np.asarray(a.rays, np.float64).T
        assert np.all(cos.max(1) > 1 - 1e-5)


def test_hierarchy_ground_truth():
    h = datasets.hierarchy(jax.random.key(0), n_pairs=2, levels=3, n_features=8)
    assert h.hierarchy.tolist() == [[0, 1], [1, 2], [3, 4], [4, 5]]
    Z = np.asarray(h.codes)
    for p, c in h.hierarchy:
        assert np.all(Z[Z[:, c] > 0, p] > 0)  # a child only with its parent
    assert h.rays.shape == (6, 8)


def test_sparse_coded_and_one_d():
    s = datasets.sparse_coded(jax.random.key(0), n_samples=500, density=0.1)
    assert s.X.shape == (500, 16) and s.codes.shape == (500, 24)
    np.testing.assert_allclose(s.X, s.bias + s.codes @ s.atoms, atol=0.1)
    x = datasets.one_d(jax.random.key(0), kind="uniform").X
    assert x.shape == (400, 1) and -1 <= float(x.min()) and float(x.max()) <= 2
    f64 = datasets.rays(jax.random.key(0), dtype=jnp.float64)
    assert f64.X.dtype == jnp.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        datasets.one_d(jax.random.key(0), kind="cauchy")
    with pytest.raises(ValueError, match="n_features"):
        datasets.hierarchy(jax.random.key(0), n_pairs=5, levels=2, n_features=8)
    with pytest.raises(ValueError, match="n_samples"):
        datasets.rays(jax.random.key(0), n_samples=0)
    with pytest.raises(ValueError, match="n_features"):
        datasets.hierarchy_plus_rays(jax.random.key(0), n_rays=7, n_features=8)
    assert isinstance(wl.datasets.ToyData, type)
