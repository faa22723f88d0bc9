"""SAELens interop against files SAELens itself wrote (tests/fixtures/make_saelens_fixtures.py,
SAELens version in tests/fixtures/saelens/versions.json)."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import widelimit as wl

FIX = pathlib.Path(__file__).parent / "fixtures" / "saelens"
KINDS = {
    "standard": wl.ReluSAE,
    "standard_no_b_dec_in": wl.ReluSAE,
    "topk": wl.TopKSAE,
    "topk_rescaled": wl.TopKSAE,
    "abstopk": wl.AbsTopKSAE,
    "jumprelu": wl.JumpReLUSAE,
    "gated": wl.GatedSAE,
    "batchtopk_train": wl.BatchTopKSAE,
    "batchtopk_inference": wl.BatchTopKSAE,
    "matryoshka_batchtopk_train": wl.MatryoshkaSAE,
    "matryoshka_batchtopk_inference": wl.MatryoshkaSAE,
}


def _close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * scale)


def _outputs(sae, X, batch=False):
    Z = sae.encode_batch(X) if batch else sae.encode(X)
    return Z, sae.decode(Z)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_saelens_files_load_as_their_architecture_with_saelens_outputs(name):
    sae = wl.load_saelens(FIX / name, dtype=jnp.float32)
    assert type(sae) is KINDS[name]
    e = np.load(FIX / name / "expected.npz")
    X = jnp.asarray(e["X"], jnp.float32)
    # SAELens's training checkpoints of BatchTopK/Matryoshka encode with the batch rule
    Z, dec = _outputs(sae, X, batch=name.endswith("_train"))
    _close(Z, e["codes"])
    _close(dec, e["decoded"])
    _close(sae.decode(Z), e["forward"])
    if not name.endswith("_train"):
        _close(sae(X), e["forward"])
    # the file's cfg.json (hook and model metadata) is kept on the model
    assert sae.saelens_config["metadata"]["hook_name"] == "blocks.0.hook_resid_post"


def test_the_reported_silent_errors_are_gone():
    # a TopK SAE was read as a ReLU SAE (L0 34 against 8); JumpReLU lost its threshold;
    # apply_b_dec_to_input = False was ignored
    topk = wl.load_saelens(FIX / "topk")
    X = jnp.asarray(np.load(FIX / "topk" / "expected.npz")["X"])
    assert int(jnp.max(jnp.sum(topk.encode(X) > 0, axis=1))) <= topk.k == 4
    relu_view = wl.ReluSAE(topk.W_enc, topk.b_enc, topk.W_dec, topk.b_dec)
    assert float(jnp.mean(jnp.sum(relu_view.encode(X) > 0, axis=1))) > 8  # what the bug gave
    jr = wl.load_saelens(FIX / "jumprelu")
    assert float(jnp.min(jr.threshold)) > 0.2
    s = wl.load_saelens(FIX / "standard_no_b_dec_in")
    assert s.apply_b_dec_to_input is False


@pytest.mark.parametrize("name", ["batchtopk", "matryoshka_batchtopk"])
def test_training_checkpoint_infers_like_saelens_inference_file(name):
    train = wl.load_saelens(FIX / f"{name}_train", dtype=jnp.float32)
    e = np.load(FIX / f"{name}_inference" / "expected.npz")
    X = jnp.asarray(e["X"], jnp.float32)
    _close(train.encode(X), e["codes"])
    _close(train(X), e["forward"])
    assert train.k == 4.0 and train.rescale_acts_by_decoder_norm
    if name.startswith("matryoshka"):
        assert train.widths == (8, 16, 32)
        assert wl.load_saelens(FIX / f"{name}_inference").widths == (8, 16, 32)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_widelimit_round_trip_keeps_architecture_outputs_and_metadata(name, tmp_path):
    sae = wl.load_saelens(FIX / name, dtype=jnp.float32)
    wl.save_saelens(sae, tmp_path / "out")
    back = wl.load_saelens(tmp_path / "out", dtype=jnp.float32)
    assert type(back) is type(sae)
    X = jnp.asarray(np.load(FIX / name / "expected.npz")["X"], jnp.float32)
    _close(back(X), np.asarray(sae(X)))
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == "toy-model"
    assert cfg["architecture"] == json.loads((FIX / name / "cfg.json").read_text())[
        "architecture"
    ] or (name.endswith("_train") and cfg["architecture"] == "jumprelu")


def _copy(name, tmp_path):
    d = tmp_path / name
    shutil.copytree(FIX / name, d)
    return d


def _edit_cfg(d, **changes):
    cfg = json.loads((d / "cfg.json").read_text())
    cfg.update(changes)
    (d / "cfg.json").write_text(json.dumps(cfg))


def _edit_weights(d, fn):
    from safetensors.numpy import load_file, save_file

    t = load_file(str(d / "sae_weights.safetensors"))
    fn(t)
    save_file(t, str(d / "sae_weights.safetensors"))


def test_bad_files_are_clear_errors_naming_file_and_field(tmp_path):
    d = _copy("jumprelu", tmp_path)
    _edit_cfg(d, architecture="nonsense")
    with pytest.raises(ValueError, match=r"cfg\.json.*unknown architecture 'nonsense'"):
        wl.load_saelens(d)
    _edit_cfg(d, architecture="transcoder")
    with pytest.raises(ValueError, match="transcoder"):
        wl.load_saelens(d)
    _edit_cfg(d, architecture="standard")  # a jumprelu file that calls itself standard
    with pytest.raises(ValueError, match=r"sae_weights\.safetensors.*\['threshold'\].*disagree"):
        wl.load_saelens(d)

    d = _copy("standard", tmp_path)
    _edit_cfg(d, architecture="jumprelu")  # threshold missing
    with pytest.raises(ValueError, match=r"needs tensors \['threshold'\]"):
        wl.load_saelens(d)
    _edit_cfg(d, architecture="standard", d_sae=31)
    with pytest.raises(ValueError, match="tensor 'W_(enc|dec)' has shape .*d_sae = 31"):
        wl.load_saelens(d)
    _edit_cfg(d, d_sae=32, normalize_activations="layer_norm")
    with pytest.raises(ValueError, match="'normalize_activations' = 'layer_norm'"):
        wl.load_saelens(d)
    _edit_cfg(d, normalize_activations="none", d_in="16")
    with pytest.raises(ValueError, match="field 'd_in' = '16' is not a int"):
        wl.load_saelens(d)

    d = _copy("topk", tmp_path)
    for bad in (33, 0):
        _edit_cfg(d, k=bad)
        with pytest.raises(ValueError, match=rf"field 'k' = {bad} must be in \(0, d_sae = 32\]"):
            wl.load_saelens(d)
    _edit_cfg(d, k=4)
    _edit_weights(d, lambda t: t["b_enc"].__setitem__(3, np.nan))
    with pytest.raises(ValueError, match="tensor 'b_enc' has NaN"):
        wl.load_saelens(d)

    d = _copy("gated", tmp_path)
    (d / "cfg.json").unlink()
    with pytest.raises(ValueError, match="has no cfg.json beside it"):
        wl.load_saelens(d)
    with pytest.raises(ValueError, match="has no cfg.json beside it"):
        wl.load_saelens(d / "sae_weights.safetensors")
    (d / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read .*cfg.json.* as JSON"):
        wl.load_saelens(d)
    (d / "sae_weights.safetensors").write_bytes(b"garbage")
    (d / "cfg.json").write_text((FIX / "gated" / "cfg.json").read_text())
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        wl.load_saelens(d)
    with pytest.raises(FileNotFoundError):
        wl.load_saelens(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no sae_weights.safetensors"):
        wl.load_saelens(empty)


def test_weights_file_path_and_pre_6_config(tmp_path):
    sae = wl.load_saelens(FIX / "topk" / "sae_weights.safetensors")
    assert isinstance(sae, wl.TopKSAE)
    d = _copy("topk", tmp_path)
    cfg = json.loads((d / "cfg.json").read_text())
    for key in ("architecture", "k", "metadata"):
        cfg.pop(key)
    cfg.update(activation_fn="topk", activation_fn_kwargs={"k": 4})  # SAELens 5 layout
    (d / "cfg.json").write_text(json.dumps(cfg))
    old = wl.load_saelens(d)
    assert isinstance(old, wl.TopKSAE) and old.k == 4


def test_save_errors_leave_existing_files_alone(tmp_path):
    sae = wl.load_saelens(FIX / "standard")
    out = tmp_path / "out"
    wl.save_saelens(sae, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = jax.tree_util.tree_map(lambda a: a, sae)
    bad = wl.ReluSAE(sae.W_enc, sae.b_enc.at[0].set(jnp.inf), sae.W_dec, sae.b_dec)
    with pytest.raises(ValueError, match="'b_enc' has NaN or infinite"):
        wl.save_saelens(bad, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        wl.save_saelens(sae, tmp_path / "file")
    with pytest.raises(TypeError):
        wl.save_saelens(object(), out)


def test_saelens_loads_what_widelimit_writes(tmp_path):
    """Runs where SAELens is installed (the ``saelens`` extra); CI has no SAELens and skips it."""
    sae_lens = pytest.importorskip("sae_lens")
    import torch

    for name in sorted(KINDS):
        sae = wl.load_saelens(FIX / name, dtype=jnp.float32)
        wl.save_saelens(sae, tmp_path / name)
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / name))
        X = np.load(FIX / name / "expected.npz")["X"].astype(np.float32)
        with torch.no_grad():
            Z = theirs.encode(torch.from_numpy(X)).double().numpy()
            out = theirs(torch.from_numpy(X)).double().numpy()
        _close(np.asarray(sae.encode(jnp.asarray(X))), Z)
        _close(np.asarray(sae(jnp.asarray(X))), out)


@pytest.mark.parametrize(
    "arch", ["standard", "topk", "abstopk", "batchtopk", "matryoshka", "jumprelu", "gated"]
)
def test_saelens_loads_models_trained_in_widelimit(arch, tmp_path):
    """Models made in widelimit (no cfg.json to keep) load in SAELens with equal outputs."""
    sae_lens = pytest.importorskip("sae_lens")
    import torch

    X = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    lam = 0.1 if arch in ("standard", "jumprelu", "gated") else None
    extra = {} if lam else {"k": 4}
    sae = wl.train_sae(
        X, 32, lam, architecture=arch, key=jax.random.PRNGKey(0), steps=30, **extra
    ).sae
    wl.save_saelens(sae, tmp_path / arch)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
    with torch.no_grad():
        out = theirs(torch.from_numpy(X)).double().numpy()
    _close(np.asarray(sae(jnp.asarray(X))), out)
