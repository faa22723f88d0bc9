"""Reading and writing SAELens SAEs: a directory with ``cfg.json`` and ``sae_weights.safetensors``.

Every architecture SAELens 6.x saves is read as what its ``cfg.json`` says it is: ``standard``
(``ReluSAE``), ``topk``, ``abstopk``, ``jumprelu``, ``gated``, and the BatchTopK / Matryoshka
training checkpoints (``batchtopk``, ``matryoshka_batchtopk``). SAELens saves the inference form of
those last two as ``jumprelu`` files with ``metadata.training_architecture``; they are read back
as ``BatchTopKSAE`` / ``MatryoshkaSAE`` with that threshold, so ``encode`` is the file's JumpReLU
rule. A file whose tensors or fields disagree with its architecture is an error, never a guess.
The whole ``cfg.json`` (hook and model metadata included) is kept on the model and written back.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from ._core.atomic import atomic_write, write_json
from ._sae.base import AbstractSAE
from ._sae.batchtopk import BatchTopKSAE, MatryoshkaSAE
from ._sae.gated import GatedSAE
from ._sae.jumprelu import JumpReLUSAE
from ._sae.standard import ReluSAE
from ._sae.topk import AbsTopKSAE, TopKSAE

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"

_BASE = ("W_enc", "b_enc", "W_dec", "b_dec")
TENSORS = {
    "standard": _BASE,
    "topk": _BASE,
    "abstopk": _BASE,
    "jumprelu": (*_BASE, "threshold"),
    "gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"),
    "batchtopk": (*_BASE, "topk_threshold"),
    "matryoshka_batchtopk": (*_BASE, "topk_threshold"),
}
_NOT_SAES = {
    "transcoder": "a transcoder (it reconstructs another layer, not its input)",
    "skip_transcoder": "a transcoder (it reconstructs another layer, not its input)",
    "jumprelu_transcoder": "a transcoder (it reconstructs another layer, not its input)",
    "jumprelu_skip_transcoder": "a transcoder (it reconstructs another layer, not its input)",
    "temporal": "a temporal SAE (its codes depend on earlier tokens, not on one row)",
    "matching_pursuit": "a matching-pursuit SAE (its codes come from an iterative encoder)",
}
# normalisations that SAELens applies as the identity when it runs a saved SAE
_IDENTITY_NORMS = ("none", "expected_average_only_in", "covariance_whitening")
_BASE_FIELDS = (
    "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
    "reshape_activations", "metadata", "architecture",
)  # fmt: skip


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - safetensors ships with the io/cli/dev extras
        raise ImportError("SAELens files need safetensors: pip install 'widelimit[io]'") from e
    return safetensors.numpy


def _locate(path) -> tuple[str, str]:
    """(weights file, cfg.json) for a SAELens directory or a weights file with cfg.json beside it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        weights, cfg = os.path.join(path, WEIGHTS), os.path.join(path, CONFIG)
        if not os.path.exists(weights):
            raise ValueError(f"{path!r} is not a SAELens SAE directory: it has no {WEIGHTS}")
    elif os.path.exists(path):
        weights, cfg = path, os.path.join(os.path.dirname(path) or ".", CONFIG)
    else:
        raise FileNotFoundError(f"no such SAE file or directory: {path!r}")
    if not os.path.exists(cfg):
        raise ValueError(
            f"{weights!r} has no {CONFIG} beside it: SAELens writes one with every SAE, and the "
            "architecture cannot be read from the weights alone"
        )
    return weights, cfg


def _read_config(cfg_path: str) -> dict:
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {cfg_path!r} as JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(
            f"{cfg_path!r}: a SAELens config is a JSON object, got {type(cfg).__name__}"
        )
    if "architecture" not in cfg:  # SAELens < 6 configs: its own defaulting rule
        fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
        if fn == "topk":
            cfg = {
                **cfg,
                "architecture": "topk",
                "k": (cfg.get("activation_fn_kwargs") or {}).get("k"),
            }
        elif fn in ("relu", None):
            cfg = {**cfg, "architecture": "standard"}
        else:
            raise ValueError(f"{cfg_path!r}: field 'activation_fn' = {fn!r} is not supported")
    return cfg


def _field(cfg: dict, name: str, cfg_path: str, kind, default=None):
    value = cfg.get(name, default)
    if value is None:
        raise ValueError(f"{cfg_path!r}: field {name!r} is missing")
    numeric = kind is int or isinstance(kind, tuple)
    if not isinstance(value, kind) or (numeric and isinstance(value, bool)):
        what = "number" if isinstance(kind, tuple) else kind.__name__
        raise ValueError(f"{cfg_path!r}: field {name!r} = {value!r} is not a {what}")
    return value


def _architecture(cfg: dict, cfg_path: str) -> str:
    arch = cfg["architecture"]
    if arch in _NOT_SAES:
        raise ValueError(f"{cfg_path!r}: architecture {arch!r} is {_NOT_SAES[arch]}; not supported")
    if arch not in TENSORS:
        raise ValueError(
            f"{cfg_path!r}: unknown architecture {arch!r} (field 'architecture'); widelimit reads "
            f"{sorted(TENSORS)}"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in _IDENTITY_NORMS:
        raise ValueError(
            f"{cfg_path!r}: field 'normalize_activations' = {norm!r} rescales each row at run time, "
            "so the SAE is not a fixed dictionary with a bias; not supported"
        )
    return arch


def _read_tensors(weights: str, arch: str, d_in: int, d_sae: int) -> dict[str, np.ndarray]:
    try:
        t = _safetensors().load_file(weights)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"cannot read {weights!r} as safetensors: {e}") from e
    want = TENSORS[arch]
    missing, extra = set(want) - set(t), set(t) - set(want)
    if missing:
        raise ValueError(
            f"{weights!r}: architecture {arch!r} needs tensors {sorted(missing)}, missing"
        )
    if extra:
        raise ValueError(
            f"{weights!r} has tensors {sorted(extra)} that a {arch!r} SAE does not have: the weights "
            "and cfg.json disagree"
        )
    shapes = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
        "topk_threshold": (),
    }
    for name, a in t.items():
        want_shape = shapes.get(name, (d_sae,))
        if tuple(a.shape) != want_shape:
            raise ValueError(
                f"{weights!r}: tensor {name!r} has shape {tuple(a.shape)}, but cfg.json's d_in = "
                f"{d_in}, d_sae = {d_sae} give {want_shape}"
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{weights!r}: tensor {name!r} has dtype {a.dtype}, not a float")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{weights!r}: tensor {name!r} has NaN or infinite entries")
    return t


def load_saelens(path, *, dtype=None) -> AbstractSAE:
    """The SAE stored by SAELens at ``path`` (a directory with ``cfg.json`` and
    ``sae_weights.safetensors``, or that weights file), as the architecture its ``cfg.json`` names.

    Weights are loaded in ``dtype`` (default: the stored dtype, at least float32). Raises
    ``ValueError`` naming the file and field for an unknown or unsupported architecture, a
    missing or surplus tensor, shapes that disagree with ``d_in``/``d_sae``, ``k`` outside
    [1, d_sae], non-finite weights or a missing ``cfg.json``.
    """
    weights, cfg_path = _locate(path)
    cfg = _read_config(cfg_path)
    arch = _architecture(cfg, cfg_path)
    d_in, d_sae = _field(cfg, "d_in", cfg_path, int), _field(cfg, "d_sae", cfg_path, int)
    if d_in < 1 or d_sae < 1:
        raise ValueError(f"{cfg_path!r}: d_in = {d_in}, d_sae = {d_sae} must be ≥ 1")
    apply_b = _field(cfg, "apply_b_dec_to_input", cfg_path, bool, True)
    t = _read_tensors(weights, arch, d_in, d_sae)
    dt = dtype or jnp.result_type(t["W_dec"].dtype, jnp.float32)

    def a(name):
        return jnp.asarray(t[name], dt)

    common = dict(apply_b_dec_to_input=apply_b, config=json.dumps(cfg, sort_keys=True))
    enc, dec = a("W_enc").T, a("W_dec")
    if arch == "gated":
        return GatedSAE(enc, a("b_gate"), a("b_mag"), a("r_mag"), dec, a("b_dec"), **common)
    weights4 = (enc, a("b_enc"), dec, a("b_dec"))
    if arch == "standard":
        return ReluSAE(*weights4, **common)
    rescale = _field(cfg, "rescale_acts_by_decoder_norm", cfg_path, bool, False)
    if arch in ("topk", "abstopk"):
        k = _check_k(_field(cfg, "k", cfg_path, int), d_sae, cfg_path, "k")
        cls = TopKSAE if arch == "topk" else AbsTopKSAE
        return cls(*weights4, k=k, rescale_acts_by_decoder_norm=rescale, **common)
    meta = cfg.get("metadata") or {}
    trained_as = meta.get("training_architecture") if isinstance(meta, dict) else None
    if arch == "jumprelu" and trained_as not in ("batchtopk", "matryoshka_batchtopk"):
        return JumpReLUSAE(*weights4, a("threshold"), **common)
    # BatchTopK / Matryoshka: a training checkpoint, or SAELens's jumprelu inference file of one
    if arch == "jumprelu":
        details = meta.get("training_architecture_details") or {}
        threshold, source, arch, rescale = a("threshold"), details, trained_as, False
    else:
        threshold = jnp.full(d_sae, float(t["topk_threshold"]), dt)
        source = cfg
    k = _check_k(_field(source, "k", cfg_path, (int, float)), d_sae, cfg_path, "k")
    lr = float(source.get("topk_threshold_lr", 0.01))
    kw = dict(k=float(k), rescale_acts_by_decoder_norm=rescale, threshold_lr=lr, **common)
    if arch == "batchtopk":
        return BatchTopKSAE(*weights4, threshold, **kw)
    widths = source.get("matryoshka_widths") or [d_sae]
    if not all(isinstance(w, int) for w in widths):
        raise ValueError(
            f"{cfg_path!r}: field 'matryoshka_widths' = {widths!r} is not a list of ints"
        )
    widths = widths if widths[-1] == d_sae else [*widths, d_sae]  # SAELens appends d_sae too
    try:
        return MatryoshkaSAE(*weights4, threshold, widths=tuple(widths), **kw)
    except ValueError as e:
        raise ValueError(f"{cfg_path!r}: field 'matryoshka_widths': {e}") from e


def _check_k(k, d_sae: int, cfg_path: str, name: str):
    if not 0 < k <= d_sae:
        raise ValueError(f"{cfg_path!r}: field {name!r} = {k} must be in (0, d_sae = {d_sae}]")
    return k


def _saved_form(sae: AbstractSAE) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors in SAELens's layout, the architecture-specific cfg fields)."""
    np_ = lambda x: np.asarray(x)  # noqa: E731
    if isinstance(sae, GatedSAE):
        t = {n: np_(getattr(sae, n)) for n in ("b_gate", "b_mag", "r_mag", "W_dec", "b_dec")}
        return {"W_enc": np.ascontiguousarray(np_(sae.W_enc).T), **t}, {"architecture": "gated"}
    W_enc, b_enc, W_dec = np_(sae.W_enc), np_(sae.b_enc), np_(sae.W_dec)
    fields: dict = {"architecture": sae.architecture}
    extra = {}
    if isinstance(sae, (TopKSAE, AbsTopKSAE)):
        fields.update(k=int(sae.k), rescale_acts_by_decoder_norm=sae.rescale_acts_by_decoder_norm)
    elif isinstance(sae, JumpReLUSAE):
        extra["threshold"] = np_(sae.threshold)
    elif isinstance(sae, (BatchTopKSAE, MatryoshkaSAE)):
        # saved as SAELens saves them for inference: a jumprelu file, decoder norms folded
        if sae.rescale_acts_by_decoder_norm:
            n = np.linalg.norm(W_dec, axis=1)
            W_enc, b_enc, W_dec = W_enc * n[:, None], b_enc * n, W_dec / n[:, None]
        extra["threshold"] = np_(sae.threshold)
        fields["architecture"] = "jumprelu"
    elif not isinstance(sae, ReluSAE):
        raise TypeError(f"cannot save a {type(sae).__name__} in SAELens's format")
    t = {
        "W_enc": np.ascontiguousarray(W_enc.T),
        "b_enc": b_enc,
        "W_dec": W_dec,
        "b_dec": np_(sae.b_dec),
    }
    return {**t, **extra}, fields


def _training_details(sae, cfg: dict) -> dict:
    details = dict((cfg.get("metadata") or {}).get("training_architecture_details") or {})
    details.update(
        k=float(sae.k), topk_threshold_lr=sae.threshold_lr, rescale_acts_by_decoder_norm=False
    )
    if isinstance(sae, MatryoshkaSAE):
        details["matryoshka_widths"] = list(sae.widths or (sae.width,))
    return details


def save_saelens(sae: AbstractSAE, directory) -> None:
    """Write ``sae`` as a SAELens directory (``cfg.json`` + ``sae_weights.safetensors``, each
    atomically) that SAELens's ``SAE.load_from_disk`` loads with the same outputs.

    BatchTopK and Matryoshka SAEs are written as SAELens writes them for inference: a ``jumprelu``
    file with their threshold and ``metadata.training_architecture``. The ``cfg.json`` the model was
    read from (hook and model metadata) is kept.
    """
    if not isinstance(sae, AbstractSAE):
        raise TypeError(f"`sae` must be a widelimit SAE, got {type(sae).__name__}")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"{directory!r} is a file; save_saelens writes a directory (cfg.json + {WEIGHTS})"
        )
    tensors, fields = _saved_form(sae)
    for name, a in tensors.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"cannot save: tensor {name!r} has NaN or infinite entries")
    old = sae.saelens_config
    keep_all = old.get("architecture") == fields["architecture"]
    cfg = dict(old) if keep_all else {k: v for k, v in old.items() if k in _BASE_FIELDS}
    meta = dict(cfg.get("metadata") or {})
    if isinstance(sae, (BatchTopKSAE, MatryoshkaSAE)):
        meta["training_architecture"] = sae.architecture
        meta["training_architecture_details"] = _training_details(sae, old)
    cfg.update(fields)
    cfg.update(
        d_in=int(tensors["W_dec"].shape[1]), d_sae=int(tensors["W_dec"].shape[0]),
        dtype=str(tensors["W_dec"].dtype), device=cfg.get("device", "cpu"),
        apply_b_dec_to_input=bool(sae.apply_b_dec_to_input),
        normalize_activations=cfg.get("normalize_activations", "none"),
        reshape_activations=cfg.get("reshape_activations", "none"), metadata=meta,
    )  # fmt: skip
    tensors = {
        k: np.ascontiguousarray(v.astype(tensors["W_dec"].dtype)) for k, v in tensors.items()
    }
    os.makedirs(directory, exist_ok=True)
    save_file = _safetensors().save_file
    atomic_write(os.path.join(directory, WEIGHTS), lambda tmp: save_file(tensors, tmp))
    write_json(os.path.join(directory, CONFIG), cfg)
