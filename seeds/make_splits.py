"""Build the seeds corpus files from the written parts and split them.

    python seeds/make_splits.py            # parts/*.jsonl -> articles.jsonl, train/dev/test.jsonl

The split is deterministic and stratified: articles are grouped by (topic,
framing), ordered inside each group by the SHA-1 of their id, and dealt out
70/15/15. The same corpus always gives the same split.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARES = (("train", 0.70), ("dev", 0.15), ("test", 0.15))
FIELDS = ("id", "title", "text", "topic", "stance_gna", "stance_haftar", "date", "outlet_style", "difficulty",
          "hard_kind")


def framing(record: dict) -> str:
    gna, haftar = record["stance_gna"], record["stance_haftar"]
    if gna == "favor" or (haftar == "against" and gna != "against"):
        return "pro-GNA"
    if haftar == "favor" or gna == "against":
        return "pro-Haftar"
    return "neutral"


def split_of(records: list[dict]) -> dict[str, str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["topic"], framing(r))].append(r)
    out = {}
    for members in groups.values():
        members.sort(key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
        n = len(members)
        n_dev, n_test = round(n * SHARES[1][1]), round(n * SHARES[2][1])
        for i, r in enumerate(members):
            out[r["id"]] = "dev" if i < n_dev else "test" if i < n_dev + n_test else "train"
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def main() -> int:
    parts = sorted((HERE / "parts").glob("part_*.jsonl"))
    source = parts if parts else [HERE / "articles.jsonl"]
    records = [json.loads(line) for p in source for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [{k: r.get(k, "") for k in FIELDS} for r in records]
    assignment = split_of(records)
    write_jsonl(HERE / "articles.jsonl", records)
    for split, _ in SHARES:
        write_jsonl(HERE / f"{split}.jsonl", [r for r in records if assignment[r["id"]] == split])
    counts = {s: sum(1 for v in assignment.values() if v == s) for s, _ in SHARES}
    print(f"{len(records)} articles from {len(source)} file(s): {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
