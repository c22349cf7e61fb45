"""What an AutoDeco engine decides and says when it starts: the CPU KV-cache bound and the heads it serves.

Both run inside vLLM's worker (from `AutoDecoForCausalLM`), so `autodeco serve`, `vllm serve` and
`vllm.LLM(..., hf_overrides=hf_overrides(...))` get them alike. The lines go to the logger
`vllm.autodeco_lp`, a child of vLLM's own `vllm` logger: they are printed with vLLM's format and level
(`VLLM_LOGGING_LEVEL=WARNING` hides them with vLLM's INFO lines).
"""

from __future__ import annotations

import logging

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.inference.settings import DecodingSettings

logger = logging.getLogger("vllm.autodeco_lp")

# KV cache of an AutoDeco engine on a CPU unless the user chose a size. Without a size, vLLM's CPU
# worker takes up to 92% of the machine's memory for it (`gpu_memory_utilization` = 0.92 applies to the
# RAM there: ~20 GiB of 23.5 for a 135M model). 4 GiB hold ~90k tokens of SmolLM2-135M in fp32
# (2 x 30 layers x 3 KV heads x 64 x 4 bytes = 46 KB per token), enough for a server's batch.
CPU_KV_CACHE_GIB = 4
GIB = 1 << 30


def bound_cpu_kv_cache(cache_config, on_cpu: bool) -> int | None:
    """Set `cache_config.kv_cache_memory_bytes` to `CPU_KV_CACHE_GIB` GiB on a CPU where nothing chose it.

    A size the user chose is kept: `kv_cache_memory_bytes=` of `vllm.LLM`, `--kv-cache-memory-bytes`, or
    `VLLM_CPU_KVCACHE_SPACE` (GiB; vLLM's CPU platform copies it into `kv_cache_memory_bytes` before the
    worker starts). The worker reads the field after the model is built, when it sizes the cache.
    Returns the bytes set here, or None when nothing was changed (a GPU, or a chosen size).
    """
    if not on_cpu or cache_config.kv_cache_memory_bytes is not None:
        return None
    cache_config.kv_cache_memory_bytes = CPU_KV_CACHE_GIB * GIB
    logger.info(kv_cache_log_line(cache_config.kv_cache_memory_bytes))
    return cache_config.kv_cache_memory_bytes


def kv_cache_log_line(size_bytes: int) -> str:
    return (
        f"AutoDeco: KV cache bounded to {size_bytes / GIB:g} GiB on this CPU (vLLM's own default takes up to 92% "
        "of the memory); choose the size with kv_cache_memory_bytes=... (vllm.LLM), --kv-cache-memory-bytes "
        "(vllm serve, or after -- in autodeco serve) or VLLM_CPU_KVCACHE_SPACE=GIB"
    )


def heads_log_line(source: str, config: AutoDecoConfig, settings: DecodingSettings) -> str:
    """One line naming the heads an engine serves: where from, their width, which head applies, the scales.

    A head applies when the checkpoint has it and the settings leave it switched on.
    """

    def state(in_checkpoint: bool, switched_on: bool) -> str:
        if not in_checkpoint:
            return "off (not in the checkpoint)"
        return "on" if switched_on else "off (switched off)"

    temperature = state(config.enable_temperature_head, settings.use_temperature_head)
    top_p = state(config.enable_top_p_head, settings.use_top_p_head)
    return (
        f"AutoDeco heads: {source} (hidden size {config.hidden_size}; temperature head {temperature}, "
        f"top-p head {top_p}; temperature_scale {settings.temperature_scale:g}, "
        f"top_p_scale {settings.top_p_scale:g})"
    )
