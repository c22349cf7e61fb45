"""Why does the top-p head saturate? Per-position statistics of heads on training data.

`head_statistics` teacher-forces the rows of a training file through the frozen base model and
records, at every supervised position: the base model's entropy (nats, at T = 1), the gold
token's base probability and rank, and the heads' T and P. `top_p_loss_curve` evaluates the soft
top-p loss of the objective on the same positions for a *constant* P in place of the head (with
the heads' own T): where that curve is lowest is what the top-p head is trained towards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.training.data import load_jsonl
from autodeco_lp.training.hidden import supervised_hidden_states
from autodeco_lp.training.losses import LossConfig, autodeco_loss_sums


@dataclass
class PositionStats:
    entropy: torch.Tensor  # (N,) nats, base model at T = 1
    gold_prob: torch.Tensor  # (N,) base probability of the gold token
    gold_rank: torch.Tensor  # (N,) 0 = the base argmax
    temperature: torch.Tensor  # (N,) heads
    top_p: torch.Tensor  # (N,) heads


def training_positions(
    model, tokenizer, data: str, max_length: int = 2048, max_rows: int | None = None, batch_size: int = 8
):
    """(hidden (N, H), labels (N,)) of every supervised position of a training file."""
    examples = load_jsonl(data, tokenizer, max_length).examples[:max_rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    hidden, labels = [], []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            for h, y in supervised_hidden_states(model, examples[start : start + batch_size], pad):
                hidden.append(h.float())
                labels.append(y)
    return torch.cat(hidden), torch.cat(labels)


@torch.no_grad()
def head_statistics(
    heads, hidden: torch.Tensor, labels: torch.Tensor, lm_head: OutputProjection, chunk: int = 256
) -> PositionStats:
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start : start + chunk], labels[start : start + chunk]
        logits = lm_head(h)  # (C, V): bias and softcap included, as at inference
        log_probs = torch.log_softmax(logits, -1)
        gold = log_probs.gather(-1, y[:, None]).squeeze(-1)
        rank = (logits > logits.gather(-1, y[:, None])).sum(-1)
        t, p = heads(h, logits)
        parts.append((-(log_probs.exp() * log_probs).sum(-1), gold.exp(), rank, t, p))
    return PositionStats(*(torch.cat(x) for x in zip(*parts)))


class _ConstantTopP(nn.Module):
    """The heads' T with a fixed P: `(hidden, logits) -> (T, P)`."""

    def __init__(self, heads, top_p: float) -> None:
        super().__init__()
        self.heads, self.top_p = heads, top_p

    def forward(self, hidden, logits):
        t, _ = self.heads(hidden, logits)
        return t, torch.full_like(t, self.top_p)


def top_p_loss_curve(heads, hidden, labels, lm_head, values, config: LossConfig | None = None) -> list[float]:
    """Mean soft top-p loss (the objective's top-p term, DFT weights included) for each constant P.

    `config`: the objective whose `alpha` and `dft` are used (default: `LossConfig()`)."""
    config = config if config is not None else LossConfig()
    losses = []
    for value in values:
        sums = autodeco_loss_sums(
            _ConstantTopP(heads, value),
            hidden,
            labels,
            lm_head,
            config=LossConfig(alpha=config.alpha, dft=config.dft, train_temperature=False),
            compute_grads=False,
        )
        losses.append((sums.top_p_sum / sums.positions).item())
    return losses
