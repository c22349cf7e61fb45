"""JSON Lines as this package writes them: one record per line, lines separated by "\\n" only.

`str.splitlines()` is not a JSONL reader: it also splits at U+2028, U+2029, U+0085 and the other
Unicode line boundaries, which `json.dumps(..., ensure_ascii=False)` leaves raw inside strings. A
sampled completion can hold one (seen: U+2028 in a T = 1 completion of the out-of-domain scale
run), and `splitlines()` then tears its record in two.

`parse_json` is the checked reader of one JSON value from a user's file (a data line, a task row, a
cache record, a config): its errors name the file and line, deep nesting included.
"""

from __future__ import annotations

import json
import re
from typing import Any


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at "\\n" only, a trailing "\\r" (CRLF files) dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]


# JSON nesting a user file may hold. Our records are 2-4 levels deep; Python's json recurses once per
# level, so 100,000 `[` on one line would end in a RecursionError instead of a message naming the line.
MAX_NESTING = 100
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal: brackets inside it do not nest
_BRACKETS = str.maketrans({"[": "(", "{": "(", "]": ")", "}": ")"})


def nesting_depth(text: str) -> int:
    """The deepest `[`/`{` nesting of JSON `text`, brackets inside strings not counted."""
    depth = deepest = 0
    for char in _STRING.sub("", text).translate(_BRACKETS):
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def parse_json(text: str, where: str) -> Any:
    """One JSON value from a user's file, or a ValueError that starts with `where` ("path:line").

    Two failures, both ValueErrors (never a RecursionError): text that is not JSON (the
    `json.JSONDecodeError` is chained as `__cause__`) and nesting deeper than `MAX_NESTING`.
    """
    # Counting brackets is cheap; the full scan runs only for a line that could be too deep.
    if text.count("[") + text.count("{") > MAX_NESTING:
        depth = nesting_depth(text)
        if depth > MAX_NESTING:
            raise ValueError(
                f"{where}: JSON nested {depth} levels deep, more than the {MAX_NESTING} levels any record of "
                "this package holds; fix or remove that line"
            )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc})") from exc
