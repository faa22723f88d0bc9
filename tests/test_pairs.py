"""Pair-level analysis: the sparse all-pairs hull table, one pair's hull, the separating
perturbation of SPEC §4.5, the panels A/B/C, and the pair classification."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hull_bounds_brute
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimit as wl
from widelimit._analysis import conditions, pair_classes


def _hierarchy(rng, n=300, d=8, offset=0.3):
    dog, lab = np.eye(d)[0], np.eye(d)[1]
    is_dog = rng.random(n) < 0.6
    is_lab = is_dog & (rng.random(n) < 0.5)
    Z = np.stack([is_dog * rng.uniform(1, 2, n), is_lab * rng.uniform(1, 2, n)], 1)
    D = np.stack([dog, lab])
    return Z @ D + offset, D, Z, np.full(d, offset)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 70),
    k=st.integers(2, 10),
    density=st.floats(0.02, 1.0),
    top=st.integers(1, 6),
    chunk=st.integers(1, 25),
    nested=st.booleans(),
    rounded=st.booleans(),
)
def test_sparse_all_pairs_equals_brute_force(seed, n, k, density, top, chunk, nested, rounded):
    r = np.random.default_rng(seed)
    Z = r.exponential(size=(n, k)) * (r.random((n, k)) < density)
    if nested:  # feature 1 only where feature 0 is on: the hard case for top activations
        Z[:, 1] *= Z[:, 0] > 0
    if rounded:  # ties and repeated values
        Z = np.round(Z)
    D = r.normal(size=(k, 4))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    w = r.uniform(0, 2, n) * (r.random(n) < 0.9) if seed % 2 else None
    if w is not None and not (w > 0).any():
        w[0] = 1.0
    t = wl.hull_table(Z, D, weights=w, top=top, chunk_rows=chunk, block=3)
    lo, hi = hull_bounds_brute(Z, w)
    off = ~np.eye(k, dtype=bool)
    np.testing.assert_array_equal(np.asarray(t.lo)[off], lo[off])
    np.testing.assert_array_equal(np.asarray(t.hi)[off], hi[off])
    ww = np.ones(n) if w is None else w * n / w.sum()
    np.testing.assert_allclose(np.asarray(t.mu), (ww[:, None] * Z).mean(0), rtol=1e-12, atol=1e-12)


def test_hull_table_reads_memmaps_in_chunks(tmp_path, rng):
    Z = (rng.random((500, 30)) < 0.05) * rng.exponential(size=(500, 30))
    D = np.eye(30)
    np.save(tmp_path / "z.npy", Z)
    mm = np.load(tmp_path / "z.npy", mmap_mode="r")
    t = wl.hull_table(mm, D, chunk_rows=64, top=4)
    lo, hi = hull_bounds_brute(Z)
    off = ~np.eye(30, dtype=bool)
    np.testing.assert_array_equal(np.asarray(t.hi)[off], hi[off])
    np.testing.assert_array_equal(np.asarray(t.lo)[off], lo[off])


@pytest.mark.parametrize("dense", [False, True])
def test_separating_perturbation_lowers_the_loss_at_first_order(rng, dense):
    lam = 0.1
    X, D, Z, b = _hierarchy(rng)
    if dense:  # feature 0 active everywhere with a bias: I_0 empty
        Z[:, 0] = rng.uniform(1, 2, len(Z))
        X = Z @ D + b
    rep = wl.check_optimality(X, D, Z, b, lam)
    assert [0, 1] in rep.violated_pairs.tolist()
    pert = wl.separating_perturbation(rep, 0, 1)
    assert pert.a == (0.0 if dense else -1.0)
    slope = float(pert.slope(lam))
    assert slope < 0
    L0 = float(wl.dictionary_loss(X, D, Z, b, lam))
    for eps in (1e-3, 3e-4, 1e-4):
        D2, Z2, b2 = wl.apply_perturbation(X, D, Z, b, lam, 0, 1, eps)
        np.testing.assert_allclose(np.linalg.norm(D2, axis=1), 1, atol=1e-12)
        assert float(Z2.min()) >= 0
        dL = float(wl.dictionary_loss(X, D2, Z2, b2, lam)) - L0
        assert dL < 0
        assert abs(dL / eps - slope) <= 2 * eps * abs(slope) + 1e-9, (eps, dL / eps, slope)


def test_perturbation_of_a_passing_pair_is_refused(rng):
    P = wl.datasets.hull_panels(jax.random.key(0), dtype=jnp.float64)["A"]
    with pytest.raises(ValueError, match="satisfies the hull condition"):
        wl.separating_perturbation(P.codes, 0, 1, atoms=P.atoms)


def test_without_bias_the_perturbation_has_no_bias_part(rng):
    X, D, Z, _ = _hierarchy(rng, offset=0.0)
    pert = wl.separating_perturbation(Z, 0, 1, atoms=D, fit_bias=False)
    assert (pert.a, float(pert.t)) == (-1.0, 0.0)
    lam = 0.1
    moved = wl.apply_perturbation(X, D, Z, None, lam, 0, 1, 1e-4)
    assert isinstance(moved, wl.Perturbed) and moved.bias is None
    D2, Z2, b2 = moved
    assert b2 is None
    dL = float(wl.dictionary_loss(X, D2, Z2, None, lam) - wl.dictionary_loss(X, D, Z, None, lam))
    np.testing.assert_allclose(dL / 1e-4, float(pert.slope(lam)), rtol=1e-3)


def test_pair_hull_from_report_equals_pair_hull_from_codes(rng):
    X, D, Z, b = _hierarchy(rng)
    rep = wl.check_optimality(X, D, Z, b, 0.1)
    for i, j in ((0, 1), (1, 0)):
        p, q = wl.pair_hull(rep, i, j), wl.pair_hull(Z, i, j, atoms=D)
        for f in ("lo", "hi", "target", "margin", "mu_i", "mu_j", "cosine"):
            np.testing.assert_allclose(float(getattr(p, f)), float(getattr(q, f)), rtol=1e-12)
        assert q.responses.shape == (len(Z), 2)
    assert wl.pair_hull(rep, 0, 1).violated and not wl.pair_hull(rep, 1, 0).violated
    lo, hi, target = wl.pair_hull(rep, 0, 1).normalised()
    assert float(lo) == float(hi) == -1.0 and float(target) == 0.0  # −c_ij with c = 0


def test_panels_a_b_c_pass_fail_pass():
    P = wl.datasets.hull_panels(jax.random.key(3), n_samples=600, cosine=0.3, dtype=jnp.float64)
    verdict = {}
    for name, p in P.items():
        t = wl.hull_table(p.codes, p.atoms)
        verdict[name] = bool(np.all(np.asarray(t.margin) >= 0))
    assert verdict == {"A": True, "B": False, "C": True}
    assert wl.pair_hull(P["B"].codes, 0, 1, atoms=P["B"].atoms).violated


def test_classify_pairs_on_known_structures():
    key = jax.random.key(1)
    h = wl.datasets.hierarchy(key, n_pairs=2, levels=3, n_features=8)
    c = wl.classify_pairs(h.codes)
    # every (ancestor, descendant) pair is nested, nothing across chains is
    nested = {tuple(p) for p in c.nested.tolist()}
    assert {tuple(p) for p in h.hierarchy.tolist()} <= nested
    assert nested == {(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)}
    assert c.kind[1, 0] == pair_classes.COACTIVE  # the parent is not inside the child
    m = wl.datasets.mutually_exclusive(key, width=4)
    cm = wl.classify_pairs(m.codes)
    assert len(cm.exclusive) == 12 and len(cm.nested) == 0


def test_absorption_candidate_is_the_child_that_took_the_parent_direction(rng):
    # dog fires on dog-only points but not on most labradors; the labrador atom leans on dog
    n, d = 400, 6
    dog, lab = np.eye(d)[0], np.eye(d)[1]
    kind = rng.integers(0, 3, n)  # 0 empty, 1 dog, 2 labrador
    z_dog = np.where(kind == 1, 1.0, 0.0) + np.where((kind == 2) & (rng.random(n) < 0.2), 0.3, 0)
    Z = np.stack([z_dog, (kind == 2) * 1.0], 1)
    D = np.stack([dog, (dog + lab) / np.sqrt(2)])
    c = wl.classify_pairs(Z, D)
    assert c.absorption.tolist() == [[0, 1]]
    assert 0.7 < float(c.missing_fraction[0]) < 0.9
    assert len(wl.classify_pairs(Z, np.stack([dog, lab])).absorption) == 0  # orthogonal child


def test_pair_bad_inputs(rng):
    X, D, Z, b = _hierarchy(rng)
    rep = wl.check_optimality(X, D, Z, b, 0.1)
    with pytest.raises(ValueError, match="different atoms"):
        wl.pair_hull(rep, 1, 1)
    with pytest.raises(ValueError, match="atom index"):
        wl.pair_hull(rep, 0, 5)
    with pytest.raises(ValueError, match="`atoms` are needed"):
        wl.pair_hull(Z, 0, 1)
    with pytest.raises(ValueError, match="nonnegative"):
        wl.pair_hull(-Z, 0, 1, atoms=D)
    with pytest.raises(ValueError, match="not unit-norm"):  # c_ij would be wrong
        wl.pair_hull(Z, 0, 1, atoms=2 * D)
    with pytest.raises(ValueError, match="not unit-norm"):
        wl.apply_perturbation(X, 2 * D, Z, b, 0.1, 0, 1, 1e-3)
    with pytest.raises(ValueError, match="eps"):
        wl.apply_perturbation(X, D, Z, b, 0.1, 0, 1, -1e-3)
    with pytest.raises(ValueError, match="nonnegative"):
        wl.classify_pairs(-Z)
    with pytest.raises(ValueError, match="NaN"):
        wl.classify_pairs(np.full((3, 2), np.nan))


def test_split_siblings_and_cousins_are_not_absorption(rng):
    n, d = 600, 8
    e = np.eye(d)
    dog = e[0]
    # two children of dog (each leans on dog, never active together: "cousins") and a split pair
    lab, pug = (dog + e[1]) / np.sqrt(2), (dog + e[2]) / np.sqrt(2)
    cat_a, cat_b = e[3], 0.97 * e[3] + np.sqrt(1 - 0.97**2) * e[4]
    kind = rng.integers(0, 5, n)  # 0 dog, 1 lab, 2 pug, 3 cat_a, 4 cat_b
    Z = np.stack([(kind == k) * 1.0 for k in range(5)], 1)
    Z[:, 0] += (kind == 1) * (rng.random(n) < 0.3) * 0.5  # dog partly absorbed by lab
    D = np.stack([dog, lab, pug, cat_a, cat_b])
    c = wl.classify_pairs(Z, D)
    assert c.siblings.tolist() == [[3, 4]] and 0.85 < float(c.sibling_score[0]) <= 0.97
    assert sorted(map(tuple, c.absorption.tolist())) == [(0, 1), (0, 2)]  # not (1, 2), not cats
    # ranked by m·c: pug (dog fully off: m = 1) before lab (dog on a third of lab's rows)
    assert c.absorption.tolist()[0] == [0, 2]
    np.testing.assert_allclose(c.absorption_score, c.missing_fraction / np.sqrt(2), rtol=1e-12)


def test_planted_absorption_is_called_with_precision_and_recall():
    p = wl.datasets.planted_pairs(jax.random.key(0))
    c = wl.classify_pairs(p.codes, p.atoms)
    truth = {tuple(x) for x in p.absorbed.tolist()}
    called = {tuple(x) for x in c.absorption.tolist()}
    precision, recall = len(called & truth) / len(called), len(called & truth) / len(truth)
    assert precision >= 0.65 and recall >= 0.8, (precision, recall)
    assert {tuple(x) for x in c.siblings.tolist()} == {tuple(x) for x in p.siblings.tolist()}
    # the rule before siblings and cousins were told apart called over twice as many pairs
    loose = wl.classify_pairs(p.codes, p.atoms, sibling_cosine=1.0, max_overlap=0.0)
    assert len(loose.absorption) >= len(c.absorption)


# --- compact reports and sparse codes (issue 17) ---------------------------------------------


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 60),
    k=st.integers(2, 9),
    density=st.floats(0.02, 1.0),
    top=st.integers(1, 5),
    bias=st.booleans(),
    tol=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_violated_only_equals_the_full_tables_violations(seed, n, k, density, top, bias, tol):
    """The compact table (no K × K array) lists exactly the pairs the full table flags, with the
    same bounds, worst first, and per-atom counts; from sparse codes it is the same."""
    r = np.random.default_rng(seed)
    Z = r.exponential(size=(n, k)) * (r.random((n, k)) < density)
    Z[:, 1] *= Z[:, 0] > 0  # nested
    D = r.normal(size=(k, 4))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    full = wl.hull_table(Z, D, top=top, fit_bias=bias)
    sev = np.asarray(conditions.hull_severity(full.margin, full.mu))
    want = np.argwhere(sev > tol)
    for codes in (Z, wl.SparseCodes.from_dense(Z)):
        # columns 3 at a time: the depth reads and the table in several blocks, the last one short
        p = wl.hull_table(codes, D, top=top, fit_bias=bias, violated_only=tol, block=3)
        assert sorted(map(tuple, p.pairs.tolist())) == sorted(map(tuple, want.tolist()))
        assert np.all(p.severity[:-1] >= p.severity[1:])  # worst first
        i, j = p.pairs[:, 0], p.pairs[:, 1]
        for name in ("lo", "hi", "target", "margin"):
            want_v = np.asarray(getattr(full, name))[i, j]  # sparse sums: another order
            np.testing.assert_allclose(getattr(p, name), want_v, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(p.n_as_i, np.bincount(i, minlength=k))
        np.testing.assert_array_equal(p.n_as_j, np.bincount(j, minlength=k))


def test_compact_report_of_a_hierarchy(rng, monkeypatch):
    """hull='violated' (and 'auto' above FULL_HULL_MAX) flags the dog/labrador pair like the full
    report; the pair is there for pair_hull, and any other pair comes from the codes."""
    X, D, Z, b = _hierarchy(rng)
    full = wl.check_optimality(X, D, Z, b, 0.1)
    small = wl.check_optimality(X, D, Z, b, 0.1, hull="violated")
    monkeypatch.setattr(conditions, "FULL_HULL_MAX", 1)
    auto = wl.check_optimality(X, D, Z, b, 0.1)
    for rep in (small, auto):
        assert rep.compact and rep.hull_lo is None and bool(rep.passed) == bool(full.passed)
        assert rep.violated_pairs.tolist() == full.violated_pairs.tolist() == [[0, 1]]
        assert rep.summary().splitlines()[-1] == full.summary().splitlines()[-1]
        p, q = wl.pair_hull(rep, 0, 1), wl.pair_hull(full, 0, 1)
        for f in ("lo", "hi", "target", "margin", "cosine"):
            np.testing.assert_allclose(getattr(p, f), getattr(q, f), rtol=1e-12)
    with pytest.raises(ValueError, match="keeps only the violated"):
        wl.pair_hull(small, 1, 0)
    with pytest.raises(ValueError, match="hull='full'"):
        small.hull_severity()
    with pytest.raises(ValueError, match="`hull`"):
        wl.check_optimality(X, D, Z, b, 0.1, hull="some")
    with pytest.raises(ValueError, match="`block`"):
        wl.hull_table(Z, D, block=0)
    p = wl.pair_hull(wl.SparseCodes.from_dense(Z), 1, 0, atoms=D)
    q = wl.pair_hull(Z, 1, 0, atoms=D)
    for f in ("lo", "hi", "target", "margin", "mu_i", "mu_j"):
        np.testing.assert_allclose(getattr(p, f), getattr(q, f), rtol=1e-12)


def test_sparse_codes_in_classify_pairs_and_pair_hull(tmp_path):
    """classify_pairs and pair_hull read SparseCodes and a CodeStore with the dense results."""
    from widelimit._core.code_store import CodeWriter

    g = wl.datasets.hierarchy(jax.random.key(1), 800, 3, 12, levels=3, dtype=jnp.float64)
    Z = np.asarray(g.codes)
    D = np.asarray(g.atoms)
    sc = wl.SparseCodes.from_dense(Z)
    w = CodeWriter(tmp_path / "c", width=Z.shape[1], dtype=Z.dtype, n_rows=len(Z), fingerprint={})
    for s in range(0, len(Z), 300):
        w.append(wl.SparseCodes.from_dense(Z[s : s + 300]))
    store = wl.load_codes(tmp_path / "c")
    ref = wl.classify_pairs(Z, D)
    for codes in (sc, store):
        got = wl.classify_pairs(codes, D, chunk_rows=128)
        for f in ("kind", "cooccurrence", "absorption", "siblings", "absorption_score"):
            np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)
        p, q = wl.pair_hull(codes, 0, 1, atoms=D), wl.pair_hull(Z, 0, 1, atoms=D)
        for f in ("lo", "hi", "target", "margin"):
            np.testing.assert_allclose(getattr(p, f), getattr(q, f), rtol=1e-12)
