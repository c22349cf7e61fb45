"""The benchmark scripts still run (tiny sizes; their numbers are never asserted: timings live in
benchmarks, not in tests)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_bench


def test_bench_loss_runs_at_a_tiny_size():
    args = ["--positions", "32", "--vocab", "128", "300", "--hidden", "16", "--chunk", "8", "--repeats", "1"]
    out = run_bench("bench_loss.py", *args, timeout=300)
    for line in ("naive: peak", "exact: peak", "topk: peak", "topk vs exact:", "exact vs naive:"):
        assert line in out.stdout, out.stdout


def test_bench_fit_runs_both_losses_at_a_tiny_size(tiny_model_dir, tmp_path):
    from tests.test_training_fit import write_data

    data = write_data(tmp_path / "train.jsonl", rows=12)
    args = ["--data", str(data), "--model", str(tiny_model_dir), "--epochs", "2", "--rows", "8", "--batch-size", "4"]
    out = run_bench("bench_fit.py", *args, timeout=300)
    assert "rows=8" in out.stdout and "steps/epoch=2" in out.stdout, out.stdout
    for line in ("--soft-top-p exact: cache build", "--soft-top-p topk: cache build", "cached epochs, exact/topk:"):
        assert line in out.stdout, out.stdout
    assert out.stdout.count("streamed/cached") == 4, out.stdout


def test_bench_eval_runs_at_a_tiny_size(tiny_model_dir):
    args = ["--model", str(tiny_model_dir), "--batch-sizes", "2", "3", "--new-tokens", "2", "--repeats", "1"]
    out = run_bench("bench_eval.py", *args, timeout=300)
    for line in ("float32 batch    2:", "bfloat16 batch    3:"):
        assert line in out.stdout, out.stdout


def test_bench_eval_compiled_rows_agree_with_eager(tiny_model_dir):
    """--hf-compile: a static cache with a compiled forward decodes the same greedy tokens as eager
    decoding (the bench checks it before timing) and gets its own rows."""
    args = ["--model", str(tiny_model_dir), "--dtypes", "float32", "--batch-sizes", "2", "--new-tokens", "3"]
    out = run_bench("bench_eval.py", *args, "--repeats", "1", "--hf-compile", timeout=600)
    assert "hf+compile float32 batch 2: greedy identical to eager in 2 of 2 rows" in out.stdout, out.stdout
    assert re.search(r"hf\+compile   float32 batch    2: +[\d.]+ tok/s", out.stdout), out.stdout
    assert re.search(r"  hf   float32 batch    2: +[\d.]+ tok/s", out.stdout), out.stdout


def test_bench_sort_runs_at_a_tiny_size():
    args = ["--vocab", "300", "--batch-sizes", "1", "3", "--repeats", "2"]
    out = run_bench("bench_sort.py", *args, timeout=300)
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "3"] and all(len(r) == 7 for r in rows), out.stdout


@pytest.mark.integration
def test_compare_heads_finds_no_difference_between_the_same_heads():
    heads = "heads/smollm2-135m-instruct"
    args = ["--data", f"{heads}/train.jsonl", "--max-rows", "3", "--heads", f"a={heads}", f"b={heads}"]
    args += ["--by-token", "3"]
    out = run_bench("compare_heads.py", *args, timeout=600)
    # Per gold token: the same heads give the same means, and the base probability is a probability.
    line = r"^gold .* \(base p ([\d.]+)\): a (T [\d.]+ P [\d.]+)   b (T [\d.]+ P [\d.]+)$"
    per_token = re.findall(line, out.stdout, re.M)
    assert len(per_token) == 3 and all(0 <= float(p) <= 1 and a == b for p, a, b in per_token), out.stdout
    assert "a vs b: mean |dT| 0.0000   mean |dP| 0.0000   corr(T) 1.0000" in out.stdout, out.stdout
    # Each heads' line carries its 5 / 50 / 95% quantiles of T (in (0, 2)) and P (in (0, 1)), in order.
    quantiles = re.findall(r"\(5/50/95%: ([\d.]+) / ([\d.]+) / ([\d.]+)\)", out.stdout)
    assert len(quantiles) == 4, out.stdout
    for index, triple in enumerate(quantiles):
        low, mid, high = map(float, triple)
        assert 0.0 <= low <= mid <= high <= (2.0 if index % 2 == 0 else 1.0), out.stdout


@pytest.mark.integration
def test_bench_loss_runs_on_the_embedded_models_logits():
    args = ["--logits", "smollm2", "--positions", "32", "--vocab", "49152", "300", "--variants", "exact", "topk"]
    out = run_bench("bench_loss.py", *args, "--repeats", "1", "--chunk", "16", timeout=900)
    assert out.stdout.count("topk vs exact:") == 2 and "V=300" in out.stdout, out.stdout


def test_bench_gpu_runs_at_a_tiny_size():
    """The GPU benchmark's three parts on a CPU-sized random model: counts (no arm syncs), generate rows."""
    args = ["--preset", "small", "--hidden", "32", "--layers", "1", "--vocab", "256", "--batch-sizes", "1", "2"]
    out = run_bench("bench_gpu.py", *args, "--new-tokens", "2", "--repeats", "1", "--count-steps", "2",
                    "--step-repeats", "0", timeout=300)  # fmt: skip
    assert "preset=small hidden=32 layers=1 vocab=256" in out.stdout, out.stdout
    counts = re.findall(
        r"^ +[12] +(static|same-filter|autodeco|autodeco\+trace) +[\d.]+ +[\d.]+ +([\d.]+)$", out.stdout, re.M
    )
    assert len(counts) == 8 and all(float(syncs) == 0 for _, syncs in counts), out.stdout
    rows = re.findall(
        r"^ +([12]) +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+-[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+-[\d.]+ +n/a", out.stdout, re.M
    )
    assert rows == ["1", "2"], out.stdout


@pytest.mark.integration  # compiles the step with inductor for two batch sizes (~30 s on 2 cores)
def test_bench_step_times_every_arm_and_the_compiled_step():
    args = ["--preset", "small", "--hidden", "32", "--layers", "1", "--vocab", "256", "--batch-sizes", "1", "2"]
    out = run_bench("bench_step.py", *args, "--steps", "2", "--repeats", "2", "--arms", "autodeco", timeout=600)
    times = re.findall(r"^ +([12]) +[\d.]+" + r" +([\d.]+) +([\d.]+)" * 4 + "$", out.stdout, re.M)
    assert [t[0] for t in times] == ["1", "2"], out.stdout
    assert all(float(t[4]) == 1.0 for t in times), out.stdout  # same-filter is the reference column
