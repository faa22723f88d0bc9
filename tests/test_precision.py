"""Public numerical functions trace their matrix products at full float32 precision (no TF32/bf16)."""

import jax
import jax.numpy as jnp
import numpy as np

import widelimit as wl
from widelimit._core.precision import full_precision

PUBLIC_NUMERICS = [
    "solve_wide",
    "solve_wide_path",
    "wide_lower_bound",
    "dictionary_loss",
    "encode",
    "decode",
    "check_optimality",
    "hull_table",
    "pair_hull",
    "separating_perturbation",
    "apply_perturbation",
    "classify_pairs",
    "fit_dictionary",
    "fit_dictionary_seeds",
    "train_sae",
    "amortisation_gap",
    "sae_loss",
    "grow",
    "split_atoms",
    "width_sweep",
]


def _dot_precisions(jaxpr):
    return [str(e.params["precision"]) for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def test_full_precision_sets_highest_inside_and_only_inside():
    a = jnp.ones((4, 3), jnp.float32)
    plain = jax.make_jaxpr(lambda x: x @ x.T)(a).jaxpr
    wrapped = jax.make_jaxpr(full_precision(lambda x: x @ x.T))(a).jaxpr
    assert all("HIGHEST" not in p for p in _dot_precisions(plain))
    assert _dot_precisions(wrapped) and all("HIGHEST" in p for p in _dot_precisions(wrapped))


def test_every_public_numerical_function_is_wrapped():
    missing = [n for n in PUBLIC_NUMERICS if not getattr(getattr(wl, n), "full_precision", False)]
    assert not missing


def test_a_public_function_traced_in_a_user_jit_gets_highest_products():
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    D = np.eye(3, dtype=np.float32)
    jaxpr = jax.make_jaxpr(lambda Z: wl.decode(D, np.zeros(3, np.float32), Z))(X).jaxpr
    assert _dot_precisions(jaxpr) and all("HIGHEST" in p for p in _dot_precisions(jaxpr))
