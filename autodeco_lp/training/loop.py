"""The fit loop: frozen base model, trainable heads, chunked loss, exact resume, many processes.

Processes are started by `accelerate launch` (or run alone). Each optimizer step takes a fixed
set of examples (see `batches.py`), each process computes loss *sums* and their gradients over
its share, then one all-reduce adds sums, counts and gradients, and every process normalises by
the global token counts. This gives the same step as one process with the same effective batch,
whatever the split. The heads are tiny (~2M parameters), so we all-reduce their gradients once
per optimizer step ourselves instead of wrapping them in DDP (which would sync every micro-batch
and needs its own forward to see the parameters used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from tqdm.auto import tqdm
from transformers import get_scheduler

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.models import load_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads, check_heads_fit_model
from autodeco_lp.training import batches, hidden
from autodeco_lp.training.args import FitArgs
from autodeco_lp.training.data import load_jsonl
from autodeco_lp.training.losses import (
    LossSums,
    autodeco_loss_sums,
    combine_gradients,
    normalised_loss,
    trainable_parameters,
)
from autodeco_lp.training.model_card import write_model_card
from autodeco_lp.training.ranking import DIRECTIONS, control_ranking_sums, load_commands, pick_command, with_command
from autodeco_lp.training.resume import (
    list_checkpoints,
    load_training_state,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

METRICS_NAME = "metrics.jsonl"
CACHE_DIR_NAME = "hidden_cache"


@dataclass
class FitResult:
    output_dir: Path
    steps: int
    loss: float
    temperature_loss: float
    top_p_loss: float
    mean_temperature: float
    mean_top_p: float
    seconds: float
    cached: bool
    cache_seconds: float = 0.0  # building (or opening) the hidden-state cache, inside `seconds`


def _build_heads(args: FitArgs, model, device) -> AutoDecoHeads:
    if args.init_heads:
        return AutoDecoHeads.from_pretrained(args.init_heads, device=device)
    torch.manual_seed(args.seed)
    config = AutoDecoConfig(
        hidden_size=model.get_output_embeddings().weight.shape[1],
        vocab_size=model.get_output_embeddings().weight.shape[0],
        enable_temperature_head=args.train_heads in ("both", "temperature"),
        enable_top_p_head=args.train_heads in ("both", "top_p"),
        use_enhanced_features=args.use_enhanced_features,
        mlp_hidden_size=args.mlp_hidden_size,
        base_model_name_or_path=getattr(model, "name_or_path", None) or None,
    )
    return AutoDecoHeads(config).to(device)


def _check_heads(args: FitArgs, heads: AutoDecoHeads, projection: OutputProjection) -> None:
    check_heads_fit_model(
        heads.config,
        projection.hidden_size,
        projection.vocab_size,
        args.model,
        what=f"`--init-heads` {args.init_heads!r}",
    )
    needed = {"temperature": heads.temp_head, "top_p": heads.top_p_head}
    for name, head in needed.items():
        if args.train_heads in ("both", name) and head is None:
            raise ValueError(
                f"`--train-heads {args.train_heads}` but `--init-heads` {args.init_heads!r} has no {name} head."
            )


class _Metrics:
    """JSONL metrics (and tensorboard) on the main process; a resumed run drops later lines."""

    def __init__(self, output_dir: Path, resume_step: int, report_to: str, enabled: bool) -> None:
        self.path = output_dir / METRICS_NAME
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        if report_to == "tensorboard":
            try:
                # tensorboard is optional (`--report-to tensorboard`): not a dependency of the package.
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
            except ImportError as exc:
                raise ValueError(
                    "`--report-to tensorboard` needs the tensorboard package: pip install tensorboard"
                ) from exc
            self.writer = SummaryWriter(log_dir=str(output_dir / "runs"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
            self.writer.flush()


def _all_reduce(sums: LossSums, params: dict, accelerator) -> LossSums:
    """Add sums, counts and gradients over processes in one all-reduce of a flat vector."""
    if accelerator.num_processes == 1:
        return sums
    device = sums.top_p_sum.device
    blocks = [torch.stack([getattr(sums, name) for name in LossSums.SCALARS])]
    for grads in (getattr(sums, g) for g in LossSums.GRADS):
        for name, param in params.items():
            # A process may have no gradient for a parameter (an empty share): send zeros.
            grad = grads.get(name)
            blocks.append(grad.reshape(-1) if grad is not None else torch.zeros(param.numel(), device=device))
    flat = accelerator.reduce(torch.cat(blocks), reduction="sum")
    out = LossSums(*flat[: len(LossSums.SCALARS)])
    offset = len(LossSums.SCALARS)
    for target in (getattr(out, g) for g in LossSums.GRADS):
        for name, param in params.items():
            target[name] = flat[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
    return out


def _prepare_cache(
    args: FitArgs,
    model,
    runner,
    sharded: bool,
    dataset,
    pad_id: int,
    output_dir: Path,
    accelerator,
    show_progress: bool,
):
    """The hidden-state cache for this run, built now if needed; None when training streams.

    `runner` is the model as it runs forwards: the model itself, or its FSDP / DeepSpeed wrapper (`sharded`).
    """
    if not args.cache:
        if sharded:
            raise ValueError(
                "a base model sharded by FSDP / DeepSpeed trains from the hidden-state cache only; drop --no-cache."
            )
        return None
    hidden_size = model.config.get_text_config().hidden_size
    size = hidden.cache_size_bytes(dataset.num_targets, hidden_size)
    free = shutil.disk_usage(output_dir).free
    if size > args.cache_max_gb * 1e9 or size > 0.9 * free:
        if sharded:
            raise ValueError(
                f"the hidden-state cache needs {size / 1e9:.1f} GB; raise --cache-max-gb or free disk space."
            )
        warnings.warn(
            f"the hidden-state cache would take {size / 1e9:.1f} GB (budget --cache-max-gb {args.cache_max_gb}, "
            f"{free / 1e9:.1f} GB free); streaming through the base model instead.",
            stacklevel=2,
        )
        return None
    world = accelerator.num_processes
    fingerprint = {
        "model": getattr(model, "name_or_path", ""),
        "dtype": str(next(model.parameters()).dtype),
        "data_sha256": dataset.sha256,
        "max_length": args.max_length,
        "examples": len(dataset.examples),
        "targets": dataset.num_targets,
        "world_size": world,
    }
    folder = output_dir / CACHE_DIR_NAME
    if hidden.matches(folder, fingerprint):
        return hidden.HiddenStateCache(folder)
    build = output_dir / f".{CACHE_DIR_NAME}.build"
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    mine = [i for i in range(len(dataset.examples)) if i % world == rank]
    most = math.ceil(len(range(0, len(dataset.examples), world)) / args.cache_batch_size)  # rank 0 has the most

    with tqdm(total=len(mine), desc="caching hidden states", disable=not show_progress, file=sys.stderr) as bar:
        hidden.build_part(
            build,
            runner,
            dataset.examples,
            mine,
            f"part-{rank}",
            pad_id,
            args.cache_batch_size,
            bar,
            hidden_size=hidden_size,
            dtype=next(model.parameters()).dtype,
            sharded=sharded,
            min_batches=most,
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch_dtype, _ = hidden.storage_dtype(next(model.parameters()).dtype)
        meta = {
            "fingerprint": fingerprint,
            "parts": [f"part-{r}" for r in range(world)],
            "storage_dtype": str(torch_dtype).removeprefix("torch."),
            "hidden_size": hidden_size,
        }
        hidden.write_meta(build, meta)
        build.rename(folder)  # the cache exists only once complete
    accelerator.wait_for_everyone()
    return hidden.HiddenStateCache(folder)


def _step_inputs(ids, args, dataset, lengths, cache, model, pad_id, epoch, device):
    """Yield (hidden (n, H), labels (n,), uniforms (n,), example ids (n,)) for this process's examples of one step."""
    if cache is not None:
        # No padding once cached: one call over all positions; the loss chunks them.
        groups = [ids] if ids else []
    else:
        groups = batches.micro_batches(ids, lengths, args.per_device_train_batch_size, args.max_tokens_per_batch)
    for group in groups:
        if cache is not None:
            pairs = [cache[i] for i in group]
        else:
            pairs = hidden.supervised_hidden_states(model, [dataset.examples[i] for i in group], pad_id)
        h = torch.cat([p[0].to(device) for p in pairs])  # (n, H)
        y = torch.cat([p[1].to(device) for p in pairs])  # (n,)
        u = torch.cat([batches.drop_uniforms(args.seed, epoch, i, p[1].shape[0]) for i, p in zip(group, pairs)])
        seq = torch.cat([torch.full((p[1].shape[0],), i, dtype=torch.long) for i, p in zip(group, pairs)])
        yield h, y, u, seq


def _load_data(args: FitArgs, tokenizer):
    """The training rows; with `--control-commands` also their low and high command versions."""
    if args.control_commands is None:
        return load_jsonl(args.data, tokenizer, args.max_length)

    commands = load_commands(args.control_commands)
    makers = [
        lambda row, i, d=d: with_command(row, pick_command(commands.train[d], args.seed, i, d)) for d in DIRECTIONS
    ]
    dataset = load_jsonl(args.data, tokenizer, args.max_length, variants=makers)
    # The commands and their assignment are part of what the cache and resume must match.
    digest = hashlib.sha256(f"{dataset.sha256}|{commands.sha256}|{args.seed}".encode()).hexdigest()
    return dataclasses.replace(dataset, sha256=digest)


def _all_versions(dataset):
    """Plain examples then every variant: ids i, i + N, i + 2N are the versions of example i."""
    examples = list(dataset.examples) + [e for version in dataset.variants for e in version]
    return dataclasses.replace(dataset, examples=examples)


def _control_sums(ids, args, dataset, cache, model, pad_id, heads, projection, params, device) -> LossSums:
    """The ranking loss over this process's rows of the step (rows whose versions all have targets)."""
    n = len(dataset.examples)
    rows = [i for i in ids if all(version[i].num_targets for version in dataset.variants)]
    triples = []
    for i in rows:
        if cache is not None:
            triples.append(tuple(cache[i + k * n][0] for k in range(1 + len(dataset.variants))))
        else:
            examples = [dataset.examples[i]] + [version[i] for version in dataset.variants]
            triples.append(tuple(p[0] for p in hidden.supervised_hidden_states(model, examples, pad_id)))
    train_t, train_p = args.train_heads in ("both", "temperature"), args.train_heads in ("both", "top_p")
    total, count, grads = control_ranking_sums(
        heads,
        triples,
        projection,
        t_margin=args.control_t_margin,
        p_margin=args.control_p_margin,
        train_temperature=train_t,
        train_top_p=train_p,
        params=params,
    )
    sums = LossSums.zeros(device)
    sums.control_sum, sums.control_count = total.to(device), torch.tensor(float(count), device=device)
    sums.control_grads = grads
    return sums


def fit(args: FitArgs, command: str | None = None) -> FitResult:
    """Train AutoDeco heads on a frozen base model; returns the final metrics.

    Writes `output_dir/{checkpoint-N/, metrics.jsonl, hidden_cache/}` during training and the final
    heads + a model card README.md in `output_dir` at the end.
    """
    accelerator = Accelerator(cpu=args.use_cpu)
    device = accelerator.device
    main = accelerator.is_main_process
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"`--output-dir` {str(output_dir)!r} is a file; pass a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.bf16 else torch.float32, device=device)
    model.requires_grad_(False)
    args = args.resolved(model.num_parameters())  # `--recipe auto`: small or released by the base model's size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dataset = _load_data(args, tokenizer)

    # The loss needs the whole (V, H) lm_head on every process: keep it before any sharding.
    projection = OutputProjection.from_model(model)
    runner = model
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded:
        bias = projection.bias.clone() if projection.bias is not None else None
        projection = OutputProjection(projection.weight.clone(), bias, projection.softcap)
        runner = accelerator.prepare_model(model, evaluation_mode=True)  # shards the frozen base
    heads = _build_heads(args, model, device)
    _check_heads(args, heads, projection)
    loss_config = args.loss_config()
    params = trainable_parameters(heads, loss_config)
    optimizer = torch.optim.AdamW(
        params.values(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )
    world = accelerator.num_processes
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    epoch_steps = batches.steps_per_epoch(len(dataset.examples), per_step)
    total_steps = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * epoch_steps))
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    data_identity = {
        "data_sha256": dataset.sha256,
        "max_length": args.max_length,
        "examples_per_step": per_step,
        "seed": args.seed,
        "total_steps": total_steps,
    }

    step, elapsed_before = 0, 0.0
    if args.resume_from_checkpoint:
        path = resolve_resume(output_dir, args.resume_from_checkpoint)
        state = load_training_state(path)
        if state["data"] != data_identity:
            raise ValueError(
                f"cannot resume exactly from {path}: it was trained with {state['data']}, "
                f"this run has {data_identity}. Use the same --data, --max-length, --seed, batch sizes, "
                "process count and step budget, or start a new --output-dir."
            )
        heads.load_state_dict(AutoDecoHeads.from_pretrained(path, device=device).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, elapsed_before = state["step"], state["elapsed_seconds"]

    cache_started = time.perf_counter()
    cached_data = _all_versions(dataset) if dataset.variants else dataset
    cache = _prepare_cache(
        args, model, runner, sharded, cached_data, pad_id, output_dir, accelerator, main and not args.disable_tqdm
    )
    cache_seconds = time.perf_counter() - cache_started
    lengths = [len(e.input_ids) for e in dataset.examples]
    metrics = _Metrics(output_dir, step, args.report_to, main)
    bar = tqdm(total=total_steps, initial=step, desc="fit", disable=not main or args.disable_tqdm, file=sys.stderr)
    started = cache_started  # the reported time includes building the cache
    last = None
    order, order_epoch = [], None
    heads.train()
    while step < total_steps:
        tick = time.perf_counter()
        epoch, step_in_epoch = divmod(step, epoch_steps)
        if order_epoch != epoch:  # one permutation per epoch
            order, order_epoch = batches.epoch_order(len(dataset.examples), args.seed, epoch), epoch
        ids = batches.step_examples(order, step_in_epoch, per_step, accelerator.process_index, world)
        sums = LossSums.zeros(device)
        for h, y, u, seq in _step_inputs(ids, args, dataset, lengths, cache, model, pad_id, epoch, device):
            sums.add_(autodeco_loss_sums(heads, h, y, projection, config=loss_config, uniforms=u, sequence_ids=seq))
        if dataset.variants:
            sums.add_(_control_sums(ids, args, dataset, cache, model, pad_id, heads, projection, params, device))
        sums = _all_reduce(sums, params, accelerator)
        total_positions = sums.positions.item()
        grads = combine_gradients(sums, loss_config)
        for name, param in params.items():
            param.grad = grads[name].clone() if name in grads else torch.zeros_like(param)
        grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), args.max_grad_norm or float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        seconds = time.perf_counter() - tick
        last = {
            "step": step,
            "epoch": round(step / epoch_steps, 4),
            "loss": normalised_loss(sums, loss_config).item(),
            "temperature_loss": (sums.temperature_sum / sums.temperature_count.clamp_min(1)).item(),
            "top_p_loss": (sums.top_p_sum / sums.positions.clamp_min(1)).item(),
            "mean_temperature": sums.predicted_temperature_sum.item() / max(total_positions, 1),
            "mean_top_p": sums.predicted_top_p_sum.item() / max(total_positions, 1),
            **(
                {"control_loss": (sums.control_sum / sums.control_count.clamp_min(1)).item()}
                if dataset.variants
                else {}
            ),
            "grad_norm": float(grad_norm),
            "learning_rate": lr,
            "tokens": int(total_positions),
            "tokens_per_second": total_positions / max(seconds, 1e-9),
            "step_seconds": seconds,
        }
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_second']:.0f}")
        if step % args.logging_steps == 0 or step == total_steps:
            metrics.log(last)
        if args.save_steps and step % args.save_steps == 0 and step < total_steps:
            state = {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "data": data_identity,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch + 1,
                "elapsed_seconds": elapsed_before + time.perf_counter() - started,
                "args": args.to_dict(),
            }
            if main:
                save_checkpoint(output_dir, step, heads, state, args.save_total_limit)
            accelerator.wait_for_everyone()
    bar.close()
    heads.eval()
    seconds = elapsed_before + time.perf_counter() - started
    # `last` is set: checkpoints are never written at the final step, so a run always has a step left.
    result = FitResult(
        output_dir,
        step,
        last["loss"],
        last["temperature_loss"],
        last["top_p_loss"],
        last["mean_temperature"],
        last["mean_top_p"],
        seconds,
        cache is not None,
        cache_seconds,
    )
    if main:
        heads.save_pretrained(output_dir)
        write_model_card(
            output_dir,
            args,
            dataset,
            result,
            command or " ".join(sys.argv),
            world,
            f"{device} ({accelerator.distributed_type.value})",
        )
    accelerator.wait_for_everyone()
    return result


__all__ = ["FitResult", "fit", "list_checkpoints"]
