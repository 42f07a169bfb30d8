"""Text preparation, windowing and window→article aggregation.

One implementation serves training, evaluation and inference: the settings are
saved as ``preprocess.json`` beside the weights and read back at load time, so a
caller can never score with a different normalisation or window size than the
model was trained with.

    >>> pre = Preprocessing(normalizer="arabert_v02", max_length=128)
    >>> pre.prepare("ليبيا", title="عنوان")  # doctest: +SKIP
    'عنوان\\nليبيا'
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from model.arabic import NORMALIZERS

PREPROCESS_FILE = "preprocess.json"
AGGREGATIONS = ("mean", "max", "first")
# Generous upper bound on characters per token: texts are cut to
# max_windows * max_length * this before tokenising, so a 1 MB article costs no
# more than the windows we keep.
_CHARS_PER_TOKEN_CAP = 16
# tokenizers releases whose overflow (our windows) stops after one short second window, so a long
# article would be read as its first max_length tokens plus a stub, silently.
_BROKEN_OVERFLOW_TOKENIZERS = ("0.23.1", "0.23.2")


class TokenizerVersionError(RuntimeError):
    """The installed ``tokenizers`` cannot cut long texts into windows correctly."""


def check_windowing_support(version: str | None = None) -> None:
    """Refuse a ``tokenizers`` release known to lose windows (0.23.1 and 0.23.2).

    >>> check_windowing_support("0.23.3")
    """
    if version is None:
        import tokenizers

        version = tokenizers.__version__
    if version in _BROKEN_OVERFLOW_TOKENIZERS:
        raise TokenizerVersionError(
            f"tokenizers {version} returns only one short overflow window, so articles longer than one "
            "window would be read only in part: pip install 'tokenizers>=0.23.3'"
        )


class EmptyTextError(ValueError):
    """The text is empty once normalised; nothing can be predicted from it."""


@dataclass
class Preprocessing:
    """How raw article text becomes model windows.

    - ``normalizer``: a name in :data:`model.arabic.NORMALIZERS` (``arabert_v02`` for AraBERT).
    - ``text_prefix``: prepended after normalisation (``"passage: "`` for E5 encoders).
    - ``max_length`` / ``stride``: window size in tokens (specials included) and overlap.
    - ``max_windows``: windows per article used in training.
    - ``predict_max_windows``: windows per article in evaluation and inference.
    - ``aggregation``: how window logits become article logits (``mean``, ``max``, ``first``).
    - ``text_field`` / ``title_field`` / ``id_field``: the record fields the model was trained
      on; the scorer and ``Classifier`` read records by them unless told otherwise
      (``title_field`` ``None``: titles are ignored).
    """

    normalizer: str = "none"
    text_prefix: str = ""
    title_separator: str = "\n"
    max_length: int = 256
    stride: int = 32
    max_windows: int = 4
    predict_max_windows: int = 16
    aggregation: str = "mean"
    text_field: str = "text"
    title_field: str | None = "title"
    id_field: str = "id"

    def __post_init__(self) -> None:
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer {self.normalizer!r} unknown; choose one of {sorted(NORMALIZERS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} unknown; choose one of {AGGREGATIONS}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if not 0 <= self.stride < self.max_length // 2:
            raise ValueError(f"stride must be in [0, max_length/2), got {self.stride}")
        if self.max_windows < 1 or self.predict_max_windows < 1:
            raise ValueError("max_windows and predict_max_windows must be at least 1")

    # -- persistence -------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        path = Path(directory) / PREPROCESS_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Preprocessing:
        """Read ``preprocess.json``. Folders saved before the field names were kept there take
        them from their ``run_config.yaml`` (its ``data`` section), else the defaults.

        >>> Preprocessing.load("runs/demo/best").title_field  # doctest: +SKIP
        'title'
        """
        path = Path(directory) / PREPROCESS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; this folder was not saved by nabaa")
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} (saved by a newer nabaa?)")
        missing_fields = [name for name in FIELD_KEYS if name not in raw]
        if missing_fields:
            raw.update({k: v for k, v in _run_config_fields(Path(directory)).items() if k in missing_fields})
        return cls(**raw)

    # -- text --------------------------------------------------------------------
    def prepare(self, text: str, title: str | None = None) -> str:
        """Join title and body, normalise, add the prefix; raise if nothing is left."""
        joined = f"{title}{self.title_separator}{text}" if title else text
        cap = self.predict_max_windows * self.max_length * _CHARS_PER_TOKEN_CAP
        normalised = NORMALIZERS[self.normalizer](joined[:cap]).strip()
        if not normalised:
            raise EmptyTextError("text is empty after normalisation")
        return self.text_prefix + normalised

    def windows(self, tokenizer: Any, texts: list[str], training: bool = False) -> list[list[list[int]]]:
        """Tokenise prepared texts into windows: one list of token-id lists per text.

        Windows overlap by ``stride`` tokens and each carries the tokenizer's
        special tokens. Training keeps ``max_windows``, prediction ``predict_max_windows``.
        """
        if not texts:
            return []
        limit = self.max_windows if training else self.predict_max_windows
        if limit > 1:
            check_windowing_support()
        enc = tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        out: list[list[list[int]]] = [[] for _ in texts]
        for ids, sample in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
            if len(out[sample]) < limit:
                out[sample].append(ids)
        return out


def aggregate_windows(logits: torch.Tensor, article_index: torch.Tensor, n_articles: int, method: str) -> torch.Tensor:
    """Combine window logits ``[n_windows, C]`` into article logits ``[n_articles, C]``.

    ``article_index[i]`` is the article of window ``i``; windows of one article keep
    their order (the first window is the article's opening).

    >>> aggregate_windows(torch.tensor([[1.0, 0.0], [3.0, 2.0]]), torch.tensor([0, 0]), 1, "mean")
    tensor([[2., 1.]])
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation {method!r} unknown; choose one of {AGGREGATIONS}")
    logits = logits.float()
    n_classes = logits.shape[-1]
    index = article_index.long().unsqueeze(-1).expand(-1, n_classes)
    if method == "mean":
        sums = torch.zeros(n_articles, n_classes, dtype=logits.dtype, device=logits.device)
        sums.scatter_add_(0, index, logits)
        counts = torch.bincount(article_index.long(), minlength=n_articles).clamp(min=1)
        return sums / counts.unsqueeze(-1).to(logits.dtype)
    if method == "max":
        out = torch.full((n_articles, n_classes), float("-inf"), dtype=logits.dtype, device=logits.device)
        return out.scatter_reduce(0, index, logits, reduce="amax")
    # "first": the window with the lowest index of each article (its opening).
    positions = torch.arange(len(article_index), device=logits.device)
    first = torch.full((n_articles,), len(article_index), dtype=torch.long, device=logits.device)
    first = first.scatter_reduce(0, article_index.long(), positions, reduce="amin")
    padded = torch.cat([logits, torch.zeros(1, n_classes, dtype=logits.dtype, device=logits.device)])
    return padded[first]


def with_target(record: Any, target: str, title_field: str | None = "title", text_field: str = "text") -> dict[str, Any]:
    """A record as a (target, article) pair model reads it: the target phrase on its own line
    above the title, so it opens the first window (see :mod:`training.pairs`). ``record`` is a
    mapping or a plain text.

    >>> with_target({"title": "عنوان", "text": "نص"}, "خليفة حفتر")["title"]
    'خليفة حفتر\\nعنوان'
    """
    if not isinstance(record, dict):
        record = {text_field: record}
    title = record.get(title_field) if title_field else None
    field = title_field or "title"
    return {**record, field: f"{target}\n{title}" if isinstance(title, str) and title.strip() else target}


FIELD_KEYS = ("text_field", "title_field", "id_field")
# AraBERT v02's normaliser replaces URLs, e-mails and mentions by these words, and AraBERT
# vocabularies hold each as one token: the tokenizer itself says it expects that normaliser.
ARABERT_TOKENS = ("[رابط]", "[بريد]", "[مستخدم]")


def _run_config_fields(directory: Path) -> dict[str, Any]:
    """Field names from an older folder's ``run_config.yaml`` (its ``data`` section)."""
    import yaml

    path = directory / "run_config.yaml"
    if not path.exists():
        return {}
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
    return {k: data[k] for k in FIELD_KEYS if k in data}


def _backbone_names(backbone: str, tokenizer: Any) -> list[str]:
    """The backbone's name and the names its tokenizer and config were saved under."""
    names = [backbone]
    if tokenizer is not None:
        names.append(str(getattr(tokenizer, "name_or_path", "") or ""))
        folder = Path(backbone)
        for file, key in (("config.json", "_name_or_path"), ("tokenizer_config.json", "name_or_path")):
            try:
                names.append(str(json.loads((folder / file).read_text(encoding="utf-8")).get(key) or ""))
            except (OSError, ValueError, AttributeError):
                pass
    return [n.lower() for n in names if n]


def default_preprocessing(backbone: str, tokenizer: Any = None) -> dict[str, str]:
    """Normaliser and prefix that suit a backbone (used when the config says ``auto``), and why.

    The AraBERT normaliser is chosen when the tokenizer's vocabulary holds AraBERT's
    ``[رابط]``/``[بريد]``/``[مستخدم]`` tokens, so a local copy in a folder of any name gets it;
    else when a name (the backbone's, or the one its config or tokenizer was saved under)
    says AraBERT. The ``passage: `` prefix goes with E5 backbone names.

    >>> default_preprocessing("aubmindlab/bert-base-arabertv02")["normalizer"]
    'arabert_v02'
    """
    names = _backbone_names(backbone, tokenizer)
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    # The prefix follows the configured name only: saved paths may hold "e5" by chance (hashes).
    prefix = "passage: " if "e5" in backbone.lower() else ""
    if vocab and all(token in vocab for token in ARABERT_TOKENS):
        reason = f"the tokenizer's vocabulary has AraBERT's {'/'.join(ARABERT_TOKENS)} tokens"
        return {"normalizer": "arabert_v02", "text_prefix": prefix, "reason": reason}
    named = next((n for n in names if "arabert" in n), None)
    if named:
        return {"normalizer": "arabert_v02", "text_prefix": prefix, "reason": f"the backbone is named {named!r}"}
    return {"normalizer": "none", "text_prefix": prefix,
            "reason": "neither the tokenizer's vocabulary nor the backbone's name is AraBERT's"}


def build_preprocessing(model_args: Any, data_args: Any = None, tokenizer: Any = None) -> Preprocessing:
    """The :class:`Preprocessing` a run's config asks for: ``model_args`` is a
    ``training.config.ModelArgs`` (or any object with its fields), ``data_args`` a ``DataArgs``
    whose field names are kept; ``auto`` settings are decided from the backbone's
    ``tokenizer`` when given (see :func:`default_preprocessing`), else from its name.

    >>> from types import SimpleNamespace
    >>> args = SimpleNamespace(backbone="embedded:multilingual-e5-small", normalizer="auto", text_prefix=None,
    ...                        max_length=128, stride=16, max_windows=2, predict_max_windows=4, aggregation="mean")
    >>> build_preprocessing(args).text_prefix
    'passage: '
    """
    defaults = default_preprocessing(model_args.backbone, tokenizer)
    names = {k: getattr(data_args, k) for k in FIELD_KEYS} if data_args is not None else {}
    return Preprocessing(
        normalizer=defaults["normalizer"] if model_args.normalizer == "auto" else model_args.normalizer,
        text_prefix=defaults["text_prefix"] if model_args.text_prefix is None else model_args.text_prefix,
        max_length=model_args.max_length,
        stride=model_args.stride,
        max_windows=model_args.max_windows,
        predict_max_windows=model_args.predict_max_windows,
        aggregation=model_args.aggregation,
        **names,
    )
