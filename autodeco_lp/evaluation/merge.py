"""One `--out` folder, several `autodeco eval` runs: they take turns, and results.json keeps every method.

Runs on one folder hold an exclusive lock on `--out/.eval.lock` for their whole run (a second run
waits, saying so), so two processes never append to one cache at once nor overwrite each other's
results.json. A run whose settings match the results.json already there (same cache key contents,
seeds and model and problem digests) reports that file's methods too, re-summarised from the cache
(nothing is generated again unless the heads' weights changed); oracle-validation, which needs its
`--oracle-from`, is carried over as it was. A results.json of other settings is replaced, as before
(its cache stays).
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autodeco_lp.evaluation.cache_key import KEYED
from autodeco_lp.evaluation.compare import read_report
from autodeco_lp.evaluation.methods import parse_methods

LOCK_NAME = ".eval.lock"
SAME_RUN = (*KEYED, "seeds", "task_options", "model_sha256", "problems_sha256")
NOT_RERUN = ("oracle-test", "oracle-validation")  # derived from the others / needs its --oracle-from


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold `out`'s lock (waiting, with a line on stderr, while another run holds it)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another `autodeco eval` on {out} to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def earlier_methods(out: Path, settings: dict) -> dict[str, dict]:
    """The methods of the results.json in `out` when it was written with these settings, else {}.
    A results.json that is not a well-formed report raises a ValueError naming it (never overwritten
    silently: it may be another tool's file)."""
    if not (out / "results.json").exists():
        return {}
    _, report = read_report(out, "--out", "move it away or pass another --out")
    earlier = report["settings"]
    if any(earlier.get(k) != settings.get(k) for k in SAME_RUN):
        return {}
    return report["methods"]


def merged_names(names: list[str], earlier: dict[str, dict]) -> list[str]:
    """`names`, then the earlier run's methods that can be re-summarised from the cache."""
    extra = []
    for name in earlier:
        if name in names or name in NOT_RERUN:
            continue
        try:
            parse_methods(name)
        except ValueError:
            continue  # not a method name of this version: not re-summarised
        extra.append(name)
    return [*names, *extra]
