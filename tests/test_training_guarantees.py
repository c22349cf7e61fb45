"""What a fit trusts on disk: no code runs on resume, no file it did not write is
replaced, a run that cannot change the heads says so, unreadable data names its file and line."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from autodeco_lp.training import fit
from autodeco_lp.training.data import load_jsonl
from autodeco_lp.training.resume import STATE_NAME
from tests.conftest import tiny_char_tokenizer
from tests.test_training_fit import fit_args, heads_state, write_data

HEADS_FILE = "autodeco_heads.safetensors"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data") / "train.jsonl", rows=16)


@pytest.fixture(scope="module")
def checkpointed(tiny_model_dir, data, tmp_path_factory):
    """A finished 4-step run with checkpoint-2 (and the uninterrupted heads to compare with)."""
    out = tmp_path_factory.mktemp("run")
    fit(fit_args(tiny_model_dir, data, out, save_steps=2, max_steps=4))
    return out


class _PlantsAFile:
    """A pickled object whose loading would create `path` (a stand-in for any shell command)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _copy_checkpoint(checkpointed: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(checkpointed / "checkpoint-2", folder)
    return folder


@pytest.mark.parametrize("how", ["torch.save as training_state.pt", "pickle named .safetensors"])
def test_resume_never_runs_code_from_a_planted_pickle(tiny_model_dir, data, checkpointed, tmp_path, how):
    folder = _copy_checkpoint(checkpointed, tmp_path)
    marker = tmp_path / "pwned"
    payload = {"step": 2, "optimizer": _PlantsAFile(marker)}
    (folder / STATE_NAME).unlink()
    if how.startswith("torch.save"):  # the name of a pickled state: no version reads it, it is not a checkpoint
        torch.save(payload, folder / "training_state.pt")
        match = "is not a complete checkpoint folder"
    else:
        (folder / STATE_NAME).write_bytes(pickle.dumps(payload))
        match = "not a safetensors file.*restart without --resume-from-checkpoint"
    assert not marker.exists()
    with pytest.raises(ValueError, match=match) as info:
        fit(fit_args(tiny_model_dir, data, tmp_path / "out", save_steps=2, max_steps=4, resume_from_checkpoint=folder))
    assert not marker.exists(), "loading the checkpoint ran code"
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("name, size", [(STATE_NAME, 0), (STATE_NAME, "half")])
def test_truncated_or_empty_state_is_a_clear_error_naming_the_file(
    tiny_model_dir, data, checkpointed, tmp_path, name, size
):
    from autodeco_lp.cli.fit import fit_command

    folder = _copy_checkpoint(checkpointed, tmp_path)
    raw = (folder / STATE_NAME).read_bytes()
    (folder / STATE_NAME).unlink()
    (folder / name).write_bytes(b"" if size == 0 else raw[: len(raw) // 2])
    args = [
        "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(tmp_path / "out"),
        "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2", "--learning-rate", "3e-3",
        "--max-steps", "4", "--warmup-ratio", "0", "--mlp-hidden-size", "16", "--use-cpu", "--disable-tqdm",
        "--save-steps", "2", "--resume-from-checkpoint", str(folder),
    ]  # fmt: skip
    result = CliRunner().invoke(fit_command, args)
    assert result.exit_code != 0
    assert str(folder / name) in result.output, result.output
    assert "restart without --resume-from-checkpoint" in result.output
    assert "Aborted!" not in result.output and "PytorchStreamReader" not in result.output


def test_state_is_safetensors_and_a_copied_checkpoint_resumes_exactly(tiny_model_dir, data, checkpointed, tmp_path):
    """The same run resumed from a copy of its checkpoint elsewhere, into another folder: the same heads."""
    folder = _copy_checkpoint(checkpointed, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["autodeco_config.json", HEADS_FILE, STATE_NAME]
    out = tmp_path / "resumed"
    fit(fit_args(tiny_model_dir, data, out, save_steps=2, max_steps=4, resume_from_checkpoint=str(folder)))
    ref, run = heads_state(checkpointed), heads_state(out)
    for name in ref:
        assert torch.equal(ref[name], run[name]), name


def test_init_heads_equal_to_output_dir_is_refused_unless_overwrite(tiny_model_dir, data, checkpointed, tmp_path):
    from autodeco_lp.cli.fit import fit_command

    heads = tmp_path / "heads"
    shutil.copytree(checkpointed, heads)
    before = (heads / HEADS_FILE).read_bytes()
    result = CliRunner().invoke(
        fit_command,
        ["--model", str(tiny_model_dir), "--data", str(data), "--init-heads", str(heads), "--output-dir", str(heads),
         "--mlp-hidden-size", "16", "--use-cpu", "--disable-tqdm", "--max-steps", "2", "--save-steps", "0"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "`--init-heads` and `--output-dir` are the same folder" in result.output, result.output
    assert (heads / HEADS_FILE).read_bytes() == before
    fit(fit_args(tiny_model_dir, data, heads, init_heads=str(heads), max_steps=2, overwrite_output_dir=True))
    assert (heads / HEADS_FILE).read_bytes() != before


@pytest.mark.parametrize("name", ["README.md", "metrics.jsonl", HEADS_FILE])
def test_files_we_did_not_write_are_never_replaced(tiny_model_dir, data, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's own file\n")
    (out / "notes.txt").write_text("unrelated")
    with pytest.raises(ValueError, match=f"holds \\['{name}'\\], which autodeco-fit did not write there"):
        fit(fit_args(tiny_model_dir, data, out, max_steps=2))
    assert (out / name).read_bytes() == b"the user's own file\n"
    # Resuming does not make them ours either.
    with pytest.raises(ValueError, match="did not write there"):
        fit(fit_args(tiny_model_dir, data, out, max_steps=2, resume_from_checkpoint="latest"))
    assert (out / name).read_bytes() == b"the user's own file\n"
    fit(fit_args(tiny_model_dir, data, out, max_steps=2, overwrite_output_dir=True))
    assert (out / name).read_bytes() != b"the user's own file\n"
    assert (out / "notes.txt").read_text() == "unrelated"  # other files are never touched


def test_other_files_are_kept_and_a_finished_run_is_not_silently_restarted(tiny_model_dir, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("mine")
    fit(fit_args(tiny_model_dir, data, out, max_steps=2))
    assert (out / "train.jsonl").read_text() == "mine"
    before = (out / HEADS_FILE).read_bytes()
    with pytest.raises(ValueError, match="holds an earlier run's"):
        fit(fit_args(tiny_model_dir, data, out, max_steps=2, seed=3))
    assert (out / HEADS_FILE).read_bytes() == before


def test_a_schedule_at_learning_rate_zero_warns(tiny_model_dir, data, checkpointed, tmp_path):
    """`--max-steps 1` with the default warm-up: the only step is warm-up at lr 0."""
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="runs at learning rate 0"):
        fit(fit_args(tiny_model_dir, data, out, init_heads=str(checkpointed), max_steps=1, warmup_ratio=0.03))
    before, after = heads_state(checkpointed), heads_state(out)
    assert all(torch.equal(before[name], after[name]) for name in before)  # a no-op, as warned
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*learning rate 0.*")
        fit(fit_args(tiny_model_dir, data, tmp_path / "o2", init_heads=str(checkpointed), max_steps=1))


def test_heads_that_end_pinned_at_a_bound_warn_and_name_the_learning_rate(tiny_model_dir, data, checkpointed, tmp_path):
    """Heads whose last bias pins T at 2 and P at 0 (the collapse the Gemma3 fit at lr 1e-3 ended in) warn."""
    from autodeco_lp.inference.heads import AutoDecoHeads

    heads = AutoDecoHeads.from_pretrained(checkpointed)
    with torch.no_grad():
        heads.temp_head.mlp[2].bias.fill_(60.0)  # sigmoid(60) = 1: T = 2 whatever the input
        heads.top_p_head.mlp[2].bias.fill_(-60.0)  # P = 0
    pinned = tmp_path / "pinned"
    heads.save_pretrained(pinned)
    with pytest.warns(
        UserWarning,
        match=r"collapsed: mean T 2\.000 is at the ceiling of 2; mean P 0\.000 .*"
        r"--learning-rate \(it was 1e-07",
    ):
        fit(fit_args(tiny_model_dir, data, tmp_path / "out", init_heads=str(pinned), max_steps=2, learning_rate=1e-7))
    with warnings.catch_warnings():  # heads inside their range do not warn
        warnings.filterwarnings("error", message=".*collapsed.*")
        fit(fit_args(tiny_model_dir, data, tmp_path / "o2", init_heads=str(checkpointed), max_steps=2))


@pytest.mark.parametrize(
    ("mean_t", "mean_p", "train_heads", "expected"),
    [
        (1.99, 0.5, "both", "at the ceiling of 2"),
        (0.01, 0.5, "both", "at the floor of 0"),
        (1.0, 0.005, "both", "mean P 0.005 is at the floor"),
        (1.0, 1.0, "both", None),  # P = 1 is "do not truncate", not a collapse
        (1.9, 0.05, "both", None),
        (1.99, 1.0, "top_p", None),  # the temperature head did not learn: not its fit's fault
        (1.0, 0.0, "temperature", None),
    ],
)
def test_collapse_warning_bounds(mean_t, mean_p, train_heads, expected):
    from autodeco_lp.training.args import FitArgs
    from autodeco_lp.training.checks import collapse_warning

    args = FitArgs(data="train.jsonl", output_dir="out", train_heads=train_heads, learning_rate=1e-3)
    message = collapse_warning(mean_t, mean_p, args)
    if expected is None:
        assert message is None
    else:
        assert expected in message and "--learning-rate (it was 0.001" in message


def test_non_utf8_training_data_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2: byte 0xe9 at column 14 is not UTF-8"):
        load_jsonl(path, tiny_char_tokenizer(), 64)


@pytest.mark.parametrize("name", ["metrics.jsonl.partial", "metrics.jsonl"])
def test_a_torn_metrics_line_left_by_a_kill_is_dropped_on_resume(tmp_path, name):
    """From the running log, or from a finished run's metrics.jsonl when one of its checkpoints is resumed."""
    from autodeco_lp.training.outputs import MetricsLog, OutputDir

    out = tmp_path / "out"
    out.mkdir()
    outputs = OutputDir(out, written=set(), write_manifest=True)
    outputs.register(name)
    (out / name).write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricsLog(outputs, resume_step=2, report_to="none", enabled=True)
    assert (out / "metrics.jsonl.partial").read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    log.log({"step": 3, "loss": 1.0})
    log.finish()
    assert [line[:10] for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        '{"step": 1',
        '{"step": 2',
        '{"step": 3',
    ]
    assert not (out / "metrics.jsonl.partial").exists()
