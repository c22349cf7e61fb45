"""Time per training epoch with the hidden-state cache against streaming through the base model.

    .venv/bin/python benchmarks/bench_fit.py --data train.jsonl [--model smollm2] [--epochs 2]

Runs `fit` twice on the same data, model and settings, once with `--cache` and once with
`--no-cache`, each for `--epochs` epochs, and sums the per-step times from metrics.jsonl per
epoch. The cached run's first epoch is preceded by building the cache (reported separately);
every later epoch runs only lm_head + heads. Reports epoch times and the streaming/cached ratio.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cache in (True, False):
            out = Path(tmp) / ("cached" if cache else "streamed")
            fit_args = FitArgs(
                model=args.model,
                data=args.data,
                output_dir=str(out),
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                gradient_accumulation_steps=1,
                learning_rate=1e-3,
                save_steps=0,
                logging_steps=1,
                cache=cache,
                disable_tqdm=True,
            )
            result = fit(fit_args)
            steps_per_epoch = result.steps // args.epochs
            results[cache] = (epoch_times(out, steps_per_epoch), result)
    cached, streamed = results[True], results[False]
    print(f"model={args.model} data={args.data} epochs={args.epochs} steps/epoch={cached[1].steps // args.epochs}")
    print(f"cache build: {cached[1].cache_seconds:.1f} s")
    for e, (c, s) in enumerate(zip(cached[0], streamed[0]), start=1):
        print(f"epoch {e}: cached {c:7.1f} s   streamed {s:7.1f} s   streamed/cached {s / c:5.1f}x")
    later = [s / c for c, s in zip(cached[0][1:], streamed[0][1:])]
    if later:
        print(f"after the first epoch the cache is {min(later):.1f}x-{max(later):.1f}x faster per epoch")
    print(f"whole run incl. cache build: cached {cached[1].seconds:.1f} s, streamed {streamed[1].seconds:.1f} s")


if __name__ == "__main__":
    main()
