"""The model card (README.md) written next to the final heads."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autodeco_lp.hub.atomic import atomic_write, write_text
from autodeco_lp.hub.models import canonical_model_id
from autodeco_lp.hub.publish import card_header
from autodeco_lp.version import __version__


def hardware(world_size: int, device: torch.device | str, distributed_type: str = "NO") -> str:
    """What the fit ran on, for a reader: `1 x cpu`, `2 x cuda (NVIDIA H200), MULTI_GPU`.

    `distributed_type` is accelerate's `DistributedType` value; "NO" (a single process) is not shown."""
    device = torch.device(device)
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" and torch.cuda.is_available() else ""
    mode = f", {distributed_type}" if distributed_type != "NO" else ""
    return f"{world_size} x {device.type}{name}{mode}"


def write_model_card(
    output_dir: Path,
    args,
    dataset,
    result,
    command: str,
    world_size: int,
    device: torch.device | str,
    distributed_type: str = "NO",
) -> None:
    base = canonical_model_id(args.model)
    loss = args.loss_config()  # `args` has `--recipe auto` resolved
    rows = [
        ("base model", f"`{base}` (frozen)"),
        ("heads trained", args.train_heads),
        ("data", f"`{dataset.source}` (sha256 `{dataset.sha256[:16]}...`)"),
        (
            "examples / supervised tokens",
            f"{len(dataset.examples)} / {dataset.num_targets}"
            f" ({dataset.skipped_empty} rows skipped with no target, {dataset.truncated} truncated at "
            f"{args.max_length})",
        ),
        ("optimizer steps", str(result.steps)),
        (
            "effective batch",
            f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} x {world_size} process(es)",
        ),
        ("learning rate / schedule", f"{args.learning_rate} / {args.lr_scheduler_type}, warm-up {args.warmup_ratio}"),
        (
            "objective",
            f"alpha {loss.alpha}, easy-token drop {loss.easy_token_drop}, DFT {'on' if loss.dft else 'off'}, "
            f"weights T {loss.temperature_weight} / P {loss.top_p_weight}, sequence weighting "
            f"{loss.sequence_weighting}"
            + (f" (clip {loss.importance_clip})" if loss.sequence_weighting != "none" else ""),
        ),
        ("initialised from", f"`{args.init_heads}`" if args.init_heads else f"random (seed {args.seed})"),
        (
            "plain-language control",
            "off"
            if not args.control_commands
            else f"commands `{args.control_commands}`, ranking weight {loss.control_weight}, "
            f"margins T {loss.control_t_margin} / P {loss.control_p_margin} (each row also seen with a low and a "
            "high command)",
        ),
        ("hidden-state cache", "yes" if result.cached else "no (streamed)"),
        ("training time", f"{result.seconds:.0f} s on {hardware(world_size, device, distributed_type)}"),
        (
            "final loss (total / temperature / top-p)",
            f"{result.loss:.4f} / {result.temperature_loss:.4f} / {result.top_p_loss:.4f}",
        ),
        ("mean predicted T / P on the last step", f"{result.mean_temperature:.3f} / {result.mean_top_p:.3f}"),
        ("autodeco_lp version", __version__),
    ]
    write_card(output_dir, base, rows, command, args.to_dict())


def write_card(output_dir: Path, base: str, rows: list[tuple[str, str]], command: str, options: dict) -> None:
    """README.md next to the heads: the shared header (`hub.publish.card_header`), the run's `rows` as a
    table, the command and every option. Both objectives' fits write their card through this."""
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    # The loading snippet names this folder; `autodeco push` uploads the heads with this card.
    header = card_header(base, output_dir.as_posix())
    text = f"""{header}
Publish them with `autodeco push --heads {output_dir.as_posix()} --repo-id YOU/NAME`, then load them by that id.

| | |
|---|---|
{table}

## Command

```
{command}
```

## All options

```json
{json.dumps(options, indent=2, sort_keys=True)}
```
"""
    atomic_write(output_dir / "README.md", lambda path: write_text(path, text))
