"""The ``Classifier`` API: a trained model folder, its tokenizer, preprocessing and
calibration, with ``predict`` / ``predict_proba``.

    >>> clf = Classifier.from_pretrained("runs/demo/best", device="cpu")  # doctest: +SKIP
    >>> clf.predict(["طرابلس تستضيف جولة جديدة من الحوار"])  # doctest: +SKIP
    [{'topic': {'label': 'politics', 'score': 0.91, 'probs': {...}}, 'stance_gna': {...}, ...}]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from inference.quantize import quantize_int8
from model import hardware
from model.hardware import auto_uses_bf16, probe_shape_of
from model.lexical import LexicalModel, fuse
from model.modeling import MultiTaskClassifier
from model.preprocess import EmptyTextError, Preprocessing, aggregate_windows
from model.schema import Task
from model.serialization import load_model_folder

Text = str | Mapping[str, Any]
# Batches are padded to a multiple of PAD_MULTIPLE tokens (never beyond max_length), so batch
# shapes come from a small set however much is scored. On CPU, oneDNN builds and caches a kernel
# (the GELU) per input shape, up to 1,024 of them, 1-4 MB each for e5-small: with every batch
# padded to its own exact length, a long scoring run kept meeting new shapes and kept growing
# (+430 MB between 2k and 20k articles). Padding is masked, so results do not change.
PAD_MULTIPLE = 16
# The logit of every label but ``none`` on an article that never names a task's target: far enough
# below 0 that softmax gives ``none`` probability 1 at any fitted temperature, finite so that
# log-probabilities and argmax stay well defined.
ABSENT_LOGIT = -1.0e4


class UncalibratedWarning(UserWarning):
    """The model folder has no calibration for some task: its scores are raw softmax probabilities."""


class Classifier:
    """A loaded nabaa model that owns its labels, preprocessing and calibration.

    Scores are calibrated probabilities (temperature scaling fitted on dev at the
    end of training) when the folder has ``calibration.json``; where that file gives a task a
    ``lexical_weight``, the folder's TF-IDF model (``lexical.*``) is mixed into its scores.
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        tokenizer: Any,
        pre: Preprocessing,
        calibration: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_batch_tokens: int = 16384,
        text_field: str | None = None,
        title_field: str | None = None,
        lexical: LexicalModel | None = None,
    ):
        self.model, self.tokenizer, self.pre, self.lexical = model, tokenizer, pre, lexical
        self.calibration = calibration or {}
        self.device = torch.device(device)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        # Records are read by the fields the model was trained on (preprocess.json) unless told
        # otherwise; title_field="" ignores titles.
        self.text_field = text_field or pre.text_field
        self.title_field = pre.title_field if title_field is None else (title_field or None)
        self.pad_multiple = PAD_MULTIPLE
        self.tasks: list[Task] = model.config.schema()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        quantize: str | None = None,
        dtype: str = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 16384,
        keep_freed_memory: bool = False,
        **kwargs: Any,
    ) -> Classifier:
        """Load a model folder written by training.

        - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when present).
        - ``quantize``: ``None`` or ``"int8"`` (dynamic int8 Linear layers, outlier channels in
          fp32; CPU only; see :mod:`inference.quantize`).
        - ``dtype``: ``"auto"`` (bf16 on a bf16-capable GPU, or on a CPU where a short cached
          probe measures bf16 at least 1.3x faster than fp32 at this model's shapes, else fp32;
          ``NABAA_CPU_BF16=0/1`` forces; see :mod:`model.hardware`), ``"fp32"``, ``"bf16"``.
        - ``batch_size`` / ``max_batch_tokens``: at most this many windows, and this many
          padded tokens, per forward pass.
        - ``keep_freed_memory``: on CPU, tune glibc's allocator for this whole process so that
          large activations reuse heap pages (~1.25x faster scoring, memory is not handed back
          until exit; see :func:`model.hardware.keep_freed_memory`). Off by default in the API
          because it changes the host program's allocator; nabaa's command lines turn it on.
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if keep_freed_memory and str(device).startswith("cpu"):
            hardware.keep_freed_memory()
        model, tokenizer, pre, calibration = load_model_folder(path)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize == "int8":
            if not str(device).startswith("cpu"):
                raise ValueError("int8 dynamic quantisation runs on CPU only; use dtype='bf16' on GPU")
            model = quantize_int8(model)
        if quantize is None:  # int8 layers compute in their own types: no precision probe needed
            model = model.to(device=device, dtype=resolve_dtype(dtype, device, probe_shape_of(model.config.encoder_config)))
        elif dtype != "auto":
            resolve_dtype(dtype, device)  # still reject an unknown name
        lexical = LexicalModel.load(path) if any(c.get("lexical_weight") for c in calibration.values()) else None
        clf = cls(model.eval(), tokenizer, pre, calibration, device, batch_size, max_batch_tokens,
                  lexical=lexical, **kwargs)
        if not clf.calibrated:
            missing = [name for name in clf.task_names if name not in clf.calibration]
            warnings.warn(f"{path}: uncalibrated: no temperature for {missing} in calibration.json; scores are "
                          "raw softmax probabilities (calibrate with: python -m training.finalize --config ...)",
                          UncalibratedWarning, stacklevel=2)
        return clf

    # ------------------------------------------------------------------ public API
    @property
    def calibrated(self) -> bool:
        """Whether every task's scores are temperature-calibrated (``calibration.json``).

        >>> Classifier.from_pretrained("runs/demo/best").calibrated  # doctest: +SKIP
        True
        """
        return all("temperature" in self.calibration.get(name, {}) for name in self.task_names)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def predict(self, texts: Sequence[Text]) -> list[dict[str, dict[str, Any]]]:
        """Label, calibrated score and per-label probabilities for every task.

        ``texts`` holds strings or records (``{"text": ..., "title": ...}``).
        Raises ``ValueError`` naming the index of a text that is empty after normalisation.

        >>> clf.predict(["..."])[0]["stance_haftar"]["label"]  # doctest: +SKIP
        'against'
        """
        return self.format(self.predict_proba(texts))

    def predict_proba(self, texts: Sequence[Text]) -> dict[str, np.ndarray]:
        """Per task, calibrated probabilities ``[n_texts, n_labels]`` (label order = ``labels(task)``)."""
        prepared = [self._prepare(item, i) for i, item in enumerate(texts)]
        return self.predict_proba_prepared(prepared)

    def predict_proba_prepared(self, prepared: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities for texts already passed through :meth:`prepare`."""
        raw = self.logits_prepared(prepared)
        fused = self.fused_logits(raw, prepared)
        return {name: _softmax(value / self.temperature(name)) for name, value in fused.items()}

    def labels(self, task: str) -> list[str]:
        return list(next(t for t in self.tasks if t.name == task).labels)

    def format(self, probs: dict[str, np.ndarray]) -> list[dict[str, dict[str, Any]]]:
        """Turn :meth:`predict_proba` output into one dict per text."""
        n = len(next(iter(probs.values()))) if probs else 0
        out: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
        for task in self.tasks:
            p = probs[task.name]
            best = p.argmax(axis=1)
            for i in range(n):
                out[i][task.name] = {
                    "label": task.labels[best[i]],
                    "score": float(p[i, best[i]]),
                    "probs": {label: float(p[i, j]) for j, label in enumerate(task.labels)},
                }
        return out

    def logits(self, texts: Sequence[Text], calibrated: bool = True) -> dict[str, np.ndarray]:
        """Article logits per task (window logits aggregated), optionally temperature-scaled."""
        prepared = [self._prepare(item, i) for i, item in enumerate(texts)]
        raw = self.fused_logits(self.logits_prepared(prepared), prepared)
        if calibrated:
            raw = {name: value / self.temperature(name) for name, value in raw.items()}
        return raw

    def fused_logits(self, raw: dict[str, np.ndarray], prepared: Sequence[str]) -> dict[str, np.ndarray]:
        """What users get from the transformer's article logits: mixed with the folder's lexical
        (TF-IDF) model, per task by the ``lexical_weight`` fitted on dev (unchanged for tasks with
        weight 0 or folders without a lexical model, see :mod:`model.lexical`), then ``none`` for
        certain on articles that mention none of a task's ``mentions`` (:class:`model.schema.Task`)."""
        weights = {name: self.lexical_weight(name) for name in raw}
        if self.lexical is not None and any(weights.values()):
            lexical = self.lexical.log_proba(prepared)
            raw = {name: fuse(value, lexical[name], weights[name]) for name, value in raw.items()}
        return self.silence_absent_targets(raw, prepared)

    def silence_absent_targets(self, logits: dict[str, np.ndarray], prepared: Sequence[str]) -> dict[str, np.ndarray]:
        """Logits where every article that mentions none of a task's ``mentions`` reads ``none``
        (probability 1 after any temperature); tasks without ``mentions`` pass unchanged.

        >>> clf.silence_absent_targets(clf.logits_prepared(texts), texts)  # doctest: +SKIP
        """
        out = dict(logits)
        for task in self.tasks:
            if not task.mentions or task.name not in out:
                continue
            absent = task.absent(prepared)
            if absent.any():
                value = np.array(out[task.name], copy=True)
                value[absent] = ABSENT_LOGIT
                value[absent, task.label2id["none"]] = 0.0
                out[task.name] = value
        return out

    def lexical_weight(self, task: str) -> float:
        return float(self.calibration.get(task, {}).get("lexical_weight", 0.0))

    def temperature(self, task: str) -> float:
        return float(self.calibration.get(task, {}).get("temperature", 1.0))

    # ------------------------------------------------------------------ internals
    def prepare(self, text: Any, title: Any = None) -> str:
        """Normalise one article (raises :class:`EmptyTextError` / ``TypeError``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        return self.pre.prepare(text, title if isinstance(title, str) else None)

    def _prepare(self, item: Text, index: int) -> str:
        if isinstance(item, Mapping):
            text = item.get(self.text_field)
            title = item.get(self.title_field) if self.title_field else None
        else:
            text, title = item, None
        try:
            return self.prepare(text, title)
        except (EmptyTextError, TypeError) as e:
            raise ValueError(f"text #{index}: {e}") from e

    def logits_prepared(self, prepared: Sequence[str]) -> dict[str, np.ndarray]:
        """Raw article logits for already-prepared texts (see :meth:`prepare`)."""
        return self.logits_windows(self.pre.windows(self.tokenizer, list(prepared)) if prepared else [])

    def predict_proba_windows(self, articles: Sequence[Sequence[Sequence[int]]],
                              prepared: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Calibrated probabilities for articles already cut into token windows
        (``Preprocessing.windows``: tokenising can then run elsewhere, e.g. in Ray CPU tasks).
        ``prepared``, the articles' prepared texts, is needed by folders with a lexical mix.

        >>> texts = [clf.prepare("...")]  # doctest: +SKIP
        >>> clf.predict_proba_windows(clf.pre.windows(clf.tokenizer, texts), prepared=texts)  # doctest: +SKIP
        """
        raw = self.logits_windows(articles)
        if prepared is not None:
            raw = self.fused_logits(raw, prepared)
        elif self.lexical is not None and any(self.lexical_weight(t.name) for t in self.tasks):
            raise ValueError("this model mixes in a lexical (TF-IDF) model: pass the prepared texts too")
        elif any(t.mentions for t in self.tasks):
            raise ValueError("this model's tasks declare mentions (targets an article must name): pass the "
                             "prepared texts too")
        return {name: _softmax(value / self.temperature(name)) for name, value in raw.items()}

    @torch.inference_mode()
    def logits_windows(self, articles: Sequence[Sequence[Sequence[int]]]) -> dict[str, np.ndarray]:
        """Raw article logits from each article's token windows."""
        if not articles:
            return {t.name: np.zeros((0, len(t.labels)), dtype=np.float32) for t in self.tasks}
        windows, owner = [], []
        for article, article_windows in enumerate(articles):
            windows.extend(article_windows)
            owner.extend([article] * len(article_windows))
        window_logits = {t.name: torch.empty(len(windows), len(t.labels)) for t in self.tasks}
        for batch_ids in self._batches(windows):
            out = self._forward([windows[i] for i in batch_ids])
            for name, value in out.items():
                window_logits[name][batch_ids] = value.float().cpu()
        index = torch.tensor(owner)
        return {
            name: aggregate_windows(value, index, len(articles), self.pre.aggregation).numpy()
            for name, value in window_logits.items()
        }

    @torch.inference_mode()
    def embed_prepared(self, prepared: Sequence[str]) -> np.ndarray:
        """Article embeddings ``[n, hidden]``: the encoder's last hidden states mean-pooled over
        each window's tokens, then averaged over the article's windows (whatever pooling the
        heads use), e.g. to spread a labelling sample over the embedding space.

        >>> clf.embed_prepared([clf.prepare("نص المقال")]).shape  # doctest: +SKIP
        (1, 384)
        """
        hidden = self.model.config.encoder_config.hidden_size
        if not prepared:
            return np.zeros((0, hidden), dtype=np.float32)
        windows, owner = [], []
        for article, article_windows in enumerate(self.pre.windows(self.tokenizer, list(prepared))):
            windows.extend(article_windows)
            owner.extend([article] * len(article_windows))
        pooled = torch.empty(len(windows), hidden)
        for batch_ids in self._batches(windows):
            input_ids, mask = self._pad([windows[i] for i in batch_ids])
            states = self.model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            weights = mask.unsqueeze(-1).float()
            pooled[batch_ids] = ((states * weights).sum(1) / weights.sum(1).clamp(min=1.0)).cpu()
        sums = torch.zeros(len(prepared), hidden).index_add_(0, torch.tensor(owner), pooled)
        counts = torch.bincount(torch.tensor(owner), minlength=len(prepared)).clamp(min=1).unsqueeze(1)
        return (sums / counts).numpy()

    def _batches(self, windows: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        """Length-sorted batches under both the window and the padded-token budget (lengths
        rounded up as :meth:`_padded_length` pads them). The last, partial batch is cut into
        power-of-two pieces (37 windows: 32 + 4 + 1): every new batch shape costs oneDNN a
        cached kernel, and a remainder of any size made a long scoring run meet up to
        ``batch_size`` row counts per length where now it meets at most log2 of it."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]), reverse=True)
        batch: list[int] = []
        for i in order:
            longest = self._padded_length(len(windows[batch[0]]) if batch else len(windows[i]))
            if batch and (len(batch) >= self.batch_size or longest * (len(batch) + 1) > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(i)
        yield from _power_of_two_pieces(batch)

    def _padded_length(self, longest: int) -> int:
        """The length a batch whose longest window has ``longest`` tokens is padded to
        (see :data:`PAD_MULTIPLE`)."""
        rounded = -(-longest // self.pad_multiple) * self.pad_multiple
        return max(longest, min(rounded, self.pre.max_length))

    def _pad(self, windows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and attention mask on the model's device, padded as :meth:`_padded_length` says."""
        length = self._padded_length(max(len(w) for w in windows))
        padded = self.tokenizer.pad({"input_ids": list(windows)}, padding="max_length", max_length=length,
                                    return_tensors="pt")
        return padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)

    def _forward(self, windows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self._pad(windows)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _power_of_two_pieces(batch: list[int]) -> Iterator[list[int]]:
    """``batch`` in consecutive pieces whose sizes are decreasing powers of two."""
    start = 0
    while start < len(batch):
        size = 1 << ((len(batch) - start).bit_length() - 1)
        yield batch[start:start + size]
        start += size


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def resolve_dtype(dtype: str, device: str, shape: hardware.ProbeShape | None = None) -> torch.dtype:
    """The torch dtype a ``dtype`` setting means on ``device`` (``auto``: see :mod:`model.hardware`).

    >>> resolve_dtype("fp32", "cpu")
    torch.float32
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return torch.bfloat16 if auto_uses_bf16(device, shape) else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of auto, fp32, bf16; got {dtype!r}")
    return table[dtype]
