"""`autodeco-fit --objective outcome` end to end on a tiny random model: rounds, logs, card, exact resume."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from autodeco_lp.cli.fit import fit_command
from autodeco_lp.training import outcome as outcome_module
from autodeco_lp.training.outcome_config import OutcomeConfig


class _EvenLengthTask:
    """The tiny model answers noise: reward a completion of even length, so groups hold both rewards."""

    def __init__(self, task):
        self.task, self.problems = task, task.problems

    def shots_for(self, problem, count):
        return self.task.shots_for(problem, count)

    def score(self, problem, completion: str) -> float:
        return float(len(completion) % 2 == 0)


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(8)))
    return path


@pytest.fixture
def even_reward(monkeypatch):
    real = outcome_module.load_task
    monkeypatch.setattr(outcome_module, "load_task", lambda *a, **k: _EvenLengthTask(real(*a, **k)))


def _fit(tiny_model_dir, task_file, out, *extra):
    args = [
        "--objective", "outcome", "--model", str(tiny_model_dir), "--task", str(task_file), "--output-dir", str(out),
        "--problems", "8", "--problems-per-round", "2", "--group-size", "4", "--max-new-tokens", "6",
        "--rollout-batch-size", "8", "--learning-rate", "1e-2", "--disable-tqdm", "--seed", "3",
        "--save-total-limit", "5", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(fit_command, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_outcome_fit_trains_logs_and_resumes_exactly(tiny_model_dir, task_file, even_reward, tmp_path):
    output = _fit(tiny_model_dir, task_file, tmp_path / "straight", "--rounds", "3")
    assert "trained 3 rounds" in output
    straight = tmp_path / "straight"
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert sum(m["trained_positions"] for m in metrics) > 0  # mixed rewards: the loss had positions
    rounds = [json.loads(line) for line in (straight / "rounds.jsonl").read_text().splitlines()]
    assert [len(r["texts"]) for r in rounds] == [2, 2, 2] and all(len(g) == 4 for r in rounds for g in r["texts"])
    card = (straight / "README.md").read_text()
    assert "outcome: REINFORCE" in card and "## Command" in card

    # Two rounds, then resumed to three: the same heads and the same log as the straight run.
    _fit(tiny_model_dir, task_file, tmp_path / "resumed", "--rounds", "2")
    _fit(tiny_model_dir, task_file, tmp_path / "resumed", "--rounds", "3", "--resume-from-checkpoint")
    resumed = tmp_path / "resumed"
    a, b = load_file(straight / "autodeco_heads.safetensors"), load_file(resumed / "autodeco_heads.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(straight / "checkpoint-1" / "autodeco_heads.safetensors")
    assert any(not torch.equal(a[k], first[k]) for k in a)  # the heads moved
    again = [json.loads(line)["reward"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert again == [m["reward"] for m in metrics]

    # Resuming a finished run (a rerun of a script) redoes nothing and keeps the card's numbers and the log.
    last_round = next(line for line in card.splitlines() if "last round" in line)
    _fit(tiny_model_dir, task_file, straight, "--rounds", "3", "--resume-from-checkpoint")
    assert last_round in (straight / "README.md").read_text() and "nan" not in last_round
    assert [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()] == metrics


def test_outcome_resume_with_other_options_is_refused(tiny_model_dir, task_file, even_reward, tmp_path):
    _fit(tiny_model_dir, task_file, tmp_path / "run", "--rounds", "1")
    result = CliRunner().invoke(
        fit_command,
        ["--objective", "outcome", "--model", str(tiny_model_dir), "--task", str(task_file), "--output-dir",
         str(tmp_path / "run"), "--problems", "8", "--problems-per-round", "2", "--group-size", "5", "--rounds", "2",
         "--max-new-tokens", "6", "--learning-rate", "1e-2", "--seed", "3", "--resume-from-checkpoint"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "outcome.group_size: 4 there, 5 here" in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(), "needs `--task`"),
        (dict(task="t", dataset_seed=0), "evaluation problems' seed"),
        (dict(task="t", reward="pass@k", pass_k=8, group_size=8), "`--pass-k` has to be in"),
        (dict(task="t", reward="pass@k", normalise_advantages=True), "scales pass@1 advantages only"),
        (dict(task="t", group_size=1), "`--group-size` has to be >= 2"),
        (dict(task="t", reward="best"), "`--reward` has to be one of"),
    ],
)
def test_bad_outcome_options_are_refused_naming_the_flag(options, message):
    with pytest.raises(ValueError, match=message):
        OutcomeConfig(**options).check()


def test_loss_chunk_size_reaches_the_outcome_loss(tiny_model_dir, task_file, even_reward, tmp_path, monkeypatch):
    seen = []
    real = outcome_module.outcome_backward

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(outcome_module, "outcome_backward", spy)
    _fit(tiny_model_dir, task_file, tmp_path / "given", "--rounds", "1", "--loss-chunk-size", "3")
    _fit(tiny_model_dir, task_file, tmp_path / "default", "--rounds", "1")
    assert seen == [3, None]  # None: outcome_loss.default_chunk_size of the vocabulary


def test_outcome_fit_leaves_the_base_unchanged_without_freezing_it(
    tiny_model_dir, task_file, even_reward, tmp_path, monkeypatch
):
    # requires_grad_(False) on the base sends its prefill lm_head onto a slow, memory-growing CPU path (outcome.py);
    # the base must still come out of the fit bit for bit unchanged.
    loaded = []
    real = outcome_module.load_model
    monkeypatch.setattr(outcome_module, "load_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    _fit(tiny_model_dir, task_file, tmp_path / "run", "--rounds", "2")
    model = loaded[0][0]
    assert model.get_output_embeddings().weight.requires_grad
    fresh = real(str(tiny_model_dir))[0].state_dict()
    assert all(torch.equal(v.float(), fresh[k].float()) for k, v in model.state_dict().items())
