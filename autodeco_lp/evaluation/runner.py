"""`autodeco eval`: run decoding methods on a task, cache every finished problem, summarise.

For each decoding and seed, every problem gets `samples` completions from the sampler of
`--backend` (engines/), `batch_size // samples` problems per call; a call's randomness is derived
from (decoding, seed, its first problem) for the hf engine and from (decoding, seed, problem,
sample) for vllm, so a resumed run regenerates exactly what a kill interrupted. pass@1 is the mean
share of correct samples (mean and standard deviation across seeds); pass@k is the unbiased
estimator over the same samples (evaluation/summary.py).
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from autodeco_lp.engines import Decoding, Seeding, make_sampler
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.cache_key import cache_path, model_sha256_of, problems_sha256
from autodeco_lp.evaluation.frontier import static_frontier
from autodeco_lp.evaluation.merge import earlier_methods, merged_names, out_lock
from autodeco_lp.evaluation.methods import BASIC, parse_methods, parse_static
from autodeco_lp.evaluation.oracle import oracle_grid, oracle_test, validation_choice
from autodeco_lp.evaluation.problems import eval_problems
from autodeco_lp.evaluation.report import write_reports
from autodeco_lp.evaluation.store import ResultStore
from autodeco_lp.evaluation.summary import paired_comparisons, summarise
from autodeco_lp.hub.models import model_source
from autodeco_lp.hub.registry import resolve_heads
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.tasks.prompting import task_prompts


class Evaluator:
    """The completions of one `autodeco eval` run: `run(decoding)` reads them from the cache in `--out`
    and generates what it lacks."""

    def __init__(self, args: EvalArgs, task_options: dict | None, progress: bool) -> None:
        self.args, self.progress = args, progress
        self.source = model_source(args.model)
        # An engine of `--backend` (vllm starts one only when a decoding is not cached).
        self.sampler = make_sampler(
            args.backend, args.model, heads=lambda: self.heads_id, dtype=args.dtype, device=args.device
        )
        self.task, self.problems = eval_problems(
            args.task, task_options, args.dataset_seed, args.problems, args.exclude_data
        )
        self.prompts = task_prompts(self.sampler.tokenizer, self.task, self.problems, args.chat, args.shots)
        self.batch_size = args.batch_size or self.sampler.default_batch_size(self.prompts, args.max_new_tokens)
        self._heads_digest: str | None = None
        # The cache is found by content: the model's weights and the problems with their gold answers.
        self.model_sha256 = model_sha256_of(args.model)
        self.problems_sha256 = problems_sha256(self.task.problems, self.problems)
        self.store = ResultStore(
            cache_path(args.out, asdict(args), task_options, self.problems_sha256, self.model_sha256)
        )

    @property
    def heads_id(self) -> str:
        """The heads' folder or Hub id: --heads, else the registry entry of the model."""
        return self.args.heads or resolve_heads(self.source.name)

    def close(self) -> None:
        self.sampler.close()

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
            for name, tensor in sorted(AutoDecoHeads.from_pretrained(self.heads_id).state_dict().items()):
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
            if any(self._cached(key, s, j, samples) is None for j in range(i, min(i + per_call, len(self.problems))))
        ]
        total = sum(min(start + per_call, len(self.problems)) - start for _, start in todo)
        with tqdm(total=total, desc=label, disable=not todo or not self.progress, file=sys.stderr) as bar:
            for seed, start in todo:
                stop = min(start + per_call, len(self.problems))
                # One call per cache step: its seed depends on the decoding, the seed and its first problem only.
                seeding = Seeding(zlib.crc32(f"{decoding.key}|{seed}|{start}".encode()), decoding.key, seed)
                outputs = self.sampler.sample(
                    self.prompts,
                    start,
                    stop,
                    decoding,
                    seeding,
                    samples=samples,
                    max_new_tokens=self.args.max_new_tokens,
                    batch_size=samples * (stop - start),
                )
                self.store.add(
                    [self._record(key, seed, index, outs) for index, outs in zip(range(start, stop), outputs)]
                )
                bar.update(stop - start)
        return {s: [self.store.get(key, s, i) for i in range(len(self.problems))] for s in seeds}

    def _cached(self, key: str, seed: int, index: int, samples: int) -> dict | None:
        """The cached record of a problem, checked against this run: one per sample, and its `correct`
        what the task's verifier says of its `texts` (a hand-edited claim is refused, naming file:line)."""
        record = self.store.get(key, seed, index)
        if record is None:
            return None
        fix = "delete that line (or the cache file) and rerun the same command: it regenerates what is missing"
        if len(record["correct"]) != samples:
            raise ValueError(
                f"{self.store.where(key, seed, index)}: the record of {key}, seed {seed}, problem {index} has "
                f"{len(record['correct'])} samples, but this run takes {samples} (--samples; greedy: 1); {fix}"
            )
        problem = self.problems[index]
        scored = [int(self.task.score(problem, text) >= 1.0) for text in record["texts"]]
        if scored != record["correct"]:
            raise ValueError(
                f"{self.store.where(key, seed, index)}: the record of {key}, seed {seed}, problem {index} claims "
                f"correct {record['correct']}, but the task's verifier scores its texts {scored}; {fix}"
            )
        return record

    def _record(self, key: str, seed: int, index: int, outs) -> dict:
        """One cache line: a problem's samples under one decoding and seed, scored."""
        problem = self.problems[index]
        return {
            "key": key,
            "seed": seed,
            "index": index,
            "correct": [int(self.task.score(problem, o.text) >= 1.0) for o in outs],
            "tokens": [o.num_tokens for o in outs],
            "mean_t": [o.mean_temperature for o in outs],
            "mean_p": [o.mean_top_p for o in outs],
            "texts": [o.text for o in outs],
        }


def engine_order(names: list[str]) -> list[str]:
    """`names` in an order that starts each engine at most once, whatever the order given: the methods
    decoded with heads first, grouped by which heads take part (on vllm each setting is an engine of its
    own), then greedy (it runs on whichever engine is up), then every static decoding (vllm's plain
    engine; MeanShift's setting comes from AutoDeco's summary, which the first group has made). Within a
    group the given order is kept."""
    settings = [BASIC[n].heads_setting for n in names if n in BASIC and BASIC[n].heads_setting is not None]
    order = list(dict.fromkeys(settings))  # heads settings, first appearance first

    def group(name: str) -> tuple[int, int]:
        if name in BASIC and BASIC[name].heads_setting is not None:
            return (0, order.index(BASIC[name].heads_setting))
        return (1, 0) if name == "greedy" else (2, 0)

    return sorted(names, key=group)  # stable: the given order within a group


def _run_methods(evaluator: Evaluator, names: list[str], validation: dict | None) -> dict[str, dict]:
    """Each method's summary, in the order given, computed in `engine_order` (MeanShift reads AutoDeco's
    summary, running AutoDeco with the other head methods when it was not asked for)."""
    samples = evaluator.args.samples
    results: dict[str, dict] = {}
    needs_autodeco = "meanshift" in names and "autodeco" not in names
    for name in engine_order([*names, "autodeco"] if needs_autodeco else names):
        if name == "meanshift":
            auto = results["autodeco"]
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
    return {name: results[name] for name in names}


def run_eval(args: EvalArgs, task_options: dict | None = None, progress: bool = True) -> dict:
    """Evaluate every method; write `results.json` and `results.md` to `args.out`; return the results.

    Besides the requested methods, `methods` gains those of an earlier run on this `--out` with the same
    settings (`merge.py`), `oracle-test` (>= 3 statics ran) and the report a `frontier` section
    (`frontier.static_frontier`: >= 3 statics with per-problem pass@k)."""
    names = parse_methods(args.methods)
    # Read the validation results before loading the model: a bad --oracle-from fails at once.
    validation = (
        validation_choice(args.oracle_from, args.task, args.dataset_seed) if "oracle-validation" in names else None
    )
    out = Path(args.out)
    with out_lock(out):  # one run at a time on this --out: one cache writer, results merged
        evaluator = Evaluator(args, task_options, progress)
        settings = {
            **asdict(args),
            "task_options": task_options or {},
            "problems_evaluated": len(evaluator.problems),
            "heads_resolved": args.heads or "registry",
            "model_sha256": evaluator.model_sha256,
            "problems_sha256": evaluator.problems_sha256,
        }
        try:
            earlier = earlier_methods(out, settings)
            results = _run_methods(evaluator, merged_names(names, earlier), validation)
        finally:
            evaluator.close()  # a vLLM engine or the AutoDeco hooks, if any
        if "oracle-validation" in earlier and "oracle-validation" not in results:
            results["oracle-validation"] = earlier["oracle-validation"]  # chosen from its own --oracle-from
        best = oracle_test(results, args, len(evaluator.problems))
        if best is not None:
            results["oracle-test"] = best
        report = {"comparisons": paired_comparisons(results), "settings": settings, "methods": results}
        frontier = static_frontier(results)
        if frontier is not None:
            report["frontier"] = frontier
        write_reports(out, report)
    return report
