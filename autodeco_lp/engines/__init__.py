"""Samplers: one interface (`Sampler`) over both engines, hf (transformers' generate) and vllm, built by
`make_sampler` from the command's arguments. Importing this package starts no engine and imports no vLLM."""

from autodeco_lp.engines.base import Sampler, Seeding
from autodeco_lp.engines.decoding import Decoding
from autodeco_lp.engines.factory import BACKENDS, MODEL_DTYPES, check_dtype, choose_backend, make_sampler
from autodeco_lp.engines.hf_sampler import torch_device

__all__ = [
    "BACKENDS",
    "MODEL_DTYPES",
    "Decoding",
    "Sampler",
    "Seeding",
    "check_dtype",
    "choose_backend",
    "make_sampler",
    "torch_device",
]
