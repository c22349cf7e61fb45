"""The top-p diagnosis: per-position statistics and the constant-P loss curve."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from autodeco_lp.evaluation.diagnose import head_statistics, top_p_loss_curve
from autodeco_lp.inference.capture import OutputProjection
from tests.conftest import HIDDEN, VOCAB, constant_heads, random_heads, require


def _positions(n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, HIDDEN, generator=gen),
        torch.randint(0, VOCAB, (n,), generator=gen),
        torch.randn(VOCAB, HIDDEN, generator=gen),
    )


def test_head_statistics_against_direct_computation():
    hidden, labels, weight = _positions()
    heads = random_heads()
    stats = head_statistics(heads, hidden, labels, OutputProjection(weight, None, None), chunk=7)
    probs = torch.softmax(hidden @ weight.T, -1)
    torch.testing.assert_close(stats.entropy, -(probs * probs.log()).sum(-1))
    torch.testing.assert_close(stats.gold_prob, probs[torch.arange(30), labels])
    ranks = torch.tensor([(probs[i] > probs[i, labels[i]]).sum().item() for i in range(30)])
    assert torch.equal(stats.gold_rank, ranks)
    t, p = heads(hidden, hidden @ weight.T)
    torch.testing.assert_close(stats.temperature, t.detach())
    torch.testing.assert_close(stats.top_p, p.detach())


def test_constant_top_p_curve_is_the_dft_weighted_nll_at_p_1_and_grows_when_p_cuts_the_gold():
    hidden, labels, weight = _positions()
    heads = constant_heads(0.7, 0.5)
    logits = hidden @ weight.T
    at_one = top_p_loss_curve(heads, hidden, labels, OutputProjection(weight, None, None), [1.0])[0]
    dft = torch.softmax(logits, -1)[torch.arange(30), labels]
    nll = torch.nn.functional.cross_entropy(logits / 0.7, labels, reduction="none")
    assert at_one == pytest.approx((nll * dft).mean().item(), rel=1e-4)
    # Gold tokens drawn at random are mostly in the tail: cutting the tail makes the loss worse.
    curve = top_p_loss_curve(heads, hidden, labels, OutputProjection(weight, None, None), [0.3, 0.6, 1.0])
    assert curve[0] > curve[1] > curve[2]


def test_plot_top_p_command_writes_the_figure_and_numbers(tiny_model_dir, tmp_path):
    require("matplotlib")
    from autodeco_lp.cli.main import autodeco
    from tests.test_training_fit import write_data

    heads_dir = tmp_path / "heads"
    random_heads(vocab=None).save_pretrained(heads_dir)
    data = write_data(tmp_path / "train.jsonl", rows=6)
    out = tmp_path / "p.png"
    result = CliRunner().invoke(
        autodeco,
        [
            "plot",
            "top-p",
            "--model",
            str(tiny_model_dir),
            "--heads",
            str(heads_dir),
            "--data",
            str(data),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 1000 and summary["positions"] > 0 and 0 < summary["mean_top_p"] < 1
    assert set(summary["constant_top_p_loss"]) >= {"0.3", "1.0"}
