"""Check one written part of the seeds corpus before it is merged.

    python seeds/check_part.py seeds/parts/part_p7.jsonl [more parts ...]

Prints the counts a writer needs (topic, joint stance, lengths, hard kinds) and exits 1 with
file:line and field on the first bad record.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

LABELS = {
    "topic": {"military", "politics", "economy", "health", "society"},
    "stance_gna": {"favor", "against", "none"},
    "stance_haftar": {"favor", "against", "none"},
}
HARD_KINDS = {"", "quoted_harsh_words", "both_sides_same_event", "slanted_economy_or_health", "mixed_stance",
              "neutral_use_of_names", "war_as_background", "quiet_framing"}
REQUIRED = ("id", "title", "text", "topic", "stance_gna", "stance_haftar", "date", "outlet_style", "difficulty",
            "hard_kind")


def check(path: Path, seen: set[str]) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"{where}: invalid JSON ({e})")
        for f in REQUIRED:
            if f not in r or not isinstance(r[f], str):
                sys.exit(f"{where}: field {f!r} missing or not a string")
        for f, allowed in LABELS.items():
            if r[f] not in allowed:
                sys.exit(f"{where}: field {f!r} = {r[f]!r}, allowed {sorted(allowed)}")
        if r["hard_kind"] not in HARD_KINDS:
            sys.exit(f"{where}: hard_kind {r['hard_kind']!r}, allowed {sorted(HARD_KINDS)}")
        if r["difficulty"] not in ("normal", "hard") or (r["difficulty"] == "hard") != bool(r["hard_kind"]):
            sys.exit(f"{where}: difficulty must be 'hard' exactly when hard_kind is set")
        if r["stance_gna"] == r["stance_haftar"] != "none":
            sys.exit(f"{where}: favor/favor or against/against is not used in this corpus")
        if r["id"] in seen:
            sys.exit(f"{where}: duplicate id {r['id']!r}")
        if r["date"][:4] not in ("2019", "2020", "2021") or len(r["date"]) != 10:
            sys.exit(f"{where}: date {r['date']!r} must be YYYY-MM-DD in 2019-2021")
        words = len(r["text"].split())
        if words < 50:
            sys.exit(f"{where}: text has {words} words (at least 50)")
        seen.add(r["id"])
        records.append(r)
    return records


def main(paths: list[str]) -> int:
    seen: set[str] = set()
    records = [r for p in paths for r in check(Path(p), seen)]
    words = sorted(len(r["text"].split()) for r in records)
    print(f"{len(records)} articles, {sum(words):,} words")
    print("topic:", dict(Counter(r["topic"] for r in records)))
    print("gna/haftar:", dict(Counter(f"{r['stance_gna']}/{r['stance_haftar']}" for r in records)))
    print("hard_kind:", dict(Counter(r["hard_kind"] or "-" for r in records)))
    bins = Counter("60-150" if w <= 150 else "151-400" if w <= 400 else "401-700" if w <= 700 else "701+"
                   for w in words)
    print("words:", dict(bins), "median", words[len(words) // 2] if words else 0)
    titles = Counter(r["title"] for r in records)
    dup = [t for t, c in titles.items() if c > 1]
    if dup:
        print("WARNING duplicate titles:", dup[:5])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
