"""Choosing a static decoding: the paper's two-stage grid search on the evaluated problems
(`oracle-grid`), the best static of a run on those problems (`oracle-test`, optimistic), and the best
static of another run on other problems (`oracle-validation`, the honest choice).

Every choice uses `frontier.best_static`'s rule: the best pass@1 at 12 decimals, ties to the lower T,
then the lower P.
"""

from __future__ import annotations

from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.compare import read_report
from autodeco_lp.evaluation.frontier import MIN_STATICS, best_static, static_decodings
from autodeco_lp.evaluation.methods import GRID, Decoding
from autodeco_lp.evaluation.summary import summarise


def _best_index(sweep: list[dict]) -> int:
    """The index of the best pass@1 in a grid sweep, by `frontier.best_static`'s rule (12 decimals;
    ties to the lower T, then the lower P), so oracle-grid and oracle-test agree on a tie."""
    return int(best_static({str(i): s for i, s in enumerate(sweep)}))


def oracle_grid(evaluator, samples: int) -> dict:
    """The paper's two-stage oracle search, scored on the evaluation problems themselves.
    `evaluator.run(decoding, label)`: per seed, the records of every problem (`runner.Evaluator`)."""
    stage1 = []
    for t in GRID:
        d = Decoding("static", t, 1.0)
        stage1.append(summarise(d, evaluator.run(d, f"grid T={t}"), samples))
    best_t = stage1[_best_index(stage1)]["temperature"]
    stage2 = []
    for p in GRID:
        d = Decoding("static", best_t, p)
        stage2.append(summarise(d, evaluator.run(d, f"grid T={best_t} P={p}"), samples))
    best = stage2[_best_index(stage2)]
    return {**best, "grid": {"temperature_sweep": stage1, "top_p_sweep": stage2, "best_temperature": best_t}}


def validation_choice(oracle_from: str, task: str, dataset_seed: int) -> dict:
    """What `oracle-validation` runs: the static setting with the best pass@1 in another run's results.

    Reads `oracle_from` (a results.json, or a folder holding one) and takes its static decodings
    (`frontier.static_decodings`: default, static:T,P, and oracle-grid's points; ties to the lower T,
    then the lower P). Returns `{"decoding": Decoding, "chosen_method": its name there,
    "validation_pass@1": its pass@1 there, "chosen_from": [names considered], "chosen_on": {"path",
    "task", "dataset_seed", "problems"}}` (the last three from that run's settings, None if absent).

    Raises ValueError naming `--oracle-from` for a missing or unreadable file, one without static
    decodings, and one whose settings have this run's task and dataset seed (the same problems: a
    choice made there is the optimistic oracle-test, not a validation choice).
    """
    fix = (
        "pass the --out folder (or results.json) of an `autodeco eval` run of the same model and task on other "
        "problems, e.g. this command with another --dataset-seed and --out"
    )
    path, report = read_report(oracle_from, "--oracle-from")
    methods, settings = report["methods"], report["settings"]
    try:
        statics = static_decodings(methods)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} is not an `autodeco eval` results.json ({exc}); {fix}"
        ) from exc
    if settings.get("task") == task and settings.get("dataset_seed") == dataset_seed:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} was run on this run's problems (task {task}, dataset seed "
            f"{dataset_seed}), so a setting chosen there is not chosen on validation problems; {fix} "
            f"(e.g. --dataset-seed {dataset_seed + 1})"
        )
    if not statics:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} has no static decoding to choose from (it has "
            f"{', '.join(methods) or 'no methods'}); run that evaluation with default, static:T,P or oracle-grid "
            "in --methods"
        )
    name = best_static(statics)
    chosen = statics[name]
    return {
        "decoding": Decoding("static", chosen["temperature"], chosen["top_p"]),
        "chosen_method": name,
        "validation_pass@1": chosen["pass@1"],
        "chosen_from": list(statics),
        "chosen_on": {
            "path": str(path),
            "task": settings.get("task"),
            "dataset_seed": settings.get("dataset_seed"),
            "problems": settings.get("problems_evaluated"),
        },
    }


def oracle_test(results: dict[str, dict], args: EvalArgs, problems: int) -> dict | None:
    """The best static decoding on the evaluated problems themselves (the paper's oracle: optimistic,
    as the choice sees the test problems), from the results already there; None with fewer than
    `frontier.MIN_STATICS` distinct statics. The chosen static's summary plus `chosen_method`,
    `chosen_from`, `chosen_on` (this run: path None) and `optimistic: True`."""
    statics = static_decodings(results)
    if len(statics) < MIN_STATICS:
        return None
    name = best_static(statics)
    return {
        **statics[name],
        "chosen_method": name,
        "chosen_from": list(statics),
        "chosen_on": {"path": None, "task": args.task, "dataset_seed": args.dataset_seed, "problems": problems},
        "optimistic": True,
    }
