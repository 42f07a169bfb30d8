"""Build the seeds corpus files from the written parts and split them.

    python seeds/make_splits.py     # articles.jsonl + parts/part_*.jsonl -> articles.jsonl, train/dev/test.jsonl

New writers' parts (``parts/part_<writer>_NN.jsonl``, checked by ``check_part.py``) are added to
``articles.jsonl`` (an id already there is an error); then the corpus is split.

The split is deterministic and stratified: articles are grouped by (topic, framing), ordered
inside each group by the SHA-1 of their id, and dealt out. Each generation is dealt separately
so that growing the corpus never moves an article between splits:

* seeds v1 (writers p1-p6, 420 articles): 70/15/15, exactly the v1 split;
* seeds v2 (writers p7-p11): 61/15/24, so that the whole corpus reaches a test split of
  300+ and a dev split of 200+ articles, with v1's 60/60 inside them;
* seeds v3 (writers p12-p15): 70/15/15;
* seeds v4 (writers p18 and later): 70/15/15.

The same corpus always gives the same split.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARES = (("train", 0.70), ("dev", 0.15), ("test", 0.15))  # seeds v1
SHARES_V2 = (("train", 0.61), ("dev", 0.15), ("test", 0.24))
# (generation, its writers, its shares), oldest first; writers not listed belong to the last one.
GENERATIONS = (
    ("v1", {"p1", "p2", "p3", "p4", "p5", "p6"}, SHARES),
    ("v2", {"p7", "p8", "p9", "p10", "p11"}, SHARES_V2),
    ("v3", {"p12", "p13", "p14", "p15"}, SHARES),
    ("v4", set(), SHARES),
)
FIELDS = ("id", "title", "text", "topic", "stance_gna", "stance_haftar", "date", "outlet_style", "difficulty",
          "hard_kind")


def framing(record: dict) -> str:
    gna, haftar = record["stance_gna"], record["stance_haftar"]
    if gna == "favor" or (haftar == "against" and gna != "against"):
        return "pro-GNA"
    if haftar == "favor" or gna == "against":
        return "pro-Haftar"
    return "neutral"


def generation(record: dict) -> str:
    """``v1`` for the first 420 articles (writers p1-p6), ``v2`` for p7-p11, ``v3`` for p12-p15, ``v4`` after."""
    writer = record["id"].split("-")[0]
    return next((gen for gen, writers, _ in GENERATIONS if writer in writers), GENERATIONS[-1][0])


def split_of(records: list[dict]) -> dict[str, str]:
    """``id -> train|dev|test`` for every record (see the module docstring)."""
    out = {}
    for gen, _, shares in GENERATIONS:
        out.update(_deal([r for r in records if generation(r) == gen], shares))
    return out


def _deal(records: list[dict], shares: tuple[tuple[str, float], ...]) -> dict[str, str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["topic"], framing(r))].append(r)
    out = {}
    for members in groups.values():
        members.sort(key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
        n = len(members)
        n_dev, n_test = round(n * shares[1][1]), round(n * shares[2][1])
        for i, r in enumerate(members):
            out[r["id"]] = "dev" if i < n_dev else "test" if i < n_dev + n_test else "train"
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def main() -> int:
    source = [HERE / "articles.jsonl", *sorted((HERE / "parts").glob("part_*.jsonl"))]
    records: list[dict] = []
    seen: dict[str, dict] = {}
    for path in source:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            raw = json.loads(line)
            record = {k: raw.get(k, "") for k in FIELDS}
            if record["id"] in seen:  # a part merged before: identical is fine, anything else is an error
                if seen[record["id"]] != record:
                    raise SystemExit(f"{path}:{n}: id {record['id']!r} is already in the corpus, with other content")
                continue
            seen[record["id"]] = record
            records.append(record)
    assignment = split_of(records)
    write_jsonl(HERE / "articles.jsonl", records)
    for split, _ in SHARES:
        write_jsonl(HERE / f"{split}.jsonl", [r for r in records if assignment[r["id"]] == split])
    counts = {s: sum(1 for v in assignment.values() if v == s) for s, _ in SHARES}
    print(f"{len(records)} articles from {len(source)} file(s): {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
