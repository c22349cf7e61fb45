"""`autodeco data sample`: the paper's rejection-sampled training data.

Sample several solutions per problem from the base model itself, keep those the task's verifier
accepts, write them as chat `messages` rows, or for a base model's few-shot prompts as
`prompt` + `completion` rows (ending with the token that completed the stop newline, as sampled,
and `"eos": false`; see `fewshot_ending`), with a `meta` record of task, options, seeds and index,
which training ignores.

Two engines, as `autodeco eval` (`--backend`, engines/): hf (`generate`, torch seeded once with
`--seed` before the first batch) and vllm (each sample seeded from the seed, the problem and the
sample, so the rows do not depend on the batch size; about 3x the tokens/s here). They draw
different samples from the same distribution. It lives beside the
harness because it is one: the same prompts, engines and verifiers, keeping what passes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from autodeco_lp.engines import Decoding, Seeding, check_dtype, choose_backend, make_sampler
from autodeco_lp.evaluation.arg_checks import check_positive_int, check_torch_device
from autodeco_lp.hub.atomic import atomic_write
from autodeco_lp.inference.sampling import Sample
from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, TRAIN_DATASET_SEED, load_task
from autodeco_lp.tasks.prompting import DEFAULT_SHOTS, task_prompts


@dataclass
class SampleArgs:
    model: str = field(default="smollm2", metadata={"help": "Base model to sample from: Hub id, folder, or `smollm2`."})
    task: str | None = field(
        default=None, metadata={"help": "Task with a verifier, e.g. reasoning_gym:basic_arithmetic."}
    )
    problems: int = field(default=2000, metadata={"help": "Problems to generate from the task."})
    samples: int = field(default=4, metadata={"help": "Solutions sampled per problem."})
    out: str | None = field(default=None, metadata={"help": "JSONL file to write (messages rows)."})
    dataset_seed: int = field(
        default=TRAIN_DATASET_SEED,
        metadata={
            "help": f"Seed of the task's problem generator (evaluation uses {EVAL_DATASET_SEED}, "
            "which is refused here)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature (the paper samples the base model as is: 1.0); "
            "0 = greedy, one solution per problem (--samples 1)."
        },
    )
    top_p: float = field(default=1.0, metadata={"help": "Sampling top-p."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens per sampled solution."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per generate call; default: fill memory (GPU) or 64 (CPU) on hf, 256 on vllm "
            "(which schedules them itself: its rows do not depend on it)."
        },
    )
    chat: bool = field(
        default=True,
        metadata={
            "help": "Use the tokenizer's chat template for the question (models without one get few-shot prompts)."
        },
    )
    shots: int = field(
        default=DEFAULT_SHOTS,
        metadata={"help": "Few-shot examples in each prompt when the model has no chat template (or --no-chat)."},
    )
    device: str | None = field(default=None, metadata={"help": "torch device; default: CUDA if available."})
    dtype: str = field(default="float32", metadata={"help": "Base model dtype: float32 or bfloat16."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "Engine that samples, as for `autodeco eval`: vllm, hf, or auto (vllm when vLLM is installed "
            "and no --device is given, else hf). The engines draw different samples."
        },
    )

    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace --out if it exists (as autodeco-fit's --overwrite-output-dir); else it is refused."},
    )

    def __post_init__(self) -> None:
        if self.task is None or self.out is None:
            raise ValueError(
                "`--task` and `--out` are required, e.g. --task reasoning_gym:basic_arithmetic --out train.jsonl"
            )
        if Path(self.out).is_dir():
            raise ValueError(
                f"`--out {self.out}` is a folder; pass a JSONL file name, e.g. {Path(self.out) / 'train.jsonl'}"
            )
        if Path(self.out).exists() and not self.overwrite:
            raise ValueError(
                f"`--out {self.out}` exists and would be replaced; pass --overwrite to replace it, or another --out"
            )
        if self.dataset_seed == EVAL_DATASET_SEED:
            raise ValueError(
                f"`--dataset-seed {EVAL_DATASET_SEED}` is the evaluation seed; training data from it would leak "
                f"evaluation problems. Pick another (default {TRAIN_DATASET_SEED})."
            )
        check_positive_int("--problems", self.problems, "pass e.g. --problems 2000")
        check_positive_int("--samples", self.samples, "pass e.g. --samples 4")
        check_positive_int("--max-new-tokens", self.max_new_tokens, "pass e.g. --max-new-tokens 256")
        check_positive_int("--batch-size", self.batch_size, "leave it out for the default")
        check_torch_device("--device", self.device)
        if not (self.temperature >= 0 and 0 < self.top_p <= 1):
            raise ValueError(
                f"`--temperature` has to be >= 0 and `--top-p` in (0, 1], but are {self.temperature}, {self.top_p}"
            )
        check_dtype(self.dtype)
        self.backend = choose_backend(self.backend, self.device)
        if self.temperature == 0 and self.samples != 1:
            raise ValueError(
                f"`--temperature 0` is greedy decoding, which gives one solution per problem, but `--samples` is "
                f"{self.samples}. Pass --samples 1 (and more --problems for more data)."
            )


@dataclass
class SampleSummary:
    problems: int
    sampled: int
    accepted: int
    problems_solved: int
    seconds: float
    out: Path
    backend: str


def fewshot_ending(text: str, sample: Sample) -> dict:
    """`completion` and `eos` of a kept few-shot row, ending as the model ended it: with the token that completed
    the stop string (Gemma3-270m ends an answer with its "\n\n" token, p ~0.9-0.99, and gives "\n" ~0.003, so
    appending "\n" would teach the heads a token the model never samples there), or at EOS."""
    if sample.stop_text:
        return {"completion": text + sample.stop_text, "eos": False}
    return {"completion": text, "eos": True}


def sample_training_data(args: SampleArgs, task_options: dict | None = None, progress: bool = True) -> SampleSummary:
    task = load_task(args.task, task_options or {}, dataset_seed=args.dataset_seed, size=args.problems)
    decoding = Decoding("greedy") if args.temperature == 0 else Decoding("static", args.temperature, args.top_p)
    # hf: torch seeded once with --seed; vllm: each sample from (--seed, problem, sample), "data:" keeping
    # these seeds apart from the evaluation's.
    seeding = Seeding(args.seed, "data:" + decoding.key, args.seed)
    with make_sampler(args.backend, args.model, dtype=args.dtype, device=args.device) as sampler:
        prompts = task_prompts(sampler.tokenizer, task, task.problems, args.chat, args.shots)
        started = time.perf_counter()
        with tqdm(total=len(prompts.texts), desc="sampling", disable=not progress, file=sys.stderr) as bar:
            completions = sampler.sample(
                prompts,
                0,
                len(prompts.texts),
                decoding,
                seeding,
                samples=args.samples,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size or sampler.default_batch_size(prompts, args.max_new_tokens),
                progress=bar,
            )
    rows, solved = [], 0
    for problem, prompt, samples in zip(task.problems, prompts.texts, completions):
        # A few-shot completion that ran out of tokens before its newline is not a finished answer
        # (it would teach the heads a stop that never happened); chat rows keep the released rule.
        texts = [sample.text if sample.finished or not prompts.fewshot else "" for sample in samples]
        kept = [(k, s) for k, s in enumerate(texts) if s.strip() and task.score(problem, s) >= 1.0]
        solved += bool(kept)
        for k, text in kept:
            meta = {
                "task": task.spec,
                "options": task.options,
                "dataset_seed": args.dataset_seed,
                "index": problem.index,
                "sample": k,
                "seed": args.seed,
                "temperature": args.temperature,
                "top_p": args.top_p,
            }
            if prompts.fewshot:
                meta["shots"] = args.shots
                rows.append({"prompt": prompt, **fewshot_ending(text, samples[k]), "meta": meta})
            else:
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": problem.question},
                            {"role": "assistant", "content": text},
                        ],
                        "meta": meta,
                    }
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        out,
        lambda path: path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"),
    )
    return SampleSummary(
        len(task.problems),
        len(task.problems) * args.samples,
        len(rows),
        solved,
        time.perf_counter() - started,
        out,
        args.backend,
    )
