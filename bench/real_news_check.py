"""Real news a Libya model was not labelled for, as a check on how it reads real outlets' text.

    python -m bench.real_news_check runs/demo/best --file ../shared/data/ant/dev.jsonl.gz \\
        --topic-map economy=economy,culture=society,sport=society

Two readings that need no Libya labels, each for the transformer alone, TF-IDF, and the mix of the
two at the folder's own weights and with the stance tasks' weight clipped to lower ceilings (no dev
file here, so the shipped weight is clipped, not re-chosen as ``bench/lexical_share.py`` does):

* **false stance**: among the articles that name no Libyan actor or place (``LIBYA_WORDS``), the
  share given a stance (any label but ``none``) toward each actor. Every such call is an error: a
  report on an Egyptian budget or a football match takes no side on the GNA. For a model whose
  stance tasks declare ``mentions`` (the Libya configs), ``shipped`` includes that gate and is 0 by
  construction here; ``mix, no gate`` is what the network and TF-IDF read (docs/results.md §0e).
* **topic by mapping** (``--topic-map``): where the file's own label has a clear counterpart in the
  model's schema (an economy desk's story is ``economy``), the share of those articles the model
  puts there.

The seeds the model was trained on are written for the project; real articles (ANT: 2018
outlets across the Arab world) show whether what the model learned carries over to other hands.
Writes ``bench/out/real_news_check.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import markdown_table, model_folder_parser, read_records, report

LIBYA_WORDS = re.compile("ليبي|حفتر|الوفاق|طرابلس|بنغازي|السراج|الدبيبة|سرت|مصراتة|الدبيبه|طبرق|فزان")
CEILINGS = (0.7, 0.5, 0.3)


def names_libya(record: dict[str, Any]) -> bool:
    """Whether an article names a Libyan actor or place (title or text).

    >>> names_libya({"title": "قوات حفتر", "text": "..."}), names_libya({"text": "مباراة الأهلي"})
    (True, False)
    """
    return bool(LIBYA_WORDS.search(f"{record.get('title') or ''} {record.get('text') or ''}"))


def parse_topic_map(text: str | None) -> dict[str, str]:
    """``economy=economy,sport=society`` → ``{"economy": "economy", "sport": "society"}``."""
    if not text:
        return {}
    pairs = [item.split("=", 1) for item in text.split(",")]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise SystemExit(f"--topic-map {text!r}: expected FILE_LABEL=MODEL_LABEL,...")
    return dict(pairs)


def check(folder: Path, file: Path, topic_map: dict[str, str], label_field: str = "topic",
          task: str = "topic") -> dict[str, Any]:
    from bench.lexical_share import load_with_lexical, systems_of
    from model.lexical import fuse

    clf = load_with_lexical(folder)
    records = [r for r in read_records(file) if isinstance(r.get("text"), str) and r["text"].strip()]
    prepared = [clf.prepare(r["text"], r.get("title")) for r in records]
    raw, lexical = clf.logits_prepared(prepared), clf.lexical.log_proba(prepared)
    shipped = systems_of(clf, raw, lexical, prepared)

    def systems(name: str, stance: bool) -> dict[str, np.ndarray]:
        out = {system: preds[name] for system, preds in shipped.items()}
        for ceiling in CEILINGS if stance else ():
            weight = min(clf.lexical_weight(name), ceiling)
            out[f"ceiling {ceiling}"] = fuse(raw[name], lexical[name], weight).argmax(1)
        return out

    no_libya = np.array([not names_libya(r) for r in records])
    result: dict[str, Any] = {"model": str(folder), "file": str(file), "articles": len(records),
                              "naming_no_libyan_actor": int(no_libya.sum()), "false_stance": {}, "topic": {}}
    for t in clf.tasks:
        if "none" in t.labels and t.name.startswith("stance"):
            none = t.labels.index("none")
            result["false_stance"][t.name] = {
                system: round(float((pred[no_libya] != none).mean()), 4)
                for system, pred in systems(t.name, stance=True).items()}
    model_task = next((t for t in clf.tasks if t.name == task), None)
    if topic_map and model_task is not None:
        file_labels = np.array([str(r.get(label_field)) for r in records])
        expected = np.array([topic_map.get(label, "") for label in file_labels])
        for system, pred in systems(task, stance=False).items():
            hits = np.array(model_task.labels)[pred] == expected
            per = {f"{src}→{dst}": round(float(hits[file_labels == src].mean()), 4) for src, dst in topic_map.items()}
            result["topic"][system] = {"all mapped": round(float(hits[expected != ""].mean()), 4), **per}
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"False stance on {result['naming_no_libyan_actor']} of {result['articles']} articles "
             "that name no Libyan actor or place (share given favor or against):", ""]
    stance = result["false_stance"]
    if stance:
        systems = list(next(iter(stance.values())))
        lines += markdown_table(["task", *systems], [[name, *(f"{v:.1%}" for v in row.values())]
                                                     for name, row in stance.items()])
    if result["topic"]:
        cols = list(next(iter(result["topic"].values())))
        lines += ["", "Topic where the file's label maps onto the model's (share put there):", ""]
        lines += markdown_table(["system", *cols], [[s, *(f"{v:.3f}" for v in row.values())]
                                                    for s, row in result["topic"].items()])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = model_folder_parser(__doc__, "real_news_check.json")
    parser.add_argument("--file", type=Path, required=True, help="JSONL(.gz) of real articles (text, title)")
    parser.add_argument("--topic-map", default=None, help="FILE_LABEL=MODEL_LABEL,... (e.g. economy=economy)")
    parser.add_argument("--label-field", default="topic", help="the file's label field for --topic-map")
    args = parser.parse_args(argv)
    result = check(args.model, args.file, parse_topic_map(args.topic_map), args.label_field)
    report(args.out, result, table(result))


if __name__ == "__main__":
    main()
