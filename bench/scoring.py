"""Scoring throughput on CPU: nabaa against what a user would run without it.

Contenders (same model folder, same articles, same process, interleaved rounds):

- ``nabaa``: :class:`inference.Classifier` in fp32 (up to ``predict_max_windows``
  windows per article, length-sorted batches under a token budget, dynamic padding).
- ``nabaa_1window``: the same with ``predict_max_windows=1``, i.e. the baselines'
  truncation (first ``max_length`` tokens only).
- ``nabaa_cli``: ``python -m inference.score`` in-process (``run_scoring``), as shipped
  (``--dtype auto``: bf16 on AMX CPUs): reading the file, journal, fsync, merge and writing
  the output included; model loading excluded.
- ``pipelines_3x`` (a): three ``transformers.pipeline("text-classification")`` models,
  one per task, each a ``BertForSequenceClassification`` holding the same encoder
  weights and its own head; batch 8 in input order, truncation at ``max_length``.
- ``naive_loop`` (b): one pass of the multi-task model, input order, every batch padded
  to ``max_length``, fixed batch 8, fp32, ``torch.no_grad``.
- ``naive_windows`` (b′): the naive loop over the same windows nabaa reads as shipped (up to
  ``predict_max_windows`` per article, the model's own windowing), each padded to
  ``max_length``, 8 windows per batch in input order, fp32, window logits averaged per article
  as the model's ``aggregation`` says. It produces nabaa's predictions (logit difference
  reported), so it is the naive baseline for nabaa as shipped, as (b) is for one window.
- ``nabaa_bf16`` / ``nabaa_1window_bf16``: the first two with ``dtype="bf16"`` (only where
  the CPU has bf16 matrix kernels); what ``dtype="auto"`` picks on CPUs with AMX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import OUT, interleaved, ratio, read_records

BASELINE_BATCH = 8


@dataclass
class Workload:
    records: list[dict[str, Any]]
    path: Path  # the same records as JSONL, for the CLI


def workload(dump: Path, n: int, name: str) -> Workload:
    records = read_records(dump, n)
    path = OUT / f"{name}-{n}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return Workload(records, path)


def joined_text(record: dict[str, Any], prefix: str) -> str:
    """What a user feeds a plain pipeline: the model's prefix, title and body."""
    title = record.get("title")
    return prefix + (f"{title}\n{record['text']}" if title else record["text"])


# --------------------------------------------------------------------------- contenders
def load_classifier(folder: Path, windows: int | None = None, **kwargs: Any):
    from inference import Classifier

    clf = Classifier.from_pretrained(folder, device="cpu", keep_freed_memory=True, **kwargs)
    if windows is not None:
        clf.pre = dataclasses.replace(clf.pre, predict_max_windows=windows)
    return clf


def classifier_contender(clf):
    def run(work: Workload) -> None:
        clf.predict_proba(work.records)

    return run


def cli_contender(folder: Path, tmp: Path, extra: list[str] | None = None):
    from inference.score import parse_args, run_scoring

    def run(work: Workload) -> dict[str, Any]:
        args = parse_args(["--model", str(folder), "--input", str(work.path), "--output", str(tmp / "scores.jsonl"),
                           "--overwrite", "--device", "cpu", *(extra or [])])
        with contextlib.redirect_stdout(io.StringIO()):
            summary, code = run_scoring(args)
        if summary is None or summary.scored != len(work.records):
            raise RuntimeError(f"inference.score failed (exit {code})")
        return {"seconds": summary.seconds}

    return run


def build_single_task_models(folder: Path) -> tuple[list[tuple[str, Any]], Any, int]:
    """One ``BertForSequenceClassification`` per task from the nabaa model's encoder weights
    and head (the pooler, which nabaa's model has no counterpart for, stays random)."""
    from transformers import BertConfig, BertForSequenceClassification

    from model.serialization import load_model_folder

    model, tokenizer, pre, _ = load_model_folder(folder)
    encoder_state = model.encoder.state_dict()
    models = []
    for task in model.config.schema():
        config = BertConfig(**{**model.config.encoder_config.to_dict(), "num_labels": len(task.labels),
                               "id2label": dict(enumerate(task.labels)),
                               "label2id": {label: i for i, label in enumerate(task.labels)}})
        single = BertForSequenceClassification(config)
        missing, unexpected = single.bert.load_state_dict(encoder_state, strict=False)
        if unexpected or any(not k.startswith("pooler.") for k in missing):
            raise RuntimeError(f"encoder weights do not fit: missing {missing}, unexpected {unexpected}")
        head = model.heads[task.name]
        single.classifier.load_state_dict({"weight": head.weight, "bias": head.bias})
        models.append((task.name, single.eval()))
    return models, tokenizer, pre


def pipelines_contender(folder: Path):
    """(a): what a user without nabaa runs, one text-classification pipeline per task."""
    from transformers import pipeline

    models, tokenizer, pre = build_single_task_models(folder)
    pipes = [(name, pipeline("text-classification", model=m, tokenizer=tokenizer, device="cpu"))
             for name, m in models]

    def run(work: Workload) -> None:
        texts = [joined_text(r, pre.text_prefix) for r in work.records]
        for _, pipe in pipes:
            pipe(texts, batch_size=BASELINE_BATCH, truncation=True, max_length=pre.max_length, top_k=None)

    return run


def naive_contender(folder: Path, over_windows: bool = False, dtype: torch.dtype = torch.float32):
    """(b): the multi-task model in a plain loop: input order, pad to max_length, batch 8.
    With ``over_windows``, (b′): the same loop over nabaa's windows (nabaa's predictions).
    ``dtype=torch.bfloat16``: the same loop with the model cast to bf16, as a user would write it."""
    from model.serialization import load_model_folder

    model, tokenizer, pre, _ = load_model_folder(folder)
    model = model.to(dtype)
    logits = naive_window_logits if over_windows else naive_logits

    def run(work: Workload) -> dict[str, np.ndarray]:
        return logits(model, tokenizer, pre, work.records)

    return run


def _logits_by_batch(model, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Run ``(input_ids, attention_mask)`` batches through ``model``; logits per head, in order."""
    out: dict[str, list] = {name: [] for name in model.heads}
    for ids, mask in batches:
        for name, value in model(input_ids=ids, attention_mask=mask).logits.items():
            out[name].append(value.float())
    return {name: torch.cat(v) for name, v in out.items()}


@torch.no_grad()
def naive_logits(model, tokenizer, pre, records) -> dict[str, np.ndarray]:
    texts = [joined_text(r, pre.text_prefix) for r in records]

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(texts), BASELINE_BATCH):
            enc = tokenizer(texts[i:i + BASELINE_BATCH], padding="max_length", truncation=True,
                            max_length=pre.max_length, return_tensors="pt")
            yield enc["input_ids"], enc["attention_mask"]

    return {name: value.numpy() for name, value in _logits_by_batch(model, batches()).items()}


@torch.no_grad()
def naive_window_logits(model, tokenizer, pre, records) -> dict[str, np.ndarray]:
    from model.preprocess import aggregate_windows

    texts = [joined_text(r, pre.text_prefix) for r in records]
    windows, owner = [], []
    for article, article_windows in enumerate(pre.windows(tokenizer, texts)):
        windows += article_windows
        owner += [article] * len(article_windows)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(windows), BASELINE_BATCH):
            chunk = windows[i:i + BASELINE_BATCH]
            ids = torch.full((len(chunk), pre.max_length), tokenizer.pad_token_id)
            mask = torch.zeros_like(ids)
            for row, w in enumerate(chunk):
                ids[row, :len(w)], mask[row, :len(w)] = torch.tensor(w), 1
            yield ids, mask

    index = torch.tensor(owner)
    return {name: aggregate_windows(value, index, len(texts), pre.aggregation).numpy()
            for name, value in _logits_by_batch(model, batches()).items()}


# --------------------------------------------------------------------------- token accounting
def nabaa_tokens(clf, records) -> dict[str, Any]:
    """Windows, real tokens and padded tokens nabaa's batching runs (and the batch shapes)."""
    prepared = [clf._prepare(r, i) for i, r in enumerate(records)]
    windows = [w for article in clf.pre.windows(clf.tokenizer, prepared) for w in article]
    shapes = [(len(b), clf._padded_length(max(len(windows[i]) for i in b))) for b in clf._batches(windows)]
    return {"windows": len(windows), "real_tokens": sum(len(w) for w in windows),
            "padded_tokens": sum(b * L for b, L in shapes), "shapes": shapes}


def naive_window_shapes(n_windows: int, max_length: int) -> list[tuple[int, int]]:
    full, rest = divmod(n_windows, BASELINE_BATCH)
    return [(BASELINE_BATCH, max_length)] * full + ([(rest, max_length)] if rest else [])


def baseline_tokens(tokenizer, pre, records, pad_to_max: bool, passes: int) -> dict[str, Any]:
    texts = [joined_text(r, pre.text_prefix) for r in records]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=pre.max_length)["input_ids"]]
    shapes = []
    for i in range(0, len(lengths), BASELINE_BATCH):
        chunk = lengths[i:i + BASELINE_BATCH]
        shapes.append((len(chunk), pre.max_length if pad_to_max else max(chunk)))
    return {"windows": passes * len(lengths), "real_tokens": passes * sum(lengths),
            "padded_tokens": passes * sum(b * L for b, L in shapes), "shapes": shapes * passes}


def encoder_flop_model(model) -> dict[str, int]:
    """Sizes for the FLOP formula: non-embedding matrix parameters, layers, hidden size."""
    enc = model.encoder
    matrices = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith("embeddings.") and p.ndim == 2)
    cfg = enc.config
    return {"params_nonembedding": int(matrices), "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size}


def flops(shapes, sizes: dict[str, int]) -> float:
    """Executed FLOPs for batches of shape (B, L): 2·P·B·L (every matrix multiply) plus
    4·layers·d·B·L² (attention scores QKᵀ and the weighted sum of V)."""
    p, n_layers, d = sizes["params_nonembedding"], sizes["layers"], sizes["hidden"]
    return float(sum(2 * p * b * L + 4 * n_layers * d * b * L * L for b, L in shapes))


# --------------------------------------------------------------------------- agreement
def agreement(folder: Path, records) -> dict[str, float]:
    """nabaa in fp32 against the naive loops doing the same work (one window against (b), as
    shipped against (b′); different padding and batching): the largest logit difference.
    Should be float noise (~1e-5)."""
    from model.serialization import load_model_folder

    model, tokenizer, pre, _ = load_model_folder(folder)

    def largest_difference(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
        return float(max(np.abs(ours[k] - theirs[k]).max() for k in ours))

    def transformer_logits(clf) -> dict[str, np.ndarray]:  # before any lexical (TF-IDF) mix
        return clf.logits_prepared([clf.prepare(r["text"], r.get("title")) for r in records])

    one = transformer_logits(load_classifier(folder, windows=1, dtype="fp32"))
    shipped = transformer_logits(load_classifier(folder, dtype="fp32"))
    return {"max_abs_logit_diff_1window_vs_naive": largest_difference(one, naive_logits(model, tokenizer, pre, records)),
            "max_abs_logit_diff_shipped_vs_naive_windows":
                largest_difference(shipped, naive_window_logits(model, tokenizer, pre, records))}


# --------------------------------------------------------------------------- the benchmark
def run(folder: Path, dump: Path, n: int, rounds: int, log=print) -> dict[str, Any]:
    work = workload(dump, n, "scoring")
    warm = workload(dump, 4, "scoring-warm")
    from bench.common import bf16_fast
    from model.hardware import auto_uses_bf16

    shipped = load_classifier(folder, dtype="fp32")
    one = load_classifier(folder, windows=1, dtype="fp32")
    with tempfile.TemporaryDirectory(prefix="cli-", dir=OUT) as tmp:
        contenders = {
            "nabaa": classifier_contender(shipped),
            "nabaa_1window": classifier_contender(one),
            "nabaa_cli": cli_contender(folder, Path(tmp)),
            "pipelines_3x": pipelines_contender(folder),
            "naive_loop": naive_contender(folder),
            "naive_windows": naive_contender(folder, over_windows=True),
        }
        # bf16 rows where bf16 is not emulated (the cached probe of model.hardware): on an AVX2
        # CPU, or under an AVX2 cap, a bf16 row would only time oneDNN's emulation.
        if bf16_fast():
            contenders["nabaa_bf16"] = classifier_contender(load_classifier(folder, dtype="bf16"))
            contenders["nabaa_1window_bf16"] = classifier_contender(load_classifier(folder, windows=1, dtype="bf16"))
            # Like for like: the naive loops in the same precision as nabaa's bf16 rows.
            contenders["naive_loop_bf16"] = naive_contender(folder, dtype=torch.bfloat16)
            contenders["naive_windows_bf16"] = naive_contender(folder, over_windows=True, dtype=torch.bfloat16)
        log(f"  scoring: {n} articles x {rounds} rounds, {len(contenders)} contenders")
        timings = interleaved(contenders, work, rounds, warm=warm, log=log)

    sizes = encoder_flop_model(shipped.model)
    tokens = {
        "nabaa": nabaa_tokens(shipped, work.records),
        "nabaa_1window": nabaa_tokens(one, work.records),
        "pipelines_3x": baseline_tokens(shipped.tokenizer, shipped.pre, work.records, pad_to_max=False, passes=3),
        "naive_loop": baseline_tokens(shipped.tokenizer, shipped.pre, work.records, pad_to_max=True, passes=1),
    }
    tokens["naive_windows"] = {**tokens["nabaa"], "padded_tokens": tokens["nabaa"]["windows"] * shipped.pre.max_length,
                               "shapes": naive_window_shapes(tokens["nabaa"]["windows"], shipped.pre.max_length)}
    tokens["nabaa_cli"] = tokens["nabaa"]  # the same batching while n <= --buffer-size
    tokens["nabaa_bf16"], tokens["nabaa_1window_bf16"] = tokens["nabaa"], tokens["nabaa_1window"]
    tokens["naive_loop_bf16"], tokens["naive_windows_bf16"] = tokens["naive_loop"], tokens["naive_windows"]
    rows = {}
    for name, t in timings.items():
        tok = tokens[name]
        rows[name] = {
            "seconds": [round(s, 3) for s in t.seconds],
            "median_s": round(t.median, 3),
            "articles_per_s": round(n / t.median, 2),
            "windows_per_article": round(tok["windows"] / n, 2),
            "real_tokens": tok["real_tokens"],
            "padded_tokens": tok["padded_tokens"],
            "real_tokens_per_s": round(tok["real_tokens"] / t.median, 1),
            "gflop": round(flops(tok["shapes"], sizes) / 1e9, 1),
            "gflop_per_s": round(flops(tok["shapes"], sizes) / 1e9 / t.median, 1),
        }
    for row in rows.values():
        row["x_vs_pipelines_3x"] = ratio(row["articles_per_s"], rows["pipelines_3x"]["articles_per_s"])
        row["x_vs_naive_loop"] = ratio(row["articles_per_s"], rows["naive_loop"]["articles_per_s"])
        row["x_vs_naive_windows"] = ratio(row["articles_per_s"], rows["naive_windows"]["articles_per_s"])
    for name, row in rows.items():  # against the naive loops in the row's own precision
        same = "_bf16" if name.endswith("_bf16") else ""
        if f"naive_windows{same}" in rows:
            row["x_vs_naive_loop_same_dtype"] = ratio(row["articles_per_s"], rows[f"naive_loop{same}"]["articles_per_s"])
            row["x_vs_naive_windows_same_dtype"] = ratio(row["articles_per_s"],
                                                         rows[f"naive_windows{same}"]["articles_per_s"])
    return {"articles": n, "rounds": rounds, "batch_baselines": BASELINE_BATCH,
            "batch_size": shipped.batch_size, "max_batch_tokens": shipped.max_batch_tokens,
            "max_length": shipped.pre.max_length, "predict_max_windows": shipped.pre.predict_max_windows,
            "cli_dtype": "bf16" if auto_uses_bf16("cpu") else "fp32",
            "flop_sizes": sizes, "rows": rows, **agreement(folder, work.records[:16])}
