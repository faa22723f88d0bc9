"""Every SAE architecture trains with the one shared loop: its loss falls, and it recovers a planted
dictionary far better than chance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import widelimit as wl

K, D_IN, N, S = 12, 20, 3000, 3


def planted(signed=False, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(K, D_IN))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((N, K))
    for n in range(N):
        Z[n, rng.choice(K, S, replace=False)] = rng.uniform(1, 2, S)
    if signed:
        Z *= rng.choice([-1, 1], size=Z.shape)
    return D, Z @ D + (0 if signed else 0.5) + 0.01 * rng.normal(size=(N, D_IN))


def match(D, W):
    """For each planted atom, the largest |cos| with a learned decoder row."""
    W = np.asarray(W) / np.linalg.norm(np.asarray(W), axis=1, keepdims=True)
    return np.abs(D @ W.T).max(axis=1)


# (architecture, width, λ, extra, lr, steps, min and mean |cos| over planted atoms); measured
# (seeded, CPU): standard .87/.95, topk .97/.98, batchtopk .95/.96, matryoshka .93/.95,
# jumprelu .95/.96, gated .71/.95, abstopk 1.0/1.0; chance (a random dictionary) .48 mean
W2 = 2 * K  # twice overcomplete, so that a dead or duplicated atom does not hide a planted one
CASES = [
    ("standard", W2, 0.1, {}, 1e-3, 3000, 0.85, 0.93),
    ("topk", W2, None, {"k": S}, 1e-3, 3000, 0.95, 0.97),
    ("batchtopk", W2, None, {"k": S}, 1e-3, 3000, 0.93, 0.95),
    ("matryoshka", 2 * W2, None, {"k": S, "widths": (W2, 2 * W2)}, 1e-3, 3000, 0.9, 0.94),
    ("jumprelu", W2, 0.1, {}, 1e-3, 3000, 0.92, 0.94),
    ("gated", W2, 0.2, {}, 3e-3, 3000, 0.7, 0.92),
    ("abstopk", W2, None, {"k": S}, 1e-3, 3000, 0.97, 0.98),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_architecture_recovers_a_planted_dictionary(case):
    arch, width, lam, extra, lr, steps, min_cos, mean_cos = case
    D, X = planted(signed=arch == "abstopk")
    res = wl.train_sae(
        X, width, lam, architecture=arch, key=jax.random.PRNGKey(1), steps=steps,
        batch_size=128, optimizer=optax.adam(lr), **extra,
    )  # fmt: skip
    losses = np.asarray(res.losses)
    assert losses[-100:].mean() < 0.7 * losses[:100].mean()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(res.sae.W_dec), axis=1), 1, rtol=1e-5)
    # Matryoshka: the inner prefix alone must hold the planted atoms
    W = res.sae.W_dec[:W2] if arch == "matryoshka" else res.sae.W_dec
    c = match(D, W)
    chance = match(D, np.random.default_rng(5).normal(size=(width, D_IN)))
    assert c.min() >= min_cos and c.mean() >= mean_cos, (np.round(c, 3), chance.mean())
    assert chance.mean() < 0.7
    # the trained model's sparsity is what was asked for
    l0 = float(jnp.mean(jnp.sum(res.sae.encode(jnp.asarray(X)) != 0, axis=1)))
    assert 1 <= l0 <= (1.5 * S if "k" in extra else 3 * S), l0


def test_batchtopk_threshold_tracks_the_batch_rule():
    # after training, the inference threshold gives about the same L0 as the batch top-k rule
    _, X = planted()
    sae = wl.train_sae(
        X, K, architecture="batchtopk", k=S, key=jax.random.PRNGKey(0), steps=1500
    ).sae
    Xj = jnp.asarray(X)
    l0_inf = float(jnp.mean(jnp.sum(sae.encode(Xj) > 0, axis=1)))
    l0_batch = float(jnp.mean(jnp.sum(sae.encode_batch(Xj) > 0, axis=1)))
    assert abs(l0_batch - S) < 0.05 and abs(l0_inf - S) < 0.5, (l0_inf, l0_batch)


def test_jumprelu_straight_through_derivatives():
    from widelimit._sae.jumprelu import jump, step

    pre = jnp.array([0.5, 1.02, 2.0])
    th = jnp.array([1.0, 1.0, 1.0])
    eps = 0.1
    # d/dθ Σ π H(π−θ) = −(θ/ε) K((π−θ)/ε): only the entry within ε/2 of θ contributes
    g = jax.grad(lambda t: jnp.sum(jump(pre, t, eps)))(th)
    np.testing.assert_allclose(g, [0, -1.0 / eps, 0])
    g = jax.grad(lambda t: jnp.sum(step(pre, t, eps)))(th)
    np.testing.assert_allclose(g, [0, -1 / eps, 0])
    # the exact derivative in π: H(π − θ)
    g = jax.grad(lambda p: jnp.sum(jump(p, th, eps)))(pre)
    np.testing.assert_allclose(g, [0, 1, 1])
    assert float(jnp.sum(jax.grad(lambda p: jnp.sum(step(p, th, eps)))(pre))) == 0


def test_every_architecture_saves_and_reloads(tmp_path):
    _, X = planted()
    Xj = jnp.asarray(X)
    for arch, lam, extra in [(a, lam, e) for a, _, lam, e, *_ in CASES]:
        width = 2 * W2 if arch == "matryoshka" else W2
        sae = wl.train_sae(
            X, width, lam, architecture=arch, key=jax.random.PRNGKey(0), steps=20, **extra
        ).sae
        wl.save_saelens(sae, tmp_path / arch)
        back = wl.load_saelens(tmp_path / arch)
        assert type(back) is type(sae)
        np.testing.assert_allclose(np.asarray(back(Xj)), np.asarray(sae(Xj)), rtol=1e-5, atol=1e-5)


def test_bad_training_arguments():
    _, X = planted()
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        wl.train_sae(X, 4, 0.1, architecture="nope", key=key)
    with pytest.raises(ValueError, match="needs `k`"):
        wl.train_sae(X, 4, architecture="topk", key=key)
    with pytest.raises(ValueError, match="needs `k`"):
        wl.train_sae(X, 4, architecture="topk", k=5, key=key)
    with pytest.raises(ValueError, match="needs `lam`"):
        wl.train_sae(X, 4, architecture="jumprelu", key=key)
    with pytest.raises(ValueError, match="widths"):
        wl.train_sae(X, 8, architecture="matryoshka", k=2, widths=(4, 6), key=key)
    with pytest.raises(ValueError):
        wl.train_sae(X, 0, 0.1, key=key)
    with pytest.raises(ValueError):
        wl.train_sae(X, 4, -1.0, key=key)
