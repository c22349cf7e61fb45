"""`autodeco eval --dtype`: bf16 runs the base model in bf16, keeps its own cache, and bad values are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from autodeco_lp.engines import factory
from autodeco_lp.evaluation import runner
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.cache_key import model_sha256_of, problems_sha256
from autodeco_lp.evaluation.runner import run_eval


def test_bf16_runs_the_model_in_bf16_and_never_shares_the_fp32_cache(small_eval, monkeypatch):
    dtypes = []
    real = factory.load_model

    def spy(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        dtypes.append(next(model.parameters()).dtype)
        return model, tokenizer

    monkeypatch.setattr(factory, "load_model", spy)
    fp32 = run_eval(EvalArgs(**small_eval, methods="greedy,autodeco"), progress=False)
    bf16 = run_eval(EvalArgs(**small_eval, methods="greedy,autodeco", dtype="bfloat16"), progress=False)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert bf16["settings"]["dtype"] == "bfloat16" and fp32["settings"]["dtype"] == "float32"
    caches = sorted(p.name for p in Path(small_eval["out"]).glob("cache-*.jsonl"))
    assert len(caches) == 2  # one per dtype: bf16 completions never answer for fp32 ones


def test_cache_key_hashes_every_setting_that_changes_completions_and_nothing_else(small_eval):
    args = EvalArgs(**small_eval, methods="greedy")
    evaluator = runner.Evaluator(args, None, progress=False)
    # The settings hashed, spelt out (not derived from the code's exclusion list, so a new option that
    # leaks into the fingerprint, or one left out of it, fails here); the model and the problems by content.
    hashed = (
        "heads", "task", "problems", "samples", "dataset_seed", "max_new_tokens", "chat", "shots",
        "exclude_data", "dtype", "backend",
    )  # fmt: skip
    fingerprint = {k: getattr(args, k) for k in hashed}
    fingerprint.update(
        task_options={},
        problems_sha256=problems_sha256(evaluator.task.problems, evaluator.problems),
        model_sha256=model_sha256_of(args.model),
    )
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    assert evaluator.store.path.name == f"cache-{digest}.jsonl"
    name = evaluator.store.path.name
    same = dict(methods="greedy,default", seeds="3", batch_size=7, oracle_from=None)
    assert runner.Evaluator(EvalArgs(**{**small_eval, **same}), None, progress=False).store.path.name == name
    for other in (dict(dtype="bfloat16"), dict(shots=1), dict(max_new_tokens=3)):
        changed = EvalArgs(**{**small_eval, "methods": "greedy", **other})
        assert runner.Evaluator(changed, None, progress=False).store.path.name != name, other


def test_unknown_dtype_is_refused_with_the_choices(small_eval):
    with pytest.raises(ValueError, match=r"`--dtype` has to be one of float32, bfloat16, but is 'fp16'"):
        EvalArgs(**small_eval, dtype="fp16")
