"""Time per training epoch with the hidden-state cache against streaming through the base model.

    .venv/bin/python benchmarks/bench_fit.py --data train.jsonl [--model smollm2] [--epochs 2] \
        [--rows N] [--soft-top-p exact topk]

For each soft top-p loss (`--soft-top-p`, both by default), runs `fit` twice on the same data,
model and settings, once with `--cache` and once with `--no-cache`, each for `--epochs` epochs,
and sums the per-step times from metrics.jsonl per epoch. The cached run's first epoch is
preceded by building the cache (reported separately; built once per loss, in its own folder);
every epoch then runs only lm_head + heads. Reports epoch times and the streaming/cached ratio
per loss, and the cached epochs of the two losses against each other. `--rows N` uses the
first N rows of `--data` (a shorter run; the ratios are per epoch).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from autodeco_lp.training import FitArgs, fit


def epoch_times(output_dir: Path, steps_per_epoch: int) -> list[float]:
    per_epoch: dict[int, float] = defaultdict(float)
    for line in (output_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        per_epoch[(record["step"] - 1) // steps_per_epoch] += record["step_seconds"]
    return [per_epoch[e] for e in sorted(per_epoch)]


def run_pair(args, data: str, loss: str, tmp: Path) -> dict[bool, tuple[list[float], object]]:
    """`{cache: (per-epoch seconds, FitResult)}` for the cached and the streamed run with one loss."""
    results = {}
    for cache in (True, False):
        out = tmp / f"{loss}-{'cached' if cache else 'streamed'}"
        fit_args = FitArgs(
            model=args.model,
            data=data,
            output_dir=str(out),
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=1e-3,
            save_steps=0,
            logging_steps=1,
            cache=cache,
            loss={"soft_top_p": loss},
            disable_tqdm=True,
        )
        result = fit(fit_args)
        results[cache] = (epoch_times(out, result.steps // args.epochs), result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=None, help="use only the first N rows of --data")
    parser.add_argument("--soft-top-p", nargs="+", choices=["exact", "topk"], default=["exact", "topk"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.rows:
            data = str(Path(tmp) / "rows.jsonl")
            with open(args.data, encoding="utf-8") as source:
                Path(data).write_text("".join(itertools.islice(source, args.rows)), encoding="utf-8")
        runs = {loss: run_pair(args, data, loss, Path(tmp)) for loss in args.soft_top_p}
    first = next(iter(runs.values()))[True][1]
    print(
        f"model={args.model} data={args.data} rows={args.rows or 'all'} epochs={args.epochs} "
        f"steps/epoch={first.steps // args.epochs} batch={args.batch_size}"
    )
    for loss, results in runs.items():
        (cached, cached_run), (streamed, streamed_run) = results[True], results[False]
        print(f"--soft-top-p {loss}: cache build {cached_run.cache_seconds:.1f} s")
        for e, (c, s) in enumerate(zip(cached, streamed), start=1):
            print(f"  epoch {e}: cached {c:7.1f} s   streamed {s:7.1f} s   streamed/cached {s / c:5.1f}x")
        print(
            f"  whole run incl. cache build: cached {cached_run.seconds:.1f} s, streamed {streamed_run.seconds:.1f} s"
        )
    if len(runs) == 2:
        exact, topk = (runs[loss][True][0] for loss in ("exact", "topk"))
        print("cached epochs, exact/topk: " + ", ".join(f"{e / t:.2f}x" for e, t in zip(exact, topk)))


if __name__ == "__main__":
    main()
