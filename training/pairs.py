"""(target, article) pairs: stance toward a named actor as one task, whatever the actor.

A per-target schema has one stance head per actor (``stance_gna``, ``stance_haftar``). A pair
model has a single ``stance`` head and reads the actor's name above the article's title, so an
actor is a phrase rather than a head. This module turns a labelled file with per-target stance
fields into such pairs::

    python -m training.pairs seeds/train.jsonl --out pairs/train.jsonl \\
        --target stance_gna="حكومة الوفاق الوطني" --target stance_haftar="خليفة حفتر"

Each record becomes one record per target it has a stance label for: ``id`` is ``{id}::{field}``,
``title`` the target phrase on a line above the article's title (see
:func:`model.preprocess.with_target`), ``stance`` the label and ``target`` the field it came from.
``bench.pair_stance`` trains a pair model this way and compares it with per-target heads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from model.preprocess import with_target
from model.records import iter_records

PAIR_TASK = "stance"
ID_SEPARATOR = "::"


class PairError(ValueError):
    """A target is misdeclared or a record cannot be paired (the message names file:line)."""


def parse_target(spec: str) -> tuple[str, str]:
    """``field=phrase`` from the command line.

    >>> parse_target("stance_haftar=خليفة حفتر")
    ('stance_haftar', 'خليفة حفتر')
    """
    field, sep, phrase = spec.partition("=")
    if not sep or not field.strip() or not phrase.strip():
        raise PairError(f"--target: expected FIELD=PHRASE (e.g. stance_haftar=\"خليفة حفتر\"), got {spec!r}")
    return field.strip(), phrase.strip()


def pair_records(records: Iterable[tuple[int, dict[str, Any]]], targets: Mapping[str, str], source: str = "<records>",
                 id_field: str = "id", title_field: str = "title", task: str = PAIR_TASK) -> Iterator[dict[str, Any]]:
    """One pair record per (record, target with a label); ``records`` yields ``(line, record)``.

    >>> rows = list(pair_records([(1, {"id": "a", "title": "T", "text": "x", "stance_gna": "favor"})],
    ...                          {"stance_gna": "GNA"}))
    >>> rows[0]["id"], rows[0]["title"], rows[0]["stance"]
    ('a::stance_gna', 'GNA\\nT', 'favor')
    """
    for line, record in records:
        if record.get(id_field) in (None, ""):
            raise PairError(f"{source}:{line}: field '{id_field}': missing id (pair ids are built from it)")
        for field, phrase in targets.items():
            label = record.get(field)
            if label in (None, ""):
                continue  # not annotated for this actor: no pair, rather than a guessed "none"
            pair = with_target({k: v for k, v in record.items() if k not in targets}, phrase, title_field)
            pair.update({id_field: f"{record[id_field]}{ID_SEPARATOR}{field}", task: label, "target": field})
            yield pair


def write_pairs(source: str | os.PathLike, dest: str | os.PathLike, targets: Mapping[str, str],
                id_field: str = "id", title_field: str = "title") -> int:
    """Write ``source``'s pairs to JSONL ``dest`` atomically; returns how many were written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    written = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for pair in pair_records(_records(source), targets, str(source), id_field, title_field):
                out.write(json.dumps(pair, ensure_ascii=False) + "\n")
                written += 1
        if written == 0:
            raise PairError(f"{source}: no record has a label in any of {sorted(targets)}: missing column(s)?")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    for rec in iter_records(path):
        if rec.error:
            raise PairError(f"{path}:{rec.line}: {rec.error}")
        yield rec.line, rec.data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="labelled file (JSONL/CSV/Parquet, optionally .gz)")
    parser.add_argument("--out", required=True, help="pair JSONL to write")
    parser.add_argument("--target", action="append", required=True, metavar="FIELD=PHRASE",
                        help="a stance field and the actor's name as the model should read it (repeatable)")
    parser.add_argument("--id-field", default="id")
    parser.add_argument("--title-field", default="title")
    args = parser.parse_args(argv)
    try:
        targets = dict(parse_target(spec) for spec in args.target)
        n = write_pairs(args.input, args.out, targets, args.id_field, args.title_field)
    except (PairError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{n} pairs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
