"""Saving and loading a trained nabaa model folder.

A model folder is a ``save_pretrained`` folder plus nabaa's own files::

    best/
      config.json          encoder config + task schema (id2label per task)
      model.safetensors    weights (safetensors only; pickle is refused)
      tokenizer*.json      the tokenizer
      preprocess.json      normalisation, prefix, windows, aggregation
      calibration.json     per-task temperature and lexical weight (when calibrated)
      lexical.json         TF-IDF vocabularies (optional; see model/lexical.py)
      lexical.safetensors  TF-IDF idf weights and per-task linear layers (optional)
      run_config.yaml      the resolved training config
      README.md            model card

Folders are written to a temporary sibling and swapped in, so a kill at any
moment leaves either the old complete folder or the new complete one.

    >>> save_model_folder("runs/x/best", model, tokenizer, pre)  # doctest: +SKIP
    >>> model, tokenizer, pre, calibration = load_model_folder("runs/x/best")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer

from model.modeling import MultiTaskClassifier
from model.preprocess import PREPROCESS_FILE, Preprocessing

CALIBRATION_FILE = "calibration.json"
RUN_CONFIG_FILE = "run_config.yaml"
WEIGHTS_FILE = "model.safetensors"
_PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


class ModelFolderError(ValueError):
    """A model folder is missing files, has unsafe weights or is corrupt."""


def atomic_replace_dir(build: Callable[[Path], None], dest: str | os.PathLike) -> Path:
    """Call ``build(tmp)`` on a fresh temporary folder next to ``dest``, then swap it in.

    The old folder is renamed aside before the new one is renamed in; if a kill
    lands between the two renames, :func:`recover_dir` (called on every load)
    puts the old one back.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        build(tmp)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def recover_dir(dest: str | os.PathLike) -> None:
    """Finish or undo an interrupted :func:`atomic_replace_dir`."""
    dest = Path(dest)
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)  # the new folder made it in
        else:
            os.replace(old, dest)  # killed between the renames: restore the old one


def save_model_folder(
    dest: str | os.PathLike,
    model: MultiTaskClassifier,
    tokenizer: Any,
    pre: Preprocessing,
    calibration: dict[str, Any] | None = None,
    run_config_yaml: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a complete model folder atomically (see module docstring)."""

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        pre.save(tmp)
        if calibration is not None:
            (tmp / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2) + "\n", encoding="utf-8")
        if run_config_yaml is not None:
            (tmp / RUN_CONFIG_FILE).write_text(run_config_yaml, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    return atomic_replace_dir(build, dest)


def check_model_folder(path: str | os.PathLike) -> Path:
    """Refuse folders without safetensors weights, with pickle weights, or with a corrupt file."""
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: not a folder")
    pickles = [name for name in _PICKLE_WEIGHTS if (path / name).exists()]
    if pickles:
        raise ModelFolderError(
            f"{path}: refusing pickle weights {pickles}: nabaa loads safetensors only (pickle can run code)"
        )
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise ModelFolderError(f"{path}: no {WEIGHTS_FILE} (is this a nabaa model folder?)")
    for required in ("config.json", PREPROCESS_FILE):
        if not (path / required).exists():
            raise ModelFolderError(f"{path}: missing {required}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)  # reads the header entry; data range is checked below
        _check_weights_size(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFolderError(f"{weights}: corrupt or truncated weights: {e}") from e
    return path


def _check_weights_size(weights: Path) -> None:
    """A truncated file can still have an intact header: compare the data size it declares."""
    with open(weights, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    actual = weights.stat().st_size - 8 - header_len
    if actual != end:
        raise ValueError(f"declares {end} bytes of tensor data but holds {actual}")


def model_fingerprint(path: str | os.PathLike, samples: int = 64, block: int = 1 << 16) -> str:
    """A short hash of what decides a folder's scores: the weights' header, size and
    ``samples`` blocks of their data spread over the file, plus ``config.json``, the
    preprocessing and the calibration. Training replaces ``best/`` in place at the
    same path; a resumed scoring run compares this to refuse mixing two models.
    Reads about 4 MB whatever the model's size.

    >>> model_fingerprint("runs/demo/best")  # doctest: +SKIP
    '3f1c9a0d5e7b2c41'
    """
    path = Path(path)
    recover_dir(path)
    digest = hashlib.sha256()
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise ModelFolderError(f"{path}: no {WEIGHTS_FILE} (is this a nabaa model folder?)")
    size = weights.stat().st_size
    digest.update(f"{WEIGHTS_FILE}:{size}".encode())
    with open(weights, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        digest.update(f.read(min(header_len, size)))
        for i in range(samples):
            f.seek(int(i * max(0, size - block) / max(1, samples - 1)))
            digest.update(f.read(block))
    for name in ("config.json", PREPROCESS_FILE, CALIBRATION_FILE):
        file = path / name
        digest.update(name.encode() + (file.read_bytes() if file.exists() else b"<absent>"))
    return digest.hexdigest()[:16]


def load_model_folder(path: str | os.PathLike) -> tuple[MultiTaskClassifier, Any, Preprocessing, dict]:
    """Load ``(model, tokenizer, preprocessing, calibration)`` from a model folder.

    Weights load from safetensors only; remote code is never trusted.
    """
    path = check_model_folder(path)
    try:
        model, info = MultiTaskClassifier.from_pretrained(path, use_safetensors=True, trust_remote_code=False,
                                                          output_loading_info=True)
    except Exception as e:  # transformers raises many types for a bad file; name the folder
        raise ModelFolderError(f"{path}: cannot load the model: {e}") from e
    # A damaged tensor name still parses; transformers would then silently start that tensor
    # from random values. A folder we wrote holds exactly the model's tensors: anything else is corruption.
    wrong = {kind: sorted(str(k) for k in info.get(kind) or ())
             for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(wrong.values()):
        detail = "; ".join(f"{kind.replace('_', ' ')} {names[:3]}{' ...' if len(names) > 3 else ''}"
                           for kind, names in wrong.items() if names)
        raise ModelFolderError(f"{path / WEIGHTS_FILE}: corrupt weights: they do not match the model ({detail})")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    pre = Preprocessing.load(path)
    calibration_path = path / CALIBRATION_FILE
    calibration = json.loads(calibration_path.read_text(encoding="utf-8")) if calibration_path.exists() else {}
    return model.eval(), tokenizer, pre, calibration
