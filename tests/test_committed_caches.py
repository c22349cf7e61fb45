"""Every committed `autodeco eval` cache is found by a rerun of the command that wrote it: its name is
the digest that `cache_key.cache_digest` computes from the run's settings (the results.json beside it,
or for an ablation's recipes the ablation config), so the documented commands regenerate nothing."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from autodeco_lp.evaluation.ablation import eval_args, read_recipes
from autodeco_lp.evaluation.cache_key import cache_path
from autodeco_lp.evaluation.problems import eval_problems
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("cache-*.jsonl"))
ABLATIONS = ("docs/ablation-gemma3.yaml", "docs/ablation-scale.yaml")  # those whose eval caches are committed


def _expected(settings: dict, task_options: dict | None) -> Path:
    _, problems = eval_problems(
        settings["task"], task_options, settings["dataset_seed"], settings["problems"], settings["exclude_data"]
    )
    return cache_path(settings["out"], settings, task_options, [p.question for p in problems]).relative_to(ROOT)


def test_every_committed_cache_is_named_by_its_runs_settings(monkeypatch):
    require("reasoning_gym")
    monkeypatch.chdir(ROOT)  # settings hold paths relative to the repository
    assert len(COMMITTED) >= 36
    named = set()
    for results in sorted((ROOT / "docs").rglob("results.json")):
        if any(results.parent.glob("cache-*.jsonl")):
            settings = json.loads(results.read_text())["settings"]
            settings["out"] = str(results.parent)
            named.add(_expected(settings, settings["task_options"]))
    for path in ABLATIONS:
        config = read_recipes(ROOT / path)
        for task_name, task in config["tasks"].items():
            for heads in [None, *(str(Path(config["out"]) / "fits" / name) for name in config["recipes"])]:
                args = asdict(eval_args(config, task_name, heads))
                args["out"] = str(ROOT / args["out"])
                named.add(_expected(args, task.get("options")))
    missing = sorted(map(str, named - set(COMMITTED)))
    assert not missing, f"a rerun would not find these caches (renamed by a fingerprint change?): {missing}"
    assert set(COMMITTED) <= named, sorted(map(str, set(COMMITTED) - named))  # no cache no command writes


@pytest.mark.parametrize("path", ABLATIONS)
def test_ablation_configs_still_read(path):
    assert read_recipes(ROOT / path)["recipes"]
