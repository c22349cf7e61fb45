"""What each objective learns on the toy task whose per-token optimum is known (training/toy_task.py).

    python benchmarks/outcome_toy.py [--seeds 5]

Prints the exact expected pass@4 of: greedy, the best static (T, P) on a 40 x 20 grid, the
per-position optimum, heads trained with the outcome objective (pass@4 leave-one-out advantages)
and heads trained with the released likelihood objective on rejection samples, each over several
seeds (mean and range), with the T and P the heads apply at copy and guess positions.
"""

from __future__ import annotations

import argparse
import statistics
import time

from autodeco_lp.training.toy_task import ToyTask, fit_likelihood_toy, fit_outcome_toy

GRID_T = [round(0.05 * i, 2) for i in range(1, 41)]
GRID_P = [round(0.05 * i, 2) for i in range(1, 21)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    seeds = range(parser.parse_args().seeds)
    task = ToyTask()
    best, t, p = task.best_static(GRID_T, GRID_P)
    print(
        f"greedy {task.static_reward(0.01, 1.0):.3f}; best static {best:.3f} at T={t}, P={p}; "
        f"per-position optimum {1 - 0.75**task.k:.3f}"
    )
    for name, fit in (("outcome", fit_outcome_toy), ("likelihood", fit_likelihood_toy)):
        rewards, started = [], time.perf_counter()
        for seed in seeds:
            reward, temperature, top_p = task.heads_reward(fit(task, task.heads(seed), seed=seed))
            rewards.append(reward)
            print(
                f"  {name} seed {seed}: {reward:.3f}  copy T {temperature[0]:.3f} P {top_p[0]:.3f}  "
                f"guess T {temperature[1]:.3f} P {top_p[1]:.3f}"
            )
        print(
            f"{name}: mean {statistics.mean(rewards):.3f} [min {min(rewards):.3f}, max {max(rewards):.3f}] over "
            f"{len(rewards)} seeds, {time.perf_counter() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
