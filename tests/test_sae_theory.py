"""docs/theory.md, "SAEs": every claim about SAEs is checked here.

- an SAE read as a dictionary reconstructs exactly what the SAE does;
- the λ an SAE implies is λ itself when its codes are exact lasso codes;
- L_SAE ≥ L_exact ≥ W(λ);
- the decoder (tangential), encoder-scale (radial, with λ_own) and bias conditions are necessary
  for every architecture: when one fails, the architecture's own loss falls at first order along
  the perturbation that the condition names, at exactly the predicted rate;
- Matryoshka's conditions hold with level-summed residuals, not the full residual.
"""

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl
from widelimit._analysis.sae_conditions import _level_sums, training_codes

FIX = pathlib.Path(__file__).parent / "fixtures" / "saelens"


@pytest.mark.parametrize("name", sorted(p.name for p in FIX.iterdir() if p.is_dir()))
def test_an_sae_is_a_dictionary_with_unit_atoms(name):
    sae = wl.load_saelens(FIX / name)
    X = jnp.asarray(np.load(FIX / name / "expected.npz")["X"])
    D, Z, b = sae.as_dictionary(X)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(D), axis=1), 1, rtol=1e-6)
    assert float(jnp.min(Z)) >= 0
    scale = float(jnp.max(jnp.abs(sae(X))))
    np.testing.assert_allclose(np.asarray(b + Z @ D), np.asarray(sae(X)), atol=1e-5 * scale)
    if sae.signed_codes:
        assert D.shape[0] == 2 * sae.width


def test_exact_lasso_codes_imply_lambda_and_close_the_amortisation_gap(rng):
    # orthonormal decoder: the lasso codes are ReLU(D(x − b) − λ), a ReLU SAE with b_enc = −λ
    lam, d = 0.3, 6
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = rng.normal(size=d)
    X = jnp.asarray(rng.normal(size=(400, d)) + b)
    sae = wl.ReluSAE(jnp.asarray(Q), jnp.full(d, -lam), jnp.asarray(Q), jnp.asarray(b))
    imp = wl.implied_lam(sae, X)
    assert abs(imp.lam - lam) < 1e-9 and imp.spread < 1e-8
    rep = wl.check_sae(sae, X)
    assert abs(rep.lam - lam) < 1e-9
    assert abs(rep.amortisation_gap) < 1e-9
    assert float(wl.amortisation_gap(sae, X, lam)) < 1e-9
    assert rep.sae_loss >= rep.wide_objective - 1e-9
    # a wrong encoder bias: the implied λ follows it, and the gap opens
    off = wl.ReluSAE(sae.W_enc, jnp.full(d, -2 * lam), sae.W_dec, sae.b_dec)
    assert abs(wl.implied_lam(off, X).lam - 2 * lam) < 1e-9
    r2 = wl.check_sae(off, X, lam)
    assert r2.amortisation_gap > 1e-3 and r2.sae_loss > r2.exact_loss >= r2.wide_objective - 1e-9


def planted(n=400, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(10, 12))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = (rng.random((n, 10)) < 0.3) * rng.uniform(0.5, 2, (n, 10))
    return jnp.asarray(Z @ D + 0.3 + 0.05 * rng.normal(size=(n, 12)))


ARCHS = [
    ("standard", 0.1, {}),
    ("topk", None, {"k": 3}),
    ("abstopk", None, {"k": 3}),
    ("batchtopk", None, {"k": 3}),
    ("matryoshka", None, {"k": 3, "widths": (4, 8, 16)}),
    ("jumprelu", 0.1, {}),
    ("gated", 0.1, {}),
]


def _trained(arch, lam, kw, X):
    # a few steps from the data-direction start: unit decoder rows, conditions clearly violated
    return wl.train_sae(
        X, 16, lam, architecture=arch, key=jax.random.PRNGKey(3), steps=60, **kw
    ).sae


def _slope(sae, move, X, lam):
    """d/dε of the architecture's own training loss along ``move(ε)`` at ε = 0."""
    lam = jnp.asarray(0.0 if lam is None else lam)
    f = lambda e: move(sae, e).loss(X, lam)[0]  # noqa: E731
    if isinstance(
        sae, wl.GatedSAE
    ):  # its loss holds the decoder fixed in one term: the gradient field
        return float(jax.jvp(f, (jnp.asarray(0.0),), (jnp.asarray(1.0),))[1])
    eps = 1e-6  # the loss is piecewise smooth (thresholds, top-k): a central difference
    return float((f(eps) - f(-eps)) / (2 * eps))


def _scale_row(sae, i, e):
    if isinstance(sae, wl.GatedSAE):
        sae = eqx.tree_at(lambda s: s.r_mag, sae, sae.r_mag.at[i].add(jnp.log1p(e)))
        return eqx.tree_at(lambda s: s.b_mag, sae, sae.b_mag.at[i].multiply(1 + e))
    sae = eqx.tree_at(
        lambda s: (s.W_enc, s.b_enc),
        sae,
        (sae.W_enc.at[i].multiply(1 + e), sae.b_enc.at[i].multiply(1 + e)),
    )
    if isinstance(sae, wl.JumpReLUSAE):
        sae = eqx.tree_at(lambda s: s.threshold, sae, sae.threshold.at[i].multiply(1 + e))
    return sae


def _shift_bias(sae, delta, e):
    moved = eqx.tree_at(lambda s: s.b_dec, sae, sae.b_dec + e * delta)
    shift = sae.W_enc @ delta
    if isinstance(sae, wl.GatedSAE):
        moved = eqx.tree_at(lambda s: s.b_gate, moved, sae.b_gate + e * shift)
        return eqx.tree_at(lambda s: s.b_mag, moved, sae.b_mag + e * jnp.exp(sae.r_mag) * shift)
    return eqx.tree_at(lambda s: s.b_enc, moved, sae.b_enc + e * shift)


@pytest.mark.parametrize("arch,lam,kw", ARCHS, ids=[a[0] for a in ARCHS])
def test_each_necessary_condition_names_a_descent_direction_of_the_own_loss(arch, lam, kw):
    X = planted()
    sae = _trained(arch, lam, kw, X)
    n = X.shape[0]
    D, Zp = sae.unit_decoder(training_codes(sae, X))
    S, R_sum, _ = _level_sums(sae, X, D, Zp)
    st = wl.sae_stationarity(sae, X, lam_own=lam if arch == "standard" else None)
    assert float(jnp.max(st.tangential)) > 1e-2 and float(st.bias) > 1e-3  # violated

    # decoder: move d_i along P⊥ S_i; predicted slope −||P⊥ S_i||/N
    i = int(jnp.argmax(st.tangential))
    tang = S[i] - jnp.dot(S[i], D[i]) * D[i]
    u = tang / jnp.linalg.norm(tang)
    got = _slope(
        sae, lambda s, e: eqx.tree_at(lambda m: m.W_dec, s, s.W_dec.at[i].add(e * u)), X, lam
    )
    want = -float(jnp.linalg.norm(tang)) / n
    assert want < 0 and got == pytest.approx(want, rel=1e-4, abs=1e-9)

    # encoder scale of row i: predicted −(1/N)(Σ z_i⟨d_i, r⟩ − λ_own Σ z_i); λ_own = λ only for
    # the standard SAE (JumpReLU's L0 count and Gated's gate-path L1 do not move)
    i = int(jnp.argmax(st.radial))
    lam_own = lam if arch == "standard" else 0.0
    want = -(float(jnp.dot(S[i], D[i])) - lam_own * float(jnp.sum(Zp[:, i]))) / n
    got = _slope(sae, lambda s, e: _scale_row(s, i, e), X, lam)
    assert abs(want) > 1e-4 and got == pytest.approx(want, rel=1e-4, abs=1e-9)

    # bias, with the encoder biases compensating: predicted −||Σ r||/N
    delta = R_sum / jnp.linalg.norm(R_sum)
    got = _slope(sae, lambda s, e: _shift_bias(s, delta, e), X, lam)
    want = -float(jnp.linalg.norm(R_sum)) / n
    assert want < 0 and got == pytest.approx(want, rel=1e-4, abs=1e-9)


def test_matryoshka_conditions_are_level_summed_not_full_residual():
    X = planted()
    sae = _trained("matryoshka", None, {"k": 3, "widths": (4, 8, 16)}, X)
    D, Zp = sae.unit_decoder(training_codes(sae, X))
    S, R_sum, _ = _level_sums(sae, X, D, Zp)
    R_full = X - sae.b_dec - Zp @ D
    full = jnp.sum(R_full, axis=0)
    delta = R_sum / jnp.linalg.norm(R_sum)
    got = _slope(sae, lambda s, e: _shift_bias(s, delta, e), X, None)
    assert got == pytest.approx(-float(jnp.linalg.norm(R_sum)) / X.shape[0], rel=1e-4)
    # the dictionary's full-residual bias condition predicts a different slope
    assert abs(got + float(jnp.dot(full, delta)) / X.shape[0]) > 1e-3 * abs(got)


def test_check_optimality_takes_an_sae_and_says_what_applies():
    X = planted()
    sae = _trained("topk", None, {"k": 3}, X)
    rep = wl.check_optimality(X, sae, lam=0.2)
    assert isinstance(rep, wl.SAEReport) and rep.architecture == "topk"
    assert rep.applies["codes"] == "not necessary" and rep.applies["hull"] == "not necessary"
    assert rep.applies["bias"] == "necessary"
    assert rep.sae_loss >= rep.exact_loss >= rep.wide_objective - 1e-9
    js = rep.to_json()
    assert js["architecture"] == "topk" and js["lam"] == pytest.approx(0.2)
    assert "n/a" in rep.summary() and "topk SAE at λ = 0.2" in rep.summary()
    m = _trained("matryoshka", None, {"k": 3, "widths": (4, 8, 16)}, X)
    assert "level-summed" in wl.applicable_conditions(m)["atoms_tangential"]
    with pytest.raises(TypeError, match="brings its own codes"):
        wl.check_optimality(X, sae, jnp.zeros((X.shape[0], 16)), lam=0.2)
    with pytest.raises(ValueError, match="features"):
        wl.check_sae(sae, X[:, :5], 0.2)


def test_theory_doc_names_real_functions_and_tests():
    import re

    doc = (pathlib.Path(__file__).parents[1] / "docs" / "theory.md").read_text()
    names = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", doc))
    tests = {n for n in names if n.startswith("test_")}
    src = "".join(p.read_text() for p in pathlib.Path(__file__).parent.glob("test_*.py"))
    assert tests and all(f"def {t}(" in src for t in tests), tests
    funcs = {n.split(".")[0] for n in names if not n.startswith("test_") and n[0].isalpha()}
    known = {"rescale_acts_by_decoder_norm", "atoms", "check", "unabsorbed_direction", "jax"}
    missing = [f for f in funcs - known if not hasattr(wl, f) and f not in dir(wl.OptimalityReport)]
    assert not missing, missing
