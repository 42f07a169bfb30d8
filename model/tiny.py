"""The ``tiny`` backbone: a small random BERT with a WordPiece tokenizer trained on
the training texts. It exists so tests and smoke runs need no download.

    >>> path = build_tiny_backbone(["نص أول", "نص ثان"], "runs/x/backbone")  # doctest: +SKIP
    >>> AutoModel.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_backbone(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 3000,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> str:
    """Train a WordPiece tokenizer on ``texts`` and save it with a random small BERT.

    Returns ``out_dir``. The folder is written atomically, so a half-built backbone
    is never mistaken for a finished one.
    """
    import torch

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out.parent))
    try:
        tokenizer = _train_wordpiece(texts, vocab_size)
        tokenizer.save_pretrained(tmp)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=hidden_size * 4,
            max_position_embeddings=max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        BertModel(config, add_pooling_layer=False).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def _train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # NFKC folds Arabic presentation forms; no lowercasing or accent stripping,
    # which would delete Arabic diacritics and hamza forms silently.
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    vocab = _frequency_vocab(texts, vocab_size, tok.normalizer, tok.pre_tokenizer)
    tok.model = models.WordPiece(vocab, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def _frequency_vocab(texts: Iterable[str], vocab_size: int, normalizer, pre_tokenizer) -> dict[str, int]:
    """A WordPiece vocabulary chosen by counting: the special tokens, every character (alone and
    as a ``##`` continuation, so no word is ever unknown), then the most frequent whole words,
    word starts and ``##`` word ends. Ties break alphabetically, so the same texts always give
    the same vocabulary; the ``tokenizers`` trainer breaks ties by hash order, which changed the
    tiny model from run to run and made tests that compare numbers flaky.

    >>> vocab = _frequency_vocab(["ab ab c"], 12, normalizers.NFKC(), pre_tokenizers.BertPreTokenizer())
    >>> [t for t in vocab][:9]
    ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'b', 'c', '##a']
    """
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    pieces: Counter[str] = Counter()
    for word, count in words.items():
        pieces[word] += count
        for n in range(2, min(len(word), 6)):
            pieces[word[:n]] += count
            pieces["##" + word[-n:]] += count
    tokens = SPECIALS + chars + ["##" + c for c in chars]
    known = set(tokens)
    ranked = sorted((p for p in pieces if p not in known), key=lambda p: (-pieces[p], p))
    tokens += ranked[: max(0, vocab_size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}
