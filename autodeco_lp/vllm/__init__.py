"""AutoDeco on unmodified vLLM: two entry points, one generic model class, one logits processor.

Installing `autodeco-lp` registers `register()` under `vllm.general_plugins`; vLLM calls it in
every process it starts. It registers the architecture `AutoDecoForCausalLM` (and the released
name `AutoDecoModelForCausalLM`) with `vllm.ModelRegistry.register_model`, and the released
config type `autodeco` with `transformers.AutoConfig.register`. It also registers
`processors.AutoDecoLogitsProcessor` under `vllm.logits_processors`, which both of vLLM's model
runners (V1 and Model Runner V2) load into every engine: it applies the heads' T and P on AutoDeco
engines and does nothing on others. Importing this package does not import vLLM.

    from vllm import LLM, SamplingParams
    from autodeco_lp.vllm import hf_overrides
    llm = LLM("BASE_MODEL", hf_overrides=hf_overrides("HEADS_DIR_OR_HUB_ID"))
"""

from __future__ import annotations

import os

from autodeco_lp.vllm.options import ARCHITECTURE, RELEASED_ARCHITECTURE, hf_overrides
from autodeco_lp.vllm.startup import CPU_KV_CACHE_GIB
from autodeco_lp.vllm.trace import pop_trace

__all__ = ["ARCHITECTURE", "hf_overrides", "in_process_engines", "pop_trace", "register"]

_MODEL_CLASS = "autodeco_lp.vllm.model:AutoDecoForCausalLM"


def in_process_engines() -> None:
    """Set (unless already set) what our own `vllm.LLM` engines need; call it before importing vLLM.

    - `VLLM_ENABLE_V1_MULTIPROCESSING=0`: engines in this process, so `pop_trace` calls a function
      (no pickled function to a worker) and an engine can be deleted and replaced;
    - `VLLM_CPU_KVCACHE_SPACE=4`: 4 GiB of KV cache per engine on a CPU, plain engines included (vLLM's
      default takes most of the memory, which a second engine then lacks; AutoDeco engines get this
      bound without it, see `startup.bound_cpu_kv_cache`);
    Both model runners serve AutoDeco, so the runner is vLLM's own choice.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))


def register() -> None:
    """The `vllm.general_plugins` entry point (idempotent; vLLM may call it several times per process)."""
    from vllm import ModelRegistry  # noqa: PLC0415 (vLLM is optional; this runs only inside vLLM)

    from autodeco_lp.vllm.released import register_released_config  # noqa: PLC0415 (imports transformers)

    for arch in (ARCHITECTURE, RELEASED_ARCHITECTURE):
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, _MODEL_CLASS)
    register_released_config()
