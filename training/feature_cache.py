"""Frozen lower layers computed once: the hidden states after layer ``k`` for every window.

With ``model.freeze_embeddings`` and ``model.freeze_layers: k`` the embeddings and the lowest
``k`` encoder layers never change and run without dropout (``train_mode``), so their output
for a given window is the same in every epoch. :func:`build_feature_store` computes it once
for the training and dev windows into a memory-mapped ``.npy`` file under the run folder;
each epoch then runs only the upper layers and the heads from it (``CachedCollator`` builds
the batches, ``MultiTaskClassifier.forward(hidden_states=..., from_layer=k)`` consumes them).

The store's folder name carries a key over everything its contents depend on: the frozen
weights, ``k``, the precision, torch's version and every window's token ids (so the data, the
tokenizer and the preprocessing settings). A resumed run with the same inputs reuses it; any
change builds a new one. It is written to a temporary folder and renamed when complete, so a
killed build leaves nothing that a later run could mistake for a store.

    >>> store = build_feature_store(model, windows, layers=6, directory=run_dir / "feature_cache")  # doctest: +SKIP
    >>> CachedCollator(store)([{"feature_rows": [0, 1], "labels": [0, 1, 2], "article": 0}])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.modeling import MultiTaskClassifier
from training.data import target_tensors

CACHE_FOLDER = "feature_cache"
HIDDEN_FILE, OFFSETS_FILE, META_FILE = "hidden.npy", "offsets.npy", "meta.json"
PAD_MULTIPLE = 8  # as training.data.Collator pads: the upper layers see the same shapes


def feature_cache_wanted(setting: bool | str, freeze_embeddings: bool, freeze_layers: int) -> bool:
    """``train.feature_cache``: ``auto`` means on when the embeddings and at least one layer are frozen.

    >>> feature_cache_wanted("auto", True, 6), feature_cache_wanted("auto", False, 6), feature_cache_wanted(False, True, 6)
    (True, False, False)
    """
    if setting == "auto":
        return freeze_embeddings and freeze_layers > 0
    return bool(setting)


@dataclass
class FeatureStore:
    """``hidden[offsets[i]:offsets[i + 1]]`` is window ``i``'s hidden states after layer ``layers``."""

    hidden: np.ndarray  # [total tokens, hidden size] float32, memory-mapped
    offsets: np.ndarray  # [windows + 1] int64
    layers: int
    path: Path

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def window(self, index: int) -> np.ndarray:
        return self.hidden[self.offsets[index]:self.offsets[index + 1]]


def store_key(model: MultiTaskClassifier, windows: Sequence[Sequence[int]], layers: int, precision: str) -> str:
    """A digest of what the cached states depend on: frozen weights, ``layers``, precision,
    torch's version and the token ids of every window, in order."""
    digest = hashlib.sha256(json.dumps({"layers": layers, "precision": precision, "torch": torch.__version__,
                                        "attention": str(model.encoder.config._attn_implementation)}).encode())
    for name, tensor in _frozen_state(model, layers):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for ids in windows:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:32]


def _frozen_state(model: MultiTaskClassifier, layers: int) -> list[tuple[str, torch.Tensor]]:
    encoder = model.encoder
    parts = [("embeddings", encoder.embeddings)] + [
        (f"layer.{i}", encoder.encoder.layer[i]) for i in range(min(layers, len(encoder.encoder.layer)))
    ]
    return [(f"{prefix}.{name}", t) for prefix, module in parts for name, t in module.state_dict().items()]


def build_feature_store(
    model: MultiTaskClassifier,
    windows: Sequence[Sequence[int]],
    layers: int,
    directory: Path,
    pad_id: int,
    precision: str = "no",
    autocast: Callable[[], Any] = contextlib.nullcontext,
    batch_windows: int = 32,
) -> FeatureStore:
    """Open the store for these inputs under ``directory``, computing it first if it is absent.

    Windows are run in length-sorted batches (little padding) under ``autocast`` (the training
    precision), in eval mode and without gradients; stores left by other inputs are removed.
    """
    if not model.supports_layer_split():
        raise ValueError(f"train.feature_cache needs a BERT-style encoder; {type(model.encoder).__name__} is not one")
    key = store_key(model, windows, layers, precision)
    final = Path(directory) / f"layer{layers}-{key}"
    if not (final / META_FILE).exists():
        _compute(model, windows, layers, final, pad_id, autocast, batch_windows)
        for stale in Path(directory).glob("layer*-*"):
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
    return open_feature_store(final)


def open_feature_store(folder: Path) -> FeatureStore:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    hidden = np.load(folder / HIDDEN_FILE, mmap_mode="r")
    offsets = np.load(folder / OFFSETS_FILE)
    if len(offsets) != meta["windows"] + 1 or hidden.shape[0] != offsets[-1]:
        raise ValueError(f"{folder}: feature cache is inconsistent; delete the folder and run again")
    return FeatureStore(hidden, offsets, meta["layers"], folder)


@torch.no_grad()
def _compute(
    model: MultiTaskClassifier, windows: Sequence[Sequence[int]], layers: int, final: Path, pad_id: int,
    autocast: Callable[[], Any], batch_windows: int,
) -> None:
    lengths = np.array([len(w) for w in windows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hidden_size = model.config.encoder_config.hidden_size
    hidden = np.lib.format.open_memmap(tmp / HIDDEN_FILE, mode="w+", dtype=np.float32,
                                       shape=(int(offsets[-1]), hidden_size))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort(lengths, kind="stable")
    try:
        starts = range(0, len(order), batch_windows)
        # On ANT (11k windows of 256 tokens) this takes minutes on a CPU: show it.
        for start in tqdm(starts, desc=f"feature cache (layers 0-{layers - 1})", unit="batch", mininterval=2):
            chunk = order[start:start + batch_windows]
            ids, mask = _pad([windows[i] for i in chunk], pad_id)
            with autocast():
                states = model.encode_lower(ids.to(device), mask.to(device), layers)
            states = states.float().cpu().numpy()
            for row, index in enumerate(chunk):
                hidden[offsets[index]:offsets[index + 1]] = states[row, :lengths[index]]
        hidden.flush()
        del hidden
        np.save(tmp / OFFSETS_FILE, offsets)
        meta = {"layers": layers, "windows": len(windows), "hidden_size": hidden_size, "tokens": int(offsets[-1])}
        (tmp / META_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same store first: theirs is as good
            if not (final / META_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        model.train(was_training)


def _pad(windows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = PAD_MULTIPLE * math.ceil(max(len(w) for w in windows) / PAD_MULTIPLE)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, :len(window)] = torch.tensor(window, dtype=torch.long)
        mask[row, :len(window)] = 1
    return ids, mask


class CachedCollator:
    """Batches of cached hidden states, shaped as ``training.data.Collator``'s token batches.

    Rows carry ``feature_rows``: one window index (window rows) or a list of them (article
    rows, flattened with ``window_article`` as the token collator does). Padding positions are
    zeros under a zero attention mask, so they reach no real token.
    """

    def __init__(self, store: FeatureStore):
        self.store = store

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        per_article = isinstance(rows[0]["feature_rows"], list)
        if per_article:
            index = [w for r in rows for w in r["feature_rows"]]
            owner = [i for i, r in enumerate(rows) for _ in r["feature_rows"]]
        else:
            index, owner = [r["feature_rows"] for r in rows], None
        parts = [self.store.window(i) for i in index]
        width = PAD_MULTIPLE * math.ceil(max(len(p) for p in parts) / PAD_MULTIPLE)
        hidden = torch.zeros((len(parts), width, self.store.hidden.shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(parts), width), dtype=torch.long)
        for row, part in enumerate(parts):
            hidden[row, :len(part)] = torch.from_numpy(np.array(part))
            mask[row, :len(part)] = 1
        return {"hidden_states": hidden, "attention_mask": mask, "from_layer": self.store.layers,
                **target_tensors(rows, owner)}


def token_windows(ds: Any) -> list[list[int]]:
    """Every window of a window or article dataset, in row order (articles' windows in turn)."""
    if "windows" in ds.column_names:
        return [w for windows in ds["windows"] for w in windows]
    return list(ds["input_ids"])


def with_feature_rows(ds: Any, first: int) -> Any:
    """``ds`` with its token columns replaced by ``feature_rows``: the store indices of its
    windows, numbered from ``first`` in :func:`token_windows` order."""
    if "windows" in ds.column_names:
        counts = [len(w) for w in ds["windows"]]
        starts = np.concatenate([[first], first + np.cumsum(counts)[:-1]]) if counts else []
        rows = [list(range(int(s), int(s) + c)) for s, c in zip(starts, counts)]
        return ds.remove_columns(["windows"]).add_column("feature_rows", rows)
    return ds.remove_columns(["input_ids"]).add_column("feature_rows", list(range(first, first + len(ds))))
