"""JSON Lines as this package writes them: one record per line, lines separated by "\\n" only.

`str.splitlines()` is not a JSONL reader: it also splits at U+2028, U+2029, U+0085 and the other
Unicode line boundaries, which `json.dumps(..., ensure_ascii=False)` leaves raw inside strings. A
sampled completion can hold one (seen: U+2028 in a T = 1 completion of the out-of-domain scale
run), and `splitlines()` then tears its record in two.
"""

from __future__ import annotations


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at "\\n" only, a trailing "\\r" (CRLF files) dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]
