"""`autodeco eval ablation`: one fit per recipe, scored by the harness, resumable, cache shared."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from autodeco_lp.evaluation.ablation import read_recipes, run_ablation
from tests.test_training_fit import write_data


@pytest.fixture
def recipe_file(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl", rows=16)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(5)))
    config = {
        "out": str(tmp_path / "ablation"),
        "fit": {
            "model": str(tiny_model_dir),
            "data": str(data),
            "max_steps": 2,
            "mlp_hidden_size": 8,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "use_cpu": True,
            "save_steps": 0,
            "learning_rate": 1e-2,
        },
        "eval": {
            "problems": 5,
            "samples": 2,
            "seeds": "0,1",
            "max_new_tokens": 3,
            "dataset_seed": 3000,
            "backend": "hf",
        },
        "tasks": {"sums": {"task": str(task)}},
        "references": ["greedy", "static:0.5,1.0"],
        "baseline": "static:0.5,1.0",
        "recipes": {"released": {}, "no-drop": {"easy_token_drop": 0.0, "dft": False}},
    }
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ablation_fits_each_recipe_scores_it_and_resumes(recipe_file, monkeypatch):
    config = read_recipes(recipe_file)
    report = run_ablation(config, progress=False)
    out = recipe_file.parent / "ablation"
    assert set(report["recipes"]) == {"released", "no-drop"}
    assert report["recipes"]["no-drop"]["fit"]["overrides"] == {"dft": False, "easy_token_drop": 0.0}
    assert set(report["references"]["sums"]) == {"greedy", "static:0.5,1.0"}
    for name in ("released", "no-drop"):
        assert (out / "fits" / name / "autodeco_heads.safetensors").is_file()
        assert report["recipes"][name]["scores"]["sums"]["seeds"] == 2
    # The hidden-state cache was built once and hard-linked into the second recipe's folder.
    first = next((out / "fits" / "released" / "hidden_cache").rglob("*.npy"))
    second = out / "fits" / "no-drop" / "hidden_cache" / first.relative_to(out / "fits" / "released" / "hidden_cache")
    assert second.stat().st_ino == first.stat().st_ino
    # Each recipe minus the baseline reference, paired over the same problems.
    for name in ("released", "no-drop"):
        versus = report["recipes"][name]["vs_baseline"]["sums"]["pass@1"]
        expected = (
            report["recipes"][name]["scores"]["sums"]["pass@1"]
            - report["references"]["sums"]["static:0.5,1.0"]["pass@1"]
        )
        assert versus["mean"] == pytest.approx(expected) and versus["low"] <= versus["mean"] <= versus["high"]
    table = (out / "ablation.md").read_text()
    assert "| no-drop | dft=False, easy_token_drop=0.0 | 2 |" in table and "| *greedy* | reference |" in table
    assert "sums pass@1 - static:0.5,1.0" in table.splitlines()[0]
    # Rerunning fits nothing and generates nothing: the same report from the recipe summaries and caches.
    # Patched where they are looked up: ablation calls `fit`, the hf sampler `sample_completions`.
    import autodeco_lp.evaluation.ablation as ablation
    from autodeco_lp.engines import hf_sampler

    monkeypatch.setattr(ablation, "fit", lambda *a, **k: pytest.fail("refitted"))
    monkeypatch.setattr(hf_sampler, "sample_completions", lambda *a, **k: pytest.fail("regenerated"))
    again = run_ablation(config, progress=False)
    assert again["recipes"] == report["recipes"] and again["references"] == report["references"]


def test_recipe_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"out": "x", "fit": {}, "tasks": {}, "recipes": {"a": {"easy_drop": 0.1}}}))
    with pytest.raises(ValueError, match=r"recipe 'a' sets unknown fit options \['easy_drop'\]"):
        read_recipes(path)
    path.write_text(yaml.safe_dump({"out": "x", "fit": {}, "recipe": {}}))
    with pytest.raises(ValueError, match=r"unknown keys \['recipe'\], missing keys \['tasks', 'recipes'\]"):
        read_recipes(path)
    path.write_text(yaml.safe_dump({"out": "x", "fit": {}, "tasks": {}, "recipes": {}, "baseline": "autodeco"}))
    with pytest.raises(
        ValueError, match=r"baseline 'autodeco' is not one of the references \[\]; add it to references"
    ):
        read_recipes(path)
    path.write_text(yaml.safe_dump({"out": "x", "fit": {}, "recipe": {}}))
    from autodeco_lp.cli.main import autodeco

    result = CliRunner().invoke(autodeco, ["eval", "ablation", "--config", str(path)])
    assert result.exit_code != 0 and "unknown keys ['recipe']" in result.output


def test_ablation_table_cells_by_hand():
    from autodeco_lp.evaluation.ablation import ablation_table

    score = {
        "pass@1": 0.5,
        "pass@1_std": 0.025,
        "pass@k": {"1": 0.5, "4": 0.8125},
        "mean_temperature": 0.36,
        "mean_top_p": 1.0,
    }
    report = {
        "config": {"tasks": {"sums": {}}},
        "recipes": {
            "small": {
                "fit": {"overrides": {"num_train_epochs": 5}, "steps": 75, "seconds": 566.4},
                "scores": {"sums": score},
            }
        },
        "references": {"sums": {"greedy": {"pass@1": 0.333, "pass@1_std": 0.0, "pass@k": {"1": 0.333}}}},
    }
    lines = ablation_table(report).splitlines()
    assert lines[0] == "| recipe | changes | steps | fit s | sums pass@1 | sums pass@4 | sums T / P |"
    assert lines[2] == "| small | num_train_epochs=5 | 75 | 566 | 0.500 ± 0.025 | 0.812 | 0.36 / 1.00 |"
    assert lines[3] == "| *greedy* | reference | - | - | 0.333 ± 0.000 | - | - |"
    report["config"]["baseline"] = "greedy"
    interval = {"mean": 0.167, "low": 0.05, "high": 0.3}
    report["recipes"]["small"]["vs_baseline"] = {"sums": {"pass@1": interval}}
    lines = ablation_table(report).splitlines()
    assert lines[0].endswith("| sums T / P | sums pass@1 - greedy |")
    assert lines[2].endswith("| 0.36 / 1.00 | +0.167 [+0.050, +0.300] |")
    assert lines[3].endswith("| - | - | - |") and lines[3].count("|") == lines[0].count("|")
