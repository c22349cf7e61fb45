"""`AutoDecoForCausalLM`: any vLLM decoder (held as `self.llm`) plus the AutoDeco heads.

One class for every architecture: the base class is resolved at construction time through
`vllm.ModelRegistry` from the model's own architecture (or `autodeco.base_architecture`), and
everything but `compute_logits` and `load_weights` is the base model's. Holding the base as
`llm` also gives the parameter names of the authors' merged checkpoints (`llm.*`).

`compute_logits(hidden (rows, H))` returns the base model's logits unchanged `(rows, V)` (softcap
and logit scale included, gathered over tensor-parallel ranks) and stages the heads' `(T, P)` for
the AutoDeco logits processor, which applies them in vLLM's sampler (`sampling.py`, `processors.py`).
The heads are plain `nn.Linear`s, replicated on every TP rank
(each rank computes them on the same replicated hidden states and gathered logits).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import torch
from torch import nn

from autodeco_lp.hub.registry import find_heads, load_registry
from autodeco_lp.inference.heads import AutoDecoHeads, check_heads_fit_model
from autodeco_lp.vllm import request_ids
from autodeco_lp.vllm.interfaces import check_installed
from autodeco_lp.vllm.options import ARCHITECTURE, RELEASED_ARCHITECTURE, RELEASED_MODEL_TYPE, AutoDecoVllmOptions
from autodeco_lp.vllm.released import base_architecture_for
from autodeco_lp.vllm.sampling import Staged, processors_built, stage
from autodeco_lp.vllm.startup import bound_cpu_kv_cache, heads_log_line, logger
from autodeco_lp.vllm.trace import TraceRecorder
from autodeco_lp.vllm.weights import BASE_PREFIX, load_base_weights


def _raw_config(model_config) -> dict[str, Any]:
    """The model's own config.json (before `hf_overrides`), or {} when it cannot be read."""
    from transformers import PretrainedConfig  # noqa: PLC0415 (heavy, only inside vLLM)

    try:
        config, _ = PretrainedConfig.get_config_dict(model_config.model, revision=model_config.revision)
    except (OSError, ValueError):
        return {}
    return config


def check_supported(vllm_config) -> None:
    """Refuse, with the fix, the vLLM set-ups where the heads' T and P could not reach the sampler."""
    if vllm_config.speculative_config is not None:
        raise ValueError(
            "AutoDeco does not support speculative decoding: the target model scores several positions per "
            "request and vLLM's rejection sampler does not take per-token temperatures. Remove "
            "`speculative_config` / `--speculative-config`."
        )
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        raise ValueError(
            "AutoDeco supports tensor parallelism but not pipeline parallelism "
            f"(pipeline_parallel_size={vllm_config.parallel_config.pipeline_parallel_size}); use "
            "--tensor-parallel-size instead."
        )
    if getattr(vllm_config.parallel_config, "enable_batch_sharded_sampling", False):
        raise ValueError(
            "AutoDeco does not support batch-sharded sampling (it computes logits without the model's "
            "compute_logits, so the heads never run); drop --enable-batch-sharded-sampling."
        )


def _own_architecture(raw: dict[str, Any]) -> str | None:
    """The base architecture the checkpoint's own config.json names (None when it names none)."""
    if raw.get("model_type") == RELEASED_MODEL_TYPE:
        try:
            return base_architecture_for(raw.get("base_model_type") or "", "config.json")
        except ValueError:  # no transformers architecture for it: `autodeco.base_architecture` has to say
            return None
    archs = [a for a in raw.get("architectures") or [] if a not in (ARCHITECTURE, RELEASED_ARCHITECTURE)]
    return archs[0] if archs else None


def _base_architecture(options: AutoDecoVllmOptions, hf_config, raw: dict[str, Any], supported: Collection[str]) -> str:
    """The vLLM architecture to wrap; `supported`: the architectures vLLM implements."""
    own = _own_architecture(raw)
    # `autodeco.base_architecture` from hf_overrides, else the one released.py set for a released config.
    chosen = options.base_architecture or (getattr(hf_config, "autodeco", None) or {}).get("base_architecture")
    # Another architecture with the same parameter names (Gemma for Llama) loads and changes the outputs.
    # Choosing is still needed for a config whose architecture vLLM lacks (a custom one), and vLLM's
    # Transformers backend runs the checkpoint's own modeling code, so it fits any architecture.
    if chosen and own in supported and chosen != own and not chosen.startswith("Transformers"):
        raise ValueError(
            f"`autodeco.base_architecture` is {chosen!r}, but the checkpoint's config.json describes a "
            f"{own!r} model; its weights would load into the wrong architecture and change the outputs. "
            f"Drop `base_architecture` from hf_overrides (or set it to {own!r})."
        )
    if not (chosen or own):
        raise ValueError(
            "AutoDeco cannot tell which architecture to wrap: the model's config.json names none. Pass "
            '`hf_overrides={"architectures": ["AutoDecoForCausalLM"], "autodeco": {"base_architecture": '
            '"LlamaForCausalLM"}}` (the vLLM architecture of the base model).'
        )
    return chosen or own


def _heads_source(options: AutoDecoVllmOptions, model_config, raw: dict[str, Any]) -> str:
    if options.heads:
        return options.heads
    if raw.get("model_type") == RELEASED_MODEL_TYPE:  # a released checkpoint carries its heads
        return str(model_config.model)
    for name in (model_config.served_model_name, model_config.model, raw.get("_name_or_path")):
        entry = find_heads(str(name)) if name else None
        if entry is not None:
            return entry.heads
    pairs = ", ".join(f"{e.base_model} -> {e.heads}" for e in load_registry())
    raise ValueError(
        f"no AutoDeco heads given for {model_config.model!r} and none registered for it. Pass "
        '`hf_overrides={"architectures": ["AutoDecoForCausalLM"], "autodeco": {"heads": "DIR or org/name"}}`; '
        f"registered pairs: {pairs}"
    )


class AutoDecoForCausalLM(nn.Module):
    """A vLLM text-generation model: the base model (`self.llm`) + AutoDeco heads (`self.autodeco_heads`)."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__()
        from vllm import ModelRegistry  # noqa: PLC0415 (optional dependency)
        from vllm.model_executor.models.utils import maybe_prefix  # noqa: PLC0415
        from vllm.platforms import current_platform  # noqa: PLC0415

        check_supported(vllm_config)
        bound_cpu_kv_cache(vllm_config.cache_config, current_platform.is_cpu())  # before the worker sizes it
        runner = "MRv2" if getattr(vllm_config, "use_v2_model_runner", False) else "V1"
        check_installed((f"{runner} sampling", "model"))
        model_config = vllm_config.model_config
        hf_config = model_config.hf_config
        options = AutoDecoVllmOptions.from_hf_config(hf_config)
        raw = _raw_config(model_config)
        arch = _base_architecture(options, hf_config, raw, ModelRegistry.get_supported_archs())
        base_cls, _ = ModelRegistry.resolve_model_cls([arch], model_config)
        if issubclass(base_cls, AutoDecoForCausalLM):
            raise ValueError(f"`autodeco.base_architecture` has to name the base model's architecture, not {arch!r}.")
        self.llm = base_cls(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "llm"))
        self.autodeco_options = options
        self.autodeco_heads_source = _heads_source(options, model_config, raw)
        self.autodeco_model_name = str(model_config.model)
        self.autodeco_hidden_size = hf_config.get_text_config().hidden_size
        self.autodeco_vocab_size = hf_config.get_text_config().vocab_size
        self.autodeco_trace = TraceRecorder(options.trace_max_tokens) if options.record_trace else None
        if options.record_trace:
            request_ids.install(runner == "MRv2")
        self.autodeco_checked_processor = False
        self.autodeco_check_weights = model_config.quantization is None  # vLLM checks quantized ones itself
        # Loaded in load_weights, on the base weights' device; not a parameter vLLM loads.
        self.autodeco_heads: AutoDecoHeads | None = None
        # The options' settings with a head the checkpoint lacks switched off (set with the heads).
        self.autodeco_settings = options.settings

    # -- what vLLM calls --

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds=None,
        **kwargs,
    ):
        return self.llm(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Base logits `(rows, V)`, unchanged; stages the heads' `(T, P)` `(rows,)` for the sampler."""
        logits = self.llm.compute_logits(hidden_states)
        if logits is None:  # a TP rank that does not receive the gathered logits: it does not sample
            return None
        if not self.autodeco_checked_processor:
            self._check_processor()
        with torch.no_grad():
            temperature, top_p = self.autodeco_settings.predict(self.autodeco_heads, hidden_states, logits)
        use_p = self.autodeco_settings.use_top_p_head  # off or absent: P = 1, the processor skips the sort
        stage(Staged(temperature, top_p if use_p else None, self.autodeco_trace))
        return logits

    def _check_processor(self) -> None:
        """The heads' T and P reach the sampler only through the logits processor: refuse to run without it."""
        if processors_built() == 0:
            raise RuntimeError(
                "AutoDeco: vLLM built no AutoDeco logits processor for this engine, so the heads' T and P would "
                "never be applied. Install autodeco-lp into this environment (pip install -e .), which registers "
                "it under the `vllm.logits_processors` entry point, or pass "
                'logits_processors=["autodeco_lp.vllm.processors:AutoDecoLogitsProcessor"] to the engine.'
            )
        self.autodeco_checked_processor = True

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str] | None:
        """Base weights (plain names, or `llm.*` in a merged checkpoint) go to the base model, checked
        complete and unambiguous (`weights.py`); the heads are read by `AutoDecoHeads.from_pretrained`."""
        loaded = load_base_weights(self.llm, weights, check=self.autodeco_check_weights)
        self._load_heads()
        return None if loaded is None else {BASE_PREFIX + name for name in loaded}

    def _load_heads(self) -> None:
        device = next(self.llm.parameters()).device
        heads = AutoDecoHeads.from_pretrained(
            self.autodeco_heads_source, revision=self.autodeco_options.revision, device=device
        )
        check_heads_fit_model(
            heads.config,
            self.autodeco_hidden_size,
            self.autodeco_vocab_size,
            self.autodeco_model_name,
            what=f"the heads {self.autodeco_heads_source!r}",
        )
        object.__setattr__(self, "autodeco_heads", heads.eval())  # kept out of named_parameters()
        # A head the checkpoint lacks is off (DecodingSettings.for_heads, as in the HF processor): heads fitted
        # without a top-p head stage no P, and neither engine runs that head or sorts the vocabulary for it.
        self.autodeco_settings = self.autodeco_options.settings.for_heads(heads)
        logger.info(heads_log_line(self.autodeco_heads_source, heads.config, self.autodeco_settings))

    def __getattr__(self, name: str):
        # Everything else (runner hooks such as make_empty_intermediate_tensors) is the base model's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or name == "llm":
                raise
            return getattr(super().__getattr__("llm"), name)
