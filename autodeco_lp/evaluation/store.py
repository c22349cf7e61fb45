"""The on-disk result cache: one JSON line per finished (decoding, seed, problem).

Lines are appended and flushed per generate call, so a killed run loses at most the call in
flight; a torn last line is ignored when read back, any other malformed line is refused naming
`file:line` (`records.read_cache`). The file name carries a fingerprint of everything that changes
results (model weights, heads, problems and gold answers, samples, tokens, ...), so runs with other
settings never mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autodeco_lp.evaluation.records import read_cache


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # (key, seed, index) -> (record, its line number in the file; None for records added by this run)
        self.records: dict[tuple[str, int, int], tuple[dict, int | None]] = read_cache(path) if path.exists() else {}
        # Where a killed run's torn last line starts (it is cut off before the next append), else None.
        self._torn_at: int | None = None
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                self._torn_at = data.rfind(b"\n") + 1

    def get(self, key: str, seed: int, index: int) -> dict | None:
        found = self.records.get((key, seed, index))
        return None if found is None else found[0]

    def where(self, key: str, seed: int, index: int) -> str:
        """`file:line` of a record read from disk (for messages)."""
        line = self.records[(key, seed, index)][1]
        return f"{self.path}:{line}" if line is not None else str(self.path)

    def add(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._torn_at is not None:  # drop the torn fragment: appending to it would break the next line
            os.truncate(self.path, self._torn_at)
            self._torn_at = None
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[(record["key"], record["seed"], record["index"])] = (record, None)
            f.flush()
            os.fsync(f.fileno())
