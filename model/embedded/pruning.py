"""Vocabulary pruning for ``?vocab=arabic``: which pieces Arabic news text can use.
"""

from __future__ import annotations

import string

import numpy as np

from model.embedded.reader import _SPECIALS

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
