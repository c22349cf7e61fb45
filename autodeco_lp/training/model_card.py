"""The model card (README.md) written next to the final heads."""

from __future__ import annotations

import json
from pathlib import Path

from autodeco_lp.hub.atomic import atomic_write, write_text
from autodeco_lp.hub.models import canonical_model_id
from autodeco_lp.version import __version__


def write_model_card(output_dir: Path, args, dataset, result, command: str, world_size: int, device: str) -> None:
    base = canonical_model_id(args.model)
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
            f"alpha {args.alpha}, easy-token drop {args.easy_token_drop}, DFT {'on' if args.dft else 'off'}, "
            f"weights T {args.temperature_loss_weight} / P {args.top_p_loss_weight}, sequence weighting "
            f"{args.sequence_weighting}"
            + (f" (clip {args.importance_clip})" if args.sequence_weighting != "none" else ""),
        ),
        ("initialised from", f"`{args.init_heads}`" if args.init_heads else f"random (seed {args.seed})"),
        (
            "plain-language control",
            "off"
            if not args.control_commands
            else f"commands `{args.control_commands}`, ranking weight {args.control_weight}, "
            f"margins T {args.control_t_margin} / P {args.control_p_margin} (each row also seen with a low and a "
            "high command)",
        ),
        ("hidden-state cache", "yes" if result.cached else "no (streamed)"),
        ("training time", f"{result.seconds:.0f} s on {world_size} x {device}"),
        (
            "final loss (total / temperature / top-p)",
            f"{result.loss:.4f} / {result.temperature_loss:.4f} / {result.top_p_loss:.4f}",
        ),
        ("mean predicted T / P on the last step", f"{result.mean_temperature:.3f} / {result.mean_top_p:.3f}"),
        ("autodeco_lp version", __version__),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"""---
library_name: autodeco_lp
base_model: {base}
tags: [autodeco, decoding]
---

# AutoDeco heads for {base}

Two small heads that predict a temperature and a top-p for every token (AutoDeco, Wang et al.,
ICLR 2026), trained with `autodeco_lp` on a frozen `{base}`.

```python
from autodeco_lp import AutoDeco
processor = AutoDeco.from_pretrained(model, "{output_dir.as_posix()}")  # this folder, or its Hub id once uploaded
model.generate(**inputs, do_sample=True, top_k=None, logits_processor=[processor])
```

| | |
|---|---|
{table}

## Command

```
{command}
```

## All options

```json
{json.dumps(args.to_dict(), indent=2, sort_keys=True)}
```
"""
    atomic_write(output_dir / "README.md", lambda path: write_text(path, text))
