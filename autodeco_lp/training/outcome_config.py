"""The options of `autodeco-fit --objective outcome` (the flags are built from these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, TRAIN_DATASET_SEED
from autodeco_lp.tasks.prompting import DEFAULT_SHOTS

REWARDS = ("pass@1", "pass@k")
# The outcome objective's default learning rate (the likelihood recipes' rates are for another loss scale).
OUTCOME_LEARNING_RATE = 1e-4


@dataclass
class OutcomeConfig:
    """The options of `--objective outcome` (flags of `autodeco-fit`; ignored by the likelihood objective)."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "Outcome objective: the task whose verifier rewards the samples, e.g. reasoning_gym:products."
        },
    )
    task_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the task's generator (`--task-option KEY=VALUE`)."}
    )
    problems: int = field(default=2000, metadata={"help": "Outcome objective: size of the training problem pool."})
    dataset_seed: int = field(
        default=TRAIN_DATASET_SEED,
        metadata={"help": f"Outcome objective: seed of the task's problem generator ({EVAL_DATASET_SEED} is refused)."},
    )
    group_size: int = field(default=8, metadata={"help": "Outcome objective: samples per problem and round."})
    problems_per_round: int = field(default=32, metadata={"help": "Outcome objective: problems per round."})
    rounds: int = field(default=50, metadata={"help": "Outcome objective: rounds (one optimizer step each)."})
    reward: str = field(
        default="pass@1",
        metadata={
            "help": "Outcome objective: pass@1 (group-mean baseline) or pass@k (leave-one-out pass@k advantages, "
            "k = --pass-k; rewards diversity where it pays)."
        },
    )
    pass_k: int = field(default=4, metadata={"help": "Outcome objective: k of --reward pass@k (< --group-size)."})
    normalise_advantages: bool = field(
        default=False, metadata={"help": "Outcome objective: divide pass@1 advantages by the group's std (GRPO)."}
    )
    top_p_sigma: float = field(
        default=0.5,
        metadata={
            "help": "Outcome objective: spread of logit(P) around the top-p head's P while training (the top-p "
            "head's exploration; 0 trains the temperature head only)."
        },
    )
    kl_weight: float = field(
        default=0.0, metadata={"help": "Outcome objective: weight of the KL term towards --reference-heads."}
    )
    reference_heads: str | None = field(
        default=None, metadata={"help": "Outcome objective: heads the KL term pulls towards (default --init-heads)."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Outcome objective: tokens per sampled completion."})
    rollout_batch_size: int = field(
        default=64, metadata={"help": "Outcome objective: sequences per generate call while sampling."}
    )
    chat: bool = field(
        default=True, metadata={"help": "Outcome objective: chat-template prompts (else few-shot prompts)."}
    )
    shots: int = field(default=DEFAULT_SHOTS, metadata={"help": "Outcome objective: few-shot examples per prompt."})

    def check(self) -> None:
        """Values only (no file is read)."""
        if self.task is None:
            raise ValueError("`--objective outcome` needs `--task`, e.g. --task reasoning_gym:products")
        if self.dataset_seed == EVAL_DATASET_SEED:
            raise ValueError(
                f"`--dataset-seed {EVAL_DATASET_SEED}` is the evaluation problems' seed; train on another, "
                f"e.g. the default {TRAIN_DATASET_SEED}"
            )
        for name in ("problems", "group_size", "problems_per_round", "rounds", "max_new_tokens", "rollout_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` has to be a positive int, but is {getattr(self, name)}")
        if self.reward not in REWARDS:
            raise ValueError(f"`--reward` has to be one of {', '.join(REWARDS)}, but is {self.reward!r}")
        if self.group_size < 2:
            raise ValueError(f"`--group-size` has to be >= 2 (the baseline is the group), but is {self.group_size}")
        if self.reward == "pass@k" and self.normalise_advantages:
            raise ValueError("`--normalise-advantages` scales pass@1 advantages only; drop it with --reward pass@k")
        if self.reward == "pass@k" and not 2 <= self.pass_k < self.group_size:
            raise ValueError(
                f"`--pass-k` has to be in [2, --group-size - 1] = [2, {self.group_size - 1}], but is {self.pass_k}"
            )
        if not self.top_p_sigma >= 0 or not self.kl_weight >= 0:
            raise ValueError(
                f"`--top-p-sigma` and `--kl-weight` have to be >= 0, but are {self.top_p_sigma}, {self.kl_weight}"
            )

    @property
    def k(self) -> int:
        return self.pass_k if self.reward == "pass@k" else 1
