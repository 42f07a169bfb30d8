"""Training throughput and peak memory: nabaa's loop against transformers' ``Trainer``.

Both train the same ``MultiTaskClassifier`` (demo config: embedded e5-small, batch 16,
max_length 256, fp32, AdamW with nabaa's parameter groups, linear schedule, grad-norm
clipping 1.0) on the same windows in the same order, for a fixed number of steps.

- ``nabaa``: ``training.train._train_epoch`` itself (the real inner loop) over a loader
  from ``epoch_loader``, with the model, optimizer and scheduler prepared by accelerate
  exactly as ``training_function`` does; evaluation and checkpointing are not part of it.
- ``nabaa_bf16``: the same loop with ``mixed_precision="bf16"`` (autocast), what
  ``train.mixed_precision: auto`` picks on CPUs with AMX; only where bf16 kernels exist.
- ``trainer``: a ``Trainer`` whose ``compute_loss`` calls the same model, with the same
  collator, optimizer and scheduler objects, sequential sampling over the same shuffled
  windows, and no evaluation, saving or reporting.

Step times come from an ``optimizer.step`` post-hook (the same instrument for both): the
intervals between consecutive steps, so the first step (set-up, lazy allocation) is left
out. Throughput is in real (non-padding) tokens per second.

``--feature-cache`` times something else: one demo-config epoch (frozen embeddings and lower
six layers, article batches, then the dev evaluation) run from tokens and from the feature
cache (``train.feature_cache``), on the first ``--articles`` training and ``--dev-articles`` dev
articles; the one-off build of the cache is reported apart (see :func:`run_feature_cache`).

Peak memory needs a process of its own: ``python -m bench.training_speed --child NAME``
trains a few steps and prints its own ``VmHWM`` (see ``bench.common.peak_rss_mib``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench.common as common

CONTENDERS = ("nabaa", "trainer", "nabaa_bf16")  # the last only where the CPU has bf16 kernels


@dataclasses.dataclass
class Setup:
    cfg: Any
    tokenizer: Any
    base_model: Any
    windows: Any  # the training windows used, in the order both loops see them
    batch_tokens: list[tuple[int, int]]  # (real, padded) tokens per batch, in step order


def build_setup(steps: int) -> Setup:
    """Demo config, data windowed by nabaa's own functions, one base model to copy."""
    from transformers import AutoTokenizer

    from model.embedded import resolve_backbone
    from model.modeling import MultiTaskClassifier
    from model.preprocess import build_preprocessing
    from training.data import load_labelled
    from training.train import get_dataloaders, with_class_weights

    cfg = common.demo_config()
    # Like for like with the Trainer: batches of 16 windows, every layer trained (the demo
    # config itself freezes half the encoder and batches articles).
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, freeze_embeddings=False, freeze_layers=0),
        train=dataclasses.replace(cfg.train, save_every_steps=0, report_to=[], loss_on="window", batch_size=16))
    pre = build_preprocessing(cfg.model)
    train = load_labelled(cfg.data.train_file, cfg.data, cfg.tasks, pre)
    tasks = with_class_weights(cfg.tasks, train)
    backbone = resolve_backbone(cfg.model.backbone)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    train_ds, _ = get_dataloaders(cfg, tokenizer, pre, train, train[:2])
    bs = cfg.train.batch_size
    windows = train_ds.select(range(min(len(train_ds), steps * bs)))
    model = MultiTaskClassifier.from_backbone(backbone, tasks, pooling=cfg.model.pooling,
                                              head_dropout=cfg.model.head_dropout)
    # epoch_loader shuffles with (seed + epoch); the Trainer gets that order and samples sequentially.
    ordered = windows.shuffle(seed=cfg.train.seed)
    lengths = [len(ids) for ids in ordered["input_ids"]]
    batch_tokens = [(sum(chunk), len(chunk) * 8 * math.ceil(max(chunk) / 8))
                    for chunk in (lengths[i:i + bs] for i in range(0, len(lengths), bs))]
    return Setup(cfg, tokenizer, model, windows, batch_tokens)


def _fresh(setup: Setup):
    from torch.optim import AdamW
    from transformers import get_linear_schedule_with_warmup

    from training.train import _param_groups, freeze

    cfg = setup.cfg
    model = copy.deepcopy(setup.base_model)
    freeze(model, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    model.train()
    steps = len(setup.batch_tokens)
    optimizer = AdamW(_param_groups(model, cfg), lr=cfg.train.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * steps), steps)
    return model, optimizer, scheduler


def _hook(optimizer, stamps: list[float]) -> None:
    optimizer.register_step_post_hook(lambda *_: stamps.append(time.perf_counter()))


def run_nabaa(setup: Setup, precision: str = "no") -> list[float]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from model.preprocess import build_preprocessing
    from training.train import RunContext, TrainerState, _train_epoch, epoch_loader, mixed_precision_for

    cfg = setup.cfg
    model, optimizer, scheduler = _fresh(setup)
    stamps: list[float] = []
    _hook(optimizer, stamps)
    # accelerate keeps one process-wide state; contenders with another precision need a fresh one.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision=mixed_precision_for(precision),
                              gradient_accumulation_steps=cfg.train.gradient_accumulation_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loader = accelerator.prepare(epoch_loader(cfg, setup.windows, setup.tokenizer, 0))
    with tempfile.TemporaryDirectory(dir=common.OUT) as run_dir:
        run = RunContext(cfg, accelerator, setup.tokenizer, build_preprocessing(cfg.model), list(cfg.tasks), [],
                         None, Path(run_dir))
        _train_epoch(model, optimizer, scheduler, loader, TrainerState(), run)
    return stamps


def run_trainer(setup: Setup) -> list[float]:
    from transformers import Trainer, TrainingArguments

    from training.data import Collator

    class MultiTaskTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"])
            return (out.loss, out) if return_outputs else out.loss

    cfg = setup.cfg
    model, optimizer, scheduler = _fresh(setup)
    stamps: list[float] = []
    _hook(optimizer, stamps)
    with tempfile.TemporaryDirectory(dir=common.OUT) as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=cfg.train.batch_size,
            max_steps=len(setup.batch_tokens), max_grad_norm=cfg.train.max_grad_norm,
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            logging_strategy="steps", logging_steps=cfg.train.log_every_steps,
            use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, remove_unused_columns=False,
            train_sampling_strategy="sequential", seed=cfg.train.seed,
        )
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=setup.windows.shuffle(seed=cfg.train.seed),
                                   data_collator=Collator(setup.tokenizer), optimizers=(optimizer, scheduler))
        trainer.train()
    return stamps


RUNNERS = {"nabaa": run_nabaa, "trainer": run_trainer,
           "nabaa_bf16": lambda setup: run_nabaa(setup, precision="bf16")}


def contenders() -> tuple[str, ...]:
    from bench.common import bf16_fast

    return CONTENDERS if bf16_fast() else CONTENDERS[:2]


def step_stats(setup: Setup, stamps: list[float]) -> dict[str, Any]:
    """Per-step seconds for steps 2..n and the tokens those steps trained on."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    real = sum(r for r, _ in setup.batch_tokens[1:len(stamps)])
    padded = sum(p for _, p in setup.batch_tokens[1:len(stamps)])
    total = stamps[-1] - stamps[0]
    return {"steps_timed": len(gaps), "step_s": [round(g, 3) for g in gaps], "median_step_s": statistics.median(gaps),
            "real_tokens": real, "padded_tokens": padded, "seconds": total,
            "real_tokens_per_s": real / total, "padded_tokens_per_s": padded / total}


def peak_rss_child(name: str, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps in a subprocess; the child's own peak RSS."""
    cmd = [sys.executable, "-m", "bench.training_speed", "--child", name, "--steps", str(steps)]
    env = {**os.environ, **common.OFFLINE}
    proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {proc.returncode}: {proc.stderr[-2000:]}")
    child = json.loads(lines[-1])
    return {"peak_rss_mib": round(child.pop("peak_rss_mib"), 1), "child": child}


def warm_up(setup: Setup) -> None:
    """One forward/backward of a throw-away copy: first-touch allocation and kernel
    selection happen here, not in whichever loop happens to run first."""
    from training.data import Collator

    model, _, _ = _fresh(setup)
    batch = Collator(setup.tokenizer)([setup.windows[i] for i in range(setup.cfg.train.batch_size)])
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()


def run(steps: int, rounds: int, memory_steps: int, log=print) -> dict[str, Any]:
    setup = build_setup(steps)
    warm_up(setup)
    log(f"  training: {steps} steps x {rounds} rounds per contender, batch {setup.cfg.train.batch_size}, "
        f"max_length {setup.cfg.model.max_length}")
    names = contenders()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            stats = step_stats(setup, RUNNERS[name](setup))
            results[name].append(stats)
            log(f"    round {r + 1}/{rounds} {name}: {stats['real_tokens_per_s']:.0f} tokens/s "
                f"(median step {stats['median_step_s']:.2f}s)")
    rows = {}
    for name, runs in results.items():
        tps = statistics.median(x["real_tokens_per_s"] for x in runs)
        rows[name] = {"real_tokens_per_s": round(tps, 1),
                      "padded_tokens_per_s": round(statistics.median(x["padded_tokens_per_s"] for x in runs), 1),
                      "median_step_s": round(statistics.median(x["median_step_s"] for x in runs), 3),
                      "rounds": [{k: v for k, v in x.items() if k != "step_s"} | {"step_s": x["step_s"]}
                                 for x in runs]}
    for name in rows:
        rows[name]["x_vs_trainer"] = common.ratio(rows[name]["real_tokens_per_s"], rows["trainer"]["real_tokens_per_s"])
    if memory_steps:
        for name in names:
            log(f"    peak memory: {name} ({memory_steps} steps, own process)")
            rows[name].update(peak_rss_child(name, memory_steps))
        rows["nabaa"]["rss_vs_trainer"] = common.ratio(rows["nabaa"]["peak_rss_mib"], rows["trainer"]["peak_rss_mib"])
    return {"steps": steps, "rounds": rounds, "batch_size": setup.cfg.train.batch_size,
            "max_length": setup.cfg.model.max_length, "memory_steps": memory_steps, "rows": rows}


def _epoch_once(cfg: Any, base_model: Any, tokenizer: Any, train: Any, dev: Any, tasks: Any,
                cached: bool, precision: str) -> dict[str, float]:
    """One epoch as ``training_function`` runs it (train loop, then dev evaluation), timed."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from torch.optim import AdamW
    from transformers import get_linear_schedule_with_warmup

    from model.preprocess import build_preprocessing
    from training.train import (
        RunContext,
        TrainerState,
        _param_groups,
        _train_epoch,
        epoch_loader,
        evaluate,
        freeze,
        get_dataloaders,
        use_feature_cache,
    )

    model = copy.deepcopy(base_model)
    freeze(model, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    pre = build_preprocessing(cfg.model)
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision=precision)
    train_ds, dev_dl = get_dataloaders(cfg, tokenizer, pre, train, dev)
    start = time.perf_counter()
    collate = None
    if cached:
        train_ds, dev_dl, collate = use_feature_cache(cfg, accelerator, model, tokenizer, train_ds, dev_dl)
    build_s = time.perf_counter() - start
    steps = math.ceil(len(train_ds) / cfg.train.batch_size)
    optimizer = AdamW(_param_groups(model, cfg), lr=cfg.train.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * steps), steps)
    model, optimizer, scheduler, dev_dl = accelerator.prepare(model, optimizer, scheduler, dev_dl)
    run_ctx = RunContext(cfg, accelerator, tokenizer, pre, list(tasks), list(dev), dev_dl, cfg.run_dir)
    loader = accelerator.prepare(epoch_loader(cfg, train_ds, tokenizer, 0, collate))
    t0 = time.perf_counter()
    _train_epoch(model, optimizer, scheduler, loader, TrainerState(), run_ctx)
    t1 = time.perf_counter()
    results = evaluate(model, dev_dl, dev, tasks, pre, accelerator)
    t2 = time.perf_counter()
    return {"build_s": build_s, "train_s": t1 - t0, "eval_s": t2 - t1, "epoch_s": t2 - t0,
            "dev_topic_macro_f1": results[tasks[0].name]["macro_f1"]}


def run_feature_cache(articles: int, dev_articles: int, rounds: int, precision: str = "no",
                      log=print) -> dict[str, Any]:
    """Demo-config epochs from tokens and from the feature cache, interleaved over ``rounds``.

    The cache is built anew in each cached round (``build_s``, a one-off cost per run that
    ``--resume`` does not pay again) and is not part of ``epoch_s``.
    """
    import shutil

    from transformers import AutoTokenizer

    from model.embedded import resolve_backbone
    from model.modeling import MultiTaskClassifier
    from model.preprocess import build_preprocessing
    from training.data import load_labelled
    from training.train import with_class_weights

    cfg = common.demo_config()
    common.OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.OUT) as run_dir:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, save_every_steps=0, report_to=[], output_dir=run_dir, log_every_steps=10**9))
        pre = build_preprocessing(cfg.model)
        train = load_labelled(cfg.data.train_file, cfg.data, cfg.tasks, pre, limit=articles)
        dev = load_labelled(cfg.data.dev_file, cfg.data, cfg.tasks, pre, limit=dev_articles)
        tasks = with_class_weights(cfg.tasks, train)
        backbone = resolve_backbone(cfg.model.backbone)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        base = MultiTaskClassifier.from_backbone(backbone, tasks, pooling=cfg.model.pooling,
                                                 head_dropout=cfg.model.head_dropout)
        log(f"  feature cache: {len(train)} train / {len(dev)} dev articles, batch {cfg.train.batch_size} articles, "
            f"freeze_layers {cfg.model.freeze_layers}, precision {precision}, {rounds} rounds")
        names = ("tokens", "cached")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                stats = _epoch_once(cfg, base, tokenizer, train, dev, tasks, name == "cached", precision)
                shutil.rmtree(Path(run_dir) / "feature_cache", ignore_errors=True)
                results[name].append(stats)
                log(f"    round {r + 1}/{rounds} {name}: epoch {stats['epoch_s']:.1f}s (train {stats['train_s']:.1f}s, "
                    f"eval {stats['eval_s']:.1f}s, cache build {stats['build_s']:.1f}s)")
    rows = {name: {key: round(statistics.median(x[key] for x in runs), 3) for key in runs[0]}
            for name, runs in results.items()}
    for key in ("epoch_s", "train_s", "eval_s"):
        rows["cached"][f"{key}_speedup"] = common.ratio(rows["tokens"][key], rows["cached"][key])
    return {"articles": len(train), "dev_articles": len(dev), "rounds": rounds, "precision": precision,
            "isa_caps": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                                     "ATEN_CPU_CAPABILITY") if k in os.environ},
            "rows": rows, "raw": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training_speed")
    parser.add_argument("--child", choices=CONTENDERS, help="train in this process only (peak-memory run)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--feature-cache", action="store_true",
                        help="time demo epochs from tokens vs from the frozen-layer feature cache")
    parser.add_argument("--articles", type=int, default=32, help="--feature-cache: training articles")
    parser.add_argument("--dev-articles", type=int, default=16, help="--feature-cache: dev articles")
    parser.add_argument("--precision", default="no", choices=["no", "bf16"], help="--feature-cache: mixed precision")
    args = parser.parse_args(argv)
    if args.feature_cache:
        progress = lambda message: print(message, file=sys.stderr)  # noqa: E731 - stdout is the JSON
        print(json.dumps(run_feature_cache(args.articles, args.dev_articles, max(args.rounds, 1), args.precision,
                                           log=progress), indent=2))
        return 0
    if args.child:
        setup = build_setup(args.steps)
        stats = step_stats(setup, RUNNERS[args.child](setup))
        print(json.dumps({"steps": args.steps, "real_tokens_per_s": round(stats["real_tokens_per_s"], 1),
                          "peak_rss_mib": common.peak_rss_mib()}))
        return 0
    print(json.dumps(run(args.steps, args.rounds, memory_steps=0), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
