"""Train nabaa's multi-task classifier with accelerate.

Commands (run from the repository root)::

    # one process (CPU or one GPU)
    python -m training.train --config configs/tiny.yaml
    accelerate launch -m training.train --config configs/libya-arabert.yaml train.epochs=4
    # two CPU processes (gloo). NB: `accelerate launch --cpu --num_processes 2` starts ONE process;
    # this form really starts two:
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m training.train --config configs/tiny.yaml
    # several GPUs
    accelerate launch --multi_gpu --num_processes 4 -m training.train --config configs/libya-arabert.yaml
    # continue a killed run (same config and overrides)
    python -m training.train --config configs/tiny.yaml --resume

The run directory ``runs/<name>/`` (or ``output_dir=PATH``) receives ``config.yaml``
(the resolved config), ``metrics.jsonl``, ``checkpoints/`` (accelerate states for
``--resume``), ``best/`` (a ``save_pretrained`` folder, the best dev epoch by mean
macro-F1) and ``report/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import (
    InitProcessGroupKwargs,
    ProjectConfiguration,
    extract_model_from_parallel,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from model.hardware import auto_uses_bf16, keep_freed_memory
from model.modeling import IGNORE_INDEX, BackboneWeightsError, MultiTaskClassifier
from model.preprocess import Preprocessing, aggregate_windows, build_preprocessing, default_preprocessing
from model.schema import Task, inverse_frequency_weights
from model.serialization import save_model_folder
from training.calibration import fit_temperature
from training.checkpoints import TrainerState, latest_checkpoint, prepare_run_dir, save_checkpoint
from training.config import ConfigError, RunConfig, load_config
from training.data import (
    Article,
    Collator,
    DataError,
    article_dataset,
    label_counts,
    load_labelled,
    load_train_split,
    window_dataset,
)
from training.feature_cache import (
    CACHE_FOLDER,
    CachedCollator,
    build_feature_store,
    feature_cache_wanted,
    token_windows,
    with_feature_rows,
)
from training.finalize import finalize_run
from training.metrics import expected_calibration_error, mean_macro_f1, task_metrics


@dataclass
class RunContext:
    """What every step of one training run reads: set up once in :func:`training_function`."""

    cfg: RunConfig
    accelerator: Accelerator
    tokenizer: Any
    pre: Preprocessing
    tasks: list[Task]
    dev: list[Article]
    dev_dl: DataLoader
    run_dir: Path


# --------------------------------------------------------------------------- setup
def mixed_precision_for(setting: str) -> str:
    """``auto`` → bf16 on a GPU that supports it or on a CPU where bf16 measures clearly faster
    than fp32 (:func:`model.hardware.cpu_bf16_decision`, cached), else full precision."""
    if setting != "auto":
        return setting
    on_cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return "bf16" if auto_uses_bf16("cpu" if on_cpu else "cuda") else "no"


def resolve_backbone_folder(cfg: RunConfig, accelerator: Accelerator, train_texts: Sequence[str]) -> str:
    """A hub id, a local folder, or a backbone nabaa builds (``tiny``, ``embedded:...``)."""
    name = cfg.model.backbone
    if name == "tiny":
        from model.tiny import build_tiny_backbone

        folder = cfg.run_dir / "backbone"
        with accelerator.main_process_first():
            if accelerator.is_main_process and not (folder / "config.json").exists():
                build_tiny_backbone(
                    train_texts, folder, vocab_size=cfg.model.tiny_vocab_size,
                    hidden_size=cfg.model.tiny_hidden_size, num_layers=cfg.model.tiny_layers,
                    max_position_embeddings=max(512, cfg.model.max_length), seed=cfg.train.seed,
                )
        return str(folder)
    if name.startswith("embedded:"):
        from model.embedded import resolve_backbone

        with accelerator.main_process_first():
            return resolve_backbone(name)
    return name


def backbone_and_data(cfg: RunConfig, accelerator: Accelerator) -> tuple[str, Any, Preprocessing, list[Article]]:
    """The backbone folder, its tokenizer, the preprocessing and the training articles.

    ``normalizer: auto`` is decided from the backbone's tokenizer (see
    :func:`model.preprocess.default_preprocessing`), so the backbone is resolved first;
    except ``tiny``, whose tokenizer is trained on the prepared training texts.
    """
    if cfg.model.backbone == "tiny":
        pre = build_preprocessing(cfg.model, cfg.data)
        train = load_train_split(cfg.data, cfg.tasks, pre)
        backbone = resolve_backbone_folder(cfg, accelerator, [a.prepared for a in train])
        return backbone, AutoTokenizer.from_pretrained(backbone), pre, train
    backbone = resolve_backbone_folder(cfg, accelerator, [])
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    pre = build_preprocessing(cfg.model, cfg.data, tokenizer)
    if cfg.model.normalizer == "auto":
        why = default_preprocessing(cfg.model.backbone, tokenizer)["reason"]
        accelerator.print(f"normalizer auto -> {pre.normalizer} ({why})")
    return backbone, tokenizer, pre, load_train_split(cfg.data, cfg.tasks, pre)


def with_class_weights(tasks: Sequence[Task], train: Sequence[Article]) -> list[Task]:
    """Replace ``class_weights: auto`` by inverse label frequencies of the training split."""
    counts = label_counts(train, tasks)
    return [
        replace(t, class_weights=inverse_frequency_weights(counts[t.name]))  # every other field kept (mentions)
        if t.class_weights == "auto" else t
        for t in tasks
    ]


def get_dataloaders(
    cfg: RunConfig, tokenizer: Any, pre: Preprocessing, train: Sequence[Article], dev: Sequence[Article]
) -> tuple[Any, DataLoader]:
    """The training rows (articles or windows, per ``train.loss_on``; shuffled per epoch by
    the caller) and a dev loader over windows."""
    collate = Collator(tokenizer)
    rows = article_dataset if cfg.train.loss_on == "article" else window_dataset
    train_ds = rows(train, tokenizer, pre, training=True)
    dev_ds = window_dataset(dev, tokenizer, pre, training=False)
    dev_dl = DataLoader(dev_ds, batch_size=cfg.train.eval_batch_size, collate_fn=collate,
                        num_workers=cfg.train.num_workers)
    return train_ds, dev_dl


def epoch_loader(cfg: RunConfig, train_ds: Any, tokenizer: Any, epoch: int, collate: Any = None) -> DataLoader:
    """A loader over the training windows in an order fixed by (seed, epoch), so a
    resumed run sees exactly the batches an uninterrupted one would. ``collate`` defaults
    to token batches (``Collator(tokenizer)``); cached features use a ``CachedCollator``.

    Its own generator: starting an iterator draws a seed, and drawn from the global
    RNG that draw would land at the epoch start in one run and after the restored
    mid-epoch RNG state in a resumed one, shifting every later dropout mask.
    """
    return DataLoader(
        train_ds.shuffle(seed=cfg.train.seed + epoch),
        batch_size=cfg.train.batch_size,
        collate_fn=collate or Collator(tokenizer),
        num_workers=cfg.train.num_workers,
        generator=torch.Generator().manual_seed(cfg.train.seed + epoch),
    )


def use_feature_cache(
    cfg: RunConfig, accelerator: Accelerator, model: MultiTaskClassifier, tokenizer: Any, train_ds: Any, dev_dl: DataLoader,
) -> tuple[Any, DataLoader, Any]:
    """Compute the frozen layers' output for every training and dev window once (rank 0 builds,
    the others wait and open the same store) and return the training rows, the dev loader
    and the collate function that read from it instead of running those layers each epoch."""
    layers = cfg.model.freeze_layers
    dev_ds = dev_dl.dataset
    train_windows, dev_windows = token_windows(train_ds), token_windows(dev_ds)
    model.to(accelerator.device)
    with accelerator.main_process_first():
        store = build_feature_store(
            model, train_windows + dev_windows, layers, cfg.run_dir / CACHE_FOLDER,
            pad_id=tokenizer.pad_token_id or 0, precision=accelerator.mixed_precision, autocast=accelerator.autocast,
            batch_windows=cfg.train.eval_batch_size,
        )
    accelerator.print(f"feature cache: layers 0-{layers - 1} of {len(store)} windows computed once "
                      f"({store.hidden.nbytes / 2**20:.0f} MiB, {store.path})")
    collate = CachedCollator(store)
    dev_dl = DataLoader(with_feature_rows(dev_ds, len(train_windows)), batch_size=cfg.train.eval_batch_size,
                        collate_fn=collate, num_workers=cfg.train.num_workers)
    return with_feature_rows(train_ds, 0), dev_dl, collate


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's inputs in a batch: token ids, or cached hidden states and their layer."""
    if "hidden_states" in batch:
        return {"hidden_states": batch["hidden_states"], "attention_mask": batch["attention_mask"],
                "from_layer": batch["from_layer"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def dev_logits(
    model: Any, dev_dl: DataLoader, n_articles: int, tasks: Sequence[Task], pre: Preprocessing,
    accelerator: Accelerator,
) -> dict[str, torch.Tensor]:
    """Article logits per task on dev (window logits aggregated as at prediction time). Runs on every rank."""
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    index: list[torch.Tensor] = []
    for batch in dev_dl:
        out = model(**model_inputs(batch))
        gathered = accelerator.gather_for_metrics(({k: v.float() for k, v in out.logits.items()}, batch["article"]))
        for name in logits:
            logits[name].append(gathered[0][name].cpu())
        index.append(gathered[1].cpu())
    train_mode(model)
    article_index = torch.cat(index)
    return {t.name: aggregate_windows(torch.cat(logits[t.name]), article_index, n_articles, pre.aggregation)
            for t in tasks}


def evaluate(
    model: Any, dev_dl: DataLoader, articles: Sequence[Article], tasks: Sequence[Task],
    pre: Preprocessing, accelerator: Accelerator, logits: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Dev metrics per task on article level (window logits aggregated). Runs on every rank."""
    if logits is None:
        logits = dev_logits(model, dev_dl, len(articles), tasks, pre, accelerator)
    results = {}
    for column, task in enumerate(tasks):
        agg = logits[task.name]
        gold = torch.tensor([a.labels[column] for a in articles])
        keep = gold != IGNORE_INDEX
        probs = agg.softmax(-1)[keep].numpy()
        results[task.name] = task_metrics(gold[keep].tolist(), agg.argmax(-1)[keep].tolist(), task.labels, probs)
    return results


def calibration_of(logits: dict[str, torch.Tensor], articles: Sequence[Article], tasks: Sequence[Task],
                   fitted_on: str, epoch: int) -> dict[str, Any]:
    """``calibration.json`` content from dev article logits: one temperature per task.

    ``best/`` gets it when it is saved, so a run killed before finalisation (or run with
    ``--no-finalize``) still leaves calibrated scores; finalisation refits it on the
    scores the saved folder gives.
    """
    out = {}
    for column, task in enumerate(tasks):
        gold = np.array([a.labels[column] for a in articles])
        keep = gold != IGNORE_INDEX
        values, gold = logits[task.name].numpy()[keep], gold[keep]
        t = fit_temperature(values, gold)
        out[task.name] = {
            "temperature": round(t, 5),
            "dev_ece_before": round(expected_calibration_error(gold, _softmax(values)), 5) if len(gold) else None,
            "dev_ece_after": round(expected_calibration_error(gold, _softmax(values / t)), 5) if len(gold) else None,
            "fitted_on": fitted_on,
            "n": int(keep.sum()),
            "fitted_when": f"training, epoch {epoch}",
        }
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- the loop
def training_function(cfg: RunConfig, resume: bool = False) -> TrainerState:
    """Train, evaluate every epoch, keep ``best/``, stop early; return the final state."""
    run_dir = cfg.run_dir
    if not torch.cuda.is_available():
        keep_freed_memory()  # activations reuse heap pages instead of fresh mappings: ~1.25x on CPU
    accelerator = Accelerator(
        mixed_precision=mixed_precision_for(cfg.train.mixed_precision),
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        log_with=cfg.train.report_to or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.process_group_timeout))],
    )
    set_seed(cfg.train.seed)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if accelerator.is_main_process:
        prepare_run_dir(cfg, run_dir, resume, checkpoint)
    accelerator.wait_for_everyone()

    backbone, tokenizer, pre, train = backbone_and_data(cfg, accelerator)
    dev = load_labelled(cfg.data.dev_file, cfg.data, cfg.tasks, pre)
    tasks = with_class_weights(cfg.tasks, train)
    set_seed(cfg.train.seed)  # building a tiny backbone draws from the RNG; a reused one does not
    model = MultiTaskClassifier.from_backbone(backbone, tasks, pooling=cfg.model.pooling,
                                              head_dropout=cfg.model.head_dropout,
                                              allow_pickle=cfg.model.allow_pickle_weights)
    trainable = freeze(model, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    train_ds, dev_dl = get_dataloaders(cfg, tokenizer, pre, train, dev)
    collate = None
    cached = feature_cache_wanted(cfg.train.feature_cache, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    if cached and not model.supports_layer_split():
        if cfg.train.feature_cache is True:
            raise ConfigError(f"train.feature_cache = true: the {type(model.encoder).__name__} encoder cannot be cut "
                              f"after a layer; set train.feature_cache: false")
        cached = False
    if cached:
        train_ds, dev_dl, collate = use_feature_cache(cfg, accelerator, model, tokenizer, train_ds, dev_dl)

    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / cfg.train.batch_size) / cfg.train.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.train.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.train.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler, dev_dl = accelerator.prepare(model, optimizer, scheduler, dev_dl)
    state = TrainerState()
    accelerator.register_for_checkpointing(state)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} (epoch {state.epoch + 1}, batch {state.batches_done})")
    if accelerator.is_main_process:
        accelerator.print(
            f"{len(train)} train / {len(dev)} dev articles, loss on {cfg.train.loss_on}s, "
            f"{trainable / 1e6:.1f}M trainable parameters, "
            f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}"
        )
    if cfg.train.report_to:
        accelerator.init_trackers(cfg.name, config=_flat_config(cfg))

    run = RunContext(cfg, accelerator, tokenizer, pre, tasks, dev, dev_dl, run_dir)
    while not state.finished and state.epoch < cfg.train.epochs:
        loader = accelerator.prepare(epoch_loader(cfg, train_ds, tokenizer, state.epoch, collate))
        _train_epoch(model, optimizer, scheduler, loader, state, run)
        _end_epoch(model, state, run)
    state.finished = True
    accelerator.wait_for_everyone()
    if cached and accelerator.is_main_process:  # finished: nothing will read it again
        shutil.rmtree(run_dir / CACHE_FOLDER, ignore_errors=True)
    accelerator.end_training()  # closes trackers and the process group: no collective after this
    return state


def freeze(model: MultiTaskClassifier, embeddings: bool, layers: int) -> int:
    """Stop gradients into the embeddings and/or the lowest ``layers`` encoder layers;
    return how many parameters stay trainable."""
    layer_index = re.compile(r"\.layers?\.(\d+)\.")
    for name, param in model.encoder.named_parameters():
        match = layer_index.search(f".{name}")
        if (embeddings and name.startswith("embeddings.")) or (match and int(match.group(1)) < layers):
            param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _param_groups(model: MultiTaskClassifier, cfg: RunConfig) -> list[dict[str, Any]]:
    """Encoder and heads may learn at different rates; no weight decay on biases and norms."""
    head_lr = cfg.train.head_learning_rate or cfg.train.learning_rate
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = head_lr if name.startswith("heads.") else cfg.train.learning_rate
        decay = 0.0 if param.ndim < 2 else cfg.train.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": d} for (lr, d), p in groups.items()]


def _train_epoch(model: Any, optimizer: Any, scheduler: Any, loader: Any, state: TrainerState, run: RunContext) -> None:
    cfg, accelerator = run.cfg, run.accelerator
    skipped = accelerator.skip_first_batches(loader, state.batches_done) if state.batches_done else loader
    bar = tqdm(total=len(loader), initial=state.batches_done, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    train_mode(model)
    running, seen = 0.0, 0
    for batch in skipped:
        with accelerator.accumulate(model):
            loss = batch_loss(model, batch, run.pre.aggregation,
                              (cfg.train.distill_weight, cfg.train.distill_temperature), cfg.train.label_smoothing)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        state.batches_done += 1
        running, seen = running + loss.item(), seen + 1
        bar.update(1)
        if accelerator.sync_gradients:
            state.optimizer_steps += 1
            if state.optimizer_steps % cfg.train.log_every_steps == 0:
                loss = accelerator.gather(torch.tensor([running / seen], device=accelerator.device)).mean().item()
                bar.set_postfix(loss=f"{loss:.4f}")
                _log(run, {"type": "train", "epoch": state.epoch + 1, "step": state.optimizer_steps,
                           "loss": loss, "lr": scheduler.get_last_lr()[0]})
                running, seen = 0.0, 0
            every = cfg.train.save_every_steps
            if every and state.optimizer_steps % every == 0 and state.batches_done < len(loader):
                save_checkpoint(accelerator, run.run_dir, state, cfg.train.keep_checkpoints)
    bar.close()


def batch_loss(model: Any, batch: dict[str, torch.Tensor], aggregation: str,
               distill: tuple[float, float] = (0.5, 1.0), label_smoothing: float = 0.0) -> torch.Tensor:
    """Window batches: loss on each window's logits. Article batches: window logits are first
    aggregated per article (``aggregation``, as at prediction time), so training optimises
    the scores users get (a window without the article's stance cues is not pushed to fake one).

    With soft labels in the batch, ``distill = (weight, temperature)`` mixes their loss in:
    weight × soft cross-entropy + (1 − weight) × the gold labels' one (see ``TrainArgs``);
    ``label_smoothing`` softens the gold labels' targets."""
    logits = model(**model_inputs(batch)).logits
    if "window_article" in batch:
        n_articles = len(batch["labels"])
        logits = {name: aggregate_windows(v, batch["window_article"], n_articles, aggregation)
                  for name, v in logits.items()}
    core = extract_model_from_parallel(model)
    loss = core.loss(logits, batch["labels"], label_smoothing)
    if "soft" not in batch:
        return loss
    weight, temperature = distill
    return weight * core.soft_loss(logits, batch["soft"], temperature) + (1.0 - weight) * loss


def train_mode(model: Any) -> None:
    """``model.train()``, except frozen parts stay in eval mode: their dropout would only
    add noise to features that cannot adapt to it."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=True))
        if params and not any(p.requires_grad for p in params):
            module.eval()


def _end_epoch(model: Any, state: TrainerState, run: RunContext) -> None:
    cfg, accelerator = run.cfg, run.accelerator
    logits = dev_logits(model, run.dev_dl, len(run.dev), run.tasks, run.pre, accelerator)
    results = evaluate(model, run.dev_dl, run.dev, run.tasks, run.pre, accelerator, logits=logits)
    score = mean_macro_f1(results)
    summary = {name: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for name, m in results.items()}
    improved = score > state.best_score
    _log(run, {"type": "eval", "epoch": state.epoch + 1, "step": state.optimizer_steps,
               "dev_mean_macro_f1": score, "dev": summary, "improved": improved})
    accelerator.print(f"epoch {state.epoch + 1}: dev mean macro-F1 {score:.4f}"
                      + (" (best so far)" if improved else f" (best {state.best_score:.4f})"))
    if improved:
        state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch + 1, 0
        _save_best(model, run, score, summary, state.epoch + 1, logits)
    else:
        state.bad_epochs += 1
    state.history.append({"epoch": state.epoch + 1, "dev_mean_macro_f1": score})
    state.epoch, state.batches_done = state.epoch + 1, 0
    if state.bad_epochs >= cfg.train.patience:
        accelerator.print(f"early stop: no dev improvement for {state.bad_epochs} epoch(s)")
        state.finished = True
    save_checkpoint(accelerator, run.run_dir, state, cfg.train.keep_checkpoints)


def _save_best(model: Any, run: RunContext, score: float, summary: dict, epoch: int,
               logits: dict[str, torch.Tensor]) -> None:
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        cfg = run.cfg
        card = {"epoch": epoch, "dev_mean_macro_f1": score, "dev": summary}
        calibration = calibration_of(logits, run.dev, run.tasks, cfg.data.dev_file, epoch) if cfg.train.calibrate else None
        save_model_folder(
            run.run_dir / "best",
            accelerator.unwrap_model(model),
            run.tokenizer,
            run.pre,
            calibration=calibration,
            run_config_yaml=yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False),
            extra_files={"training_state.json": json.dumps(card, indent=2) + "\n"},
        )
    accelerator.wait_for_everyone()


def _log(run: RunContext, record: dict[str, Any]) -> None:
    accelerator = run.accelerator
    if not accelerator.is_main_process:
        return
    record = {"time": round(time.time(), 3), **record}
    with open(run.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if run.cfg.train.report_to:
        flat = {"train/loss": record["loss"]} if record["type"] == "train" else {
            "dev/mean_macro_f1": record["dev_mean_macro_f1"],
            **{f"dev/{t}/macro_f1": m["macro_f1"] for t, m in record["dev"].items()},
        }
        accelerator.log(flat, step=record["step"])


def _flat_config(cfg: RunConfig) -> dict[str, Any]:
    flat = {}
    for section in ("model", "data", "train"):
        for key, value in asdict(getattr(cfg, section)).items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


# --------------------------------------------------------------------------- entry point
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train a multi-task Arabic news classifier (see the module docstring for launch forms).",
    )
    parser.add_argument("--config", required=True, help="YAML config (configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the run dir's latest checkpoint")
    parser.add_argument("--no-finalize", action="store_true", help="skip calibration and the final report")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2 output_dir=/tmp/x")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        state = training_function(cfg, resume=args.resume)
    except (ConfigError, DataError, BackboneWeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.no_finalize and _is_main_process():
        finalize_run(cfg, state.best_epoch)
    return 0


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


if __name__ == "__main__":
    sys.exit(main())
