"""Plain-language control: commands file, command insertion, the ranking loss, the fit option."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.training.ranking import control_ranking_sums, load_commands, pick_command, with_command


class ToyHeads(nn.Module):
    """T = 2 sigmoid(h . w), P = sigmoid(h . v): the ranking loss's gradient can be read off by hand."""

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(hidden))
        self.v = nn.Parameter(torch.zeros(hidden))

    def forward(self, hidden, logits=None):
        return 2 * torch.sigmoid(hidden @ self.w), torch.sigmoid(hidden @ self.v)


def _triple(n=3):
    e = torch.zeros(n, 4)
    e[:, 0] = 1.0
    return (torch.zeros(n, 4), -e, e)  # none, low, high


def test_default_commands_load_and_keep_heldout_apart():
    commands = load_commands("default")
    for direction in ("low", "high"):
        assert len(commands.train[direction]) >= 3 and len(commands.heldout[direction]) >= 2
        assert not set(commands.train[direction]) & set(commands.heldout[direction])
    assert "as certain as possible" in " ".join(commands.train["low"])


def test_bad_commands_files_are_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"low": {"train": ["a"], "heldout": ["a"]}, "high": {"train": ["b"], "heldout": ["c"]}}))
    with pytest.raises(ValueError, match='"low" has paraphrases in both'):
        load_commands(str(path))
    path.write_text(json.dumps({"low": {"train": []}}))
    with pytest.raises(ValueError, match='"low" needs non-empty "train" and "heldout"'):
        load_commands(str(path))
    with pytest.raises(ValueError, match="could not be read"):
        load_commands(str(tmp_path / "missing.json"))


def test_commands_go_into_the_prompt_and_leave_the_response_alone():
    row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "meta": {}}
    changed = with_command(row, "Be creative.")
    assert changed["messages"][0]["content"] == "2+2?\n\nBe creative." and changed["messages"][1] == row["messages"][1]
    assert row["messages"][0]["content"] == "2+2?"  # the original row is not modified
    assert with_command({"prompt": "Q: 1\nA:", "completion": " 1"}, "Be sure.")["prompt"] == "Be sure.\n\nQ: 1\nA:"
    with pytest.raises(ValueError, match="a `text` row has no prompt"):
        with_command({"text": "abc"}, "x")
    picks = {pick_command(("a", "b", "c"), 0, i, "low") for i in range(30)}
    assert picks == {"a", "b", "c"} and pick_command(("a", "b", "c"), 0, 7, "low") == pick_command(
        ("a", "b", "c"), 0, 7, "low"
    )


def test_ranking_loss_value_and_gradient_direction():
    heads = ToyHeads()
    params = dict(heads.named_parameters())
    total, count, grads = control_ranking_sums(
        heads, [_triple()], OutputProjection(torch.zeros(5, 4), None, None), t_margin=0.1, p_margin=0.05, params=params
    )
    # All versions predict T = 1, P = 0.5: every hinge is at its margin.
    assert count == 1 and total.item() == pytest.approx(2 * 0.1 + 2 * 0.05)
    # Descending the gradient raises T and P for the high version and lowers them for the low one.
    assert grads["w"][0] < 0 and grads["v"][0] < 0 and torch.all(grads["w"][1:] == 0)
    with torch.no_grad():
        heads.w -= 0.5 * grads["w"] / grads["w"].norm()
        heads.v -= 0.5 * grads["v"] / grads["v"].norm()
    lower, _, _ = control_ranking_sums(
        heads, [_triple()], OutputProjection(torch.zeros(5, 4), None, None), params=params
    )
    assert lower < total


def test_ranking_loss_is_zero_once_the_margins_are_met():
    heads = ToyHeads()
    with torch.no_grad():
        heads.w[0], heads.v[0] = 3.0, 3.0  # high - none and none - low are far above both margins
    total, _, grads = control_ranking_sums(
        heads,
        [_triple(), _triple(5)],
        OutputProjection(torch.zeros(5, 4), None, None),
        params=dict(heads.named_parameters()),
    )
    assert total.item() == 0.0 and all(torch.all(g == 0) for g in grads.values())
    # Only the trained head's terms count: with T alone trained, the P hinge is left out.
    with torch.no_grad():
        heads.v[0] = 0.0
    t_only, _, _ = control_ranking_sums(
        heads, [_triple()], OutputProjection(torch.zeros(5, 4), None, None), train_top_p=False
    )
    assert t_only.item() == 0.0


def test_fit_with_control_commands_learns_the_ordering(tiny_model_dir, tmp_path):
    from autodeco_lp.inference.heads import AutoDecoHeads
    from autodeco_lp.training.loop import fit
    from tests.test_training_fit import fit_args, write_data

    data = write_data(tmp_path / "train.jsonl", rows=16)
    fit(
        fit_args(
            tiny_model_dir,
            data,
            tmp_path / "out",
            max_steps=25,
            control_commands="default",
            control_weight=5.0,
            learning_rate=1e-2,
        )
    )
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(x["control_loss"] for x in lines[:3]) / 3, sum(x["control_loss"] for x in lines[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    meta = json.loads((tmp_path / "out" / "hidden_cache" / "cache_meta.json").read_text())
    assert meta["fingerprint"]["examples"] == 3 * 16  # plain, low and high versions of every row
    assert AutoDecoHeads.from_pretrained(tmp_path / "out").config.hidden_size == 32
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| plain-language control | commands `default`, ranking weight 5.0" in card


def test_control_fit_streamed_matches_cached(tiny_model_dir, tmp_path):
    from autodeco_lp.inference.heads import AutoDecoHeads
    from autodeco_lp.training.loop import fit
    from tests.test_training_fit import fit_args, write_data

    data = write_data(tmp_path / "train.jsonl", rows=8)
    # One step: the fp16 cache differs from fp32 streaming by rounding, and over several steps the
    # hinge's kinks and Adam's per-parameter normalisation amplify that (measured: 2e-5 after one
    # step, 7e-4 after three; without the control loss 1e-5 after three).
    for name, cache in (("cached", True), ("streamed", False)):
        fit(fit_args(tiny_model_dir, data, tmp_path / name, max_steps=1, control_commands="default", cache=cache))
    cached, streamed = (AutoDecoHeads.from_pretrained(tmp_path / n).state_dict() for n in ("cached", "streamed"))
    for key in cached:
        torch.testing.assert_close(cached[key], streamed[key], rtol=0, atol=1e-4, msg=key)


def test_control_table_consistency_by_hand():
    from autodeco_lp.evaluation.control import summarise_versions

    none = torch.tensor([[1.0, 0.9], [1.0, 0.9], [1.0, 0.9], [1.0, 0.9]])
    low = torch.tensor([[0.8, 0.8], [0.9, 0.9], [1.1, 0.85], [0.5, 0.95]])
    high = torch.tensor([[1.2, 0.95], [1.0, 0.91], [1.3, 0.9], [1.1, 0.8]])
    table = summarise_versions({"none": none, "low": low, "high": high})
    assert table["low"]["consistency_temperature"] == 0.75 and table["low"]["consistency_top_p"] == 0.5
    assert table["high"]["consistency_temperature"] == 0.75 and table["high"]["consistency_top_p"] == 0.5
    assert table["low"]["delta_temperature"] == pytest.approx((-0.2 - 0.1 + 0.1 - 0.5) / 4)
    assert "consistency_temperature" not in table["none"] and table["none"]["delta_top_p"] == 0.0


def test_eval_control_command_writes_the_table(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from autodeco_lp.cli.main import autodeco
    from tests.conftest import random_heads

    heads = tmp_path / "heads"
    random_heads(vocab=None).save_pretrained(heads)
    task = tmp_path / "prompts.jsonl"
    task.write_text(
        "".join(json.dumps({"question": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n" for a in range(6))
    )
    result = CliRunner().invoke(
        autodeco,
        [
            "eval",
            "control",
            "--model",
            str(tiny_model_dir),
            "--heads",
            str(heads),
            "--tasks",
            str(task),
            "--prompts",
            "6",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "control.json").read_text())
    assert report["settings"]["prompts_measured"] == 6 and set(report["versions"]) == {"none", "low", "high"}
    # Random heads read the commands too: the version means differ from the plain ones.
    assert report["versions"]["high"]["delta_temperature"] != 0.0
    assert "| low |" in (tmp_path / "out" / "control.md").read_text()
