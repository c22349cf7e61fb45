"""`FitArgs`: every option of `autodeco-fit`, with its help text. The CLI and `--config fit.yaml`
both fill this one dataclass; names follow Hugging Face `TrainingArguments` where one exists.

The objective's options are `LossConfig`'s fields (training/losses.py: their flags and help live
there); `FitArgs.loss` holds the ones the user set, and `FitArgs.outcome` the outcome objective's
(`OutcomeConfig`). `options_to_fit_args` turns flat option names (flags or config keys) into a
`FitArgs`; `read_config_file` reads and type-checks a config file.

`--recipe` sets the learning rate, the number of epochs and any `LossConfig` overrides (`RECIPES`)
the user left unset: `released` is the paper's recipe (AdamW at 5e-6 for one epoch, the released
objective: `LossConfig`'s defaults); `small` is the recipe the ablation in docs/results.md chose for
small models trained on a few hundred rejection-sampled rows; `auto` (the default) picks `small` for
base models under `SMALL_MODEL_PARAMETERS` parameters and `released` otherwise, once the base model
is loaded. An option given on the command line or in `--config` always wins over the recipe.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodeco_lp.hub.options_file import field_types, option_name, read_mapping, shown, typed_value
from autodeco_lp.training.losses import LossConfig
from autodeco_lp.training.outcome_config import OUTCOME_LEARNING_RATE, OutcomeConfig
from autodeco_lp.training.ranking import load_commands

TRAIN_HEADS = ("both", "temperature", "top_p")
SMALL_MODEL_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Recipe:
    """What `--recipe NAME` sets where the user did not: two optimisation options and `LossConfig` overrides."""

    learning_rate: float
    num_train_epochs: float
    loss: Mapping[str, Any] = field(default_factory=dict)  # LossConfig field -> value; empty: its defaults

    def __post_init__(self) -> None:
        LossConfig(**self.loss)  # an unknown field or a bad value fails at import, not in a user's run


RECIPES: dict[str, Recipe] = {
    "released": Recipe(learning_rate=5e-6, num_train_epochs=1.0),
    # Chosen by `autodeco eval ablation --config docs/ablation.yaml` (docs/results.md, "Recipe ablation").
    "small": Recipe(learning_rate=1e-3, num_train_epochs=5.0),
}
# The loss options a user may set: every `LossConfig` field but the two `--train-heads` decides.
LOSS_OPTIONS = {f.name: f for f in dataclasses.fields(LossConfig) if f.metadata.get("cli", True)}
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
            "Defaults of --learning-rate and --num-train-epochs (and of any loss option the recipe overrides): "
            "released (the paper's: 5e-6, 1 epoch), small (chosen by our ablation for small models: 1e-3, 5 epochs), "
            "or auto (small below 1B parameters, decided once the base model is loaded)."
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
    control_commands: str | None = field(
        default=None,
        metadata=_help(
            "Plain-language control: `default` or a commands JSON file. Every row is also seen with a low- and a "
            "high-diversity command, and a ranking loss orders their mean T and P (see "
            "autodeco_lp/training/ranking.py; its weight and margins are loss options)."
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
    # The objective's options the user set (LossConfig field -> value; flags of their own, see LossConfig);
    # `resolved` fills in every other one from the recipe and LossConfig's defaults.
    loss: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    # The outcome objective's own options (flags of their own; see OutcomeConfig).
    outcome: OutcomeConfig = field(default_factory=OutcomeConfig, metadata={"cli": False})

    def __post_init__(self) -> None:
        """Checks the options' values only: no file is read here (see `check_environment`)."""
        if self.recipe != "auto":
            if self.recipe not in RECIPES:
                raise ValueError(f"`--recipe` has to be one of auto, {', '.join(RECIPES)}, but is {self.recipe!r}")
            recipe = RECIPES[self.recipe]
            if self.learning_rate is None:  # explicit options win
                self.learning_rate = recipe.learning_rate
            if self.num_train_epochs is None:
                self.num_train_epochs = recipe.num_train_epochs
        if self.objective not in OBJECTIVES:
            raise ValueError(f"`--objective` has to be one of {', '.join(OBJECTIVES)}, but is {self.objective!r}")
        if isinstance(self.outcome, dict):  # from `to_dict()` or a YAML / JSON config
            self.outcome = OutcomeConfig(**self.outcome)
        unknown = sorted(set(self.loss) - set(LOSS_OPTIONS))
        if unknown:
            raise ValueError(
                f"`loss` has unknown options {shown(unknown)}; known: {', '.join(LOSS_OPTIONS)} (LossConfig's fields; "
                "`--train-heads` decides train_temperature and train_top_p)"
            )
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
                    f"but is {shown(getattr(self, name))}"
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
        # The loss options are checked now; while `--recipe auto` is undecided, against the released recipe's.
        self._loss_config(RECIPES["released" if self.recipe == "auto" else self.recipe])

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> FitArgs:
        """`FitArgs` from flat option values keyed by option name (the flags' names in snake_case, as in a
        config file): the loss options go to `loss` (None: not given, left to the recipe), the outcome
        objective's to `outcome`."""
        kwargs: dict[str, Any] = {"loss": {}, "outcome": {}}
        for name, value in values.items():
            block, field_name = OPTIONS.get(name, (None, name))  # an unknown name fails in the constructor
            if block is None:
                kwargs[field_name] = value
            elif value is not None or block == "outcome":
                kwargs[block][field_name] = value
        return cls(**kwargs)

    def resolved(self, num_parameters: int) -> FitArgs:
        """These options with `--recipe auto` decided by the base model's size, and every loss option
        written out in `loss` (the recipe's and LossConfig's defaults for those the user left unset)."""
        recipe = self.recipe
        if recipe == "auto":
            recipe = "small" if num_parameters < SMALL_MODEL_PARAMETERS else "released"
        config = self._loss_config(RECIPES[recipe])
        return dataclasses.replace(self, recipe=recipe, loss={name: getattr(config, name) for name in LOSS_OPTIONS})

    def trains(self, head: str) -> bool:
        """Whether `--train-heads` trains `head` ("temperature" or "top_p")."""
        return self.train_heads in ("both", head)

    def loss_config(self) -> LossConfig:
        """The objective's options; `--recipe auto` has to be decided first (`resolved`)."""
        if self.recipe == "auto":
            raise ValueError("the loss options come from `--recipe auto`: call FitArgs.resolved(num_parameters) first")
        return self._loss_config(RECIPES[self.recipe])

    def _loss_config(self, recipe: Recipe) -> LossConfig:
        heads = {"train_temperature": self.trains("temperature"), "train_top_p": self.trains("top_p")}
        return LossConfig(**{**recipe.loss, **self.loss, **heads})  # the user's options win over the recipe

    def check_environment(self) -> None:
        """The checks that read files or the installation; `fit` runs them where the run starts, before the
        model loads (the dataclass itself does no I/O)."""
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("`--report-to tensorboard` needs the tensorboard package: pip install tensorboard")
        if self.control_commands is not None:
            load_commands(self.control_commands)  # a bad file fails before the model loads

    def to_dict(self) -> dict[str, Any]:
        """Every field, the `loss` and `outcome` blocks nested; `FitArgs(**args.to_dict())` is `args` again."""
        return dataclasses.asdict(self)


def _option_table() -> dict[str, tuple[str | None, str]]:
    """Option name (a flag's name in snake_case, a config file's key) -> (block of FitArgs or None, field name);
    a name claimed by two blocks fails at import."""
    entries = [
        *((f.name, None, f.name) for f in dataclasses.fields(FitArgs) if f.metadata.get("cli", True)),
        *((option_name(f), "loss", f.name) for f in LOSS_OPTIONS.values()),
        *((f.name, "outcome", f.name) for f in dataclasses.fields(OutcomeConfig)),
    ]
    table: dict[str, tuple[str | None, str]] = {}
    for name, block, field_name in entries:
        if name in table:
            raise RuntimeError(f"option {name!r} is defined twice: in {table[name][0]} and in {block}")
        table[name] = (block, field_name)
    return table


OPTIONS = _option_table()
_OPTION_TYPES = {
    None: field_types(FitArgs),
    "loss": field_types(LossConfig),
    "outcome": field_types(OutcomeConfig),
}
_BLOCKS = {"loss": LossConfig, "outcome": OutcomeConfig}


def typed_options(raw: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Option values from a config file (or a section of one), each checked against its field's type.

    Keys are option names (snake_case or dashes); a `loss:` or `outcome:` mapping may hold that block's
    options by field name (as `FitArgs.to_dict()` writes them). Returns option name -> typed value;
    unknown keys and values of the wrong type are refused naming `what`, the key and the value.
    """
    flat: dict[str, tuple[str, Any]] = {}  # option name -> (key as written, value)
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key in _BLOCKS:
            if not isinstance(value, Mapping):
                raise ValueError(f"{what}, key {key} has to be a mapping of {key} options, but is {shown(value)}")
            names = {f.name: f for f in dataclasses.fields(_BLOCKS[key]) if key != "loss" or f.name in LOSS_OPTIONS}
            for inner, inner_value in value.items():
                inner = str(inner).replace("-", "_")
                if inner not in names:
                    raise ValueError(
                        f"{what}, key {key}: unknown option {shown(inner)}; known: {', '.join(sorted(names))}"
                    )
                name = option_name(names[inner]) if key == "loss" else inner
                _add(flat, name, f"{key}.{inner}", inner_value, what)
        elif key in OPTIONS:
            _add(flat, key, key, value, what)
        else:
            raise ValueError(f"{what} has an unknown option {shown(key)}; known options: {', '.join(sorted(OPTIONS))}")
    typed = {}
    for name, (written, value) in flat.items():
        block, field_name = OPTIONS[name]
        typed[name] = typed_value(value, _OPTION_TYPES[block][field_name], f"{what}, key {written}")
    return typed


def _add(flat: dict[str, tuple[str, Any]], name: str, written: str, value: Any, what: str) -> None:
    if name in flat:
        raise ValueError(f"{what} sets option {name} twice (as {flat[name][0]} and as {written}); keep one")
    flat[name] = (written, value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Typed option values (option name -> value) from a YAML (or JSON) `--config` file."""
    what = f"`--config` {shown(str(path))}"
    return typed_options(read_mapping(path, what), what)
