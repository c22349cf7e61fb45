"""AutoDeco on unmodified vLLM: a `vllm.general_plugins` entry point and one generic model class.

Installing `autodeco-lp` registers `register()` under `vllm.general_plugins`; vLLM calls it in
every process it starts. It registers the architecture `AutoDecoForCausalLM` (and the released
name `AutoDecoModelForCausalLM`) with `vllm.ModelRegistry.register_model`, and the released
config type `autodeco` with `transformers.AutoConfig.register`. Importing this package does not
import vLLM.

    from vllm import LLM, SamplingParams
    from autodeco_lp.vllm import hf_overrides
    llm = LLM("BASE_MODEL", hf_overrides=hf_overrides("HEADS_DIR_OR_HUB_ID"))
"""

from __future__ import annotations

from autodeco_lp.vllm.options import ARCHITECTURE, RELEASED_ARCHITECTURE, hf_overrides
from autodeco_lp.vllm.trace import pop_trace

__all__ = ["ARCHITECTURE", "hf_overrides", "pop_trace", "register"]

_MODEL_CLASS = "autodeco_lp.vllm.model:AutoDecoForCausalLM"


def register() -> None:
    """The `vllm.general_plugins` entry point (idempotent; vLLM may call it several times per process)."""
    from vllm import ModelRegistry  # noqa: PLC0415 (vLLM is optional; this runs only inside vLLM)

    from autodeco_lp.vllm.released import register_released_config  # noqa: PLC0415 (imports transformers)

    for arch in (ARCHITECTURE, RELEASED_ARCHITECTURE):
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, _MODEL_CLASS)
    register_released_config()
