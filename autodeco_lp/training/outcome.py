"""`autodeco-fit --objective outcome`: train the heads on the task's outcome, on-policy.

Each round: draw `problems_per_round` training problems, sample `group_size` completions of each
with the current heads in the loop (`rollouts.py`: HF generate, the training policy of
`policy.py`), score them with the task's verifier, turn the rewards into group advantages
(`advantages.py`: pass@1 with the group-mean baseline, or leave-one-out pass@k) and take one
optimizer step on the REINFORCE loss (`outcome_loss.py`). The base model stays frozen; failed
samples count as much as correct ones.

Every round is a checkpoint (`checkpoint-<round>`: heads, optimizer, the options that define the
run) and a line of `rounds.jsonl` (the problems, every completion and its reward); a killed run
resumes with `--resume-from-checkpoint` and continues exactly: a round's problems and samples are
seeded by (seed, round), not by what ran before.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from autodeco_lp.engines.hf_sampler import torch_device
from autodeco_lp.hub.atomic import atomic_write, write_text
from autodeco_lp.hub.jsonl import jsonl_lines
from autodeco_lp.hub.models import canonical_model_id, load_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads, check_heads_fit_model
from autodeco_lp.tasks.problems import load_task
from autodeco_lp.tasks.prompting import task_prompts
from autodeco_lp.training.advantages import round_weights
from autodeco_lp.training.heads_setup import build_heads, check_heads
from autodeco_lp.training.losses import LossConfig, trainable_parameters
from autodeco_lp.training.model_card import hardware, write_card
from autodeco_lp.training.outcome_loss import outcome_backward
from autodeco_lp.training.outputs import CARD_NAME, HEADS_NAMES, MetricsLog, OutputDir
from autodeco_lp.training.resume import load_training_state, resolve_resume, rng_state, write_checkpoint_folder
from autodeco_lp.training.rollouts import collect_rollouts

ROUNDS_NAME = "rounds.jsonl"


@dataclass
class OutcomeResult:
    output_dir: Path
    rounds: int
    seconds: float
    mean_reward: float  # pass@1 of the last round's samples
    mean_temperature: float
    mean_top_p: float
    tokens_per_round: float
    rollout_seconds_per_round: float


def _round_seed(seed: int, round_index: int) -> int:
    return seed * 1_000_003 + round_index


def _identity(args) -> dict:
    """What a resumed run must share with the checkpoint it continues (`--rounds` may grow)."""
    keys = ("model", "init_heads", "seed", "train_heads", "learning_rate", "mlp_hidden_size")
    outcome = {k: v for k, v in asdict(args.outcome).items() if k != "rounds"}
    return {**{k: getattr(args, k) for k in keys}, **{f"outcome.{k}": v for k, v in outcome.items()}}


def fit_outcome(args, command: str | None = None) -> OutcomeResult:
    """Run the outcome objective for `args` (a `FitArgs` with `objective="outcome"`)."""
    cfg = args.outcome
    outputs = OutputDir.claim(
        Path(args.output_dir),
        resume=bool(args.resume_from_checkpoint),
        overwrite=args.overwrite_output_dir,
        init_heads=args.init_heads,
        main=True,
    )
    outputs.prepare()
    device = "cpu" if args.use_cpu else torch_device(None)
    model, tokenizer = load_model(args.model, dtype=torch.bfloat16 if args.bf16 else torch.float32, device=device)
    # The base stays frozen because only the heads' parameters reach the optimizer and rollouts run under no_grad.
    # No requires_grad_(False) here: torch 2.13 on CPU runs a frozen Linear on a strided 3-D input (the prefill's
    # `hidden[:, -1:, :]` before lm_head) on a slow path that also grows memory: 9.7 s instead of ~0.1 s for
    # SmolLM2's lm_head at 64 rows in bf16, and minutes with ~1 GB/s of growth for Gemma3's 262,144-token one.
    task = load_task(cfg.task, cfg.task_options, dataset_seed=cfg.dataset_seed, size=cfg.problems)
    prompts = task_prompts(tokenizer, task, task.problems, cfg.chat, cfg.shots)
    projection = OutputProjection.from_model(model)
    heads = build_heads(args, model, device)
    check_heads(args, heads, projection)
    reference = None
    if cfg.kl_weight > 0:
        source = cfg.reference_heads or args.init_heads
        if source is None:
            raise ValueError("`--kl-weight` > 0 needs `--reference-heads` (or `--init-heads`) to pull towards")
        reference = AutoDecoHeads.from_pretrained(source, device=device).eval().requires_grad_(False)
        check_heads_fit_model(reference.config, projection.hidden_size, projection.vocab_size, args.model)
    trained = LossConfig(train_temperature=args.trains("temperature"), train_top_p=args.trains("top_p"))
    params = list(trainable_parameters(heads, trained).values())
    optimizer = torch.optim.AdamW(
        params,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )
    sigma = cfg.top_p_sigma if args.trains("top_p") and heads.top_p_head is not None else 0.0
    identity = _identity(args)
    start, elapsed = 0, 0.0
    if args.resume_from_checkpoint:
        folder = resolve_resume(outputs.path, args.resume_from_checkpoint)
        state = load_training_state(folder)
        theirs = state.get("outcome_identity") or {}
        differ = [f"{k}: {theirs.get(k)!r} there, {v!r} here" for k, v in identity.items() if theirs.get(k) != v]
        if differ:
            raise ValueError(
                f"`--resume-from-checkpoint` {str(folder)!r} was written by a run with other options ("
                + "; ".join(differ)
                + "); resume with the same options, or start a new --output-dir"
            )
        heads.load_state_dict(AutoDecoHeads.from_pretrained(folder, device=device).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["elapsed_seconds"])
    outputs.register(ROUNDS_NAME)
    _truncate_rounds(outputs.path / ROUNDS_NAME, start)
    log = MetricsLog(outputs, start, args.report_to, enabled=True)
    # The rounds done before a resume count in the result and the card (a resumed run that has no round left
    # to do rewrites the same card, not one with no numbers).
    done = log.earlier

    started = time.perf_counter() - elapsed
    record: dict = done[-1] if done else {}
    rollout_seconds = [r["rollout_seconds"] for r in done if "rollout_seconds" in r]
    tokens = [r["tokens"] for r in done if "tokens" in r]
    bar = tqdm(total=cfg.rounds, initial=start, desc="fit (outcome)", disable=args.disable_tqdm, file=sys.stderr)
    heads.train()
    for round_index in range(start, cfg.rounds):
        seed = _round_seed(args.seed, round_index)
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(task.problems), generator=generator)[: cfg.problems_per_round].tolist()
        t0 = time.perf_counter()
        rollouts = collect_rollouts(
            model,
            tokenizer,
            heads,
            [prompts.texts[i] for i in chosen],
            group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            seed=seed,
            batch_size=cfg.rollout_batch_size,
            sigma=sigma,
            add_special_tokens=prompts.add_special_tokens,
            stop_strings=prompts.stop_strings,
        )
        rollout_seconds.append(time.perf_counter() - t0)
        tokens.append(rollouts.tokens)
        rewards = [
            [float(task.score(task.problems[i], s.text) >= 1.0) for s in group]
            for i, group in zip(chosen, rollouts.samples)
        ]
        sample_weights = round_weights(torch.tensor(rewards), cfg.k, cfg.normalise_advantages).tolist()
        samples = [s for group in rollouts.samples for s in group]  # problem-major, as the weights
        states = [h for group in rollouts.hidden for h in group]
        hidden, chosen_tokens, weights = [], [], []
        for weight, sample, sample_states in zip(sample_weights, samples, states, strict=True):
            if (weight == 0 and reference is None) or not sample.sampled_ids:
                continue  # no gradient from this sample
            hidden.append(sample_states)
            chosen_tokens.append(torch.tensor(sample.sampled_ids))
            weights.append(torch.full((len(sample.sampled_ids),), weight))
        optimizer.zero_grad()
        totals = {"policy_loss": 0.0, "kl": 0.0, "mean_temperature": float("nan"), "mean_top_p": float("nan")}
        if hidden:
            totals = outcome_backward(
                heads,
                torch.cat(hidden),
                torch.cat(chosen_tokens),
                torch.cat(weights),
                projection,
                sigma=sigma,
                reference=reference,
                kl_weight=cfg.kl_weight,
                chunk_size=args.loss.get("chunk_size"),  # --loss-chunk-size when given
            )
            norm = torch.nn.utils.clip_grad_norm_(
                params, args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
            )
            if torch.isfinite(norm):
                optimizer.step()
            else:  # a non-finite gradient would corrupt the heads: skip this round's step, say so in the log
                totals["skipped_step"] = 1.0
        flat = [r for group in rewards for r in group]
        record = {
            "step": round_index + 1,  # the round
            "reward": sum(flat) / len(flat),
            "solved": sum(max(group) for group in rewards) / len(rewards),
            "trained_positions": int(sum(len(w) for w in weights)),
            "tokens": rollouts.tokens,
            "rollout_seconds": round(rollout_seconds[-1], 2),
            "seconds": round(time.perf_counter() - started, 2),
            **{k: round(v, 6) for k, v in totals.items()},
        }
        log.log(record)
        with open(outputs.path / ROUNDS_NAME, "a", encoding="utf-8") as f:
            texts = [[s.text for s in group] for group in rollouts.samples]
            f.write(json.dumps({"round": round_index + 1, "problems": chosen, "rewards": rewards, "texts": texts}))
            f.write("\n")
        state = {
            "step": round_index + 1,
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "elapsed_seconds": time.perf_counter() - started,
            "outcome_identity": identity,
        }
        outputs.register(f"checkpoint-{round_index + 1}")
        write_checkpoint_folder(outputs.path, round_index + 1, heads, state, args.save_total_limit or 2)
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward']:.3f}", T=f"{record['mean_temperature']:.2f}")
    bar.close()
    heads.eval()
    result = OutcomeResult(
        output_dir=outputs.path,
        rounds=cfg.rounds,
        seconds=time.perf_counter() - started,
        mean_reward=record.get("reward", float("nan")),
        mean_temperature=record.get("mean_temperature", float("nan")),
        mean_top_p=record.get("mean_top_p", float("nan")),
        tokens_per_round=sum(tokens) / len(tokens) if tokens else float("nan"),
        rollout_seconds_per_round=sum(rollout_seconds) / len(rollout_seconds) if rollout_seconds else float("nan"),
    )
    outputs.register(*HEADS_NAMES, CARD_NAME)
    heads.save_pretrained(outputs.path)
    _write_card(outputs.path, args, result, command or " ".join(sys.argv), device)
    log.finish()  # metrics.jsonl only once the heads and card are saved, as the likelihood fit
    return result


def _truncate_rounds(path: Path, rounds_done: int) -> None:
    """Keep the rounds.jsonl lines of the rounds a resumed run does not redo (none for a fresh run)."""
    if not path.exists():
        return
    kept = []
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        try:
            if json.loads(line)["round"] <= rounds_done:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line a kill left torn
    text = "".join(kept)
    atomic_write(path, lambda tmp: write_text(tmp, text))


def _write_card(folder: Path, args, result: OutcomeResult, command: str, device: str) -> None:
    cfg = args.outcome
    base = canonical_model_id(args.model)
    reward = f"pass@{cfg.pass_k} (leave-one-out advantages)" if cfg.reward == "pass@k" else "pass@1 (group mean)"
    rows = [
        ("base model", f"`{base}` (frozen)"),
        ("objective", f"outcome: REINFORCE on the task's verifier, {reward}"),
        ("task", f"`{cfg.task}` {cfg.task_options or ''} (dataset seed {cfg.dataset_seed}, {cfg.problems} problems)"),
        ("rounds x problems x samples", f"{cfg.rounds} x {cfg.problems_per_round} x {cfg.group_size}"),
        ("heads trained", args.train_heads),
        ("learning rate", str(args.learning_rate)),
        ("top-p exploration (sigma of logit P)", str(cfg.top_p_sigma)),
        ("KL weight / reference", f"{cfg.kl_weight} / {cfg.reference_heads or args.init_heads}"),
        ("initialised from", f"`{args.init_heads}`" if args.init_heads else f"random (seed {args.seed})"),
        ("training time", f"{result.seconds:.0f} s on {hardware(1, device)}"),
        (
            "last round: reward / mean T / mean P",
            f"{result.mean_reward:.3f} / {result.mean_temperature:.3f} / {result.mean_top_p:.3f}",
        ),
    ]
    write_card(folder, base, rows, command, args.to_dict())
