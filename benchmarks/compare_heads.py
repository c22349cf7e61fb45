"""Do two sets of heads predict the same T and P? Per-position statistics on the rows of a data file.

    .venv/bin/python benchmarks/compare_heads.py --data docs/ablation/train-t1.jsonl --max-rows 100 \\
        --heads exact-s42=heads/smollm2-135m-instruct exact-s1=/tmp/refit-exact-s1 topk-s42=/tmp/refit-topk-s42

Teacher-forces the rows through the frozen base model once (`diagnose.training_positions`), runs
every heads folder on the same positions (`diagnose.head_statistics`) and prints, per heads, the
mean, standard deviation and 5 / 50 / 95% quantiles of T and P (whether a head varies inside its
range or sits at a bound), with `--by-token N` the mean T and P per gold token for the N most frequent
ones, and for every pair the mean |dT|, mean |dP| and the
correlation of T across positions. Used to judge whether heads fitted with
`--soft-top-p topk` match heads fitted with the exact loss within the seed-to-seed spread:
compare the (exact, exact) pair of two seeds with the (exact, topk) pairs.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from autodeco_lp.evaluation.diagnose import head_statistics, training_positions
from autodeco_lp.hub.models import load_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads


def _named(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--heads entries look like NAME=FOLDER, but got {spec!r}")
    return name, path


def _by_token(stats: dict, labels: torch.Tensor, tokenizer, top: int) -> None:
    """Mean T / P per gold token (the `top` most frequent), with the base model's probability of it: where the
    heads move T and P, and whether a target is one the model would sample there."""
    ids, counts = labels.unique(return_counts=True)
    for token in ids[counts.argsort(descending=True)][:top].tolist():
        at = labels == token  # (N,) positions whose gold token is `token`
        first = next(iter(stats.values()))
        parts = [f"{name} T {s.temperature[at].mean():.3f} P {s.top_p[at].mean():.3f}" for name, s in stats.items()]
        name = repr(tokenizer.convert_ids_to_tokens(token))
        print(f"gold {name:>8} x{int(at.sum()):4d} (base p {first.gold_prob[at].mean():.3f}): " + "   ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-rows", type=int, default=100)
    parser.add_argument("--heads", type=_named, nargs="+", required=True)
    parser.add_argument(
        "--by-token", type=int, default=0, help="Also the mean T and P per gold token, for the N most frequent ones."
    )
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    hidden, labels = training_positions(model, tokenizer, args.data, max_rows=args.max_rows)  # (N, H), (N,)
    lm_head = OutputProjection.from_model(model)
    stats = {
        name: head_statistics(AutoDecoHeads.from_pretrained(path), hidden, labels, lm_head) for name, path in args.heads
    }
    print(f"model={args.model} data={args.data} rows={args.max_rows} positions={hidden.shape[0]}")
    levels = torch.tensor([0.05, 0.5, 0.95])
    for name, s in stats.items():
        t_q, p_q = (" / ".join(f"{v:.3f}" for v in x.quantile(levels).tolist()) for x in (s.temperature, s.top_p))
        print(
            f"{name:>12}: T mean {s.temperature.mean():.4f} std {s.temperature.std():.4f} (5/50/95%: {t_q})   "
            f"P mean {s.top_p.mean():.4f} std {s.top_p.std():.4f} (5/50/95%: {p_q})"
        )
    if args.by_token:
        _by_token(stats, labels, tokenizer, args.by_token)
    for (a, sa), (b, sb) in itertools.combinations(stats.items(), 2):
        corr = torch.corrcoef(torch.stack([sa.temperature, sb.temperature]))[0, 1]
        print(
            f"{a} vs {b}: mean |dT| {(sa.temperature - sb.temperature).abs().mean():.4f}   "
            f"mean |dP| {(sa.top_p - sb.top_p).abs().mean():.4f}   corr(T) {corr:.4f}"
        )


if __name__ == "__main__":
    main()
