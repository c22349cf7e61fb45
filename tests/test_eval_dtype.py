"""`autodeco eval --dtype`: bf16 runs the base model in bf16, keeps its own cache, and bad values are refused."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from autodeco_lp.evaluation import runner
from autodeco_lp.evaluation.runner import EvalArgs, run_eval


def test_bf16_runs_the_model_in_bf16_and_never_shares_the_fp32_cache(small_eval, monkeypatch):
    dtypes = []
    real = runner.load_model

    def spy(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        dtypes.append(next(model.parameters()).dtype)
        return model, tokenizer

    monkeypatch.setattr(runner, "load_model", spy)
    fp32 = run_eval(EvalArgs(**small_eval, methods="greedy,autodeco"), progress=False)
    bf16 = run_eval(EvalArgs(**small_eval, methods="greedy,autodeco", dtype="bfloat16"), progress=False)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert bf16["settings"]["dtype"] == "bfloat16" and fp32["settings"]["dtype"] == "float32"
    caches = sorted(p.name for p in (runner.Path(small_eval["out"])).glob("cache-*.jsonl"))
    assert len(caches) == 2  # one per dtype: bf16 completions never answer for fp32 ones


def test_fp32_cache_key_is_unchanged_by_the_dtype_option(small_eval):
    # Caches written before --dtype existed must stay valid for float32: the fingerprint is the one
    # those versions computed (settings without methods/seeds/out/batch_size/device/shots, + questions).
    args = EvalArgs(**small_eval, methods="greedy")
    evaluator = runner.Evaluator(args, None, progress=False)
    # The fields those versions hashed, spelt out (not derived from today's exclusion list, so a new
    # option that leaks into the fingerprint fails here).
    hashed = ("model", "heads", "task", "problems", "samples", "dataset_seed", "max_new_tokens", "chat", "exclude_data")
    old = {k: getattr(args, k) for k in hashed}
    old.update(task_options={}, questions=[p.question for p in evaluator.problems])
    digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    assert evaluator.store.path.name == f"cache-{digest}.jsonl"
    bf16 = runner.Evaluator(EvalArgs(**small_eval, methods="greedy", dtype="bfloat16"), None, progress=False)
    assert bf16.store.path.name != evaluator.store.path.name


def test_unknown_dtype_is_refused_with_the_choices(small_eval):
    with pytest.raises(ValueError, match=r"`--dtype` has to be one of float32, bfloat16, but is 'fp16'"):
        EvalArgs(**small_eval, dtype="fp16")
