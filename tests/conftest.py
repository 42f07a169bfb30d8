"""Shared fixtures: offline environment, a small labelled corpus and one trained tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "topic": ["military", "politics", "economy", "health", "society"],
    "stance_gna": ["favor", "against", "none"],
    "stance_haftar": ["favor", "against", "none"],
}


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach a hub: offline flags, and a throwaway HF_HOME."""
    home = tmp_path_factory.mktemp("hf_home")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        os.environ[key] = "1"
    os.environ["HF_HOME"] = str(home)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # `auto` precision is bf16 wherever a probe measures bf16 fast (model/hardware.py): tests that
    # compare runs across batchings, shards or resumes need fp32's bit-exact results on every
    # machine. tests/test_hardware.py covers the `auto` decision itself.
    os.environ.setdefault("NABAA_CPU_BF16", "0")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def seed_records(split: str, n: int) -> list[dict]:
    """The first ``n`` articles of a seeds split (the project's own corpus)."""
    path = ROOT / "seeds" / f"{split}.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records[:n]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 train / 24 dev / 24 test seeds articles, as JSONL files."""
    folder = tmp_path_factory.mktemp("corpus")
    return {
        split: write_jsonl(folder / f"{split}.jsonl", seed_records(split, n))
        for split, n in (("train", 48), ("dev", 24), ("test", 24))
    }


def train_command(config: str, *overrides: str, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "training.train", "--config", config]
    return cmd + (["--resume"] if resume else []) + list(overrides)


def corpus_overrides(corpus: dict[str, Path], out: Path) -> list[str]:
    return [f"data.train_file={corpus['train']}", f"data.dev_file={corpus['dev']}",
            f"data.test_file={corpus['test']}", f"output_dir={out}"]


def run(cmd: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def trained_run(small_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained once for the whole session (2 epochs, full finalize)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run(train_command("configs/tiny.yaml", *corpus_overrides(small_corpus, out), "train.epochs=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out
