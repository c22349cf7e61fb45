"""AutoDeco inside vLLM on the embedded model: parity with the HF processor, greedy identity, the server.

Two long-lived in-process engines (plain and AutoDeco); engines that are created and deleted live in
test_vllm_released.py, since deleting an in-process engine tears down state the others share.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time

import pytest

from autodeco_lp import AutoDecoHeads
from autodeco_lp.hub.models import SMOLLM2, load_model, packaged_model_dir
from autodeco_lp.hub.registry import find_heads
from tests.vllm_support import (  # noqa: I001 (first: skips, or fails under CI, without vLLM)
    CHATS,
    ENGINE,
    LLM,
    NEW_TOKENS,
    SamplingParams,
    assert_trace_matches,
    hf_overrides,
    pop_trace,
)

pytestmark = [pytest.mark.vllm, pytest.mark.integration]


# ---------------------------------------------------------------------------- the embedded model


@pytest.fixture(scope="module")
def smol_dir():
    return str(packaged_model_dir(SMOLLM2))


@pytest.fixture(scope="module")
def smol_heads_dir():
    return find_heads(SMOLLM2.model_id).heads


@pytest.fixture(scope="module")
def plain_llm(smol_dir):
    llm = LLM(smol_dir, seed=0, **ENGINE)
    yield llm
    del llm
    gc.collect()


@pytest.fixture(scope="module")
def autodeco_llm(smol_dir):
    # No `heads`: the registry entry of the embedded model is found from the folder name.
    llm = LLM(smol_dir, seed=0, hf_overrides=hf_overrides(record_trace=True), **ENGINE)
    yield llm
    del llm
    gc.collect()


@pytest.fixture(scope="module")
def hf_smol(smol_heads_dir):
    model, _ = load_model("smollm2")
    return model, AutoDecoHeads.from_pretrained(smol_heads_dir)


def test_trace_equals_hf_processor_batch_of_different_lengths(autodeco_llm, hf_smol):
    pop_trace(autodeco_llm)
    outs = autodeco_llm.chat(CHATS, SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS), use_tqdm=False)
    assert len({len(o.prompt_token_ids) for o in outs}) == 3
    assert_trace_matches(outs, pop_trace(autodeco_llm), *hf_smol)


def test_greedy_is_identical_to_plain_vllm(plain_llm, autodeco_llm):
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    plain = [o.outputs[0].token_ids for o in plain_llm.chat(CHATS, greedy, use_tqdm=False)]
    ours = [o.outputs[0].token_ids for o in autodeco_llm.chat(CHATS, greedy, use_tqdm=False)]
    assert plain == ours


def test_request_temperature_zero_is_greedy_and_scales_reach_the_trace(autodeco_llm, plain_llm, hf_smol):
    # temperature 0 = greedy whatever the heads say; a request temperature/top_p does not change the trace
    # (it holds the heads' values; the sampler gets T * request_T and clamp(P * request_P)).
    pop_trace(autodeco_llm)
    outs = autodeco_llm.chat(CHATS[:2], SamplingParams(temperature=0.5, top_p=0.9, max_tokens=6), use_tqdm=False)
    assert_trace_matches(outs, pop_trace(autodeco_llm), *hf_smol)


# ---------------------------------------------------------------------------- the OpenAI-compatible server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_autodeco_serve_answers_one_chat_request(smol_dir):
    from openai import OpenAI

    port = _free_port()
    cmd = [sys.executable, "-m", "autodeco_lp.cli.main", "serve", "--model", "smollm2", "--port", str(port)]
    cmd += ["--dtype", "float32", "--max-model-len", "512", "--", "--enforce-eager"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except Exception:
                assert server.poll() is None, f"server exited: {server.stdout.read()[-3000:]}"
                assert time.time() < deadline, "server did not come up in 300 s"
                time.sleep(2)
        reply = client.chat.completions.create(
            model=SMOLLM2.model_id, messages=CHATS[0], max_tokens=8, temperature=1.0, top_p=1.0
        )
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens >= 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
