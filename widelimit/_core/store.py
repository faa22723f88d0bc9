"""Activation stores: data larger than memory, read in row blocks (``ActivationStore``).

A store yields C-contiguous numpy blocks of at most ``chunk_rows`` rows and can be iterated many
times (one iteration per solver pass). File sources (``.npy``, ``.safetensors``, directories of
shards, memmaps) yield half-chunk blocks mapped from the files (so that reading the next block
overlaps computing on the last) and release each block's pages once the next-but-one is mapped,
so resident memory stays at about one chunk.
"""

from __future__ import annotations

import json
import mmap
import os
import queue
import struct
import threading
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np


def is_streamable(X) -> bool:
    """True for inputs that ``solve_wide`` streams instead of loading."""
    if isinstance(X, (str, os.PathLike, np.memmap, ActivationStore)):
        return True
    if hasattr(X, "shape") and hasattr(X, "dtype"):
        return False
    if isinstance(X, (list, tuple)) and X and not hasattr(X[0], "shape"):
        return False  # a nested list of numbers is a matrix, not a list of row chunks
    return callable(X) or isinstance(X, Iterable)


def is_store_like(X) -> bool:
    """True for inputs that are not arrays: paths, ``ActivationStore``s and iterables of blocks
    (array entry points read these block by block; a memmap counts as an array there)."""
    return is_streamable(X) and not isinstance(X, np.memmap)


def aligned_empty(shape, dtype, align: int = 4096) -> np.ndarray:
    """An uninitialised array whose data is page aligned (so XLA:CPU can use it without a copy)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes].view(dtype).reshape(shape)


def _file_offset(x: np.memmap) -> int | None:
    """Byte offset in its file of a C-contiguous memmap's first element (None if unknown)."""
    mm = getattr(x, "_mmap", None)
    if mm is None or not x.filename or not x.flags.c_contiguous:
        return None
    try:
        base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    mapped_from = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY
    return mapped_from + (x.ctypes.data - base)


def _drop_pages(mm: mmap.mmap):
    """Release a map's resident pages (they stay in the page cache; a later read refaults them).
    The map itself is closed when the last array viewing it is gone."""
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


class Shard(NamedTuple):
    """One file of rows: a C-ordered (rows, n_features) array at byte ``offset`` of ``path``."""

    path: str
    offset: int
    rows: int
    n_features: int
    dtype: np.dtype


def _safetensors_dtypes() -> dict:
    import ml_dtypes

    return {
        "F64": np.dtype(np.float64),
        "F32": np.dtype(np.float32),
        "F16": np.dtype(np.float16),
        "BF16": np.dtype(ml_dtypes.bfloat16),
        "I64": np.dtype(np.int64),
        "I32": np.dtype(np.int32),
        "I16": np.dtype(np.int16),
        "I8": np.dtype(np.int8),
        "U8": np.dtype(np.uint8),
    }


def npy_header(path: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, offset of the data) of a ``.npy`` file, from its header
    alone; ValueError if it is not one (OSError if it cannot be opened)."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise ValueError(f"not a valid .npy file ({e})") from e
        return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()


def npy_shard(path: str, name: str) -> Shard:
    """The array of a ``.npy`` file, from its header (the data are not read)."""
    try:
        shape, fortran, dtype, offset = npy_header(path)
    except ValueError as e:
        raise ValueError(f"`{name}`: {path!r} is {e}") from e
    if fortran:
        raise ValueError(f"`{name}`: {path!r} is Fortran-ordered; save it C-ordered")
    if len(shape) != 2:
        raise ValueError(f"`{name}`: {path!r} must hold a 2-D (rows, features) array, got {shape}")
    return Shard(path, offset, int(shape[0]), int(shape[1]), np.dtype(dtype))


def safetensors_shard(path: str, key: str | None, name: str) -> Shard:
    """Tensor ``key`` (or the file's only tensor) of a ``.safetensors`` file, from its header:
    8 bytes of little-endian header length, a JSON header, then the raw C-ordered tensors."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"`{name}`: {path!r} is not a valid .safetensors file ({e})") from e
    if key is None:
        if len(tensors) != 1:
            raise ValueError(
                f"`{name}`: {path!r} holds {len(tensors)} tensors {sorted(tensors)}; pass key=..."
            )
        key = next(iter(tensors))
    if key not in tensors:
        raise ValueError(f"`{name}`: {path!r} has no tensor {key!r} (it has {sorted(tensors)})")
    t = tensors[key]
    dtypes = _safetensors_dtypes()
    if t.get("dtype") not in dtypes:
        raise ValueError(
            f"`{name}`: {path!r}: tensor {key!r} has unsupported dtype {t.get('dtype')}"
        )
    shape, dtype = tuple(t["shape"]), dtypes[t["dtype"]]
    if len(shape) != 2:
        raise ValueError(f"`{name}`: {path!r}: tensor {key!r} must be 2-D, got shape {shape}")
    begin, end = t["data_offsets"]
    if end - begin != shape[0] * shape[1] * dtype.itemsize:
        raise ValueError(f"`{name}`: {path!r}: tensor {key!r}'s offsets do not match its shape")
    return Shard(path, 8 + n + begin, int(shape[0]), int(shape[1]), dtype)


def _shard_of(path: str, key: str | None, name: str) -> Shard:
    if path.endswith(".npy"):
        return npy_shard(path, name)
    if path.endswith(".safetensors"):
        return safetensors_shard(path, key, name)
    raise ValueError(f"`{name}`: only .npy and .safetensors files can be read, got {path!r}")


def check_shards(shards: list[Shard], name: str) -> None:
    """ValueError naming the shard, before any work, for a truncated file or a shard whose
    feature count or dtype differs from the first's."""
    first = shards[0]
    for sh in shards:
        if sh.n_features != first.n_features or sh.dtype != first.dtype:
            raise ValueError(
                f"`{name}`: shard {sh.path!r} has {sh.n_features} features of {sh.dtype}, but "
                f"{first.path!r} has {first.n_features} of {first.dtype}"
            )
        if os.path.getsize(sh.path) < sh.offset + sh.rows * sh.n_features * sh.dtype.itemsize:
            raise ValueError(f"`{name}`: shard {sh.path!r} is truncated")


def _real_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf" or dtype.name == "bfloat16"


_DONE = object()


def prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """The items of ``iterator``, produced ``depth`` ahead by a background thread (so that reading
    the next block overlaps computing on the last). Errors are re-raised in the consumer; a
    consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Raised(e))
            return
        put(_DONE)

    thread = threading.Thread(target=work, daemon=True, name="widelimit-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


class _Raised(NamedTuple):
    error: BaseException


def windows(blocks: Iterable[np.ndarray], rows: int, n_features: int, dtype, *,
            read=lambda index: True) -> Iterator[tuple[int, np.ndarray, int]]:  # fmt: skip
    """One pass over ``blocks`` in consecutive windows of ``rows`` rows: yields (index, window,
    filled rows); the last window may be partial (its other rows are 0). A window whose
    ``read(index)`` is false is counted but not copied."""
    buf, fill, index = np.zeros((rows, n_features), dtype), 0, 0
    for block in blocks:
        at = 0
        while at < len(block):
            take = min(rows - fill, len(block) - at)
            if read(index):
                buf[fill : fill + take] = block[at : at + take]
            fill, at = fill + take, at + take
            if fill == rows:
                yield index, buf, rows
                if read(index):
                    buf = np.zeros((rows, n_features), dtype)
                fill, index = 0, index + 1
    if fill:
        yield index, buf, fill


class ActivationStore:
    """Rows of X (n_samples × n_features) read in blocks, wherever an entry point accepts X.

    ``source`` is an array; a ``.npy`` or ``.safetensors`` path or a numpy memmap; a directory of
    ``.npy``/``.safetensors`` shards (read in name order, each a 2-D array; ``key`` names the
    tensor of a safetensors shard that holds several); or an iterable of row blocks (a list of
    blocks or a callable returning a fresh iterator, read ``prefetch`` blocks ahead by a background
    thread). Every shard is checked before any work (a truncated or corrupt file, or shards with
    different n_features or dtype, are an error naming the shard). File blocks are mapped, not
    copied, and the kernel reads the next block ahead (``MADV_WILLNEED``) while the last is used;
    resident memory stays at about one ``chunk_rows`` chunk. ``weights`` (n_samples,) are per-row
    weights, sliced with the blocks. A store can be iterated any number of times.
    """

    def __init__(
        self,
        source,
        *,
        key: str | None = None,
        weights=None,
        chunk_rows: int | None = None,
        prefetch: int = 2,
        name: str = "X",
    ):
        self.name = name
        self.shards: list[Shard] = []
        self.n_rows: int | None = None
        self._prefetch = int(prefetch)
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise ValueError(f"`{name}`: no such file or directory {path!r}")
            if os.path.isdir(path):
                files = sorted(
                    os.path.join(path, f)
                    for f in os.listdir(path)
                    if f.endswith((".npy", ".safetensors"))
                    and os.path.isfile(os.path.join(path, f))
                )
                if not files:
                    raise ValueError(
                        f"`{name}`: directory {path!r} has no .npy or .safetensors shards"
                    )
            else:
                files = [path]
            self.shards = [s for s in (_shard_of(f, key, name) for f in files) if s.rows > 0]
            if not self.shards:
                raise ValueError(f"`{name}` has 0 rows")
            check_shards(self.shards, name)
            self._kind = "files"
            self.shape = (sum(s.rows for s in self.shards), self.shards[0].n_features)
            self.dtype = self.shards[0].dtype
        elif isinstance(source, np.memmap):
            self.shape, self.dtype = tuple(source.shape), source.dtype
            offset = _file_offset(source) if source.ndim == 2 else None
            if offset is None:
                self._kind, self._array = "memmap", source
            else:  # read the file directly: no page faults, no mapped pages kept resident
                self._kind = "files"
                n, d = source.shape
                self.shards = [Shard(source.filename, offset, n, d, source.dtype)]
        elif hasattr(source, "shape") and hasattr(source, "dtype"):
            self._kind, self._array = "array", source
            self.shape, self.dtype = tuple(source.shape), np.dtype(source.dtype)
        elif callable(source):
            self._kind, self._factory = "iterable", source
            self.shape, self.dtype = None, None
        elif isinstance(source, Iterable):
            if iter(source) is source:
                raise TypeError(
                    f"`{name}` is a one-shot iterator; the data are read several times. "
                    "Pass a list of blocks or a callable that returns a fresh iterator."
                )
            self._kind, self._factory = "iterable", lambda: iter(source)
            self.shape, self.dtype = None, None
        else:
            raise TypeError(f"`{name}` cannot be read as rows: {type(source).__name__}")
        if self.shape is not None:
            if len(self.shape) != 2:
                raise ValueError(f"`{name}` must be 2-D (n_samples, n_features), got {self.shape}")
            if self.shape[0] < 1:
                raise ValueError(f"`{name}` has 0 rows")
            self.n_rows, self.n_features = self.shape
        else:
            first = next(iter(self._factory()), None)
            if first is None:
                raise ValueError(f"`{name}` yielded no blocks (empty data)")
            first = np.asarray(first)
            if first.ndim != 2:
                raise ValueError(f"`{name}`: blocks must be 2-D, got shape {first.shape}")
            self.n_features, self.dtype = first.shape[1], first.dtype
        if not _real_dtype(np.dtype(self.dtype)):
            raise TypeError(f"`{name}` has dtype {self.dtype}; a real array is required")
        if chunk_rows is None:
            chunk_rows = max(1024, (64 << 20) // (self.n_features * max(self.dtype.itemsize, 4)))
        self.chunk_rows = int(chunk_rows)
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, np.float64)
            if self.n_rows is None:
                raise ValueError(
                    f"`{name}`: weights need a source of known length, not an iterable"
                )
            if w.shape != (self.n_rows,):
                raise ValueError(f"`weights` must have shape ({self.n_rows},), got {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
                raise ValueError("`weights` must be finite, ≥ 0 and not all 0")
            self.weights = w

    def part(self, index: int | None = None, count: int | None = None) -> ActivationStore:
        """The store of rows [⌊index·N/count⌋, ⌊(index+1)·N/count⌋): this process's share of the
        rows by default (``jax.process_index()`` of ``jax.process_count()``), so that each process
        of a ``jax.distributed`` run reads only its own rows."""
        import copy

        import jax

        index = jax.process_index() if index is None else int(index)
        count = jax.process_count() if count is None else int(count)
        if not 0 <= index < count:
            raise ValueError(f"part {index} of {count} does not exist")
        if self.n_rows is None or self._kind == "iterable":
            raise ValueError(f"`{self.name}`: an iterable store cannot be split into parts")
        lo, hi = self.n_rows * index // count, self.n_rows * (index + 1) // count
        if hi <= lo:
            raise ValueError(f"`{self.name}` has {self.n_rows} rows: too few for {count} parts")
        new = copy.copy(self)
        if self._kind == "files":
            shards, start = [], 0
            for sh in self.shards:
                a, b = max(lo, start), min(hi, start + sh.rows)
                if a < b:
                    item = sh.dtype.itemsize * sh.n_features
                    shards.append(sh._replace(offset=sh.offset + (a - start) * item, rows=b - a))
                start += sh.rows
            new.shards = shards
        else:
            new._array = self._array[lo:hi]
        new.n_rows = hi - lo
        new.shape = (hi - lo, self.n_features)
        if self.weights is not None:
            new.weights = self.weights[lo:hi]
        return new

    def pools(self, rows: int, skip: int = 0) -> Iterator[np.ndarray]:
        """Endless consecutive windows of ``rows`` rows (min(rows, n_rows) when n_rows is known),
        cycling through the store; a window never wraps, so the rows left at the end of a pass
        are skipped. The first ``skip`` windows are passed over without being read."""
        if self.n_rows is not None:
            rows = min(rows, self.n_rows)
        seen = 0  # full windows over all passes so far
        while True:
            start = seen
            for _, buf, filled in windows(self, rows, self.n_features, self.dtype,
                                          read=lambda i, start=start: start + i >= skip):  # fmt: skip
                if filled < rows:  # a window never wraps
                    break
                if seen >= skip:
                    yield buf
                seen += 1
            if seen == start:
                raise ValueError(f"`{self.name}` has fewer than {rows} rows")

    def fingerprint(self) -> dict:
        """What identifies the rows cheaply, for resumable jobs: file shards by (path, size, mtime,
        offset, rows), arrays by the SHA-256 of every byte, iterables by their first block."""
        from .checkpoint import digest

        if self.shards:
            return {
                "files": [
                    [os.path.abspath(s.path), os.path.getsize(s.path), os.stat(s.path).st_mtime_ns,
                     s.offset, s.rows]
                    for s in self.shards
                ]
            }  # fmt: skip
        if self._kind in ("array", "memmap"):
            return {"sha256": digest(np.asarray(self._array))}
        return {"first_block_sha256": digest(np.asarray(next(iter(self._factory()))))}

    @property
    def pipelined(self) -> bool:
        """File and memmap sources yield blocks of half a chunk, each valid while the next one is
        read (file maps, or two alternating buffers for a memmap): a consumer may keep using the
        last block while the next is read (never the one before it)."""
        return self._kind in ("files", "memmap")

    @property
    def block_rows(self) -> int:
        """Rows per yielded block: half a chunk when ``pipelined`` (same memory), else a chunk."""
        return max(1, self.chunk_rows // 2) if self.pipelined else self.chunk_rows

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, block) pairs; a block never spans two shards."""
        start = 0
        for block in self:
            yield start, block
            start += block.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._kind == "files":
            yield from self._iter_files()
        elif self._kind == "memmap":
            yield from self._iter_memmap()
        elif self._kind == "array":
            for s in range(0, self.n_rows, self.chunk_rows):
                yield self._array[s : s + self.chunk_rows]
        else:
            for block in prefetched(self._factory(), self._prefetch):
                block = np.asarray(block)
                if block.ndim != 2 or block.shape[1] != self.n_features:
                    raise ValueError(
                        f"`{self.name}`: block of shape {block.shape}; expected (rows, "
                        f"{self.n_features})"
                    )
                for i in range(0, block.shape[0], self.chunk_rows):
                    yield block[i : i + self.chunk_rows]

    def _map(self, sh: Shard, start: int, rows: int):
        """A read-only map of rows [start, start + rows) of shard ``sh`` (read ahead by the kernel)."""
        item, d = sh.dtype.itemsize, sh.n_features
        off = sh.offset + start * d * item
        base = off - off % mmap.ALLOCATIONGRANULARITY
        with open(sh.path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size < off + rows * d * item:  # a map past EOF is SIGBUS
                raise ValueError(f"`{self.name}`: shard {sh.path!r} is truncated")
            mm = mmap.mmap(
                f.fileno(), off - base + rows * d * item, access=mmap.ACCESS_READ, offset=base
            )
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            mm.madvise(mmap.MADV_WILLNEED)
        return mm, np.frombuffer(mm, sh.dtype, rows * d, off - base).reshape(rows, d)

    def _iter_files(self):
        """Blocks as read-only maps of the files' pages (no copy into a buffer: a streamed pass
        took 0.44 s instead of 0.73 s at 1e6 × 768 float32 on the 2-core CI machine). The next
        block is mapped (and read ahead) before a block is yielded; the pages of the block before
        last are dropped from the process (``MADV_DONTNEED``; they stay in the page cache), so at
        most three blocks are resident."""
        B = self.block_rows
        spans = ((sh, s, min(B, sh.rows - s)) for sh in self.shards for s in range(0, sh.rows, B))
        maps: list = []
        nxt = self._map(*next(spans))
        for span in spans:
            cur, nxt = nxt, self._map(*span)
            maps.append(cur[0])
            if len(maps) > 2:
                _drop_pages(maps.pop(0))
            yield cur[1]
        maps.append(nxt[0])
        yield nxt[1]
        for mm in maps:
            _drop_pages(mm)

    def _iter_memmap(self):
        n, d = self.shape
        B = self.block_rows
        bufs = [aligned_empty((B, d), self.dtype) for _ in range(2)]
        mm = getattr(self._array, "_mmap", None)
        for i, start in enumerate(range(0, n, B)):
            rows = min(B, n - start)
            np.copyto(bufs[i % 2][:rows], self._array[start : start + rows])
            if mm is not None and hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED)  # drop the mapped pages we just copied
            yield bufs[i % 2][:rows]


def as_store(X, chunk_rows: int | None = None, name: str = "X") -> ActivationStore:
    """``X`` itself when it is an ``ActivationStore``, else a store reading it."""
    if isinstance(X, ActivationStore):
        return X
    return ActivationStore(X, chunk_rows=chunk_rows, name=name)
