"""Frozen lower layers computed once (training/feature_cache.py): same results, fewer FLOPs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import corpus_overrides, run, train_command

from model.modeling import MultiTaskClassifier
from model.schema import Task
from training import feature_cache
from training.config import ConfigError, load_config
from training.feature_cache import CachedCollator, build_feature_store, feature_cache_wanted
from training.train import batch_loss, freeze, train_mode

TASKS = [Task("topic", ("a", "b", "c")), Task("stance", ("x", "y"))]


@pytest.fixture
def model(trained_run: Path) -> MultiTaskClassifier:
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(str(trained_run / "backbone"), TASKS, pooling="mean")
    freeze(model, embeddings=True, layers=1)
    return model


def _windows(n: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 40, (n,), generator=generator)
    return [torch.randint(5, 500, (int(k),), generator=generator).tolist() for k in lengths]


def _token_batch(windows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = 8 * -(-max(map(len, windows)) // 8)
    ids, mask = torch.zeros(len(windows), width, dtype=torch.long), torch.zeros(len(windows), width, dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, :len(window)], mask[row, :len(window)] = torch.tensor(window), 1
    return ids, mask


def test_cached_batch_gives_the_same_loss_and_gradients(model: MultiTaskClassifier, tmp_path: Path) -> None:
    windows = _windows(12)
    store = build_feature_store(model, windows, 1, tmp_path, pad_id=0, batch_windows=5)
    rows = [{"feature_rows": [0, 1, 2], "labels": [0, 1], "article": 0},
            {"feature_rows": [3], "labels": [2, -100], "article": 1},
            {"feature_rows": [4, 5], "labels": [1, 0], "article": 2}]
    cached = CachedCollator(store)(rows)
    ids, mask = _token_batch(windows[:6])
    tokens = {"input_ids": ids, "attention_mask": mask, "labels": cached["labels"], "article": cached["article"],
              "window_article": cached["window_article"]}
    assert torch.equal(cached["attention_mask"], mask)
    train_mode(model)  # dropout on in the trained layers: both paths must draw the same masks
    losses, grads = [], []
    for batch in (tokens, cached):
        model.zero_grad()
        torch.manual_seed(1)
        loss = batch_loss(model, batch, "mean")
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_store_is_reused_and_keyed_by_its_inputs(model: MultiTaskClassifier, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    windows = _windows(6)
    first = build_feature_store(model, windows, 1, tmp_path, pad_id=0)
    computed = []
    original = feature_cache._compute
    monkeypatch.setattr(feature_cache, "_compute", lambda *a, **k: (computed.append(1), original(*a, **k)))
    again = build_feature_store(model, windows, 1, tmp_path, pad_id=0)
    assert again.path == first.path and not computed  # a resumed run reads it back
    changed = [w[:] for w in windows]
    changed[3][0] += 1  # one token of one window: other data, other store
    other = build_feature_store(model, changed, 1, tmp_path, pad_id=0)
    assert other.path != first.path and computed == [1]
    assert [p.name for p in tmp_path.iterdir()] == [other.path.name]  # the stale store was removed
    with torch.no_grad():
        model.encoder.embeddings.word_embeddings.weight[0, 0] += 1  # other frozen weights: rebuilt too
    assert build_feature_store(model, changed, 1, tmp_path, pad_id=0).path != other.path


def test_interrupted_build_leaves_no_store(model: MultiTaskClassifier, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "encode_lower", killed)
    with pytest.raises(KeyboardInterrupt):
        build_feature_store(model, _windows(4), 1, tmp_path, pad_id=0)
    assert list(tmp_path.iterdir()) == []


def test_config_switch() -> None:
    assert feature_cache_wanted("auto", True, 6) and not feature_cache_wanted("auto", True, 0)
    assert not feature_cache_wanted("auto", False, 6) and not feature_cache_wanted(False, True, 6)
    cfg = load_config("configs/demo.yaml")
    assert cfg.train.feature_cache == "auto"
    with pytest.raises(ConfigError, match="feature_cache = true needs model.freeze_embeddings"):
        load_config("configs/tiny.yaml", ["train.feature_cache=true"])
    with pytest.raises(ConfigError, match="allowed: \\[auto, true, false\\]"):
        load_config("configs/tiny.yaml", ["train.feature_cache=sometimes"])


def _history(run_dir: Path) -> list:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] if r["type"] == "train" else r["dev"] for r in records]


@pytest.mark.slow
def test_cached_training_matches_uncached(small_corpus: dict, trained_run: Path, tmp_path: Path) -> None:
    histories = {}
    for setting in ("true", "false"):
        out = tmp_path / setting
        # One shared backbone: building the tiny WordPiece vocabulary is not bit-reproducible across processes.
        shutil.copytree(trained_run / "backbone", out / "backbone")
        result = run(train_command("configs/tiny.yaml", "--no-finalize", *corpus_overrides(small_corpus, out),
                                   "train.epochs=2", "train.log_every_steps=1", 'train.mixed_precision="no"',
                                   "model.freeze_embeddings=true", "model.freeze_layers=1",
                                   f"train.feature_cache={setting}"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("feature cache: layers 0-0" in result.stdout) == (setting == "true")
        assert not (out / feature_cache.CACHE_FOLDER).exists()  # removed once training is over
        histories[setting] = _history(out)
    assert len(histories["true"]) == 8  # 3 steps + 1 evaluation per epoch
    assert histories["true"] == histories["false"]
