"""The on-disk result cache: one JSON line per finished (decoding, seed, problem).

Lines are appended and flushed per generate call, so a killed run loses at most the call in
flight; a torn last line is ignored when read back. The file name carries a fingerprint of
everything that changes results (model, heads, task, samples, tokens, ...), so runs with other
settings never mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autodeco_lp.hub.jsonl import jsonl_lines


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[tuple[str, int, int], dict] = {}
        if path.exists():
            for line in jsonl_lines(path.read_text(encoding="utf-8")):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn line from a kill mid-write
                self.records[(record["key"], record["seed"], record["index"])] = record

    def get(self, key: str, seed: int, index: int) -> dict | None:
        return self.records.get((key, seed, index))

    def add(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[(record["key"], record["seed"], record["index"])] = record
            f.flush()
            os.fsync(f.fileno())
