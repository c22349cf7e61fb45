"""Final hidden states of the supervised positions, from the frozen base model; and their disk cache.

The base is frozen, so its hidden states never change during training. The cache runs it once
and keeps, per example, the `(n_targets, H)` states that feed `lm_head` at the positions whose
next token is a target, in `.npy` files read back memory-mapped. Every later epoch runs only
`lm_head` + heads. Storage is fp16 (bf16 for bf16 models, kept as raw 16-bit words because numpy
has no bf16): 2 * H bytes per target token, ~1.1 KB for SmolLM2.

With several processes each one computes the examples `id % world_size == rank` into its own
part file; every process then reads all parts, so `output_dir` must be on a shared file system
(it is, on one machine). Use `--no-cache` otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from autodeco_lp.hub.atomic import write_text
from autodeco_lp.training.data import Example

META_NAME = "cache_meta.json"


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
