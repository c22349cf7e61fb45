"""`autodeco eval compare A B`: methods of two runs on the same problems, paired.

For a change that should not move results (another dtype, engine, batch size, library version),
or one that should (refitted heads). Both runs must have evaluated the same task, problem seed
and number of problems (their per-problem lists are then paired by index); each method present in
both (or each of A's against each of B's `--against` methods) gets the paired bootstrap interval of
`A - B` in pass@1 over problems (`stats.paired_bootstrap`), and in pass@k for each k both have per
problem. Samples per problem may differ between the runs:
each per-problem pass@1 is an unbiased estimate whatever its sample count.
"""

from __future__ import annotations

from pathlib import Path

from autodeco_lp.evaluation.records import read_text, report_error
from autodeco_lp.evaluation.stats import paired_bootstrap
from autodeco_lp.hub.jsonl import parse_json

SAME_PROBLEMS = ("task", "task_options", "dataset_seed", "problems_evaluated")


def read_report(
    path: str | Path, option: str, fix: str = "pass the --out folder (or its results.json) of an `autodeco eval` run"
) -> tuple[Path, dict]:
    """`(file, report)` of an `autodeco eval` results.json, or of the one in a folder.

    Raises ValueError naming `option` (the command-line argument it came from), what is wrong
    (`records.report_error`: wrong types, shares outside [0, 1], bytes that are not UTF-8, not JSON or
    nested too deep: `hub.jsonl.parse_json`) and `fix`.
    """
    file = Path(path)
    file = file / "results.json" if file.is_dir() else file
    if not file.is_file():
        raise ValueError(f"`{option} {path}`: {file} does not exist; {fix}")
    try:
        report = parse_json(read_text(file, "an `autodeco eval` results.json"), str(file))
    except (OSError, ValueError) as exc:
        raise ValueError(f"`{option} {path}`: {file} is not an `autodeco eval` results.json ({exc}); {fix}") from exc
    error = report_error(report)  # every number a reader uses, checked (a hand-edited file is refused)
    if error:
        raise ValueError(f"`{option} {path}`: {file} is not an `autodeco eval` results.json ({error}); {fix}")
    report.setdefault("settings", {})
    return file, report


def paired(a: dict, b: dict) -> dict:
    """`{"pass@1": interval, "pass@k": {k: interval}}` of method summary `a` minus `b`, paired over
    problems (`stats.paired_bootstrap`; pass@k for each k both have per problem)."""
    ka, kb = a.get("per_problem_pass@k") or {}, b.get("per_problem_pass@k") or {}
    return {
        "pass@1": paired_bootstrap(a["per_problem"], b["per_problem"]).to_dict(),
        "pass@k": {k: paired_bootstrap(ka[k], kb[k]).to_dict() for k in ka if k in kb},
    }


def compare_reports(
    a: dict, b: dict, methods: list[str] | None = None, against: list[str] | None = None
) -> dict[str, dict]:
    """`{name: {"pass@1": interval, "pass@k": {k: interval}}}` for A - B, paired over problems.

    `methods`: which of A's methods to compare (default: every method in both, in A's order).
    `against`: B's methods to compare each of them with (e.g. refitted heads' `autodeco` in A
    against B's static settings); the names are then "A_METHOD - B_METHOD". Default: the same
    method in B, named by itself. Raises ValueError when the runs evaluated different problems or
    a requested method is missing.
    """
    for key in SAME_PROBLEMS:
        if a["settings"].get(key) != b["settings"].get(key):
            raise ValueError(
                f"the two runs evaluated different problems ({key}: {a['settings'].get(key)!r} vs "
                f"{b['settings'].get(key)!r}); compare runs of the same --task, --dataset-seed and --problems"
            )
    if against is None:
        common = [m for m in a["methods"] if m in b["methods"]]
        names = methods if methods is not None else common
        missing = [m for m in names if m not in common]
        if missing:
            raise ValueError(f"`--methods` {', '.join(missing)} not in both runs; both have: {', '.join(common)}")
        pairs = {name: (name, name) for name in names}
    else:
        names = methods if methods is not None else list(a["methods"])
        for option, wanted, run in (("--methods", names, a), ("--against", against, b)):
            missing = [m for m in wanted if m not in run["methods"]]
            if missing:
                raise ValueError(
                    f"`{option}` {', '.join(missing)} not in run {'A' if run is a else 'B'}; it has: "
                    f"{', '.join(run['methods'])}"
                )
        pairs = {f"{x} - {y}": (x, y) for x in names for y in against}
    old = sorted(
        {m for x, y in pairs.values() for m, run in ((x, a), (y, b)) if "per_problem" not in run["methods"][m]}
    )
    if old:
        raise ValueError(
            f"{', '.join(old)}: no per-problem results in one of the runs (written before they existed); rerun "
            "that `autodeco eval` with the same --out: its cache answers without generating"
        )
    return {name: paired(a["methods"][x], b["methods"][y]) for name, (x, y) in pairs.items()}


def comparison_table(comparison: dict[str, dict]) -> str:
    """Markdown: one row per method and metric, `A - B` mean, interval, significant."""
    lines = ["| method | metric | A - B | 95% interval | significant |", "|---|---|---|---|---|"]
    for name, c in comparison.items():
        for metric, interval in [("pass@1", c["pass@1"]), *((f"pass@{k}", v) for k, v in c["pass@k"].items())]:
            lines.append(
                f"| {name} | {metric} | {interval['mean']:+.3f} | [{interval['low']:+.3f}, {interval['high']:+.3f}] "
                f"| {'yes' if interval['significant'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"
