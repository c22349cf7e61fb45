"""One engine start: an AutoDeco engine on a CPU, with no KV-cache size chosen, sizes its cache at
`CPU_KV_CACHE_GIB` (not vLLM's ~92% of the machine) and logs that and the heads it serves."""

from __future__ import annotations

import gc

import pytest

from autodeco_lp.vllm import startup
from autodeco_lp.vllm.startup import CPU_KV_CACHE_GIB
from tests.test_vllm_released import _random_heads, _tiny_base
from tests.vllm_support import ENGINE, LLM, hf_overrides  # noqa: I001 (skips, or fails under CI, without vLLM)

pytestmark = pytest.mark.vllm


def test_an_autodeco_engine_on_a_cpu_bounds_its_kv_cache_and_names_its_heads(tmp_path, monkeypatch):
    _, tokenizer = _tiny_base(tmp_path / "base")
    _random_heads(len(tokenizer)).save_pretrained(tmp_path / "heads")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)  # tests/vllm_support.py sets 1 GiB
    lines: list[str] = []
    # vLLM re-applies its logging config while the engine starts (handlers added here are dropped), so the
    # lines are taken at the call; vLLM's own handler prints them as well.
    monkeypatch.setattr(
        startup.logger, "info", lambda message, *args: lines.append(message % args if args else message)
    )
    # gpu_memory_utilization: vLLM's CPU worker refuses to start, before any model code runs, when less than
    # this share of the machine is free and no size is set; the default 0.92 fails on a machine others use.
    llm = LLM(
        str(tmp_path / "base"),
        hf_overrides=hf_overrides(str(tmp_path / "heads")),
        gpu_memory_utilization=0.05,
        **ENGINE,
    )
    cache = llm.llm_engine.vllm_config.cache_config
    blocks, block_size = cache.num_gpu_blocks, cache.block_size
    del llm
    gc.collect()
    per_token = 2 * 2 * 2 * 64 * 4  # K and V x 2 layers x 2 KV heads x head_dim 64 x fp32
    assert blocks * block_size * per_token == pytest.approx(CPU_KV_CACHE_GIB * 2**30, rel=0.01)
    assert any(f"KV cache bounded to {CPU_KV_CACHE_GIB} GiB on this CPU" in line for line in lines), lines
    heads_line = f"AutoDeco heads: {tmp_path / 'heads'} (hidden size 128; temperature head on, top-p head on;"
    assert any(line.startswith(heads_line) for line in lines), lines
