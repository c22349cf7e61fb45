"""Final hidden states of the supervised positions, from the frozen base model; and their disk cache.

The base is frozen, so its hidden states never change during training. The cache runs it once
and keeps, per example, the `(n_targets, H)` states that feed `lm_head` at the positions whose
next token is a target, in `.npy` files read back memory-mapped. Every later epoch runs only
`lm_head` + heads. Storage is fp16 (bf16 for bf16 models, kept as raw 16-bit words because numpy
has no bf16): 2 * H bytes per target token, ~1.1 KB for SmolLM2.

`hidden_states(spec, ...)` is the one entry point: it opens the cache in `output_dir/hidden_cache`
when its fingerprint matches `spec`, builds it otherwise, and falls back to running the base model
on every step (`StreamedStates`) under `--no-cache` or when the cache would not fit. The
fingerprint holds the *contents* that decide the states: a digest of the model's config and
weights (not its path: a folder overwritten with another model gets a new cache), the model's
dtype, and a digest of the tokenised examples (so a new tokenizer or chat template counts too).

With several processes each one computes the examples `id % world_size == rank` into its own
part file; every process then reads all parts, so `output_dir` must be on a shared file system
(it is, on one machine). Use `--no-cache` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from autodeco_lp.hub.atomic import write_text
from autodeco_lp.training.data import Example

CACHE_DIR_NAME = "hidden_cache"
BUILD_DIR_NAME = f".{CACHE_DIR_NAME}.build"  # the cache while it is built; renamed once complete
META_NAME = "cache_meta.json"
CACHE_VERSION = 2  # 2: content fingerprints (model weights, tokenised examples) instead of a path and a file hash


def _pad_right(examples: list[Example], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def supervised_hidden_states(
    model, examples: list[Example], pad_id: int, sharded: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example, `(hidden (n, H), labels (n,))` for the positions whose next token is a target.

    Uses the decoder stack (`model.get_decoder()`), whose output is exactly `lm_head`'s input,
    so no `(B, S, V)` logits are ever computed. A model sharded by FSDP or DeepSpeed must be
    called through its wrapper (`sharded=True`): then the last entry of `hidden_states` (the
    same tensor) is read and `logits_to_keep=1` keeps the logits at one position.
    Right padding: causal attention keeps real tokens blind to the pads after them.
    """
    device = next(model.parameters()).device
    ids, mask = _pad_right(examples, pad_id, device)
    if sharded:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        hidden = out.hidden_states[-1]  # (B, S, H)
    else:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, S, H)
    out = []
    for row, e in enumerate(examples):
        targets = torch.tensor(e.loss_mask[1:], device=device)  # (S_i - 1,): position t predicts t + 1
        positions = targets.nonzero().squeeze(-1)  # (n,)
        labels = torch.tensor(e.input_ids[1:], device=device)[positions]  # (n,)
        out.append((hidden[row, positions], labels))
    return out


def storage_dtype(model_dtype: torch.dtype) -> tuple[torch.dtype, np.dtype]:
    """(torch dtype the states are rounded to, numpy dtype they are stored as)."""
    if model_dtype == torch.bfloat16:
        return torch.bfloat16, np.dtype(np.uint16)
    return torch.float16, np.dtype(np.float16)


def cache_size_bytes(num_targets: int, hidden_size: int) -> int:
    return num_targets * hidden_size * 2


def build_part(
    folder: Path,
    model,
    examples: list[Example],
    ids: list[int],
    part_name: str,
    pad_id: int,
    batch_size: int,
    progress=None,
    hidden_size: int | None = None,
    dtype: torch.dtype | None = None,
    sharded: bool = False,
    min_batches: int = 0,
) -> None:
    """Write the hidden states and labels of `examples[ids]` to `folder/part_name.{hidden,labels,index}.npy`.

    A sharded model (FSDP / DeepSpeed ZeRO-3) runs collectives in every forward, so every process
    must make the same number of calls: `min_batches` pads this one with repeat forwards whose
    output is discarded.
    """
    hidden_size = hidden_size or model.get_output_embeddings().weight.shape[1]
    torch_dtype, np_dtype = storage_dtype(dtype or next(model.parameters()).dtype)
    total = sum(examples[i].num_targets for i in ids)
    folder.mkdir(parents=True, exist_ok=True)
    hidden_file = np.lib.format.open_memmap(
        folder / f"{part_name}.hidden.npy", mode="w+", dtype=np_dtype, shape=(total, hidden_size)
    )
    labels = np.zeros(total, dtype=np.int64)
    index = np.zeros((len(ids), 3), dtype=np.int64)  # (example id, start row, stop row)
    row = 0
    # Longest first keeps padding low and shows the memory peak at once.
    order = sorted(range(len(ids)), key=lambda k: -len(examples[ids[k]].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        states = supervised_hidden_states(model, [examples[ids[k]] for k in chunk], pad_id, sharded)
        for k, (h, y) in zip(chunk, states):
            n = h.shape[0]
            stored = h.to(torch_dtype).cpu()
            hidden_file[row : row + n] = (stored.view(torch.uint16) if np_dtype == np.uint16 else stored).numpy()
            labels[row : row + n] = y.cpu().numpy()
            index[k] = (ids[k], row, row + n)
            row += n
        if progress is not None:
            progress.update(len(chunk))
    for _ in range(math.ceil(len(order) / batch_size), min_batches):
        supervised_hidden_states(model, [examples[ids[0] if ids else 0]], pad_id, sharded)
    hidden_file.flush()
    del hidden_file
    np.save(folder / f"{part_name}.labels.npy", labels)
    np.save(folder / f"{part_name}.index.npy", index)


def write_meta(staging: Path, meta: dict) -> None:
    write_text(staging / META_NAME, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def examples_sha256(examples: Sequence[Example]) -> str:
    """sha256 of the tokenised examples in order (their ids and loss masks): what the cache's rows are."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(len(e.input_ids).to_bytes(8, "little"))
        digest.update(np.asarray(e.input_ids, dtype="<i8").tobytes())
        digest.update(np.asarray(e.loss_mask, dtype=np.uint8).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """Which hidden states a fit needs and how to get them: everything `hidden_states` reads but the model.

    `examples` are every example the fit reads, by id (with `--control-commands`, the plain rows and
    then each command version). `model_sha256` is `model_sha256(model)` of the unsharded model.
    """

    output_dir: Path
    examples: Sequence[Example]
    model_sha256: str
    dtype: torch.dtype  # the base model's; storage rounds to 16 bits (`storage_dtype`)
    hidden_size: int
    pad_id: int
    enabled: bool  # --cache; off: every step runs the base model
    batch_size: int  # examples per base-model forward while building
    max_bytes: float  # --cache-max-gb, in bytes
    world_size: int
    sharded: bool  # the base model is sharded by FSDP / DeepSpeed: forwards run through its wrapper

    @property
    def folder(self) -> Path:
        return self.output_dir / CACHE_DIR_NAME

    @property
    def size_bytes(self) -> int:
        return cache_size_bytes(sum(e.num_targets for e in self.examples), self.hidden_size)

    @cached_property
    def fingerprint(self) -> dict:
        """What a cache on disk has to match to be reused (its `cache_meta.json` holds it)."""
        return {
            "version": CACHE_VERSION,
            "model_sha256": self.model_sha256,
            "dtype": str(self.dtype),
            "examples_sha256": examples_sha256(self.examples),
            "examples": len(self.examples),
            "targets": sum(e.num_targets for e in self.examples),
            "world_size": self.world_size,
        }


class StreamedStates:
    """The read side without a cache: every call runs the base model over the examples asked for."""

    def __init__(self, model, examples: Sequence[Example], pad_id: int) -> None:
        self.model, self.examples, self.pad_id = model, examples, pad_id

    def batch(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`[(hidden (n_i, H), labels (n_i,)) for i in ids]`, from one padded forward."""
        return supervised_hidden_states(self.model, [self.examples[i] for i in ids], self.pad_id)


def hidden_states(
    spec: CacheSpec,
    model,
    processes,
    register: Callable[..., None] = lambda *names: None,
    progress: bool = False,
) -> HiddenStateCache | StreamedStates:
    """The hidden states `spec` describes: the cache in `spec.folder` when its fingerprint matches, else
    built now; streamed from `model` under `--no-cache` or when the cache would not fit.

    `model` is the base model as forwards run (its FSDP / DeepSpeed wrapper when `spec.sharded`).
    `processes` is the run's `accelerate.Accelerator` (`num_processes`, `process_index`,
    `is_main_process`, `wait_for_everyone`); every process calls this. `register(*names)` is called on the
    main process before it writes those names into `spec.output_dir` (the output folder's manifest).
    """
    if not spec.enabled:
        if spec.sharded:
            raise ValueError(
                "a base model sharded by FSDP / DeepSpeed trains from the hidden-state cache only; drop --no-cache."
            )
        return StreamedStates(model, spec.examples, spec.pad_id)
    size, free = spec.size_bytes, shutil.disk_usage(spec.output_dir).free
    if size > spec.max_bytes or size > 0.9 * free:
        if spec.sharded:
            raise ValueError(
                f"the hidden-state cache needs {size / 1e9:.1f} GB; raise --cache-max-gb or free disk space."
            )
        warnings.warn(
            f"the hidden-state cache would take {size / 1e9:.1f} GB (budget --cache-max-gb {spec.max_bytes / 1e9:g}, "
            f"{free / 1e9:.1f} GB free); streaming through the base model instead.",
            stacklevel=3,
        )
        return StreamedStates(model, spec.examples, spec.pad_id)
    if not matches(spec.folder, spec.fingerprint):
        _build(spec, model, processes, register, progress)
    return HiddenStateCache(spec.folder)


def _build(spec: CacheSpec, model, processes, register: Callable[..., None], progress: bool) -> None:
    """Every process writes its part into the build folder; the main one renames it into place once complete."""
    build = spec.output_dir / BUILD_DIR_NAME
    if processes.is_main_process:
        register(CACHE_DIR_NAME, BUILD_DIR_NAME)
        shutil.rmtree(spec.folder, ignore_errors=True)  # a stale cache (or hard links to another run's)
        shutil.rmtree(build, ignore_errors=True)
    processes.wait_for_everyone()
    rank, world = processes.process_index, spec.world_size
    assert processes.num_processes == world, "the spec was made for another process count"
    mine = [i for i in range(len(spec.examples)) if i % world == rank]
    most = math.ceil(len(range(0, len(spec.examples), world)) / spec.batch_size)  # rank 0 has the most
    show = progress and processes.is_main_process
    with tqdm(total=len(mine), desc="caching hidden states", disable=not show, file=sys.stderr) as bar:
        build_part(
            build,
            model,
            spec.examples,
            mine,
            f"part-{rank}",
            spec.pad_id,
            spec.batch_size,
            bar,
            hidden_size=spec.hidden_size,
            dtype=spec.dtype,
            sharded=spec.sharded,
            min_batches=most,
        )
    processes.wait_for_everyone()
    if processes.is_main_process:
        meta = {
            "fingerprint": spec.fingerprint,
            "parts": [f"part-{r}" for r in range(world)],
            "storage_dtype": str(storage_dtype(spec.dtype)[0]).removeprefix("torch."),
            "hidden_size": spec.hidden_size,
        }
        write_meta(build, meta)
        build.rename(spec.folder)  # the cache exists only once complete
    processes.wait_for_everyone()


class HiddenStateCache:
    """Read side: `cache[example_id] -> (hidden (n, H) tensor, labels (n,))`, memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta = json.loads((folder / META_NAME).read_text())
        self.bf16 = self.meta["storage_dtype"] == "bfloat16"
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, int, int]] = {}
        for part in self.meta["parts"]:
            hidden = np.load(folder / f"{part}.hidden.npy", mmap_mode="r")
            labels = np.load(folder / f"{part}.labels.npy")
            for example_id, start, stop in np.load(folder / f"{part}.index.npy"):
                self._rows[int(example_id)] = (hidden, labels, int(start), int(stop))

    def __len__(self) -> int:
        return len(self._rows)

    def batch(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`[self[i] for i in ids]`: the same call as `StreamedStates.batch`."""
        return [self[i] for i in ids]

    def __getitem__(self, example_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, labels, start, stop = self._rows[example_id]
        h = torch.from_numpy(np.array(hidden[start:stop]))  # copy out of the map: (n, H)
        if self.bf16:
            h = h.view(torch.bfloat16)
        return h, torch.from_numpy(labels[start:stop].copy())


def matches(folder: Path, fingerprint: dict) -> bool:
    try:
        return json.loads((folder / META_NAME).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False
