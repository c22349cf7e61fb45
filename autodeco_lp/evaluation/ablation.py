"""`autodeco eval ablation`: fit one set of heads per recipe and score each with the harness.

A recipe file (YAML) names shared fit options, shared evaluation options, the validation tasks,
reference decodings and the recipes (overrides of the fit options):

    out: docs/ablation
    fit: {model: smollm2, data: heads/.../train.jsonl, learning_rate: 1e-3, num_train_epochs: 3}
    eval: {problems: 24, samples: 4, seeds: "0,1", max_new_tokens: 24, dataset_seed: 3000}
    tasks:
      products: {task: reasoning_gym:products, options: {min_digits: 1, max_digits: 1}}
    references: [greedy, default, "static:0.1,1.0"]
    baseline: autodeco     # optional: one of the references; each recipe's pass@1 minus its, paired
    recipes:
      released: {}
      no-drop: {easy_token_drop: 0.0}

Every recipe is fitted into `out/fits/NAME` (skipped when its heads exist with the same options;
a killed fit resumes from its last checkpoint) and evaluated with the `autodeco` method on every
task into `out/eval/TASK` (one resumable cache per task, keyed by the heads' weights). The hidden-
state cache is built once and hard-linked into the other recipes' folders (its fingerprint is
checked at use). Output: `out/ablation.json` and `out/ablation.md`. With a `baseline` (a reference
decoding, e.g. `autodeco` with the registry's heads), each recipe also gets, per task, the paired
bootstrap interval of its pass@1 minus the baseline's over the same problems (`compare.paired`).

Choose the recipe on *validation* problems (a dataset seed that is neither the evaluation seed 0
nor the training seed 1000), so the recipe is never tuned on the problems it is reported on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.compare import paired
from autodeco_lp.evaluation.report import interval_text, pass1_text
from autodeco_lp.evaluation.runner import run_eval
from autodeco_lp.hub.atomic import atomic_write, write_text
from autodeco_lp.hub.options_file import read_mapping, shown, typed_fields, typed_value
from autodeco_lp.training.args import OPTIONS, FitArgs, typed_options
from autodeco_lp.training.loop import CACHE_DIR_NAME, fit
from autodeco_lp.training.resume import list_checkpoints

SECTIONS = ("out", "fit", "eval", "tasks", "references", "baseline", "recipes")


def read_recipes(path: Path) -> dict:
    """The recipe file, every fit option (shared and per recipe) and evaluation option checked against its
    type (`typed_options`, `typed_fields`), the typed values in their place."""
    what = f"`--config` {shown(str(path))}"
    config = read_mapping(path, what)
    unknown = sorted(set(config) - set(SECTIONS))
    missing = [k for k in ("out", "fit", "tasks", "recipes") if k not in config]
    if unknown or missing:
        raise ValueError(f"{what}: unknown keys {unknown}, missing keys {missing}; known: {', '.join(SECTIONS)}")
    for key, kind in (("fit", dict), ("eval", dict), ("tasks", dict), ("recipes", dict), ("references", list)):
        if not isinstance(config.get(key) or kind(), kind):
            raise ValueError(f"{what}: `{key}` has to be a {kind.__name__}, but is {shown(config[key])}")
    config["out"] = typed_value(config["out"], str, f"{what}, key out")
    config["fit"] = typed_options(config["fit"] or {}, f"{what}, section fit")
    config["eval"] = typed_fields(EvalArgs, config.get("eval") or {}, f"{what}, section eval")
    references = [typed_value(r, str, f"{what}, references") for r in config.get("references") or []]
    if "references" in config:
        config["references"] = references
    baseline = config.get("baseline")
    if baseline is not None and baseline not in references:
        raise ValueError(
            f"{what}: baseline {shown(baseline)} is not one of the references {shown(references)}; add it to references"
        )
    for name, task in config["tasks"].items():
        if not isinstance(task, dict) or set(task) - {"task", "options"} or "task" not in task:
            raise ValueError(f"{what}: task {shown(name)} has to be {{task: NAME, options: {{...}}}}, is {shown(task)}")
        typed_value(task["task"], str, f"{what}, task {name}")
        typed_value(task.get("options") or {}, dict[str, Any], f"{what}, task {name} options")
    known = set(OPTIONS) | {"loss", "outcome"}
    for name, overrides in config["recipes"].items():
        if not isinstance(overrides or {}, dict):
            raise ValueError(f"{what}: recipe {shown(name)} has to be a mapping of fit options, is {shown(overrides)}")
        bad = sorted({str(k).replace("-", "_") for k in overrides or {}} - known)
        if bad:
            raise ValueError(f"recipe {name!r} sets unknown fit options {bad}; see `autodeco-fit --help`")
        config["recipes"][name] = typed_options(overrides or {}, f"{what}, recipe {name}")
    return config


def _fit_recipe(name: str, shared: dict, overrides: dict, folder: Path, caches: list[Path]) -> dict:
    """Fit (or reuse) one recipe's heads; returns its fit summary."""
    options = {**shared, **(overrides or {}), "output_dir": str(folder), "disable_tqdm": True}
    summary_path = folder / "recipe.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done["options"] == options:
            return done
    if not (folder / CACHE_DIR_NAME).exists():
        for source in caches:  # hard-link a finished cache; fit() rebuilds it if the fingerprint differs
            if (source / "cache_meta.json").is_file():
                shutil.copytree(source, folder / CACHE_DIR_NAME, copy_function=os.link)
                break
    resume = "latest" if folder.is_dir() and list_checkpoints(folder) else None
    args = FitArgs.from_options({**options, "resume_from_checkpoint": resume})
    result = fit(args, command=f"autodeco eval ablation (recipe {name})")
    done = {
        "options": options,
        "overrides": overrides or {},
        "steps": result.steps,
        "seconds": result.seconds,
        "loss": result.loss,
        "mean_temperature": result.mean_temperature,
        "mean_top_p": result.mean_top_p,
    }
    atomic_write(summary_path, lambda p: write_text(p, json.dumps(done, indent=2) + "\n"))
    return done


def eval_args(config: dict, task_name: str, heads: str | None = None) -> EvalArgs:
    """The `autodeco eval` settings of one task of the ablation: the references (`heads` None, the
    config's `references`) or one recipe's heads (`heads`: its fit folder; method autodeco)."""
    evaluation = dict(config.get("eval") or {})
    evaluation.setdefault("model", config["fit"].get("model", "smollm2"))
    methods = "autodeco" if heads else ",".join(config.get("references") or ["greedy"])
    return EvalArgs(
        **evaluation,
        task=config["tasks"][task_name]["task"],
        heads=heads,
        methods=methods,
        out=str(Path(config["out"]) / "eval" / task_name),
    )


def run_ablation(config: dict, progress: bool = True) -> dict:
    out = Path(config["out"])
    started = time.perf_counter()
    report: dict = {"config": config, "references": {}, "recipes": {}}
    for task_name, task in config["tasks"].items():
        args = eval_args(config, task_name)
        report["references"][task_name] = run_eval(args, task.get("options"), progress)["methods"]
    caches = []
    for name, overrides in config["recipes"].items():
        folder = out / "fits" / name
        fitted = _fit_recipe(name, config["fit"], overrides, folder, caches)
        caches.append(folder / CACHE_DIR_NAME)
        scores = {}
        for task_name, task in config["tasks"].items():
            args = eval_args(config, task_name, heads=str(folder))
            scores[task_name] = run_eval(args, task.get("options"), progress)["methods"]["autodeco"]
        report["recipes"][name] = {"fit": fitted, "scores": scores}
        if config.get("baseline"):
            report["recipes"][name]["vs_baseline"] = {
                t: paired(scores[t], report["references"][t][config["baseline"]]) for t in config["tasks"]
            }
    report["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ablation.json", lambda p: write_text(p, json.dumps(report, indent=2, sort_keys=True) + "\n"))
    atomic_write(out / "ablation.md", lambda p: write_text(p, ablation_table(report)))
    return report


def _pass4(m: dict) -> str:
    value = m["pass@k"].get("4")
    return "-" if value is None else f"{value:.3f}"


def _versus(r: dict, task: str) -> str:
    return interval_text(r["vs_baseline"][task]["pass@1"])


def ablation_table(report: dict) -> str:
    """Markdown: one row per recipe (per task: pass@1 mean ± std over seeds, pass@4, mean T / P, and
    with a baseline its paired pass@1 difference [95% interval]), then the references."""
    tasks = list(report["config"]["tasks"])
    baseline = report["config"].get("baseline")
    columns = ["pass@1", "pass@4", "T / P"] + ([f"pass@1 - {baseline}"] if baseline else [])
    head = "| recipe | changes | steps | fit s | " + " | ".join(f"{t} {c}" for t in tasks for c in columns) + " |"
    lines = [head, "|" + "---|" * (4 + len(columns) * len(tasks))]
    for name, r in report["recipes"].items():
        changes = ", ".join(f"{k}={v}" for k, v in r["fit"]["overrides"].items()) or "(shared options)"
        cells = []
        for t in tasks:
            m = r["scores"][t]
            cells += [pass1_text(m), _pass4(m), f"{m.get('mean_temperature', 0):.2f} / {m.get('mean_top_p', 0):.2f}"]
            cells += [_versus(r, t)] if baseline else []
        lines.append(
            f"| {name} | {changes} | {r['fit']['steps']} | {r['fit']['seconds']:.0f} | " + " | ".join(cells) + " |"
        )
    methods = sorted({m for refs in report["references"].values() for m in refs})
    for method in methods:
        cells = []
        for t in tasks:
            m = report["references"][t].get(method)
            cells += [pass1_text(m) if m else "-", _pass4(m) if m else "-", "-"] + (["-"] if baseline else [])
        lines.append(f"| *{method}* | reference | - | - | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
