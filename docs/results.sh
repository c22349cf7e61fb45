#!/usr/bin/env bash
# Regenerates the numbers in docs/results.md, one section at a time:
#   bash docs/results.sh [main|scale|scale-chain_sum|scale-long-screen|scale-long|scale-data|outcome|outcome-chain_sum|outcome-gemma3|losses|ablation|control|gemma3|all]  (default: main)
# main: the comparison on the embedded model + figures (~1 h on the 2-core CPU from empty caches);
# ablation: the recipe ablation (~2 h: 14 fits + their evaluations); control: plain-language control (~15 min);
# gemma3: the second model family (~1.5 h from empty caches; needs the gemma3 wheels, see the README).
# scale: the at-scale evidence at 200 problems x 16 samples, bf16, with a static grid on validation problems
#   (problem seed 7) and on the reported ones (problem seed 0), and the bf16-vs-fp32 agreement check
#   (~70 min on the 2-core CPU from empty caches; the caches are committed, so a rerun takes ~25 s).
# scale-chain_sum: the same protocol on one-digit chain sums (docs/results.md, its at-scale section).
# scale-long-screen: greedy on validation problems for 9 candidate longer tasks (~10 min); scale-long: the
#   scale protocol with 160 new tokens on the two chosen, on the vllm backend (in progress).
# scale-data: >= 6,000 rejection-sampled rows (T = 0.5) and the T = 1.0 rows of the same problems (~35 min on vllm),
#   the ablation at that scale on validation problems (docs/ablation-scale.yaml, ~45 min) and the refitted shipped recipe
#   on the scale sections' problems (~15 min; after scale and scale-chain_sum).
# outcome: heads trained on the outcome (autodeco-fit --objective outcome, from the shipped heads, on training problems),
#   checkpoints chosen on validation problems, then AutoDeco on the scale section's products problems (after scale).
# outcome-chain_sum: the same on one-digit chain sums (after scale-chain_sum); outcome-gemma3: on Gemma3's products
#   (after gemma3; needs the gemma3 wheels).
# losses: the shipped recipe refitted with --soft-top-p topk and with another seed, compared (~15 min; after scale).
# Resumable: rerun after a kill and finished problems come from the caches in docs/results/*/.
set -euo pipefail
cd "$(dirname "$0")/.."
AUTODECO=${AUTODECO:-.venv/bin/autodeco}
FIT=${FIT:-.venv/bin/autodeco-fit}
SECTION=${1:-main}
HEADS=heads/smollm2-135m-instruct
ONE_DIGIT=(--task-option min_digits=1 --task-option max_digits=1)
TERMS=(--task-option min_terms=2 --task-option max_terms=3)

if [[ $SECTION == main || $SECTION == all ]]; then
    COMMON=(--model smollm2 --problems 24 --samples 4 --seeds 0,1 --max-new-tokens 24 --batch-size 96
            --methods greedy,default,autodeco,meanshift,oracle-grid,temperature-only,top-p-only)
    # In domain: the task families the shipped heads were trained on (problem seed 0 here, 1000 there).
    $AUTODECO eval --backend hf "${COMMON[@]}" --task reasoning_gym:products "${ONE_DIGIT[@]}" --out docs/results/products
    $AUTODECO eval --backend hf "${COMMON[@]}" --task reasoning_gym:chain_sum "${ONE_DIGIT[@]}" "${TERMS[@]}" --out docs/results/chain_sum
    # Out of domain: a task family not used in training.
    $AUTODECO eval --backend hf "${COMMON[@]}" --task reasoning_gym:basic_arithmetic "${ONE_DIGIT[@]}" "${TERMS[@]}" --out docs/results/basic_arithmetic
    for task in products chain_sum basic_arithmetic; do
        $AUTODECO plot grid --results docs/results/$task --out docs/results/$task/grid.png
        $AUTODECO plot passk --results docs/results/$task --out docs/results/$task/passk.png
    done
    $AUTODECO plot trace --model smollm2 --max-new-tokens 40 --out docs/results/trace.png "What is 7 * 8? Explain briefly."
fi

PYTHON=${PYTHON:-.venv/bin/python}
# answer_stats LIMIT FOLDER...: per eval --out folder and decoding in its cache, pass@1 (over every sample),
# the mean generated tokens and how many completions reached LIMIT new tokens.
answer_stats() {
    $PYTHON - "$@" <<'PY'
import collections, pathlib, sys
from autodeco_lp.evaluation.store import ResultStore  # the harness's own reader: one record per problem
limit = int(sys.argv[1])
for folder in map(pathlib.Path, sys.argv[2:]):
    by_key = collections.defaultdict(list)
    for cache in folder.glob("cache-*.jsonl"):
        for record in ResultStore(cache).records.values():
            by_key[record["key"].split("@")[0]].append(record)
    for key, records in sorted(by_key.items()):
        tokens = [n for r in records for n in r["tokens"]]
        correct = [c for r in records for c in r["correct"]]
        print(f"{folder.name:>16} {key:>18}: pass@1 {sum(correct) / len(correct):.3f}, mean tokens "
              f"{sum(tokens) / len(tokens):.1f}, at {limit}: {sum(n >= limit for n in tokens)} of {len(tokens)}")
PY
}

# verdicts GRID_RUN ADDED_STATICS_RUNS CANDIDATE...: `autodeco eval`'s frontier section for candidates of other runs on
# GRID_RUN's problems (each CANDIDATE is RUN/METHOD under docs/results/scale; missing runs are left out), against
# GRID_RUN's statics plus every static:* method of the comma-separated ADDED_STATICS_RUNS ("-": none). GRID_RUN's own candidates
# (autodeco, meanshift) are judged alongside.
verdicts() {
    $PYTHON - "$@" <<'PY'
import json, pathlib, sys
from autodeco_lp.evaluation.frontier import static_frontier
from autodeco_lp.evaluation.report import frontier_section
scale = pathlib.Path("docs/results/scale")
def methods(run):
    return json.loads((scale / run / "results.json").read_text())["methods"]
grid, added, candidates = sys.argv[1], sys.argv[2], sys.argv[3:]
statics = methods(grid)
for run in [] if added == "-" else added.split(","):
    statics |= {n: m for n, m in methods(run).items() if n.startswith("static:")}
extra = {c: methods(c.rsplit("/", 1)[0])[c.rsplit("/", 1)[1]]
         for c in candidates if (scale / c.rsplit("/", 1)[0] / "results.json").exists()}
print(frontier_section(static_frontier(statics, 16, extra=extra)))
PY
}

# The static grid of the scale section: a T sweep at P = 1 and P = 0.9 / 0.7 at three temperatures.
GRID=static:0.1,1.0,static:0.3,1.0,static:0.5,1.0,static:0.7,1.0,static:1.0,1.0
GRID=$GRID,static:0.5,0.9,static:0.7,0.9,static:1.0,0.9,static:1.0,0.7
# The scale protocol on one task: scale_protocol NAME BATCH_SIZE BACKEND MAX_NEW_TOKENS TASK_ARGS...
# The grid on 100 validation problems (seed 7) x 4; then 200 problems (seed 0) x 16 samples, bf16, every
# method, the validation choice and the grid; the frontier. SCALE_MODEL (default smollm2) and SCALE_GRID
# (default $GRID) set the model and the grid.
# With the hf backend the batch size is part of how samples are seeded (per generate call), so it is fixed
# per task; the vllm backend seeds each sample (any batch size gives the same completions).
scale_protocol() {
    local name=$1 batch=$2 backend=$3 tokens=$4
    shift 4
    local args=(--backend "$backend" --model "${SCALE_MODEL:-smollm2}" --max-new-tokens "$tokens" --batch-size "$batch"
                --seeds 0 --dtype bfloat16 "$@")
    local out=docs/results/scale/$name grid=${SCALE_GRID:-$GRID}
    # Validation first (it is small), so the main run's headline comparisons come before the grid's.
    $AUTODECO eval "${args[@]}" --problems 100 --samples 4 --dataset-seed 7 --methods "$grid" --out "$out-validation"
    $AUTODECO eval "${args[@]}" --problems 200 --samples 16 --oracle-from "$out-validation" --out "$out" \
        --methods "greedy,autodeco,meanshift,oracle-validation,default,$grid"
    $AUTODECO plot frontier --results "$out" --k 16 --out "$out/frontier.png"
}

if [[ $SECTION == scale || $SECTION == all ]]; then
    scale_protocol products 256 hf 24 --task reasoning_gym:products "${ONE_DIGIT[@]}"
    # bf16 against fp32 on the same problems: greedy, one static setting and AutoDeco (4 samples per problem).
    $AUTODECO eval --backend hf --model smollm2 --max-new-tokens 24 --batch-size 256 --seeds 0 --task reasoning_gym:products \
        "${ONE_DIGIT[@]}" --problems 200 --samples 4 --methods greedy,static:0.5,1.0,autodeco \
        --out docs/results/scale/products-fp32
    $AUTODECO eval compare docs/results/scale/products docs/results/scale/products-fp32 \
        --methods greedy,static:0.5,1.0,autodeco > docs/results/scale/bf16-vs-fp32.md
    # How many greedy completions bf16 changes, and which precision the correctness flips favour.
    $PYTHON - <<'PY' | tee docs/results/scale/bf16-greedy-changes.txt
import pathlib
from autodeco_lp.evaluation.store import ResultStore
def greedy(run):
    caches = (pathlib.Path("docs/results/scale") / run).glob("cache-*.jsonl")
    return {r["index"]: r for cache in caches for r in ResultStore(cache).records.values() if r["key"] == "greedy"}
bf16, fp32 = greedy("products"), greedy("products-fp32")
same = sum(bf16[i]["texts"] == fp32[i]["texts"] for i in bf16)
flips = [i for i in bf16 if bf16[i]["correct"] != fp32[i]["correct"]]
print(f"identical greedy completions: {same} of {len(bf16)}; correctness flips: {len(flips)}, "
      f"fp32 right in {sum(fp32[i]['correct'][0] for i in flips)}, bf16 right in {sum(bf16[i]['correct'][0] for i in flips)}")
PY
fi

if [[ $SECTION == scale-chain_sum || $SECTION == all ]]; then
    # Second in-domain task: the scale protocol on one-digit chain sums (2-3 terms).
    scale_protocol chain_sum 64 hf 24 --task reasoning_gym:chain_sum "${ONE_DIGIT[@]}" "${TERMS[@]}"
fi

if [[ $SECTION == scale-long-screen || $SECTION == all ]]; then
    # How scale-long's tasks were chosen: greedy on 40 validation problems (seed 7), 160 new tokens, per candidate;
    # keep those with greedy pass@1 in [0.1, 0.7] and long answers (answer_stats, into screen/summary.txt).
    SCREEN=(--backend hf --model smollm2 --problems 40 --seeds 0 --max-new-tokens 160 --batch-size 64 --dtype bfloat16
            --dataset-seed 7 --methods greedy)
    screen() { local name=$1; shift; $AUTODECO eval "${SCREEN[@]}" "$@" --out docs/results/scale/screen/$name; }
    d() { echo --task-option min_digits=$1 --task-option max_digits=$2; }
    t() { echo --task-option min_terms=$1 --task-option max_terms=$2; }
    screen products_2x1 --task reasoning_gym:products $(d 1 2)
    screen products_2x2 --task reasoning_gym:products $(d 2 2)
    screen products_1d34 --task reasoning_gym:products $(d 1 1) $(t 3 4)
    screen chain_sum_2d4 --task reasoning_gym:chain_sum $(d 2 2) $(t 3 4)
    screen chain_sum_1d46 --task reasoning_gym:chain_sum $(d 1 1) $(t 4 6)
    screen basic_2d3 --task reasoning_gym:basic_arithmetic $(d 2 2) $(t 2 3)
    screen basic_1d3 --task reasoning_gym:basic_arithmetic $(d 1 1) $(t 2 3)
    screen simple_eq --task reasoning_gym:simple_equations
    screen gsm_symbolic --task reasoning_gym:gsm_symbolic
    # greedy pass@1 and answer lengths per candidate:
    answer_stats 160 docs/results/scale/screen/*/ | tee docs/results/scale/screen/summary.txt
fi

if [[ $SECTION == scale-long || $SECTION == all ]]; then
    # Longer reasoning: 160 new tokens, on the vllm backend (2.5-3.3x hf here). The two
    # configurations were chosen on validation problems by scale-long-screen (docs/results/scale/screen/summary.txt):
    # in the trained family, products of 3-4 one-digit factors (greedy 0.150, 52 tokens on average);
    # out of domain, basic arithmetic with 2-3 one-digit terms (greedy 0.125, 82 tokens on average).
    scale_protocol products-long 512 vllm 160 --task reasoning_gym:products "${ONE_DIGIT[@]}" \
        --task-option min_terms=3 --task-option max_terms=4
    scale_protocol basic_arithmetic-long 512 vllm 160 --task reasoning_gym:basic_arithmetic "${ONE_DIGIT[@]}" "${TERMS[@]}"
    for name in products-long basic_arithmetic-long; do
        answer_stats 160 docs/results/scale/$name | tee docs/results/scale/$name/answers.txt
    done
fi

if [[ $SECTION == scale-data || $SECTION == all ]]; then
    # Rejection samples at paper scale: vllm (per-sample seeds), fp32 as the shipped heads' data;
    # T = 0.5 (the shipped recipe's; >= 6,000 rows) and T = 1.0 (the paper's) from the same 2 x 2400 problems x 4
    # samples, so both cost the same sampling time. The summary lines (kept / sampled, seconds) go to
    # docs/ablation/scale/data/sampling.txt.
    mkdir -p docs/ablation/scale/data
    for temp in 0.5 1.0; do
        data=docs/ablation/scale/train-t$temp.jsonl
        [[ -f $data ]] && continue
        for task in products chain_sum; do
            options=("${ONE_DIGIT[@]}"); [[ $task == chain_sum ]] && options+=("${TERMS[@]}")
            summary=$($AUTODECO data sample --backend vllm --model smollm2 --task reasoning_gym:$task "${options[@]}" \
                --problems 2400 --samples 4 --max-new-tokens 32 --temperature $temp \
                --out docs/ablation/scale/data/$task-t$temp.jsonl | grep '^kept')
            echo "$task T=$temp: $summary" | tee -a docs/ablation/scale/data/sampling.txt
        done
        cat docs/ablation/scale/data/{products,chain_sum}-t$temp.jsonl > $data.partial && mv $data.partial $data
    done
    # The key ablation rows at this scale, on 200 validation problems x 16, each paired with the shipped heads.
    $AUTODECO eval ablation --config docs/ablation-scale.yaml
    # The shipped recipe refitted on the T = 0.5 rows (small-6k) on the reported problems (seed 0), with the scale
    # sections' engine, dtype and batch sizes, paired with the shipped heads, MeanShift, the validation choice and greedy there.
    for task in products chain_sum; do
        options=("${ONE_DIGIT[@]}"); batch=256; [[ $task == chain_sum ]] && options+=("${TERMS[@]}") && batch=64
        $AUTODECO eval --backend hf --model smollm2 --max-new-tokens 24 --batch-size $batch --seeds 0 --dtype bfloat16 \
            --task reasoning_gym:$task "${options[@]}" --problems 200 --samples 16 --heads docs/ablation/scale/fits/small-6k \
            --methods autodeco,meanshift --out docs/results/scale/$task-heads-6k
        $AUTODECO eval compare docs/results/scale/$task-heads-6k docs/results/scale/$task --methods autodeco,meanshift \
            --against autodeco,meanshift,oracle-validation,greedy,static:0.3,1.0,static:0.5,0.9,static:0.7,0.9 \
            | tee docs/results/scale/$task-heads-6k/compare.md
        # The refit's frontier verdict: its AutoDeco and MeanShift against the task run's static grid, same problems.
        verdicts $task - $task-heads-6k/autodeco $task-heads-6k/meanshift | tee docs/results/scale/$task-heads-6k/frontier.txt
    done
fi

# outcome_choice OUT VALIDATION_RUN PASS4_LAST CANDIDATE...: the outcome protocol's choice from the candidates'
# validation runs (OUT/validation/CANDIDATE with / as -): OUT/chosen.txt (every candidate's pass@1, then "chosen: C",
# the best; ties: the earlier candidate), OUT/secondary.txt (of the space-separated PASS4_LAST, the one validating
# best) and OUT/validation/compare.md (the chosen heads minus every other candidate and minus the best static of
# VALIDATION_RUN, the scale protocol's validation grid on the same problems; pass@1, 95% paired intervals).
outcome_choice() {
    $PYTHON - "$@" <<'PY'
import json, pathlib, sys
from autodeco_lp.evaluation.compare import paired
from autodeco_lp.evaluation.report import interval_text
out, grid, pass4_last, candidates = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
def autodeco(c):
    return json.loads((out / "validation" / c.replace("/", "-") / "results.json").read_text())["methods"]["autodeco"]
def best(names):
    return max(names, key=lambda c: (round(autodeco(c)["pass@1"], 12), -names.index(c)))
chosen = best(candidates)
statics = {n: m for n, m in json.loads((grid / "results.json").read_text())["methods"].items() if n.startswith("static:")}
static = max(statics, key=lambda n: statics[n]["pass@1"])
rows = [f"| {c} | {interval_text(paired(autodeco(chosen), autodeco(c))['pass@1'])} |" for c in candidates if c != chosen]
rows.append(f"| {static} ({grid.name}) | {interval_text(paired(autodeco(chosen), statics[static])['pass@1'])} |")
lines = [f"validation pass@1 {autodeco(c)['pass@1']:.4f}  {c}" for c in candidates] + [f"chosen: {chosen}"]
files = {  # written once everything is computed, so a failure leaves the earlier files as they were
    "validation/compare.md": f"Validation pass@1, {chosen} minus each method (95% paired bootstrap over problems):\n\n"
    "| method | difference |\n|---|---|\n" + "\n".join(rows) + "\n",
    "secondary.txt": f"secondary: {best(pass4_last)}\n",
    "chosen.txt": "\n".join(lines) + "\n",
}
for name, text in files.items():
    (out / name).write_text(text)
print(files["chosen.txt"] + files["secondary.txt"] + files["validation/compare.md"], end="")
PY
}

# outcome_protocol NAME BATCH_SIZE TASK_ARGS...: the outcome objective on one task of the scale protocol (after its
# scale section). Two fits from the shipped heads on training problems (seed 1000), 32 problems x 8 samples per round,
# lr 1e-3, a checkpoint per round: reward pass@1 (group-mean baseline) and pass@4 (leave-one-out), into
# docs/ablation/outcome (products) or docs/ablation/outcome-NAME. ROUNDS_PASS1 / ROUNDS_PASS4: how far each fit ran
# (resumable: rerun to continue). Then the choice on validation problems and the test runs on NAME's problems.
# OUTCOME_MODEL / OUTCOME_HEADS / OUTCOME_TOKENS (default smollm2, its registry heads, 24 new tokens) set the model, the
# heads the fits start from and the completion length, as NAME's scale run had them; OUTCOME_STATIC (default
# static:0.2,1.0) is the static the secondary run adds inside the grid's widest gap near the frontier, and
# OUTCOME_AGAINST the methods of NAME's run the chosen heads are compared with. OUTCOME_LRS (default 1e-3): the
# learning rates, each with both fits (the first into $out/pass1 and pass4, the others into $out/lr-LR/pass1 and pass4);
# all their checkpoints compete on validation, and the secondary is the pass@4 fit whose last checkpoint validates best.
outcome_protocol() {
    local name=$1 batch=$2
    shift 2
    local out=docs/ablation/outcome-$name scale=docs/results/scale
    [[ $name == products ]] && out=docs/ablation/outcome
    local model=${OUTCOME_MODEL:-smollm2} init=${OUTCOME_HEADS:-$HEADS} tokens=${OUTCOME_TOKENS:-24}
    local added=${OUTCOME_STATIC:-static:0.2,1.0}
    local against=${OUTCOME_AGAINST:-autodeco,meanshift,oracle-validation,greedy,default,static:0.1,1.0,static:0.3,1.0,static:0.5,0.9}
    declare -A rounds=([pass1]=${ROUNDS_PASS1:-10} [pass4]=${ROUNDS_PASS4:-8})
    declare -A reward=([pass1]="--reward pass@1" [pass4]="--reward pass@k --pass-k 4")
    # Each learning rate's two fits; their checkpoints at half and at the end are the validation candidates.
    local lrs=(${OUTCOME_LRS:-1e-3}) lr dir fit  # distinct values: a repeated one would refit the first's folders
    local candidates=(shipped) pass4_last=()
    for lr in "${lrs[@]}"; do
        dir=""; [[ $lr != "${lrs[0]}" ]] && dir="lr-$lr/"
        for fit in pass1 pass4; do
            resume=(); compgen -G "$out/$dir$fit/checkpoint-*" > /dev/null && resume=(--resume-from-checkpoint)
            OMP_NUM_THREADS=1 $FIT --objective outcome --model "$model" --bf16 "$@" \
                --init-heads "$init" --rounds "${rounds[$fit]}" --problems-per-round 32 --group-size 8 ${reward[$fit]} \
                --max-new-tokens "$tokens" --rollout-batch-size 64 --learning-rate "$lr" --save-total-limit 100 \
                --output-dir "$out/$dir$fit" "${resume[@]}"
            candidates+=("$dir$fit/checkpoint-$(( ${rounds[$fit]} / 2 ))" "$dir$fit/checkpoint-${rounds[$fit]}")
        done
        pass4_last+=("${dir}pass4/checkpoint-${rounds[pass4]}")
    done
    # The choice, on validation problems (seed 7, 100 x 4, the scale protocol's settings), fixed before any test run:
    # the shipped heads and every candidate; the best validation pass@1 wins (ties: the earlier in this order: the shipped
    # heads, then by learning rate as listed, pass@1 before pass@4, fewer rounds first).
    local common=(--backend hf --model "$model" --max-new-tokens "$tokens" --batch-size "$batch" --seeds 0 --dtype bfloat16 "$@")
    for c in "${candidates[@]}"; do
        heads=$out/$c; [[ $c == shipped ]] && heads=$init
        $AUTODECO eval "${common[@]}" --problems 100 --samples 4 --dataset-seed 7 --heads "$heads" --methods autodeco \
            --out "$out/validation/${c//\//-}"
    done
    outcome_choice $out $scale/$name-validation "${pass4_last[*]}" "${candidates[@]}"
    local chosen
    chosen=$(tail -1 $out/chosen.txt | cut -d' ' -f2)
    if [[ $chosen != shipped ]]; then
        mkdir -p $out/heads && cp $out/$chosen/autodeco_{config.json,heads.safetensors} $out/heads/
        # The chosen heads and their own MeanShift (a static at their mean T and P) on NAME's 200 x 16 problems.
        $AUTODECO eval "${common[@]}" --problems 200 --samples 16 --heads $out/heads --methods autodeco,meanshift \
            --out $scale/$name-outcome
        $AUTODECO eval compare $scale/$name-outcome $scale/$name --methods autodeco \
            --against "$against" | tee $scale/$name-outcome/compare.md
    fi
    mkdir -p $scale/$name-outcome  # frontier.txt and the plot go there even when the shipped heads are chosen
    # Secondary (reported as such, not chosen on test problems): the pass@k fit's last checkpoint, the candidate its
    # objective aims at the frontier's pass@k side, with its MeanShift and the static $added, a grid point inside the
    # grid's gap there (on products T = 0.2 was added after the secondary's first result, which fell between 0.1 and
    # 0.3; on later tasks it runs from the start, fixed before any test run). A finer grid only makes "above" harder.
    local secondary
    secondary=$(cut -d' ' -f2 $out/secondary.txt)
    $AUTODECO eval "${common[@]}" --problems 200 --samples 16 --heads "$out/$secondary" \
        --methods "autodeco,meanshift,$added" --out $scale/$name-outcome-pass4
    # Both outcome heads' verdicts over the task run's grid, then over the grid with the added static (their paired
    # differences to their own MeanShift are in each run's results.md).
    local heads=("$name-outcome/autodeco" "$name-outcome-pass4/autodeco")
    { echo "Over the $name run's grid:"; verdicts $name - "${heads[@]}"
      local at=${added#static:}; echo "Over that grid plus the static T = ${at%%,*}:"; verdicts $name $name-outcome-pass4 "${heads[@]}"
    } | tee $scale/$name-outcome/frontier.txt
    # The frontier plot with both outcome heads (the legend's verdicts over the grid with the added static).
    $PYTHON - $name "$added" <<'PY'
import json, pathlib, sys
from autodeco_lp.evaluation.frontier import static_frontier
from autodeco_lp.evaluation.plots import plot_frontier
name, added, scale = sys.argv[1], sys.argv[2], pathlib.Path("docs/results/scale")
report = json.loads((scale / name / "results.json").read_text())
pass4 = json.loads((scale / f"{name}-outcome-pass4" / "results.json").read_text())["methods"]
report["methods"][added] = pass4[added]
extra = {"outcome heads, pass@4 reward": pass4["autodeco"], "MeanShift of the pass@4 heads": pass4["meanshift"]}
chosen = scale / f"{name}-outcome" / "results.json"
if chosen.exists():
    extra = {"outcome heads, validation choice": json.loads(chosen.read_text())["methods"]["autodeco"], **extra}
report["frontier"] = static_frontier(report["methods"], 16, extra=extra)  # every legend verdict over the finer grid
print(plot_frontier(report, scale / f"{name}-outcome" / "frontier.png", extra=extra))
PY
}

if [[ $SECTION == outcome || $SECTION == all ]]; then
    outcome_protocol products 256 --task reasoning_gym:products "${ONE_DIGIT[@]}"
    if [[ $(tail -1 docs/ablation/outcome/chosen.txt) != "chosen: shipped" ]]; then
        # Out of domain: the chosen heads on the scale protocol's basic_arithmetic-long problems (vLLM, 160 tokens),
        # paired with that run's methods (the goal: no significant loss to the validation-chosen static or to default).
        $AUTODECO eval --backend vllm --model smollm2 --max-new-tokens 160 --batch-size 512 --seeds 0 --dtype bfloat16 \
            --task reasoning_gym:basic_arithmetic "${ONE_DIGIT[@]}" "${TERMS[@]}" --problems 200 --samples 16 \
            --heads docs/ablation/outcome/heads --methods autodeco --out docs/results/scale/basic_arithmetic-long-outcome
        $AUTODECO eval compare docs/results/scale/basic_arithmetic-long-outcome docs/results/scale/basic_arithmetic-long \
            --methods autodeco --against autodeco,meanshift,oracle-validation,greedy,default \
            | tee docs/results/scale/basic_arithmetic-long-outcome/compare.md
    fi
    # The secondary (pass@4-trained heads, round 8) out of domain too, on the same problems and engine.
    $AUTODECO eval --backend vllm --model smollm2 --max-new-tokens 160 --batch-size 512 --seeds 0 --dtype bfloat16 \
        --task reasoning_gym:basic_arithmetic "${ONE_DIGIT[@]}" "${TERMS[@]}" --problems 200 --samples 16 \
        --heads docs/ablation/outcome/pass4/checkpoint-${ROUNDS_PASS4:-8} --methods autodeco \
        --out docs/results/scale/basic_arithmetic-long-outcome-pass4
    $AUTODECO eval compare docs/results/scale/basic_arithmetic-long-outcome-pass4 docs/results/scale/basic_arithmetic-long \
        --methods autodeco --against autodeco,meanshift,oracle-validation,greedy,default,static:0.3,1.0 \
        | tee docs/results/scale/basic_arithmetic-long-outcome-pass4/compare.md
    # Both outcome heads' verdicts against that run's static grid (same problems).
    verdicts basic_arithmetic-long - basic_arithmetic-long-outcome/autodeco basic_arithmetic-long-outcome-pass4/autodeco \
        | tee docs/results/scale/basic_arithmetic-long-outcome/frontier.txt
fi

if [[ $SECTION == outcome-chain_sum || $SECTION == all ]]; then
    # The same on one-digit chain sums (batch 64, as scale-chain_sum; after it), 10 rounds per fit.
    ROUNDS_PASS1=${ROUNDS_PASS1:-10} ROUNDS_PASS4=${ROUNDS_PASS4:-10} \
        outcome_protocol chain_sum 64 --task reasoning_gym:chain_sum "${ONE_DIGIT[@]}" "${TERMS[@]}"
    # Per-token T and P of the shipped heads, the chosen heads and the pass@4 fit's last checkpoint on the chain_sum
    # rows (by their meta.task) of the T = 1 data.
    rows=$(mktemp --suffix=.jsonl)
    $PYTHON -c 'import json, sys
for line in open(sys.argv[1]):
    if json.loads(line)["meta"]["task"] == "reasoning_gym:chain_sum": print(line, end="")' docs/ablation/train-t1.jsonl > "$rows"
    heads=docs/ablation/outcome-chain_sum/heads; [[ -d $heads ]] || heads=$HEADS
    $PYTHON benchmarks/compare_heads.py --data "$rows" --max-rows 100 --by-token 12 --heads shipped=$HEADS chosen=$heads \
        outcome-pass4=docs/ablation/outcome-chain_sum/pass4/checkpoint-${ROUNDS_PASS4:-10} \
        | tee docs/ablation/outcome-chain_sum/heads.txt
    rm "$rows"
fi

if [[ $SECTION == losses || $SECTION == all ]]; then
    # The shipped recipe refitted with the sort-free loss (same seed) and with the exact
    # loss at another seed (the seed-to-seed spread), compared per position and on the scale section's problems.
    for spec in topk:42 exact:1; do
        loss=${spec%%:*}; seed=${spec##*:}
        [[ -f docs/ablation/fits/$loss-s$seed/autodeco_heads.safetensors ]] || $FIT --model smollm2 --data $HEADS/train.jsonl \
            --recipe small --max-length 512 --save-steps 20 --logging-steps 1 --seed $seed --soft-top-p $loss \
            --output-dir docs/ablation/fits/$loss-s$seed
    done
    $PYTHON benchmarks/compare_heads.py --data docs/ablation/train-t1.jsonl --max-rows 100 \
        --heads exact-s42=$HEADS exact-s1=docs/ablation/fits/exact-s1 topk-s42=docs/ablation/fits/topk-s42
    $AUTODECO eval --backend hf --model smollm2 --max-new-tokens 24 --batch-size 256 --seeds 0 --task reasoning_gym:products \
        "${ONE_DIGIT[@]}" --problems 200 --samples 16 --dtype bfloat16 --heads docs/ablation/fits/topk-s42 \
        --methods autodeco --out docs/results/scale/products-topk-heads
    $AUTODECO eval compare docs/results/scale/products-topk-heads docs/results/scale/products --methods autodeco
fi

if [[ $SECTION == ablation || $SECTION == all ]]; then
    # Rejection samples at T = 0.5 for the data-t0.5 recipe (150 problems per task).
    if [[ ! -f docs/ablation/train-t0.5.jsonl ]]; then
        $AUTODECO data sample --backend hf --model smollm2 --task reasoning_gym:products "${ONE_DIGIT[@]}" --problems 150 --samples 4 \
            --max-new-tokens 32 --temperature 0.5 --out docs/ablation/data/products-t0.5.jsonl
        $AUTODECO data sample --backend hf --model smollm2 --task reasoning_gym:chain_sum "${ONE_DIGIT[@]}" "${TERMS[@]}" --problems 150 \
            --samples 4 --max-new-tokens 32 --temperature 0.5 --out docs/ablation/data/chain_sum-t0.5.jsonl
        cat docs/ablation/data/products-t0.5.jsonl docs/ablation/data/chain_sum-t0.5.jsonl > docs/ablation/train-t0.5.jsonl
    fi
    [[ -f docs/ablation/train-half.jsonl ]] || awk 'NR%2==1' docs/ablation/train-t1.jsonl > docs/ablation/train-half.jsonl
    # Greedy solutions the verifier accepts, for the data-greedy recipe (300 problems per task, one solution each).
    if [[ ! -f docs/ablation/train-greedy.jsonl ]]; then
        $AUTODECO data sample --backend hf --model smollm2 --task reasoning_gym:products "${ONE_DIGIT[@]}" --problems 300 --samples 1 \
            --max-new-tokens 32 --temperature 0 --out docs/ablation/data/products-greedy.jsonl
        $AUTODECO data sample --backend hf --model smollm2 --task reasoning_gym:chain_sum "${ONE_DIGIT[@]}" "${TERMS[@]}" --problems 300 \
            --samples 1 --max-new-tokens 32 --temperature 0 --out docs/ablation/data/chain_sum-greedy.jsonl
        cat docs/ablation/data/products-greedy.jsonl docs/ablation/data/chain_sum-greedy.jsonl > docs/ablation/train-greedy.jsonl
    fi
    $AUTODECO eval ablation --config docs/ablation.yaml
    # Why the top-p head saturates: the released recipe's heads on their own (T = 1) data, then the
    # shipped heads on theirs (T = 0.5); first 100 training rows each.
    $AUTODECO plot top-p --model smollm2 --heads docs/ablation/fits/released --data docs/ablation/train-t1.jsonl --max-rows 100 \
        --out docs/results/top_p_released.png
    $AUTODECO plot top-p --model smollm2 --heads $HEADS --data $HEADS/train.jsonl --max-rows 100 \
        --out docs/results/top_p_shipped.png
fi

if [[ $SECTION == control || $SECTION == all ]]; then
    [[ -f $HEADS-control/autodeco_heads.safetensors ]] || $FIT --model smollm2 --data $HEADS/train.jsonl --init-heads $HEADS \
        --recipe small --num-train-epochs 2 --control-commands default --max-length 512 --save-steps 20 --logging-steps 1 \
        --output-dir $HEADS-control
    $AUTODECO eval control --model smollm2 --heads $HEADS --prompts 100 --out docs/results/control-emergent
    $AUTODECO eval control --model smollm2 --heads $HEADS-control --prompts 100 --out docs/results/control-trained
    # What the control fine-tune costs in accuracy (same settings as the main section, AutoDeco only).
    for task in products chain_sum; do
        options=("${ONE_DIGIT[@]}"); [[ $task == chain_sum ]] && options+=("${TERMS[@]}")
        $AUTODECO eval --backend hf --model smollm2 --heads $HEADS-control --problems 24 --samples 4 --seeds 0,1 --max-new-tokens 24 \
            --batch-size 96 --methods autodeco --task reasoning_gym:$task "${options[@]}" --out docs/results/control-$task
    done
fi

if [[ $SECTION == gemma3 || $SECTION == all ]]; then
    # Second architecture family: the Gemma3-270m base model, few-shot prompts (3 shots), answers end at a newline.
    # Gemma3: the learning rate, chosen on validation problems (docs/ablation-gemma3.yaml, ~25 min): the first
    # heads (lr 1e-3, batch 32) collapsed to greedy decoding. The ablation fits the first heads' rows (train-v1.jsonl),
    # whose completions end with an appended "\n" that Gemma3 does not sample there (fixed since in `data sample`).
    $AUTODECO eval ablation --config docs/ablation-gemma3.yaml
    # Per-position T and P of each recipe's heads on those rows: inside their range or at a bound, and per gold token.
    $PYTHON benchmarks/compare_heads.py --model gemma3 --data docs/ablation/gemma3/train-v1.jsonl --max-rows 192 --by-token 4 \
        --heads $(for lr in 1e-3 3e-4 1e-4 3e-5; do echo lr-$lr=docs/ablation/gemma3/fits/lr-$lr; done) \
        | tee docs/ablation/gemma3/heads.txt
    # The registry's heads: rows sampled with the fix (600 problems x 4, ~9 min), the chosen learning rate (3e-5).
    [[ -f heads/gemma-3-270m/train.jsonl ]] || $AUTODECO data sample --backend hf --model gemma3 --task reasoning_gym:products \
        "${ONE_DIGIT[@]}" --problems 600 --samples 4 --max-new-tokens 8 --out heads/gemma-3-270m/train.jsonl
    [[ -f heads/gemma-3-270m/autodeco_heads.safetensors ]] || $FIT --model gemma3 --data heads/gemma-3-270m/train.jsonl \
        --recipe released --learning-rate 3e-5 --num-train-epochs 10 --per-device-train-batch-size 8 \
        --gradient-accumulation-steps 1 --soft-top-p topk --max-length 512 --save-steps 60 --output-dir heads/gemma-3-270m
    $PYTHON benchmarks/compare_heads.py --model gemma3 --data heads/gemma-3-270m/train.jsonl --max-rows 214 --by-token 4 \
        --heads registry=heads/gemma-3-270m v1-lr-3e-5=docs/ablation/gemma3/fits/lr-3e-5 | tee docs/ablation/gemma3/heads-registry.txt
    # The scale protocol (8 new tokens; hf, see docs/ablation-gemma3.yaml) with a T sweep at P = 1 as its grid, up to
    # T = 1.5 (hotter is better on this model); a step costs ~5x SmolLM2's here (~60 min from empty caches).
    SCALE_MODEL=gemma3 SCALE_GRID=static:0.1,1.0,static:0.3,1.0,static:0.5,1.0,static:0.7,1.0,static:1.0,1.0,static:1.5,1.0 \
        scale_protocol gemma3-products 64 hf 8 --task reasoning_gym:products "${ONE_DIGIT[@]}"
fi

if [[ $SECTION == outcome-gemma3 || $SECTION == all ]]; then
    # The second family: the same protocol on Gemma3-270m's products run (after gemma3), from its registry heads, with
    # that run's 8 new tokens and batch size. Its grid is a T sweep at P = 1 with the frontier between T = 0.7 and 1.5
    # (hotter is better on this model), so the secondary adds T = 1.25 (chosen before any fit finished). Two learning
    # rates: SmolLM2's 1e-3 overshoots on these heads (its first step took the mean T from 0.52 to 1.6, and every
    # checkpoint validated below the registry heads), so 1e-4 was added after those validation runs, before any test run.
    OUTCOME_MODEL=gemma3 OUTCOME_HEADS=heads/gemma-3-270m OUTCOME_TOKENS=8 OUTCOME_STATIC=static:1.25,1.0 OUTCOME_LRS="1e-3 1e-4" \
        OUTCOME_AGAINST=autodeco,meanshift,oracle-validation,greedy,default,static:0.7,1.0,static:1.5,1.0 \
        ROUNDS_PASS1=${ROUNDS_PASS1:-10} ROUNDS_PASS4=${ROUNDS_PASS4:-10} \
        outcome_protocol gemma3-products 64 --task reasoning_gym:products "${ONE_DIGIT[@]}"
    # Per-token T and P of the registry heads, the chosen heads (the registry's again when they were chosen) and the
    # secondary on the registry heads' training data.
    d=docs/ablation/outcome-gemma3-products chosen=heads/gemma-3-270m
    [[ $(tail -1 $d/chosen.txt) != "chosen: shipped" ]] && chosen=$d/heads
    OMP_NUM_THREADS=1 $PYTHON benchmarks/compare_heads.py --model gemma3 --data heads/gemma-3-270m/train.jsonl \
        --max-rows 214 --by-token 4 --heads registry=heads/gemma-3-270m "chosen=$chosen" \
        "secondary=$d/$(cut -d' ' -f2 $d/secondary.txt)" | tee $d/heads.txt
    # Control (after the test runs, set from heads.txt's training positions, not from test results): the outcome heads
    # sample the answer digit hot and truncated (pass@1 heads T 1.4 at P 0.6, pass@4 heads T 1.6 at P 0.9) and the
    # sure tokens near-greedy, which a static with the same T and P mostly does too (a nucleus of P keeps only the top
    # token wherever it holds at least P of the tempered probability). Are the heads more than that static?
    $AUTODECO eval --backend hf --model gemma3 --max-new-tokens 8 --batch-size 64 --seeds 0 --dtype bfloat16 \
        --task reasoning_gym:products "${ONE_DIGIT[@]}" --problems 200 --samples 16 --methods static:1.4,0.6,static:1.6,0.9 \
        --out docs/results/scale/gemma3-products-outcome-hot
    verdicts gemma3-products gemma3-products-outcome-pass4,gemma3-products-outcome-hot gemma3-products-outcome/autodeco \
        gemma3-products-outcome-pass4/autodeco | tee docs/results/scale/gemma3-products-outcome-hot/frontier.txt
fi
