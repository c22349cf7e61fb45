"""Shared by the vLLM tests: the import guard, engine options and the HF reference.

Engines run in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) with a 1 GiB KV cache, fp32, eager,
max_model_len 512; each engine is started once per module. Under CI=true a missing vLLM fails the run.
"""

from __future__ import annotations

import os

import torch

from tests.conftest import require

require("vllm", module_level=True)  # skips this module locally without vLLM; fails under CI

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


from vllm import LLM, SamplingParams  # noqa: E402, F401 (re-exported to the test modules)

from autodeco_lp import AutoDeco  # noqa: E402
from autodeco_lp.vllm import hf_overrides, pop_trace  # noqa: E402, F401
from autodeco_lp.vllm.trace import trace_for  # noqa: E402

ENGINE = dict(dtype="float32", max_model_len=512, enforce_eager=True)
CHATS = [  # different prompt lengths in one batch
    [{"role": "user", "content": "What is 7 * 8?"}],
    [{"role": "user", "content": "Write a short poem about the sea, the wind and the sky at night."}],
    [{"role": "user", "content": "Name a colour."}],
]
NEW_TOKENS = 12


def hf_reference(model, heads, prompt_ids, completion_ids, **settings) -> torch.Tensor:
    """`(n, 2)` T and P of the HF `AutoDeco` processor for each completion token, teacher-forced."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with AutoDeco(model, heads, **settings) as autodeco, torch.no_grad():
        out = model(ids, output_hidden_states=True)
        start, end = len(prompt_ids) - 1, ids.shape[1] - 1  # the positions that chose each completion token
        t, p = autodeco.predict(out.hidden_states[-1][0, start:end], out.logits[0, start:end])
    return torch.stack([t, p], dim=-1)


def assert_trace_matches(llm_outputs, trace, model, heads, **settings):
    for out in llm_outputs:
        got = torch.tensor(trace_for(trace, out.request_id))  # (n, 2)
        want = hf_reference(model, heads, out.prompt_token_ids, out.outputs[0].token_ids, **settings)
        assert got.shape == want.shape == (len(out.outputs[0].token_ids), 2)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
