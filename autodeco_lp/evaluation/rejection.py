"""`autodeco data sample`: the paper's rejection-sampled training data.

Sample several solutions per problem from the base model itself, keep those the task's verifier
accepts, write them as chat `messages` rows, or for a base model's few-shot prompts as
`prompt` + `completion` rows (ending with the token that completed the stop newline, as sampled,
and `"eos": false`; see `fewshot_ending`), with a `meta` record of task, options, seeds and index,
which training ignores.

Two engines, as `autodeco eval` (`--backend`): hf (`generate`, seeded once per batch) and vllm
(`VllmSampler`, seeded per sample, so the rows do not depend on the batch size; about 3x the
tokens/s here). They draw different samples from the same distribution. It lives beside the
harness because it is one: the same prompts, engines and verifiers, keeping what passes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from autodeco_lp.evaluation.methods import Decoding
from autodeco_lp.evaluation.runner import MODEL_DTYPES, VLLM_ROWS_PER_CALL, check_dtype
from autodeco_lp.evaluation.vllm_backend import VllmSampler, choose_backend, sample_seed
from autodeco_lp.hub.atomic import atomic_write
from autodeco_lp.hub.models import load_model, load_tokenizer, model_source
from autodeco_lp.inference.sampling import Sample, sample_completions
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
    batch_size: int = field(
        default=64, metadata={"help": "Sequences per generate call (hf); vllm takes 256 per call and schedules them."}
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

    def __post_init__(self) -> None:
        if self.task is None or self.out is None:
            raise ValueError(
                "`--task` and `--out` are required, e.g. --task reasoning_gym:basic_arithmetic --out train.jsonl"
            )
        if self.dataset_seed == EVAL_DATASET_SEED:
            raise ValueError(
                f"`--dataset-seed {EVAL_DATASET_SEED}` is the evaluation seed; training data from it would leak "
                f"evaluation problems. Pick another (default {TRAIN_DATASET_SEED})."
            )
        for name in ("problems", "samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` has to be a positive int, but is {getattr(self, name)}")
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
    if args.backend == "vllm":
        model, tokenizer = None, load_tokenizer(model_source(args.model).path)
    else:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model(args.model, dtype=MODEL_DTYPES[args.dtype], device=device)
    prompts = task_prompts(tokenizer, task, task.problems, args.chat, args.shots)
    started = time.perf_counter()
    with tqdm(total=len(prompts.texts), desc="sampling", disable=not progress, file=sys.stderr) as bar:
        if args.backend == "vllm":
            completions = _sample_vllm(args, tokenizer, prompts, bar)
        else:
            completions = sample_completions(
                model,
                tokenizer,
                prompts.texts,
                num_samples=args.samples,
                greedy=args.temperature == 0,
                temperature=args.temperature,
                top_p=args.top_p,
                max_new_tokens=args.max_new_tokens,
                seed=args.seed,
                batch_size=args.batch_size,
                add_special_tokens=prompts.add_special_tokens,
                stop_strings=prompts.stop_strings,
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


def _sample_vllm(args: SampleArgs, tokenizer, prompts, bar) -> list:
    """`sample_completions`' result from vLLM: each sample seeded from (args.seed, problem, sample),
    VLLM_ROWS_PER_CALL rows per call (progress between calls)."""
    greedy = args.temperature == 0
    decoding = Decoding("greedy") if greedy else Decoding("static", args.temperature, args.top_p)
    ids = [tokenizer(t, add_special_tokens=prompts.add_special_tokens)["input_ids"] for t in prompts.texts]
    sampler = VllmSampler(
        model_source(args.model).path,
        tokenizer,
        heads=lambda: None,  # static decodings only: no AutoDeco engine starts
        max_model_len=max(map(len, ids)) + args.max_new_tokens,
        dtype=args.dtype,
    )
    per_call = max(1, VLLM_ROWS_PER_CALL // args.samples)
    completions = []
    try:
        for start in range(0, len(ids), per_call):
            stop = min(start + per_call, len(ids))
            seeds = [
                [sample_seed("data:" + decoding.key, args.seed, i, k) for k in range(args.samples)]
                for i in range(start, stop)
            ]
            completions += sampler.sample(
                ids[start:stop],
                decoding,
                seeds,
                max_new_tokens=args.max_new_tokens,
                stop_strings=prompts.stop_strings,
            )
            bar.update(stop - start)
    finally:
        sampler.close()
    return completions
