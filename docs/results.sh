#!/usr/bin/env bash
# Regenerates every number in docs/results.md (about an hour on a 2-core CPU, minutes on a GPU; resumable: rerun
# after a kill and finished problems come from the caches in docs/results/*/).
set -euo pipefail
cd "$(dirname "$0")/.."
AUTODECO=${AUTODECO:-.venv/bin/autodeco}
COMMON=(--model smollm2 --problems 24 --samples 4 --seeds 0,1 --max-new-tokens 24 --batch-size 96
        --methods greedy,default,autodeco,meanshift,oracle-grid,temperature-only,top-p-only)

# In domain: the task families the shipped heads were trained on (problem seed 0 here, 1000 there).
$AUTODECO eval "${COMMON[@]}" --task reasoning_gym:products --task-option min_digits=1 --task-option max_digits=1 \
    --out docs/results/products
$AUTODECO eval "${COMMON[@]}" --task reasoning_gym:chain_sum --task-option min_digits=1 --task-option max_digits=1 \
    --task-option min_terms=2 --task-option max_terms=3 --out docs/results/chain_sum
# Out of domain: a task family not used in training.
$AUTODECO eval "${COMMON[@]}" --task reasoning_gym:basic_arithmetic --task-option min_digits=1 --task-option max_digits=1 \
    --task-option min_terms=2 --task-option max_terms=3 --out docs/results/basic_arithmetic

# Figures.
for task in products chain_sum basic_arithmetic; do
    $AUTODECO plot grid --results docs/results/$task --out docs/results/$task/grid.png
    $AUTODECO plot passk --results docs/results/$task --out docs/results/$task/passk.png
done
$AUTODECO plot trace --model smollm2 --max-new-tokens 40 --out docs/results/trace.png "What is 7 * 8? Explain briefly."
