"""JSON Lines records (a run's ``log.jsonl``, ``fsslab eval --json`` rows): the one reader, shared by the training
log that appends to them and the figures that plot them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsslab.errors import DatasetError


def parse_jsonl(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], bool, list[int]]:
    """``([(line, record)], torn, bad line numbers)``: a last line without its newline that does not parse
    is a torn record (a kill mid-write, or the writer still at it), other unparseable lines are bad."""
    text = path.read_text()
    lines = text.split("\n")
    records, bad, torn = [], [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append((line, record))
        elif number == len(lines):  # no newline after it: the write was cut short
            torn = True
        else:
            bad.append(number)
    return records, torn, bad


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``log.jsonl``; a torn last record (a run killed, or still writing) is left out, and
    an unreadable line elsewhere is an error naming the file and the line."""
    path = Path(path)
    records, _, bad = parse_jsonl(path)
    if bad:
        raise DatasetError(f"{path}:{bad[0]}: not a JSON record")
    return [record for _, record in records]


__all__ = ["parse_jsonl", "read_jsonl"]
