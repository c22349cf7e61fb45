"""`EvalArgs`: every option of `autodeco eval`, each with its help text (the command is built from them)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from autodeco_lp.engines.factory import check_dtype, choose_backend
from autodeco_lp.evaluation.arg_checks import check_positive_int, check_torch_device
from autodeco_lp.evaluation.methods import parse_methods
from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, TRAIN_DATASET_SEED
from autodeco_lp.tasks.prompting import DEFAULT_SHOTS

DEFAULT_METHODS = "greedy,default,autodeco,meanshift,oracle-grid,temperature-only,top-p-only"


@dataclass
class EvalArgs:
    model: str = field(default="smollm2", metadata={"help": "Base model: Hub id, folder, or `smollm2`."})
    heads: str | None = field(
        default=None, metadata={"help": "Heads folder or Hub id; default: the registry entry for --model."}
    )
    task: str | None = field(
        default=None, metadata={"help": "reasoning_gym:NAME or a JSONL file of {question, answer[, choices]}."}
    )
    problems: int = field(default=200, metadata={"help": "Problems to evaluate."})
    samples: int = field(default=16, metadata={"help": "Samples per problem and seed (pass@k needs k <= samples)."})
    seeds: str = field(default="0,1,2,3", metadata={"help": "Comma-separated sampling seeds."})
    methods: str = field(
        default=DEFAULT_METHODS,
        metadata={
            "help": "Comma-separated: greedy, default, autodeco, meanshift, oracle-grid, oracle-validation "
            "(needs --oracle-from), temperature-only, top-p-only, static:T,P."
        },
    )
    out: str | None = field(
        default=None, metadata={"help": "Folder for results.json, results.md and the resumable cache."}
    )
    dataset_seed: int = field(
        default=EVAL_DATASET_SEED, metadata={"help": "Seed of the task's problem generator (training data uses 1000)."}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens per completion."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per generate call; default: fill memory (GPU) or 64 (CPU); 256 with --backend vllm."
        },
    )
    chat: bool = field(
        default=True,
        metadata={"help": "Use the tokenizer's chat template for questions (models without one get few-shot prompts)."},
    )
    shots: int = field(
        default=DEFAULT_SHOTS,
        metadata={"help": "Few-shot examples in each prompt when the model has no chat template (or --no-chat)."},
    )
    exclude_data: str | None = field(
        default=None, metadata={"help": "Training JSONL whose questions are removed from the evaluation problems."}
    )
    device: str | None = field(default=None, metadata={"help": "torch device; default: CUDA if available."})
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Base model dtype: float32 or bfloat16 (about 1.7x the tokens/s on a CPU with AVX512-bf16; "
            "its agreement with float32 is measured in docs/results.md). The heads always run in float32."
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "Engine that generates: vllm (vLLM with the AutoDeco plugin; 2.5-3.3x the tokens/s of hf on "
            "the 2-core CPU, docs/benchmarks.md), hf (transformers' generate with the AutoDeco processor), or "
            "auto: vllm when vLLM is installed and no --device is given, else hf. Completions differ between "
            "engines (their caches are kept apart); their agreement is tested."
        },
    )
    oracle_from: str | None = field(
        default=None,
        metadata={
            "help": "A results.json, or a folder holding one, from an `autodeco eval` run on other problems "
            "(e.g. another --dataset-seed): the static setting with the best pass@1 there becomes method "
            "oracle-validation."
        },
    )

    def __post_init__(self) -> None:
        if self.task is None or self.out is None:
            raise ValueError(
                "`--task` and `--out` are required, e.g. --task reasoning_gym:basic_arithmetic --out results/"
            )
        check_positive_int("--problems", self.problems, "pass e.g. --problems 200")
        check_positive_int("--samples", self.samples, "pass e.g. --samples 16")
        check_positive_int("--max-new-tokens", self.max_new_tokens, "pass e.g. --max-new-tokens 128")
        check_positive_int("--batch-size", self.batch_size, "leave it out for the default")
        check_torch_device("--device", self.device)
        self.seed_list()
        methods = parse_methods(self.methods)
        check_dtype(self.dtype)
        self.backend = choose_backend(self.backend, self.device)  # settings record the one chosen
        wants_validation = "oracle-validation" in methods
        if wants_validation and not self.oracle_from:
            raise ValueError(
                f"`--methods` has oracle-validation but `--oracle-from` is {self.oracle_from!r}: pass --oracle-from "
                "with the --out folder (or results.json) of an `autodeco eval` run on other problems, e.g. the "
                "same command with --dataset-seed 1 --out val/"
            )
        if self.oracle_from and not wants_validation:
            raise ValueError(
                f"`--oracle-from {self.oracle_from}` is only read for method oracle-validation: add it to --methods"
            )
        if self.dataset_seed == TRAIN_DATASET_SEED:
            warnings.warn(
                f"`--dataset-seed {TRAIN_DATASET_SEED}` is the seed training data is sampled from by default: "
                "these problems may be the heads' training problems.",
                stacklevel=3,  # the caller of EvalArgs(...) (this runs inside the dataclass __init__)
            )

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError as exc:
            raise ValueError(f"`--seeds` has to be comma-separated integers, but is {self.seeds!r}") from exc
        if not seeds:
            raise ValueError("`--seeds` is empty")
        return seeds
