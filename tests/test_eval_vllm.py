"""`autodeco eval --backend vllm` against the HF backend on the embedded model.

The backends must agree: identical greedy completions, pass@1 within sampling error (a paired
bootstrap interval over problems that contains 0) for a static setting and for AutoDeco, and the
same mean T from the heads. The vLLM run is a subprocess (it starts and deletes engines, which
breaks other in-process engines), and a killed vLLM run resumes to the same completions whatever
its batch size (per-sample seeds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tests.vllm_support  # noqa: F401 (skips without vLLM locally, fails under CI)
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.compare import compare_reports
from autodeco_lp.evaluation.runner import run_eval
from autodeco_lp.tasks.problems import parse_task_options

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

TASK_OPTIONS = ("min_digits=1", "max_digits=1")
# AutoDeco first: greedy then runs on the AutoDeco engine, so the run starts two engines, not three.
METHODS = "autodeco,greedy,meanshift,static:0.5,1.0"
COMMON = dict(model="smollm2", task="reasoning_gym:products", problems=16, samples=4, seeds="0", max_new_tokens=24)


def _vllm_eval(out: Path, methods: str = METHODS, batch_size: int | None = None) -> dict:
    argv = [str(Path(sys.executable).parent / "autodeco"), "eval", "--out", str(out)]  # --backend auto: vllm
    argv += ["--methods", methods, *(f"--{k.replace('_', '-')}={v}" for k, v in COMMON.items())]
    argv += [arg for option in TASK_OPTIONS for arg in ("--task-option", option)]
    if batch_size:
        argv += ["--batch-size", str(batch_size)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "--backend auto: vllm" in done.stderr  # the command says which engine auto chose
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["backend"] == "vllm"  # what auto chose, recorded
    return report


def _records(out: Path) -> dict[tuple, dict]:
    (cache,) = out.glob("cache-*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    return {(r["key"].split("@")[0], r["seed"], r["index"]): r for r in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    vllm = _vllm_eval(root / "vllm")
    args = EvalArgs(**COMMON, methods=METHODS, out=str(root / "hf"), backend="hf")
    hf = run_eval(args, parse_task_options(TASK_OPTIONS), False)
    return root, vllm, hf


def test_greedy_completions_are_identical(runs):
    root, _, _ = runs
    vllm, hf = _records(root / "vllm"), _records(root / "hf")
    greedy = sorted(k for k in hf if k[0] == "greedy")
    assert len(greedy) == COMMON["problems"]
    assert [vllm[k]["texts"] for k in greedy] == [hf[k]["texts"] for k in greedy]


def test_pass_at_1_agrees_within_sampling_error_and_heads_give_the_same_mean_t(runs):
    _, vllm, hf = runs
    comparison = compare_reports(vllm, hf, ["autodeco", "static:0.5,1.0", "meanshift"])
    for name, diff in comparison.items():
        assert diff["pass@1"]["low"] <= 0 <= diff["pass@1"]["high"], (name, diff["pass@1"])
    # The trace from the vLLM plugin: the heads' mean T over the sampled tokens, as on the HF path.
    v, h = vllm["methods"]["autodeco"], hf["methods"]["autodeco"]
    assert abs(v["mean_temperature"] - h["mean_temperature"]) < 0.02, (v["mean_temperature"], h["mean_temperature"])
    assert vllm["methods"]["meanshift"]["temperature"] == pytest.approx(v["mean_temperature"], abs=1e-3)
    assert vllm["methods"]["greedy"].get("mean_temperature") is None  # greedy on the AutoDeco engine: no trace


def test_a_killed_run_resumes_to_the_same_completions_at_any_batch_size(runs):
    root, _, _ = runs
    resumed = root / "resumed"
    resumed.mkdir()
    (cache,) = (root / "vllm").glob("cache-*.jsonl")
    lines = cache.read_text().splitlines(keepends=True)
    # The kill: AutoDeco's last problems and every static record are lost.
    kept = [line for line in lines if json.loads(line)["key"].startswith("greedy")]
    kept += [line for line in lines if json.loads(line)["key"].startswith("autodeco")][:5]
    (resumed / cache.name).write_text("".join(kept))
    _vllm_eval(resumed, methods="autodeco,static:0.5,1.0", batch_size=8)  # 2 problems x 4 samples per call
    want, got = _records(root / "vllm"), _records(resumed)
    regenerated = [k for k in want if k[0] in ("autodeco:T=1,P=1", "static:0.500,1.000")]
    assert len(regenerated) == 2 * COMMON["problems"]
    assert [got[k]["texts"] for k in regenerated] == [want[k]["texts"] for k in regenerated]
