"""Checkpoints and the run directory: what ``--resume`` reads and how saves stay atomic.

``save_state`` goes to a temp folder renamed into place, so a kill never leaves a half
checkpoint that ``--resume`` would pick; the loop position (:class:`TrainerState`) is saved
with every checkpoint and restored with it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from model.serialization import recover_dir
from training.config import RunConfig

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """Loop position and early-stopping memory; saved with every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # batches of that epoch already trained
    optimizer_steps: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / "checkpoints"
    if not folder.exists():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainerState, keep: int) -> None:
    """``save_state`` into a temp folder, then rename: a kill never leaves a half checkpoint
    that ``--resume`` would pick."""
    folder = run_dir / "checkpoints"
    final = folder / f"step_{_checkpoint_number(state):012d}"
    tmp = folder / f".tmp_{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        ordered = sorted(p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name))
        for old in ordered[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _checkpoint_number(state: TrainerState) -> int:
    # Orders checkpoints by (epoch, batch): optimizer steps alone cannot tell an
    # end-of-epoch state (eval done) from the mid-epoch one at the same step.
    return state.epoch * 1_000_000 + state.batches_done


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool, checkpoint: Path | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    recover_dir(run_dir / "best")
    # Temp folders of saves a kill interrupted: never complete, never read; clear them.
    for leftover in [*run_dir.glob(".best.tmp-*"), *(run_dir / "checkpoints").glob(".tmp_*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    if not resume and (latest_checkpoint(run_dir) or (run_dir / "metrics.jsonl").exists()):
        raise SystemExit(
            f"{run_dir} already holds a run; pass --resume to continue it, or output_dir=... for a new one"
        )
    if resume and checkpoint is None:
        print(f"--resume: no checkpoint in {run_dir}/checkpoints yet; starting from the beginning")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    if resume and checkpoint is not None:
        _truncate_metrics_after(run_dir / "metrics.jsonl", checkpoint)
    cfg.dump(run_dir / "config.yaml")


def _truncate_metrics_after(path: Path, checkpoint: Path) -> None:
    """Drop log lines written after the checkpoint we resume from, so curves have no duplicates."""
    if not path.exists():
        return
    cutoff = checkpoint.stat().st_mtime
    kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip() and _log_time(line) <= cutoff]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def _log_time(line: str) -> float:
    """A log line's time; a line torn by a kill mid-write counts as after any checkpoint (dropped)."""
    try:
        return float(json.loads(line).get("time", 0))
    except (ValueError, AttributeError, TypeError):
        return math.inf
