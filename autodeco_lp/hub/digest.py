"""Content digests of a base model: what decides its outputs, never where it lives.

Two entry points over one hashing rule (the config without private keys, then each tensor's name,
dtype, shape and bytes):

- `model_sha256(model)`: a model loaded in this process (the training cache fingerprint);
- `weights_sha256(name_or_path)`: a model's folder (or cached Hub snapshot) read tensor by tensor from
  its safetensors files without building the model (the evaluation cache key, for both engines: vLLM
  loads its own copy, so no model is in this process to hash).

The two give different digests for the same model (a loaded model holds tied and converted tensors
that the files do not); each is stable for its use. Measured on a shared 2-core CPU: SmolLM2-135M
0.9 s in fp32 (0.4 s in bf16), about 0.6 GB/s, so about half a minute for an 8B model in bf16.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

# Config keys of a saved config.json that record who wrote the file, not what the model computes.
_UNHASHED_CONFIG_KEYS = ("transformers_version",)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")  # what a model folder's weights are


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor of any dtype (bf16 included), on the CPU."""
    flat = tensor.detach().reshape(-1).contiguous().cpu()  # (numel,)
    return memoryview(flat.view(torch.uint8).numpy())


def _hash_config(digest, config: dict, unhashed: tuple[str, ...] = ()) -> None:
    kept = {k: v for k, v in config.items() if not k.startswith("_") and k not in unhashed}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode())


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
    digest.update(_tensor_bytes(tensor))


def model_sha256(model) -> str:
    """sha256 of what decides a loaded model's hidden states: its config and every tensor of its state dict.

    The config is hashed without its private keys (`_name_or_path`, ...), so the same model loaded
    from another folder has the same digest, and a folder overwritten with another model (or a
    fine-tune of the same architecture) has another."""
    digest = hashlib.sha256()
    _hash_config(digest, model.config.to_dict())
    seen: dict[tuple[int, int], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.numel())
        if key in seen and tensor.numel():  # tied to an earlier tensor (`lm_head` and the embeddings): its name only
            digest.update(f"\n{name} tied to {seen[key]}".encode())
            continue
        seen[key] = name
        _hash_tensor(digest, name, tensor)
    return digest.hexdigest()


def model_folder(name_or_path: str) -> Path:
    """The local folder of a model folder or Hub id (the Hub's cached snapshot, fetched if missing:
    what either engine would download to run it)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download  # noqa: PLC0415 (only for Hub ids)

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", *WEIGHT_PATTERNS]))
    except Exception as exc:  # noqa: BLE001 (huggingface_hub raises many kinds: all mean "not readable")
        raise ValueError(
            f"model {name_or_path!r} is neither a local folder nor a readable Hub repo ({exc}); pass a model "
            "folder, a packaged name (smollm2, gemma3), or a Hub id that is cached or reachable"
        ) from exc


def weights_sha256(name_or_path: str | Path) -> str:
    """sha256 of a model folder's (or Hub snapshot's) `config.json` and weights, read tensor by tensor in
    name order from its safetensors files (memory-mapped: one tensor in memory at a time), so a rewritten
    file of the same tensors keeps its digest; other weight files (`.bin`, `.gguf`, ...) by their bytes.

    Raises ValueError naming the folder when it holds no config.json or no weights."""
    from safetensors import safe_open  # noqa: PLC0415

    folder = model_folder(str(name_or_path))
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"model folder {folder} has no config.json: not a Hugging Face model folder")
    digest = hashlib.sha256()
    _hash_config(digest, json.loads(config_file.read_text(encoding="utf-8")), _UNHASHED_CONFIG_KEYS)
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern)})
    if not files:
        raise ValueError(f"model folder {folder} holds no weights ({', '.join(WEIGHT_PATTERNS)})")
    for file in files:
        digest.update(f"\n{file.name}\n".encode())
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as f:
                for name in sorted(f.keys()):
                    _hash_tensor(digest, name, f.get_tensor(name))
        else:
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()
