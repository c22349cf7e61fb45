"""Plain-language control of decoding: commands, the command-augmented data, the ranking loss.

The paper (Table 4) fine-tunes the heads with a ranking loss so that a command such as "I hope the
answers can be as certain as possible" lowers the predicted T and P and "more innovative and
diverse" raises them. No code or formula was published; this is ours.

Commands: a JSON file `{"low": {"train": [...], "heldout": [...]}, "high": {...}}` (`default`:
the one shipped in `autodeco_lp/data/control_commands.json`). Training uses the `train`
paraphrases only; `autodeco eval control` measures with the `heldout` ones.

Where a command goes: appended to the last user turn of a `messages` row, as its own paragraph
(`question + "\\n\\n" + command`); put in front of a `prompt` row's text (`command + "\\n\\n" +
prompt`). The response tokens are unchanged, so the three versions of a row (no command, low,
high) supervise exactly the same tokens and differ only in what the model has read.

Ranking loss, per training row e with response positions R_e (the supervised positions):

    Tbar_v = mean_{t in R_e} T_v(t),   Pbar_v = mean_{t in R_e} P_v(t),   v in {none, low, high}
    L_rank(e) = relu(m_T - (Tbar_high - Tbar_none)) + relu(m_T - (Tbar_none - Tbar_low))
              + relu(m_P - (Pbar_high - Pbar_none)) + relu(m_P - (Pbar_none - Pbar_low))

a hinge (margin) loss that is zero once the high version is at least the margin above the plain
one and the low version at least the margin below it, for T and for P. The total objective is
`AutoDeco loss (plain rows, as always) + control_weight * mean_e L_rank(e)`; defaults
m_T = 0.1, m_P = 0.05 (T lives in (0, 2), P in (0, 1)), control_weight = 1.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

from autodeco_lp.inference.capture import OutputProjection

DIRECTIONS = ("low", "high")
DEFAULT_T_MARGIN = 0.1
DEFAULT_P_MARGIN = 0.05


@dataclass(frozen=True)
class ControlCommands:
    train: dict[str, tuple[str, ...]]  # direction -> paraphrases used in training
    heldout: dict[str, tuple[str, ...]]  # direction -> paraphrases kept for the measurement
    source: str
    sha256: str


def load_commands(spec: str = "default") -> ControlCommands:
    """`default` (the shipped file) or a path to a commands JSON file."""
    path = files("autodeco_lp").joinpath("data/control_commands.json") if spec == "default" else Path(spec)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"`--control-commands` {spec!r} could not be read ({exc}); pass `default` or a JSON file"
        ) from exc
    train, heldout = {}, {}
    for direction in DIRECTIONS:
        entry = data.get(direction) if isinstance(data, dict) else None
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(k), list) and entry[k] and all(isinstance(c, str) and c.strip() for c in entry[k])
            for k in ("train", "heldout")
        )
        if not ok:
            raise ValueError(
                f'`--control-commands` {spec!r}: "{direction}" needs non-empty "train" and "heldout" lists of strings'
            )
        if set(entry["train"]) & set(entry["heldout"]):
            raise ValueError(
                f'`--control-commands` {spec!r}: "{direction}" has paraphrases in both "train" and "heldout"'
            )
        train[direction], heldout[direction] = tuple(entry["train"]), tuple(entry["heldout"])
    return ControlCommands(
        train, heldout, str(path) if spec != "default" else "default", hashlib.sha256(raw).hexdigest()
    )


def with_command(row: dict, command: str) -> dict:
    """A copy of a training row with `command` added to its prompt (see the module docstring)."""
    if "messages" in row:
        messages = [dict(m) for m in row["messages"]]
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            raise ValueError("a `messages` row needs a user turn to add a control command to")
        messages[users[-1]]["content"] = f"{messages[users[-1]]['content']}\n\n{command}"
        return {**row, "messages": messages}
    if "prompt" in row:
        return {**row, "prompt": f"{command}\n\n{row['prompt']}"}
    raise ValueError("control commands need `messages` or `prompt` + `completion` rows (a `text` row has no prompt)")


def pick_command(commands: tuple[str, ...], seed: int, row: int, direction: str) -> str:
    """A fixed paraphrase per (seed, row, direction): the cache holds one version of each row."""
    return commands[zlib.crc32(f"{seed}|{row}|{direction}".encode()) % len(commands)]


def control_ranking_sums(
    heads,
    triples,
    projection: OutputProjection,
    *,
    t_margin=DEFAULT_T_MARGIN,
    p_margin=DEFAULT_P_MARGIN,
    train_temperature=True,
    train_top_p=True,
    params=None,
    compute_grads=True,
):
    """`(sum_e L_rank(e), number of rows, {param name: gradient of the sum})` for a list of rows.

    `triples`: per row, `(hidden_none, hidden_low, hidden_high)`, each `(n, H)` over the same n
    response positions; `projection` the base model's `lm_head` as the heads see it. Terms for a
    head that does not train are left out.
    """
    projection = projection.to_float()
    total = torch.zeros((), device=projection.weight.device)
    grads: dict[str, torch.Tensor] = {}
    for variants in triples:  # one row at a time: only one row's (3n, V) logits are ever alive
        with torch.set_grad_enabled(compute_grads):
            means = []
            for hidden in variants:
                hidden = hidden.to(projection.weight.device)
                logits = projection(hidden)  # (n, V): the top-p head's features, as at inference
                t, p = heads(hidden, logits)  # (n,), (n,)
                means.append((t.mean(), p.mean()))
            (t0, p0), (t_low, p_low), (t_high, p_high) = means
            loss = torch.zeros((), device=projection.weight.device)
            if train_temperature:
                loss = loss + torch.relu(t_margin - (t_high - t0)) + torch.relu(t_margin - (t0 - t_low))
            if train_top_p:
                loss = loss + torch.relu(p_margin - (p_high - p0)) + torch.relu(p_margin - (p0 - p_low))
        total = total + loss.detach()
        if compute_grads and params and loss.requires_grad:
            values = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for name, grad in zip(params, values):
                if grad is not None:
                    grads[name] = grads[name] + grad if name in grads else grad
    return total, len(triples), grads
