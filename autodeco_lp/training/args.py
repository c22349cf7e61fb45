"""`FitArgs`: every option of `autodeco-fit`, with its help text. The CLI and `--config fit.yaml`
both fill this one dataclass; names follow Hugging Face `TrainingArguments` where one exists.

A few options take their default from `--recipe` (`RECIPES`): `released` is the paper's recipe
(REFERENCE section 1: AdamW at 5e-6 for one epoch, easy-token drop 0.6, DFT on, no sequence
weighting); `small` is the recipe the ablation in docs/results.md chose for small models trained
on a few hundred rejection-sampled rows; `auto` (the default) picks `small` for base models under
`SMALL_MODEL_PARAMETERS` parameters and `released` otherwise. An option given on the command line
or in `--config` always wins over the recipe.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autodeco_lp.training.losses import DEFAULT_CHUNK_SIZE, DEFAULT_EASY_TOKEN_DROP, LossConfig
from autodeco_lp.training.outcome_config import OUTCOME_LEARNING_RATE, OutcomeConfig
from autodeco_lp.training.ranking import load_commands

TRAIN_HEADS = ("both", "temperature", "top_p")
SMALL_MODEL_PARAMETERS = 1_000_000_000
# Chosen by `autodeco eval ablation --config docs/ablation.yaml` (docs/results.md, "Recipe ablation").
SMALL_RECIPE: dict[str, Any] = {
    "learning_rate": 1e-3,
    "num_train_epochs": 5.0,
    "easy_token_drop": DEFAULT_EASY_TOKEN_DROP,
    "dft": True,
    "sequence_weighting": "none",
}
RECIPES: dict[str, dict[str, Any]] = {
    "released": {
        "learning_rate": 5e-6,
        "num_train_epochs": 1.0,
        "easy_token_drop": DEFAULT_EASY_TOKEN_DROP,
        "dft": True,
        "sequence_weighting": "none",
    },
    "small": SMALL_RECIPE,
}
OBJECTIVES = ("likelihood", "outcome")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
REPORT_TO = ("none", "tensorboard")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class FitArgs:
    # What to train on.
    objective: str = field(
        default="likelihood",
        metadata=_help(
            "likelihood (the released objective: next-token loss on --data) or outcome (on-policy policy gradient "
            "on --task's verifier; the options marked 'Outcome objective'; see docs/outcome.md)."
        ),
    )
    recipe: str = field(
        default="auto",
        metadata=_help(
            "Defaults of the options marked 'from --recipe': released (the paper's), small (chosen by our ablation "
            "for small models), or auto (small below 1B parameters)."
        ),
    )
    model: str = field(
        default="smollm2",
        metadata=_help("Base model: Hub id, local folder, or `smollm2` (the embedded SmolLM2-135M-Instruct)."),
    )
    data: str | None = field(
        default=None, metadata=_help("Training data: a JSONL file of `messages`, `prompt`+`completion` or `text` rows.")
    )
    output_dir: str | None = field(
        default=None, metadata=_help("Folder for checkpoints, logs, the hidden-state cache and the final heads.")
    )
    max_length: int = field(default=2048, metadata=_help("Truncate each tokenised row to this many tokens."))
    init_heads: str | None = field(
        default=None, metadata=_help("Start from these heads (folder or Hub id) instead of a fresh initialisation.")
    )
    # Heads.
    train_heads: str = field(
        default="both",
        metadata=_help("Which heads learn: both, temperature or top_p. A head that does not learn adds no loss."),
    )
    use_enhanced_features: bool = field(
        default=True, metadata=_help("Feed the top-p head [h, T, 4 statistics] as released (off: [h, T]).")
    )
    mlp_hidden_size: int = field(
        default=256, metadata=_help("Hidden width of both head MLPs (256 in every released checkpoint).")
    )
    # Objective.
    alpha: float = field(default=30.0, metadata=_help("Sharpness of the soft top-p mask."))
    easy_token_drop: float | None = field(
        default=None,
        metadata=_help(
            "Probability of dropping a position whose base argmax is already right from the temperature loss. "
            "Default: from --recipe."
        ),
    )
    dft: bool | None = field(
        default=None,
        metadata=_help(
            "Weight each token's loss by the base model's probability of it (Dynamic Fine-Tuning). Default: from "
            "--recipe."
        ),
    )
    temperature_loss_weight: float = field(default=1.0, metadata=_help("Weight of the temperature loss in the total."))
    top_p_loss_weight: float = field(default=1.0, metadata=_help("Weight of the soft top-p loss in the total."))
    sequence_weighting: str | None = field(
        default=None,
        metadata=_help(
            "none (released objective), importance (weight each sequence by its clipped probability ratio "
            "heads/base, so training follows task success rather than token likelihood) or importance-normalised "
            "(the same, self-normalised per step); see losses.py. Default: from --recipe."
        ),
    )
    importance_clip: float = field(default=10.0, metadata=_help("Upper bound of a sequence's importance weight."))
    control_commands: str | None = field(
        default=None,
        metadata=_help(
            "Plain-language control: `default` or a commands JSON file. Every row is also seen with a low- and a "
            "high-diversity command, and a ranking loss orders their mean T and P (see "
            "autodeco_lp/training/ranking.py)."
        ),
    )
    control_weight: float = field(default=1.0, metadata=_help("Weight of the control ranking loss in the total."))
    control_t_margin: float = field(default=0.1, metadata=_help("Margin of the ranking loss on the mean temperature."))
    control_p_margin: float = field(default=0.05, metadata=_help("Margin of the ranking loss on the mean top-p."))
    top_p_loss_trains_temperature: bool = field(
        default=True, metadata=_help("Let the top-p loss also move the temperature head (released behaviour).")
    )
    loss_chunk_size: int = field(
        default=DEFAULT_CHUNK_SIZE,
        metadata=_help("Positions per loss chunk; peak loss memory is about 60 bytes x chunk x vocab."),
    )
    soft_top_p: str = field(
        default="exact",
        metadata=_help(
            "Soft top-p loss: exact (sorts the vocabulary) or topk (sort-free, within 5e-4 nats per position of "
            "exact; bound derived in autodeco_lp/training/losses.py)."
        ),
    )
    # Optimisation.
    num_train_epochs: float | None = field(
        default=None,
        metadata=_help(
            "Passes over the data (fractions allowed); ignored when --max-steps > 0. Default: from --recipe."
        ),
    )
    max_steps: int = field(default=-1, metadata=_help("Total optimizer steps; overrides --num-train-epochs when > 0."))
    per_device_train_batch_size: int = field(default=8, metadata=_help("Examples per micro-batch on each process."))
    gradient_accumulation_steps: int = field(
        default=4, metadata=_help("Micro-batches per optimizer step on each process.")
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata=_help(
            "Token budget of a micro-batch (longest row x rows); larger micro-batches are split. The loss is per "
            "token, so this never changes the result."
        ),
    )
    learning_rate: float | None = field(
        default=None,
        metadata=_help(
            f"Peak AdamW learning rate. Default: from --recipe; {OUTCOME_LEARNING_RATE} for --objective outcome."
        ),
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1."))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2."))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Clip the gradient norm to this (0 disables)."))
    lr_scheduler_type: str = field(
        default="cosine", metadata=_help("Learning-rate schedule: " + ", ".join(SCHEDULERS) + ".")
    )
    warmup_ratio: float = field(
        default=0.03, metadata=_help("Share of the steps spent warming the learning rate up linearly.")
    )
    seed: int = field(
        default=42, metadata=_help("Seed of the head initialisation, the data order and the easy-token drop.")
    )
    bf16: bool = field(
        default=False, metadata=_help("Run the frozen base model in bf16 (heads and loss math stay fp32).")
    )
    use_cpu: bool = field(default=False, metadata=_help("Train on the CPU even when a GPU is available."))
    # Hidden-state cache.
    cache: bool = field(
        default=True,
        metadata=_help(
            "Run the base model once and keep the hidden states of supervised positions on disk (--no-cache streams "
            "through the base model every epoch)."
        ),
    )
    cache_max_gb: float = field(
        default=20.0, metadata=_help("Disk budget of the cache; above it training streams instead.")
    )
    cache_batch_size: int = field(default=16, metadata=_help("Rows per base-model forward while building the cache."))
    # Checkpoints and logs.
    save_steps: int = field(
        default=500, metadata=_help("Write output_dir/checkpoint-N every N steps (0: only the final heads).")
    )
    save_total_limit: int | None = field(
        default=None, metadata=_help("Keep at most this many checkpoints, deleting the oldest.")
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata=_help(
            "Allow replacing what --output-dir already holds: an earlier run's heads and checkpoints, or files "
            "with the names fit writes (README.md, metrics.jsonl, ...) that fit did not write there."
        ),
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help(
            "Continue from a checkpoint folder; the flag alone picks the latest in output_dir.", flag_value="latest"
        ),
    )
    logging_steps: int = field(default=10, metadata=_help("Write metrics every N steps."))
    report_to: str = field(
        default="none", metadata=_help("Also log to: none or tensorboard (needs the tensorboard package).")
    )
    disable_tqdm: bool = field(default=False, metadata=_help("Hide the progress bar."))
    # The outcome objective's own options (flags of their own; see OutcomeConfig).
    outcome: OutcomeConfig = field(default_factory=OutcomeConfig, metadata={"cli": False})

    def __post_init__(self) -> None:
        """Checks the options' values only: no file is read here (see `check_environment`)."""
        if self.recipe != "auto":
            if self.recipe not in RECIPES:
                raise ValueError(f"`--recipe` has to be one of auto, {', '.join(RECIPES)}, but is {self.recipe!r}")
            for name, value in RECIPES[self.recipe].items():  # explicit options win
                if getattr(self, name) is None:
                    setattr(self, name, value)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"`--objective` has to be one of {', '.join(OBJECTIVES)}, but is {self.objective!r}")
        if isinstance(self.outcome, dict):  # from a YAML / JSON config
            self.outcome = OutcomeConfig(**self.outcome)
        if self.objective == "outcome":
            self.outcome.check()
            if self.learning_rate is None:
                self.learning_rate = OUTCOME_LEARNING_RATE
        elif self.data is None:
            raise ValueError("`--data` is required: a JSONL training file (see `autodeco data sample`).")
        if self.output_dir is None:
            raise ValueError("`--output-dir` is required: where checkpoints and the final heads go.")
        choices = {"train_heads": TRAIN_HEADS, "lr_scheduler_type": SCHEDULERS, "report_to": REPORT_TO}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"`--{name.replace('_', '-')}` has to be one of {', '.join(allowed)}, "
                    f"but is {getattr(self, name)!r}"
                )
        positive = (
            "max_length",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "cache_batch_size",
            "mlp_hidden_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` has to be a positive int, but is {getattr(self, name)}")
        if self.max_steps <= 0 and self.num_train_epochs is not None and not self.num_train_epochs > 0:
            raise ValueError(
                f"`--num-train-epochs` has to be > 0 when --max-steps is not set, but is {self.num_train_epochs}"
            )
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"`--learning-rate` has to be a positive float, but is {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`--warmup-ratio` has to be in [0, 1), but is {self.warmup_ratio}")
        if self.save_steps < 0 or (self.save_total_limit is not None and self.save_total_limit < 1):
            raise ValueError("`--save-steps` has to be >= 0 and `--save-total-limit` >= 1")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ValueError(f"`--max-tokens-per-batch` has to be a positive int, but is {self.max_tokens_per_batch}")
        # While `--recipe auto` is undecided, the objective's explicit options are checked against released defaults.
        self._build_loss_config(RECIPES["released"])
        if self.control_commands is not None and min(self.control_t_margin, self.control_p_margin) < 0:
            raise ValueError(
                f"`--control-t-margin` / `--control-p-margin` have to be >= 0, but are {self.control_t_margin}, "
                f"{self.control_p_margin}"
            )

    def resolved(self, num_parameters: int) -> FitArgs:
        """These options with `--recipe auto` decided by the base model's size."""
        if self.recipe != "auto":
            return self
        return dataclasses.replace(self, recipe="small" if num_parameters < SMALL_MODEL_PARAMETERS else "released")

    def trains(self, head: str) -> bool:
        """Whether `--train-heads` trains `head` ("temperature" or "top_p")."""
        return self.train_heads in ("both", head)

    def loss_config(self) -> LossConfig:
        """The objective's switches; `--recipe auto` has to be decided first (`resolved`)."""
        unresolved = [name for name in ("easy_token_drop", "dft", "sequence_weighting") if getattr(self, name) is None]
        if unresolved:
            raise ValueError(f"{unresolved} come from `--recipe auto`: call FitArgs.resolved(num_parameters) first")
        return self._build_loss_config({})

    def _build_loss_config(self, defaults: dict[str, Any]) -> LossConfig:
        def value(name):  # an option left to the recipe takes its value from `defaults`
            return defaults[name] if getattr(self, name) is None else getattr(self, name)

        return LossConfig(
            alpha=self.alpha,
            easy_token_drop=value("easy_token_drop"),
            dft=value("dft"),
            sequence_weighting=value("sequence_weighting"),
            importance_clip=self.importance_clip,
            control_weight=self.control_weight,
            temperature_weight=self.temperature_loss_weight,
            top_p_weight=self.top_p_loss_weight,
            train_temperature=self.trains("temperature"),
            train_top_p=self.trains("top_p"),
            top_p_loss_trains_temperature=self.top_p_loss_trains_temperature,
            chunk_size=self.loss_chunk_size,
            soft_top_p=self.soft_top_p,
        )

    def check_environment(self) -> None:
        """The checks that read files or the installation; `fit` runs them where the run starts, before the
        model loads (the dataclass itself does no I/O)."""
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("`--report-to tensorboard` needs the tensorboard package: pip install tensorboard")
        if self.control_commands is not None:
            load_commands(self.control_commands)  # a bad file fails before the model loads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Fields from a YAML (or JSON) file; unknown keys are refused with the list of known ones."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"`--config` {str(path)!r} cannot be read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"`--config` {str(path)!r} has to hold a mapping of option: value")
    known = {f.name for f in dataclasses.fields(FitArgs)} - {"outcome"}
    outcome_known = {f.name for f in dataclasses.fields(OutcomeConfig)}
    fields = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(fields) - known - outcome_known)
    if unknown:
        raise ValueError(
            f"`--config` {str(path)!r} has unknown options {unknown}; known options: {sorted(known | outcome_known)}"
        )
    return fields


def split_outcome_options(values: dict[str, Any]) -> dict[str, Any]:
    """Flat option values (CLI or config file) -> `FitArgs` keyword arguments, the outcome objective's
    options gathered into `outcome=OutcomeConfig(...)`."""
    outcome_names = {f.name for f in dataclasses.fields(OutcomeConfig)}
    outcome = {k: v for k, v in values.items() if k in outcome_names}
    rest = {k: v for k, v in values.items() if k not in outcome_names}
    return {**rest, "outcome": OutcomeConfig(**outcome)}
