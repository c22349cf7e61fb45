"""`autodeco eval`: run decoding methods on a task, cache every finished problem, summarise.

For each decoding and seed, every problem gets `samples` completions, generated in batches of
left-padded prompts; each batch is seeded from (decoding, seed, first problem), so a resumed run
regenerates exactly what a kill interrupted. pass@1 is the mean share of correct samples
(mean and standard deviation across seeds); pass@k is the unbiased estimator over the same samples.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from autodeco_lp.evaluation.compare import paired, read_report
from autodeco_lp.evaluation.frontier import MIN_STATICS, best_static, static_decodings, static_frontier
from autodeco_lp.evaluation.methods import BASIC, GRID, Decoding, parse_methods, parse_static
from autodeco_lp.evaluation.passk import mean_std, pass_at_k
from autodeco_lp.evaluation.report import write_reports
from autodeco_lp.evaluation.store import ResultStore
from autodeco_lp.evaluation.vllm_backend import VllmSampler, choose_backend, sample_seed
from autodeco_lp.hub.jsonl import jsonl_lines
from autodeco_lp.hub.models import load_model, load_tokenizer, model_source
from autodeco_lp.hub.registry import resolve_heads
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.sampling import sample_completions
from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, TRAIN_DATASET_SEED, load_task
from autodeco_lp.tasks.prompting import DEFAULT_SHOTS, task_prompts

MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_dtype(dtype: str) -> None:
    """`--dtype` (eval and data sample): one of MODEL_DTYPES, else a ValueError naming the choices."""
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"`--dtype` has to be one of {', '.join(MODEL_DTYPES)}, but is {dtype!r}")


VLLM_ROWS_PER_CALL = 256  # sequences per vLLM generate call (vLLM schedules them; this sets the cache granularity)
DEFAULT_METHODS = "greedy,default,autodeco,meanshift,oracle-grid,temperature-only,top-p-only"
PASS_KS = (1, 4, 16)


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
            "the 2-core CPU, README Benchmarks), hf (transformers' generate with the AutoDeco processor), or "
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
        for name in ("problems", "samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` has to be a positive int, but is {getattr(self, name)}")
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


def auto_batch_size(model, prompt_tokens: int, new_tokens: int) -> int:
    """Sequences per generate call: on CUDA, what the KV cache and logits of 60% of free memory hold
    for the longest prompt (`prompt_tokens`) plus `new_tokens`."""
    if not torch.cuda.is_available() or next(model.parameters()).device.type != "cuda":
        return 64
    config = model.config.get_text_config()
    free, _ = torch.cuda.mem_get_info()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
    per_sequence = per_token * (prompt_tokens + new_tokens) + 8 * config.vocab_size * 4  # KV + a few (V,) fp32 rows
    return int(max(1, min(1024, 0.6 * free // per_sequence)))


class Evaluator:
    def __init__(self, args: EvalArgs, task_options: dict | None, progress: bool) -> None:
        self.args, self.progress = args, progress
        self.source = model_source(args.model)
        if args.backend == "hf":
            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, self.tokenizer = load_model(args.model, dtype=MODEL_DTYPES[args.dtype], device=device)
        else:  # vLLM loads the model itself
            self.model, self.tokenizer = None, load_tokenizer(self.source.path)
        self.task = load_task(args.task, task_options or {}, dataset_seed=args.dataset_seed, size=args.problems)
        self.problems = self.task.problems
        if args.exclude_data:
            seen = _training_questions(Path(args.exclude_data))
            self.problems = [p for p in self.problems if p.question not in seen]
            if not self.problems:
                raise ValueError(
                    f"every problem appears in `--exclude-data` {args.exclude_data}; change --dataset-seed."
                )
        self.prompts = task_prompts(self.tokenizer, self.task, self.problems, args.chat, args.shots)
        self.texts = self.prompts.texts
        if args.batch_size:
            self.batch_size = args.batch_size
        elif args.backend == "vllm":
            self.batch_size = VLLM_ROWS_PER_CALL
        else:
            self.batch_size = auto_batch_size(self.model, self.longest_prompt, args.max_new_tokens)
        self._vllm: VllmSampler | None = None
        self._heads = None
        self._heads_digest: str | None = None
        fingerprint = {
            k: v
            for k, v in asdict(args).items()
            # What changes only the report (methods, oracle_from) or not the completions (batching, device)
            # stays out, so adding such an option never renames existing caches.
            if k not in ("methods", "seeds", "out", "batch_size", "device", "shots", "dtype", "oracle_from", "backend")
        }
        # float32 / hf caches written before --dtype / --backend existed stay valid
        if args.dtype != "float32":
            fingerprint.update(dtype=args.dtype)
        if args.backend != "hf":
            fingerprint.update(backend=args.backend)
        fingerprint.update(task_options=task_options or {}, questions=[p.question for p in self.problems])
        if self.prompts.fewshot:  # chat prompts do not depend on --shots (keeps their caches valid)
            fingerprint.update(prompts=self.texts)
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
        self.store = ResultStore(Path(args.out) / f"cache-{digest}.jsonl")

    @property
    def heads(self):
        if self._heads is None:
            self._heads = AutoDecoHeads.from_pretrained(self.heads_id)
        return self._heads

    @property
    def heads_id(self) -> str:
        """The heads' folder or Hub id: --heads, else the registry entry of the model."""
        return self.args.heads or resolve_heads(self.source.name)

    @functools.cached_property
    def prompt_ids(self) -> list[list[int]]:
        """Each prompt's token ids, as `generate` gets them (what the vLLM backend sends)."""
        return [self.tokenizer(t, add_special_tokens=self.prompts.add_special_tokens)["input_ids"] for t in self.texts]

    @property
    def longest_prompt(self) -> int:
        return max(len(ids) for ids in self.prompt_ids)

    def vllm(self) -> VllmSampler:
        """The vLLM sampler (started on first use: a run whose completions are all cached needs no engine)."""
        if self._vllm is None:
            self._vllm = VllmSampler(
                self.source.path,
                self.tokenizer,
                lambda: self.heads_id,  # looked up only when an AutoDeco engine starts
                max_model_len=self.longest_prompt + self.args.max_new_tokens,
                dtype=self.args.dtype,
            )
        return self._vllm

    def close(self) -> None:
        if self._vllm is not None:
            self._vllm.close()

    def key(self, decoding: Decoding) -> str:
        """The cache key: AutoDeco results also name the heads' weights, so refitted heads
        (same folder or registry entry, new weights) never reuse old completions."""
        if decoding.kind != "autodeco":
            return decoding.key
        return f"{decoding.key}@{self.heads_digest}"

    @property
    def heads_digest(self) -> str:
        """First 12 hex digits of the sha256 of the heads' tensors (loads the heads)."""
        if self._heads_digest is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.heads.state_dict().items()):
                digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
            self._heads_digest = digest.hexdigest()[:12]
        return self._heads_digest

    def run(self, decoding: Decoding, label: str) -> dict[int, list[dict]]:
        """Per seed, the records of every problem (generating what the cache lacks)."""
        seeds = [0] if decoding.kind == "greedy" else self.args.seed_list()
        samples = 1 if decoding.kind == "greedy" else self.args.samples
        per_call = max(1, self.batch_size // samples)
        key = self.key(decoding)
        todo = [
            (s, i)
            for s in seeds
            for i in range(0, len(self.problems), per_call)
            if any(self.store.get(key, s, j) is None for j in range(i, min(i + per_call, len(self.problems))))
        ]
        if todo:
            processor = None
            if decoding.kind == "autodeco" and self.args.backend == "hf":
                processor = AutoDeco(
                    self.model,
                    self.heads,
                    use_temperature_head=decoding.use_temperature_head,
                    use_top_p_head=decoding.use_top_p_head,
                )
            try:
                total = sum(min(start + per_call, len(self.problems)) - start for _, start in todo)
                with tqdm(total=total, desc=label, disable=not self.progress, file=sys.stderr) as bar:
                    for seed, start in todo:
                        stop = min(start + per_call, len(self.problems))
                        if self.args.backend == "vllm":
                            outputs = self._sample_vllm(decoding, seed, start, stop, samples)
                        else:
                            outputs = self._sample_hf(decoding, seed, start, stop, samples, processor)
                        records = []
                        for index, outs in zip(range(start, stop), outputs):
                            problem = self.problems[index]
                            records.append(
                                {
                                    "key": key,
                                    "seed": seed,
                                    "index": index,
                                    "correct": [int(self.task.score(problem, o.text) >= 1.0) for o in outs],
                                    "tokens": [o.num_tokens for o in outs],
                                    "mean_t": [o.mean_temperature for o in outs],
                                    "mean_p": [o.mean_top_p for o in outs],
                                    "texts": [o.text for o in outs],
                                }
                            )
                        self.store.add(records)
                        bar.update(stop - start)
            finally:
                if processor is not None:
                    processor.close()
        return {s: [self.store.get(key, s, i) for i in range(len(self.problems))] for s in seeds}

    def _sample_hf(self, decoding: Decoding, seed: int, start: int, stop: int, samples: int, processor):
        """Problems [start, stop) in one `generate` call, seeded once per call: the same seeds for any heads."""
        return sample_completions(
            self.model,
            self.tokenizer,
            self.texts[start:stop],
            num_samples=samples,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            greedy=decoding.kind == "greedy",
            max_new_tokens=self.args.max_new_tokens,
            seed=zlib.crc32(f"{decoding.key}|{seed}|{start}".encode()),
            batch_size=samples * (stop - start),
            logits_processor=[processor] if processor is not None else None,
            add_special_tokens=self.prompts.add_special_tokens,
            stop_strings=self.prompts.stop_strings,
        )

    def _sample_vllm(self, decoding: Decoding, seed: int, start: int, stop: int, samples: int):
        """Problems [start, stop) in one vLLM call, seeded per sample (independent of the batch)."""
        seeds = [[sample_seed(decoding.key, seed, i, j) for j in range(samples)] for i in range(start, stop)]
        return self.vllm().sample(
            self.prompt_ids[start:stop],
            decoding,
            seeds,
            max_new_tokens=self.args.max_new_tokens,
            stop_strings=self.prompts.stop_strings,
        )


def _training_questions(path: Path) -> set[str]:
    seen = set()
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            row = json.loads(line)
            for message in row.get("messages", []):
                if message.get("role") == "user":
                    seen.add(message["content"])
            if "prompt" in row:
                seen.add(row["prompt"])
                # A few-shot prompt (autodeco_lp.tasks.prompting) ends with "Question: <q>\nAnswer:".
                seen.add(row["prompt"].rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:"))
    return seen


def summarise(decoding: Decoding, per_seed: dict[int, list[dict]], samples: int) -> dict:
    """pass@1 mean/std over seeds, pass@k, the mean applied T and P (token-weighted), and per problem
    (in problem order, averaged over seeds: what paired intervals use) its pass@1 (`per_problem`,
    `[n_problems]`) and its unbiased pass@k for each k in PASS_KS with 1 < k <= samples
    (`per_problem_pass@k`, `{str(k): [n_problems]}`; empty for greedy, which has one sample).

    `per_seed`: seed -> `[n_problems]` cache records, each with `correct` (`[n_samples]` 0/1)."""
    pass1, passk = [], {k: [] for k in PASS_KS if k <= samples}
    per_problem = [
        sum(sum(r["correct"]) / len(r["correct"]) for r in rows) / len(rows) for rows in zip(*per_seed.values())
    ]
    fewest = min(len(r["correct"]) for records in per_seed.values() for r in records)  # greedy: 1
    per_problem_passk = {
        str(k): [
            sum(pass_at_k(len(r["correct"]), sum(r["correct"]), k) for r in rows) / len(rows)
            for rows in zip(*per_seed.values())  # rows: one problem's record per seed
        ]
        for k in PASS_KS
        if 1 < k <= min(samples, fewest)
    }
    t_sum = p_sum = weight = 0.0
    for records in per_seed.values():
        pass1.append(sum(sum(r["correct"]) / len(r["correct"]) for r in records) / len(records))
        for k in passk:
            n = len(records[0]["correct"])
            if k <= n:
                passk[k].append(sum(pass_at_k(n, sum(r["correct"]), k) for r in records) / len(records))
        for r in records:
            for t, p, n in zip(r["mean_t"], r["mean_p"], r["tokens"]):
                if t is not None:
                    t_sum, p_sum, weight = t_sum + t * n, p_sum + p * n, weight + n
    mean1, std1 = mean_std(pass1)
    summary = {
        "decoding": decoding.key,
        "temperature": decoding.temperature if decoding.kind == "static" else None,
        "top_p": decoding.top_p if decoding.kind == "static" else None,
        "pass@1": mean1,
        "pass@1_std": std1,
        "seeds": len(pass1),
        "pass@k": {str(k): mean_std(v)[0] for k, v in passk.items() if v},
        "per_problem": per_problem,
        "per_problem_pass@k": per_problem_passk,
    }
    if weight:
        summary.update(mean_temperature=t_sum / weight, mean_top_p=p_sum / weight)
    return summary


def _best_index(sweep: list[dict]) -> int:
    """The index of the best pass@1 in a grid sweep, by `frontier.best_static`'s rule (12 decimals;
    ties to the lower T, then the lower P), so oracle-grid and oracle-test agree on a tie."""
    return int(best_static({str(i): s for i, s in enumerate(sweep)}))


def oracle_grid(evaluator: Evaluator, samples: int) -> dict:
    """The paper's two-stage oracle search, scored on the evaluation problems themselves."""
    stage1 = []
    for t in GRID:
        d = Decoding("static", t, 1.0)
        stage1.append(summarise(d, evaluator.run(d, f"grid T={t}"), samples))
    best_t = stage1[_best_index(stage1)]["temperature"]
    stage2 = []
    for p in GRID:
        d = Decoding("static", best_t, p)
        stage2.append(summarise(d, evaluator.run(d, f"grid T={best_t} P={p}"), samples))
    best = stage2[_best_index(stage2)]
    return {**best, "grid": {"temperature_sweep": stage1, "top_p_sweep": stage2, "best_temperature": best_t}}


def paired_comparisons(results: dict[str, dict], reference: str = "autodeco") -> dict[str, dict]:
    """`{"autodeco - X": comparison}` for every other method X, paired over problems
    (`stats.paired_bootstrap`, intervals as `PairedInterval.to_dict()`):

        {"mean", "low", "high", "problems", "level", "significant",   # pass@1 (as before pass@k existed)
         "pass@k": {"4": interval, "16": interval}}                   # per k that both methods have

    `pass@k` is empty for greedy (one sample) and for results written before `per_problem_pass@k`
    existed. Empty without the reference method."""
    if reference not in results:
        return {}
    comparisons = {}
    for name, other in results.items():
        if name != reference:
            both = paired(results[reference], other)
            comparisons[f"{reference} - {name}"] = {**both["pass@1"], "pass@k": both["pass@k"]}
    return comparisons


def validation_choice(oracle_from: str, task: str, dataset_seed: int) -> dict:
    """What `oracle-validation` runs: the static setting with the best pass@1 in another run's results.

    Reads `oracle_from` (a results.json, or a folder holding one) and takes its static decodings
    (`frontier.static_decodings`: default, static:T,P, and oracle-grid's points; ties to the lower T,
    then the lower P). Returns `{"decoding": Decoding, "chosen_method": its name there,
    "validation_pass@1": its pass@1 there, "chosen_from": [names considered], "chosen_on": {"path",
    "task", "dataset_seed", "problems"}}` (the last three from that run's settings, None if absent).

    Raises ValueError naming `--oracle-from` for a missing or unreadable file, one without static
    decodings, and one whose settings have this run's task and dataset seed (the same problems: a
    choice made there is the optimistic oracle-test, not a validation choice).
    """
    fix = (
        "pass the --out folder (or results.json) of an `autodeco eval` run of the same model and task on other "
        "problems, e.g. this command with another --dataset-seed and --out"
    )
    path, report = read_report(oracle_from, "--oracle-from")
    methods, settings = report["methods"], report["settings"]
    try:
        statics = static_decodings(methods)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} is not an `autodeco eval` results.json ({exc}); {fix}"
        ) from exc
    if settings.get("task") == task and settings.get("dataset_seed") == dataset_seed:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} was run on this run's problems (task {task}, dataset seed "
            f"{dataset_seed}), so a setting chosen there is not chosen on validation problems; {fix} "
            f"(e.g. --dataset-seed {dataset_seed + 1})"
        )
    if not statics:
        raise ValueError(
            f"`--oracle-from {oracle_from}`: {path} has no static decoding to choose from (it has "
            f"{', '.join(methods) or 'no methods'}); run that evaluation with default, static:T,P or oracle-grid "
            "in --methods"
        )
    name = best_static(statics)
    chosen = statics[name]
    return {
        "decoding": Decoding("static", chosen["temperature"], chosen["top_p"]),
        "chosen_method": name,
        "validation_pass@1": chosen["pass@1"],
        "chosen_from": list(statics),
        "chosen_on": {
            "path": str(path),
            "task": settings.get("task"),
            "dataset_seed": settings.get("dataset_seed"),
            "problems": settings.get("problems_evaluated"),
        },
    }


def oracle_test(results: dict[str, dict], args: EvalArgs, problems: int) -> dict | None:
    """The best static decoding on the evaluated problems themselves (the paper's oracle: optimistic,
    as the choice sees the test problems), from the results already there; None with fewer than
    `frontier.MIN_STATICS` distinct statics. The chosen static's summary plus `chosen_method`,
    `chosen_from`, `chosen_on` (this run: path None) and `optimistic: True`."""
    statics = static_decodings(results)
    if len(statics) < MIN_STATICS:
        return None
    name = best_static(statics)
    return {
        **statics[name],
        "chosen_method": name,
        "chosen_from": list(statics),
        "chosen_on": {"path": None, "task": args.task, "dataset_seed": args.dataset_seed, "problems": problems},
        "optimistic": True,
    }


def _run_methods(evaluator: Evaluator, names: list[str], validation: dict | None) -> dict[str, dict]:
    """Each method's summary, in the order given (MeanShift reads AutoDeco's, running it if needed)."""
    samples = evaluator.args.samples
    results: dict[str, dict] = {}
    for name in names:
        if name == "meanshift":
            auto = results.get("autodeco") or summarise(
                BASIC["autodeco"], evaluator.run(BASIC["autodeco"], "autodeco"), samples
            )
            d = Decoding("static", round(auto["mean_temperature"], 3), min(1.0, round(auto["mean_top_p"], 3)))
            results[name] = summarise(d, evaluator.run(d, name), samples)
        elif name == "oracle-grid":
            results[name] = oracle_grid(evaluator, samples)
        elif name == "oracle-validation":
            d = validation["decoding"]
            extra = {k: v for k, v in validation.items() if k != "decoding"}
            results[name] = {**summarise(d, evaluator.run(d, name), samples), **extra}
        else:
            d = BASIC[name] if name in BASIC else parse_static(name)
            results[name] = summarise(d, evaluator.run(d, name), samples)
    return results


def run_eval(args: EvalArgs, task_options: dict | None = None, progress: bool = True) -> dict:
    """Evaluate every method; write `results.json` and `results.md` to `args.out`; return the results.

    Besides the requested methods, `methods` gains `oracle-test` (>= 3 statics ran) and the report a
    `frontier` section (`frontier.static_frontier`: >= 3 statics with per-problem pass@k)."""
    names = parse_methods(args.methods)
    # Read the validation results before loading the model: a bad --oracle-from fails at once.
    validation = (
        validation_choice(args.oracle_from, args.task, args.dataset_seed) if "oracle-validation" in names else None
    )
    evaluator = Evaluator(args, task_options, progress)
    try:
        results = _run_methods(evaluator, names, validation)
    finally:
        evaluator.close()  # a vLLM engine, if one started
    best = oracle_test(results, args, len(evaluator.problems))
    if best is not None:
        results["oracle-test"] = best
    report = {
        "comparisons": paired_comparisons(results),
        "settings": {
            **asdict(args),
            "task_options": task_options or {},
            "problems_evaluated": len(evaluator.problems),
            "heads_resolved": args.heads or "registry",
        },
        "methods": results,
    }
    frontier = static_frontier(results)
    if frontier is not None:
        report["frontier"] = frontier
    write_reports(Path(args.out), report)
    return report
