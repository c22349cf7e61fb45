"""Per-method summaries of cached records (pass@1, pass@k, mean T and P) and the paired comparisons
of the report."""

from __future__ import annotations

from autodeco_lp.engines.decoding import Decoding
from autodeco_lp.evaluation.compare import paired
from autodeco_lp.evaluation.passk import mean_std, pass_at_k

PASS_KS = (1, 4, 16)


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
