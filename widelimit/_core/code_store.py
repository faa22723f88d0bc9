"""Sparse codes on disk (``CodeStore``): what ``encode(..., out=dir)`` writes, block by block.

A directory holds ``codes.json`` (format, width, dtype, the inputs' fingerprint and the finished
blocks) and, per block b, ``block-b.indices.npy`` (int32) and ``block-b.values.npy`` of shape
(rows_b, k_b): ``SparseCodes`` rows, k_b the block's largest support. Each file is written
atomically and the manifest is rewritten after each block, so an interrupted encode resumes after
its last finished block. Blocks are read as memmaps: memory is one block, never N × width.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .atomic import atomic_write_bytes, write_json
from .checkpoint import check_manifest, read_json
from .sparse_codes import SparseCodes, concatenate, dense_block
from .store import npy_header

MANIFEST = "codes.json"
FORMAT = "widelimit.sparse_codes"


def _block_name(b: int) -> str:
    return f"block-{b:06d}"


def _npy_problem(path: str, shape: tuple[int, ...], dtype) -> str | None:
    """Why ``path`` is not a whole .npy array of ``shape`` and ``dtype`` (missing, unreadable,
    another array, or shorter than its header says), or None; reads the header only."""
    try:
        got_shape, _, got_dtype, data_start = npy_header(path)
    except FileNotFoundError:
        return "missing"
    except ValueError as e:
        return str(e)
    except OSError as e:
        return f"unreadable ({e})"
    if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
        return f"holds {got_dtype}{list(got_shape)}, not {np.dtype(dtype)}{list(shape)}"
    need = data_start + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    return None if size >= need else f"truncated ({size} of {need} bytes)"


class CodeStore:
    """Read access to sparse codes written by ``encode(..., out=path)`` (``load_codes``)."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.width = int(manifest["width"])
        self.dtype = np.dtype(manifest["dtype"])
        self.blocks: list[dict] = manifest["blocks"]
        self.n_rows = int(manifest["n_rows"])
        self.starts = np.cumsum([0] + [b["rows"] for b in self.blocks])
        if self.starts[-1] != self.n_rows:
            raise ValueError(
                f"{path!r} is incomplete: {self.starts[-1]} of {self.n_rows} rows were encoded "
                "(rerun the encode to finish it)"
            )
        for b in self.blocks:  # every block whole before any is used (headers and sizes only)
            shape = (int(b["rows"]), int(b["k"]))
            for part, dtype in (("indices", np.int32), ("values", self.dtype)):
                file = os.path.join(path, f"{b['name']}.{part}.npy")
                problem = _npy_problem(file, shape, dtype)
                if problem is not None:
                    raise ValueError(
                        f"{file!r} is {problem}: the codes in {path!r} are damaged "
                        "(encode into a new directory)"
                    )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.width)

    @property
    def k(self) -> int:
        """The largest number of nonzeros a row's block stores."""
        return max((int(b["k"]) for b in self.blocks), default=1)

    def block(self, b: int) -> SparseCodes:
        """Block ``b`` as ``SparseCodes`` of numpy memmaps (nothing is read until used)."""
        base = os.path.join(self.path, self.blocks[b]["name"])
        idx = np.load(base + ".indices.npy", mmap_mode="r")
        val = np.load(base + ".values.npy", mmap_mode="r")
        return SparseCodes(idx, val, self.width)

    def block_codes(self) -> Iterator[tuple[int, SparseCodes]]:
        """(first row, codes) of every block, in order."""
        for b in range(len(self.blocks)):
            yield int(self.starts[b]), self.block(b)

    def sparse_rows(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of ``rows`` (a slice or an index array), read from the blocks they
        lie in, padded to the largest k among those blocks (value 0 in unused slots)."""
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.n_rows))
        rows = np.asarray(rows, np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        k = max([self.blocks[b]["k"] for b in np.unique(which)], default=1)
        ind = np.zeros((len(rows), k), np.int32)
        val = np.zeros((len(rows), k), self.dtype)
        for b in np.unique(which):
            sel = np.flatnonzero(which == b)
            codes = self.block(int(b))
            local = rows[sel] - self.starts[b]
            ind[sel, : codes.k] = codes.indices[local]
            val[sel, : codes.k] = codes.values[local]
        return ind, val

    def dense_rows(self, rows) -> np.ndarray:
        """Dense codes of ``rows`` (a slice or an index array), read from the blocks they lie in."""
        return dense_block(*self.sparse_rows(rows), self.width)

    def load(self) -> SparseCodes:
        """All codes in memory as one ``SparseCodes`` (blocks padded to the largest k)."""
        return concatenate([c for _, c in self.block_codes()])


def load_codes(path: str) -> CodeStore:
    """The sparse codes that ``encode(..., out=path)`` wrote (ValueError if absent or unfinished)."""
    path = os.fspath(path)
    mpath = os.path.join(path, MANIFEST)
    if not os.path.exists(mpath):
        raise ValueError(f"{path!r} holds no sparse codes (no {MANIFEST})")
    manifest = read_manifest(mpath)
    return CodeStore(path, manifest)


def read_manifest(mpath: str) -> dict:
    manifest = read_json(mpath)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{mpath!r} is not a widelimit sparse-code manifest")
    return manifest


class CodeWriter:
    """Writes blocks of ``SparseCodes`` into ``path`` and resumes an unfinished directory whose
    fingerprint matches (ValueError if it holds codes of another problem)."""

    def __init__(self, path: str, *, width: int, dtype, n_rows: int, fingerprint: dict):
        self.path = os.fspath(path)
        self.manifest = check_manifest(os.path.join(self.path, MANIFEST), fingerprint) or {
            "format": FORMAT,
            "version": 1,
            "width": int(width),
            "dtype": str(np.dtype(dtype)),
            "n_rows": int(n_rows),
            "fingerprint": fingerprint,
            "blocks": [],
        }

    @property
    def done_rows(self) -> int:
        """Rows already encoded (a resumed encode starts here)."""
        return sum(b["rows"] for b in self.manifest["blocks"])

    def append(self, codes: SparseCodes) -> None:
        """Write one block (its two arrays, then the manifest), each atomically."""
        os.makedirs(self.path, exist_ok=True)
        name = _block_name(len(self.manifest["blocks"]))
        base = os.path.join(self.path, name)
        idx, val = np.asarray(codes.indices, np.int32), np.asarray(codes.values)
        atomic_write_bytes(base + ".indices.npy", lambda f: np.save(f, idx))
        atomic_write_bytes(base + ".values.npy", lambda f: np.save(f, val))
        self.manifest["blocks"].append(
            {"name": name, "rows": int(idx.shape[0]), "k": int(idx.shape[1])}
        )
        write_json(os.path.join(self.path, MANIFEST), self.manifest)


def code_usage(codes) -> tuple[float, np.ndarray]:
    """(mean nonzeros per row, Σ_n z_nk per atom) of dense codes, ``SparseCodes`` or a
    ``CodeStore`` (block by block: never N × K)."""
    if isinstance(codes, (SparseCodes, CodeStore)):
        blocks = [codes] if isinstance(codes, SparseCodes) else (c for _, c in codes.block_codes())
        nnz, mass = 0, np.zeros(codes.shape[1], np.float64)
        for c in blocks:
            v, i = np.asarray(c.values, np.float64), np.asarray(c.indices)
            on = v > 0
            nnz += int(on.sum())
            mass += np.bincount(i[on], weights=v[on], minlength=codes.shape[1])
        return nnz / max(codes.shape[0], 1), mass
    Z = np.asarray(codes)
    return float(np.mean(np.sum(Z > 0, axis=1))), Z.sum(axis=0, dtype=np.float64)
