"""The fit loop: frozen base model, trainable heads, chunked loss, exact resume, many processes.

Processes are started by `accelerate launch` (or run alone). Each optimizer step takes a fixed
set of examples (see `batches.py`), each process computes loss *sums* and their gradients over
its share, then one all-reduce adds sums, counts and gradients, and every process normalises by
the global token counts. This gives the same step as one process with the same effective batch,
whatever the split. The heads are tiny (~2M parameters), so we all-reduce their gradients once
per optimizer step ourselves instead of wrapping them in DDP (which would sync every micro-batch
and needs its own forward to see the parameters used).

`fit(args)` runs a `Trainer`, whose named steps are the run's phases:
`set_up` (output folder, model, data, heads, optimizer, schedule) -> `resume` (a checkpoint's
state, refused when the checkpoint belongs to another run) -> `prepare_cache` (the hidden states,
from `hidden.hidden_states`) -> `train_step` + `log` + `save_checkpoint` per step -> `save_final`
(heads, model card, then metrics.jsonl). The run's fixed parts live in `Run`, its position in
`Progress`; a step's numbers come back as a `StepOutcome`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate import Accelerator, DistributedType
from tqdm.auto import tqdm
from transformers import get_scheduler

from autodeco_lp.hub.digest import model_sha256
from autodeco_lp.hub.models import load_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.training import batches, hidden
from autodeco_lp.training.args import FitArgs
from autodeco_lp.training.checks import collapse_warning, no_op_warning
from autodeco_lp.training.data import Dataset, load_jsonl
from autodeco_lp.training.heads_setup import build_heads, check_heads
from autodeco_lp.training.hidden import CACHE_DIR_NAME
from autodeco_lp.training.losses import (
    LossConfig,
    LossSums,
    autodeco_loss_sums,
    combine_gradients,
    normalised_loss,
    trainable_parameters,
)
from autodeco_lp.training.model_card import write_model_card
from autodeco_lp.training.outputs import CARD_NAME, HEADS_NAMES, MetricsLog, OutputDir
from autodeco_lp.training.ranking import DIRECTIONS, control_ranking_sums, load_commands, pick_command, with_command
from autodeco_lp.training.resume import (
    check_same_run,
    list_checkpoints,
    load_training_state,
    resolve_resume,
    rng_state,
    set_rng_state,
    write_checkpoint_folder,
)


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


@dataclass(frozen=True)
class Schedule:
    """How many examples make a step, how many steps an epoch and the whole run."""

    examples_per_step: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def for_run(cls, args: FitArgs, examples: int, world: int) -> Schedule:
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        epoch_steps = batches.steps_per_epoch(examples, per_step)
        total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * epoch_steps))
        return cls(per_step, epoch_steps, total)


@dataclass
class Run:
    """The fixed parts of a run, built by `Trainer.set_up`."""

    args: FitArgs  # with `--recipe auto` resolved
    accelerator: Accelerator
    outputs: OutputDir
    model: torch.nn.Module  # the base model as forwards run: itself, or its FSDP / DeepSpeed wrapper
    dataset: Dataset
    cache_spec: hidden.CacheSpec  # the hidden states the steps read: the base model's digest, every example
    projection: OutputProjection
    heads: AutoDecoHeads
    loss_config: LossConfig
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: Schedule

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def identity(self) -> dict:
        """What makes a step's examples and states this run's: a checkpoint records it, a resume must match it."""
        return {
            "data_sha256": self.dataset.sha256,
            "max_length": self.args.max_length,
            "examples_per_step": self.schedule.examples_per_step,
            "seed": self.args.seed,
            "total_steps": self.schedule.total_steps,
            "model_sha256": self.cache_spec.model_sha256,
        }


@dataclass
class Progress:
    """Where the run stands: steps done, and seconds spent before this process started (a resumed run)."""

    step: int = 0
    elapsed_before: float = 0.0


class StepInputs(NamedTuple):
    hidden: torch.Tensor  # (n, H) final hidden states of supervised positions
    labels: torch.Tensor  # (n,) the tokens they predict
    uniforms: torch.Tensor  # (n,) the easy-token drop's draws
    sequence_ids: torch.Tensor  # (n,) which example each position belongs to


@dataclass
class StepOutcome:
    """What one optimizer step measured (summed over processes)."""

    sums: LossSums
    grad_norm: float
    learning_rate: float
    seconds: float
    epoch: int
    step_in_epoch: int  # of the step just taken, counted from 0


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


def _all_versions(dataset: Dataset) -> list:
    """Plain examples then every variant: ids i, i + N, i + 2N are the versions of example i."""
    return list(dataset.examples) + [e for version in dataset.variants for e in version]


class Trainer:
    """One fit, as named steps; `fit(args)` is `Trainer(args, command).train()`."""

    def __init__(self, args: FitArgs, command: str | None = None) -> None:
        self.args = args  # as given; `run.args` has `--recipe auto` resolved
        self.command = command
        self.run: Run | None = None
        self.progress = Progress()
        self.states: hidden.HiddenStateCache | hidden.StreamedStates | None = None  # set by `prepare_cache`
        self.cache_seconds = 0.0

    # --- set-up ------------------------------------------------------------------------------

    def set_up(self) -> Run:
        """Check the output folder, load the model and data, build heads, optimizer and schedule."""
        args = self.args
        accelerator = Accelerator(cpu=args.use_cpu)
        device = accelerator.device
        args.check_environment()  # files and packages the options name, before the model loads
        outputs = OutputDir.claim(
            Path(args.output_dir),
            resume=bool(args.resume_from_checkpoint),
            overwrite=args.overwrite_output_dir,
            init_heads=args.init_heads,
            main=accelerator.is_main_process,
        )
        accelerator.wait_for_everyone()  # every process checked the folder before the main one writes to it
        outputs.prepare()
        accelerator.wait_for_everyone()

        model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.bf16 else torch.float32, device=device)
        model.requires_grad_(False)
        args = args.resolved(model.num_parameters())  # `--recipe auto`: small or released by the base model's size
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        dataset = _load_data(args, tokenizer)

        # The loss needs the whole (V, H) lm_head on every process, and the digest every weight: both before sharding.
        projection = OutputProjection.from_model(model)
        sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        cache_spec = hidden.CacheSpec(
            output_dir=outputs.path,
            examples=_all_versions(dataset),
            model_sha256=model_sha256(model),
            dtype=next(model.parameters()).dtype,
            hidden_size=projection.hidden_size,
            pad_id=pad_id,
            enabled=args.cache,
            batch_size=args.cache_batch_size,
            max_bytes=args.cache_max_gb * 1e9,
            world_size=accelerator.num_processes,
            sharded=sharded,
        )
        if sharded:
            bias = projection.bias.clone() if projection.bias is not None else None
            projection = OutputProjection(projection.weight.clone(), bias, projection.softcap)
            model = accelerator.prepare_model(model, evaluation_mode=True)  # shards the frozen base
        heads = build_heads(args, model, device)
        check_heads(args, heads, projection)
        loss_config = args.loss_config()
        params = trainable_parameters(heads, loss_config)
        optimizer = torch.optim.AdamW(
            params.values(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
        )
        schedule = Schedule.for_run(args, len(dataset.examples), accelerator.num_processes)
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=math.ceil(args.warmup_ratio * schedule.total_steps),
            num_training_steps=schedule.total_steps,
        )
        self.run = Run(
            args=args,
            accelerator=accelerator,
            outputs=outputs,
            model=model,
            dataset=dataset,
            cache_spec=cache_spec,
            projection=projection,
            heads=heads,
            loss_config=loss_config,
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            schedule=schedule,
        )
        return self.run

    # --- resume ------------------------------------------------------------------------------

    def resume(self) -> None:
        """Load heads, optimizer, scheduler, RNG and position from `--resume-from-checkpoint`, if given;
        a checkpoint of another run (other data, base model, options or heads) is refused, naming what differs."""
        run = self.run
        if not run.args.resume_from_checkpoint:
            return
        path = resolve_resume(run.outputs.path, run.args.resume_from_checkpoint)
        state = load_training_state(path)
        saved = AutoDecoHeads.from_pretrained(path, device=run.device)
        check_same_run(path, state, saved.config, run.identity, run.args.to_dict(), run.heads.config)
        run.heads.load_state_dict(saved.state_dict())
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.progress = Progress(step=state["step"], elapsed_before=state["elapsed_seconds"])

    def warn_if_no_op(self) -> None:
        """Warn when every remaining step runs at learning rate 0: the heads would come out unchanged."""
        run = self.run
        message = no_op_warning(run.scheduler, self.progress.step, run.schedule.total_steps, run.args.warmup_ratio)
        if message:
            warnings.warn(message, stacklevel=3)

    # --- the hidden-state cache --------------------------------------------------------------

    def prepare_cache(self) -> None:
        """Open or build the hidden-state cache (or stream, under --no-cache or past its budget)."""
        started, run = time.perf_counter(), self.run
        self.states = hidden.hidden_states(
            run.cache_spec,
            run.model,
            run.accelerator,
            register=run.outputs.register,
            progress=not run.args.disable_tqdm,
        )
        self.cache_seconds = time.perf_counter() - started

    # --- one step ----------------------------------------------------------------------------

    def _step_inputs(self, ids: list[int], epoch: int, lengths: list[int]):
        """Yield `StepInputs` for this process's examples `ids` of one step."""
        run = self.run
        if isinstance(self.states, hidden.HiddenStateCache):
            # No padding once cached: one call over all positions; the loss chunks them.
            groups = [ids] if ids else []
        else:
            groups = batches.micro_batches(
                ids, lengths, run.args.per_device_train_batch_size, run.args.max_tokens_per_batch
            )
        for group in groups:
            pairs = self.states.batch(group)
            yield StepInputs(
                hidden=torch.cat([p[0].to(run.device) for p in pairs]),
                labels=torch.cat([p[1].to(run.device) for p in pairs]),
                uniforms=torch.cat(
                    [batches.drop_uniforms(run.args.seed, epoch, i, p[1].shape[0]) for i, p in zip(group, pairs)]
                ),
                sequence_ids=torch.cat(
                    [torch.full((p[1].shape[0],), i, dtype=torch.long) for i, p in zip(group, pairs)]
                ),
            )

    def _control_sums(self, ids: list[int]) -> LossSums:
        """The ranking loss over this process's rows of the step (rows whose versions all have targets)."""
        run, dataset = self.run, self.run.dataset
        n = len(dataset.examples)
        rows = [i for i in ids if all(version[i].num_targets for version in dataset.variants)]
        # Example i's versions are ids i, i + n, i + 2n (`_all_versions`): one (n_i, H) state per version.
        versions = range(1 + len(dataset.variants))
        triples = [tuple(h for h, _ in self.states.batch([i + k * n for k in versions])) for i in rows]
        total, count, grads = control_ranking_sums(
            run.heads,
            triples,
            run.projection,
            t_margin=run.loss_config.control_t_margin,
            p_margin=run.loss_config.control_p_margin,
            train_temperature=run.args.trains("temperature"),
            train_top_p=run.args.trains("top_p"),
            params=run.params,
        )
        sums = LossSums.zeros(run.device)
        sums.control_sum, sums.control_count = total.to(run.device), torch.tensor(float(count), device=run.device)
        sums.control_grads = grads
        return sums

    def train_step(self, order: list[int], lengths: list[int]) -> StepOutcome:
        """One optimizer step over the examples of step `self.progress.step` in this epoch's `order`."""
        run, schedule = self.run, self.run.schedule
        tick = time.perf_counter()
        epoch, step_in_epoch = divmod(self.progress.step, schedule.steps_per_epoch)
        world = run.accelerator.num_processes
        ids = batches.step_examples(
            order, step_in_epoch, schedule.examples_per_step, run.accelerator.process_index, world
        )
        sums = LossSums.zeros(run.device)
        for x in self._step_inputs(ids, epoch, lengths):
            sums.add_(
                autodeco_loss_sums(
                    run.heads,
                    x.hidden,
                    x.labels,
                    run.projection,
                    config=run.loss_config,
                    uniforms=x.uniforms,
                    sequence_ids=x.sequence_ids,
                )
            )
        if run.dataset.variants:
            sums.add_(self._control_sums(ids))
        sums = _all_reduce(sums, run.params, run.accelerator)
        grads = combine_gradients(sums, run.loss_config)
        for name, param in run.params.items():
            param.grad = grads[name].clone() if name in grads else torch.zeros_like(param)
        grad_norm = torch.nn.utils.clip_grad_norm_(list(run.params.values()), run.args.max_grad_norm or float("inf"))
        lr = run.scheduler.get_last_lr()[0]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        return StepOutcome(sums, float(grad_norm), lr, time.perf_counter() - tick, epoch, step_in_epoch)

    # --- log and save ------------------------------------------------------------------------

    def metrics(self, outcome: StepOutcome) -> dict:
        """The metrics line of the step just taken."""
        run, sums = self.run, outcome.sums
        total_positions = sums.positions.item()
        return {
            "step": self.progress.step,
            "epoch": round(self.progress.step / run.schedule.steps_per_epoch, 4),
            "loss": normalised_loss(sums, run.loss_config).item(),
            "temperature_loss": (sums.temperature_sum / sums.temperature_count.clamp_min(1)).item(),
            "top_p_loss": (sums.top_p_sum / sums.positions.clamp_min(1)).item(),
            "mean_temperature": sums.predicted_temperature_sum.item() / max(total_positions, 1),
            "mean_top_p": sums.predicted_top_p_sum.item() / max(total_positions, 1),
            **(
                {"control_loss": (sums.control_sum / sums.control_count.clamp_min(1)).item()}
                if run.dataset.variants
                else {}
            ),
            "grad_norm": outcome.grad_norm,
            "learning_rate": outcome.learning_rate,
            "tokens": int(total_positions),
            "tokens_per_second": total_positions / max(outcome.seconds, 1e-9),
            "step_seconds": outcome.seconds,
        }

    def save_checkpoint(self, outcome: StepOutcome, seconds_so_far: float) -> None:
        """`checkpoint-N` with everything `resume` needs (written by the main process)."""
        run, step = self.run, self.progress.step
        state = {
            "step": step,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng_state(),
            "data": run.identity,
            "epoch": outcome.epoch,
            "step_in_epoch": outcome.step_in_epoch + 1,
            "elapsed_seconds": self.progress.elapsed_before + seconds_so_far,
            "args": run.args.to_dict(),
        }
        if run.main:
            run.outputs.register(f"checkpoint-{step}")
            write_checkpoint_folder(run.outputs.path, step, run.heads, state, run.args.save_total_limit)
        run.accelerator.wait_for_everyone()

    def save_final(self, result: FitResult, log: MetricsLog) -> None:
        """The trained heads, their model card, then metrics.jsonl in the output folder (main process).

        In that order, each replaced whole: a save that fails (a full disk) leaves the earlier heads and
        metrics.jsonl of the folder as they were (this run's lines stay in metrics.jsonl.partial)."""
        run = self.run
        if run.main:
            run.outputs.register(*HEADS_NAMES, CARD_NAME)
            run.heads.save_pretrained(run.outputs.path)
            write_model_card(
                run.outputs.path,
                run.args,
                run.dataset,
                result,
                self.command or " ".join(sys.argv),
                run.accelerator.num_processes,
                run.device,
                run.accelerator.distributed_type.value,
            )
            log.finish()
        run.accelerator.wait_for_everyone()

    # --- the whole run -----------------------------------------------------------------------

    def train(self) -> FitResult:
        run = self.set_up()
        self.resume()
        self.warn_if_no_op()
        started = time.perf_counter()  # the reported time includes building the cache
        self.prepare_cache()
        args, schedule = run.args, run.schedule
        lengths = [len(e.input_ids) for e in run.dataset.examples]
        log = MetricsLog(run.outputs, self.progress.step, args.report_to, run.main)
        bar = tqdm(
            total=schedule.total_steps,
            initial=self.progress.step,
            desc="fit",
            disable=not run.main or args.disable_tqdm,
            file=sys.stderr,
        )
        last = None
        order, order_epoch = [], None
        run.heads.train()
        while self.progress.step < schedule.total_steps:
            epoch = self.progress.step // schedule.steps_per_epoch
            if order_epoch != epoch:  # one permutation per epoch
                order, order_epoch = batches.epoch_order(len(run.dataset.examples), args.seed, epoch), epoch
            outcome = self.train_step(order, lengths)
            step = self.progress.step
            last = self.metrics(outcome)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_second']:.0f}")
            if step % args.logging_steps == 0 or step == schedule.total_steps:
                log.log(last)
            if args.save_steps and step % args.save_steps == 0 and step < schedule.total_steps:
                self.save_checkpoint(outcome, time.perf_counter() - started)
        bar.close()
        run.heads.eval()
        # `last` is set: checkpoints are never written at the final step, so a run always has a step left.
        result = FitResult(
            output_dir=run.outputs.path,
            steps=self.progress.step,
            loss=last["loss"],
            temperature_loss=last["temperature_loss"],
            top_p_loss=last["top_p_loss"],
            mean_temperature=last["mean_temperature"],
            mean_top_p=last["mean_top_p"],
            seconds=self.progress.elapsed_before + time.perf_counter() - started,
            cached=isinstance(self.states, hidden.HiddenStateCache),
            cache_seconds=self.cache_seconds,
        )
        self.save_final(result, log)
        message = collapse_warning(result.mean_temperature, result.mean_top_p, run.args)
        if message and run.main:
            warnings.warn(message, stacklevel=3)
        return result


def fit(args: FitArgs, command: str | None = None) -> FitResult:
    """Train AutoDeco heads on a frozen base model; returns the final metrics.

    Writes `output_dir/{checkpoint-N/, metrics.jsonl.partial, hidden_cache/}` during training and the final
    heads, a model card README.md and metrics.jsonl in `output_dir` at the end.
    """
    return Trainer(args, command).train()


__all__ = ["CACHE_DIR_NAME", "FitResult", "Trainer", "fit", "list_checkpoints"]
