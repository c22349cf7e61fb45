"""The one checked reader of `autodeco eval`'s files: cache lines and results.json reports.

Both are plain JSON a user can edit by hand, and both feed numbers into reports, so nothing read back
is trusted: a record of the wrong shape or type, a probability outside [0, 1] or bytes that are not
UTF-8 raise a ValueError naming the file (and, for a cache, the line) and the fix. What a cache record
claims is checked against the run itself where it is used (`runner.Evaluator`: its sample count and
its `correct` list re-scored from its `texts`).
"""

from __future__ import annotations

import math
from pathlib import Path

from autodeco_lp.hub.jsonl import jsonl_lines, parse_json

# A cache record's lists, one entry per sample, and what each entry may be.
_PER_SAMPLE = {
    "correct": ("0 or 1", lambda v: type(v) is int and v in (0, 1)),
    "tokens": ("a non-negative int", lambda v: type(v) is int and v >= 0),
    "mean_t": ("a number or null", lambda v: v is None or _is_number(v)),
    "mean_p": ("a number or null", lambda v: v is None or _is_number(v)),
    "texts": ("a string", lambda v: isinstance(v, str)),
}
_DELETE_FIX = "delete that line (or the file) and rerun the same command: the run regenerates what is missing"


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def read_text(path: Path, what: str, fix: str = "") -> str:
    """A file's text; bytes that are not UTF-8 raise a ValueError naming the file, the line and `fix`."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = f"{path}:{line}: not UTF-8 ({exc.reason} at byte {exc.start}): not {what}"
        raise ValueError(message + (f"; {fix}" if fix else "")) from exc


def cache_record_error(record) -> str | None:
    """What is wrong with one cache line's record (None when it has the shape `runner.Evaluator` writes)."""
    if not isinstance(record, dict):
        return f"a record is a JSON object, not {type(record).__name__}"
    for name in ("key", "seed", "index", *_PER_SAMPLE):
        if name not in record:
            return f"no {name!r}"
    if not isinstance(record["key"], str):
        return f"'key' has to be a string, not {record['key']!r}"
    for name in ("seed", "index"):
        if type(record[name]) is not int or record[name] < 0:
            return f"{name!r} has to be a non-negative int, not {record[name]!r}"
    for name, (kind, ok) in _PER_SAMPLE.items():
        values = record[name]
        if not isinstance(values, list) or not values:
            return f"{name!r} has to be a non-empty list (one entry per sample), not {values!r}"
        bad = [v for v in values if not ok(v)]
        if bad:
            return f"{name!r} holds {bad[0]!r}; each entry has to be {kind}"
    lengths = {name: len(record[name]) for name in _PER_SAMPLE}
    if len(set(lengths.values())) > 1:
        return f"its lists differ in length ({', '.join(f'{k} {v}' for k, v in lengths.items())})"
    return None


def read_cache(path: Path) -> dict[tuple[str, int, int], tuple[dict, int]]:
    """`{(key, seed, index): (record, line number)}` of a cache file (later lines win). A torn last line
    (a kill mid-write) is ignored; any other line that is not a well-formed record raises a ValueError
    naming `path:line`."""
    text = read_text(path, "an `autodeco eval` cache", _DELETE_FIX)
    lines = jsonl_lines(text)
    records = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line, f"{path}:{number}")
        except ValueError as exc:
            if number == len(lines) and not text.endswith("\n"):
                continue  # the torn last line of a killed run: regenerated
            raise ValueError(f"{exc}; not a JSON record: {_DELETE_FIX}") from exc
        error = cache_record_error(record)
        if error:
            raise ValueError(f"{path}:{number}: not an `autodeco eval` cache record: {error}; {_DELETE_FIX}")
        records[(record["key"], record["seed"], record["index"])] = (record, number)
    return records


def _check_share(value, where: str) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{where} has to be a number in [0, 1], but is {value!r}")


def report_error(report) -> str | None:
    """What is wrong with a results.json (None when every number a reader uses is a number in its range)."""
    if not isinstance(report, dict):
        return f"a results.json holds a JSON object, not {type(report).__name__}"
    if not isinstance(report.get("methods"), dict):
        return f"'methods' has to be an object of method summaries, not {report.get('methods')!r}"
    if not isinstance(report.get("settings", {}), dict):
        return f"'settings' has to be an object, not {report.get('settings')!r}"
    try:
        for name, method in report["methods"].items():
            where = f"methods.{name}"
            if not isinstance(method, dict):
                return f"{where} has to be an object (a method summary), not {method!r}"
            if "pass@1" in method:  # absent in some hand-made comparisons' inputs: only what is there is read
                _check_share(method["pass@1"], f"{where}.pass@1")
            passk = method.get("pass@k", {})
            if not isinstance(passk, dict):
                return f"{where}.pass@k has to be an object {{k: pass@k}}, not {passk!r}"
            for key, value in passk.items():
                if not key.isdigit() or int(key) < 1:
                    return f'{where}.pass@k has a key {key!r}; keys are k as digits, e.g. "4"'
                _check_share(value, f"{where}.pass@k.{key}")
            for field in ("temperature", "top_p", "mean_temperature", "mean_top_p", "pass@1_std"):
                value = method.get(field)
                if value is not None and not _is_number(value):
                    return f"{where}.{field} has to be a number or null, not {value!r}"
            per_problem = {"per_problem": method.get("per_problem", [])}
            per_k = method.get("per_problem_pass@k", {})
            if not isinstance(per_k, dict):
                return f"{where}.per_problem_pass@k has to be an object {{k: [per problem]}}, not {per_k!r}"
            per_problem.update({f"per_problem_pass@k.{k}": v for k, v in per_k.items()})
            for field, values in per_problem.items():
                if not isinstance(values, list):
                    return f"{where}.{field} has to be a list (one value per problem), not {values!r}"
                for i, value in enumerate(values):
                    _check_share(value, f"{where}.{field}[{i}]")
    except ValueError as exc:
        return str(exc)
    return None
