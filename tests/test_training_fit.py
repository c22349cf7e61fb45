"""The fit loop end to end on a tiny random model: outputs, cache, resume after SIGKILL, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from autodeco_lp import AutoDeco, AutoDecoHeads
from autodeco_lp.training import FitArgs, fit
from autodeco_lp.training.resume import list_checkpoints


def write_data(path: Path, rows: int = 48) -> Path:
    gen = torch.Generator().manual_seed(0)
    with open(path, "w") as f:
        for _ in range(rows):
            a, b = torch.randint(0, 10, (2,), generator=gen).tolist()
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"{a}+{b}="},
                            {"role": "assistant", "content": str(a + b)},
                        ]
                    }
                )
                + "\n"
            )
    return path


def fit_args(model_dir, data, out, **overrides) -> FitArgs:
    options = dict(
        model=str(model_dir),
        data=str(data),
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        max_steps=6,
        warmup_ratio=0.0,
        mlp_hidden_size=16,
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        save_steps=0,
    )
    options.update(overrides)
    return FitArgs.from_options(options)  # flat option names, loss options included (as flags and configs name them)


def heads_state(folder) -> dict[str, torch.Tensor]:
    return AutoDecoHeads.from_pretrained(folder).state_dict()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data") / "train.jsonl")


def test_fit_writes_heads_card_metrics_and_lowers_the_loss(tiny_model_dir, data, tmp_path):
    result = fit(
        fit_args(tiny_model_dir, data, tmp_path, max_steps=30, save_steps=10, save_total_limit=2), command="test"
    )
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 31))
    first, last = sum(x["loss"] for x in lines[:5]) / 5, sum(x["loss"] for x in lines[-5:]) / 5
    assert last < 0.95 * first, (first, last)  # DFT weights are ~1/V on a random model: small losses
    assert result.cached and result.steps == 30
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10, 20]  # limit 2; none at the final step
    card = (tmp_path / "README.md").read_text()
    assert "optimizer steps | 30" in card and "test" in card and "| plain-language control | off |" in card
    assert "| initialised from | random (seed " in card
    # The card's loading snippet names the folder as it was given, so it works from where the fit ran.
    assert f'AutoDeco.from_pretrained(model, "{tmp_path.as_posix()}")' in card
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with AutoDeco.from_pretrained(model, str(tmp_path)) as processor:
        assert processor.heads.config.hidden_size == 32


def test_cache_and_streaming_train_the_same_heads(tiny_model_dir, data, tmp_path):
    fit(fit_args(tiny_model_dir, data, tmp_path / "cached"))
    fit(fit_args(tiny_model_dir, data, tmp_path / "streamed", cache=False, max_tokens_per_batch=64))
    cached, streamed = heads_state(tmp_path / "cached"), heads_state(tmp_path / "streamed")
    for name in cached:  # the cache stores fp16 hidden states: agreement to fp16 rounding
        torch.testing.assert_close(cached[name], streamed[name], rtol=0, atol=2e-4, msg=name)
    assert (tmp_path / "cached" / "hidden_cache" / "cache_meta.json").is_file()
    assert not (tmp_path / "streamed" / "hidden_cache").exists()


def test_temperature_only_fit_builds_only_that_head(tiny_model_dir, data, tmp_path):
    result = fit(fit_args(tiny_model_dir, data, tmp_path, train_heads="temperature", max_steps=2))
    heads = AutoDecoHeads.from_pretrained(tmp_path)
    assert heads.top_p_head is None and result.top_p_loss == 0.0


def _launch(args: list[str], env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autodeco_lp.training", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def _cli_args(model_dir, data, out, steps):
    return [
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        str(steps),
        "--per-device-train-batch-size",
        "4",
        "--gradient-accumulation-steps",
        "2",
        "--learning-rate",
        "3e-3",
        "--mlp-hidden-size",
        "16",
        "--use-cpu",
        "--disable-tqdm",
        "--save-steps",
        "2",
        "--warmup-ratio",
        "0.1",
        "--easy-token-drop",
        "0.6",
    ]


def test_resume_after_sigkill_ends_with_the_same_heads(tiny_model_dir, data, tmp_path):
    steps = 400
    reference = _launch(_cli_args(tiny_model_dir, data, tmp_path / "ref", steps))
    victim = _launch(_cli_args(tiny_model_dir, data, tmp_path / "run", steps))
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "run") and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = list_checkpoints(tmp_path / "run")[-1][0]
    assert killed_at < steps and not (tmp_path / "run" / "autodeco_heads.safetensors").exists()
    resumed = _launch(_cli_args(tiny_model_dir, data, tmp_path / "run", steps) + ["--resume-from-checkpoint"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()
    ref, run = heads_state(tmp_path / "ref"), heads_state(tmp_path / "run")
    for name in ref:
        assert torch.equal(ref[name], run[name]), name
    steps_logged = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps


def test_resume_refuses_a_different_run(tiny_model_dir, data, tmp_path):
    fit(fit_args(tiny_model_dir, data, tmp_path, save_steps=2, max_steps=4))
    with pytest.raises(ValueError, match="cannot resume exactly"):
        fit(
            fit_args(tiny_model_dir, data, tmp_path, save_steps=2, max_steps=4, seed=7, resume_from_checkpoint="latest")
        )
    with pytest.raises(ValueError, match="found no checkpoint-N"):
        fit(fit_args(tiny_model_dir, data, tmp_path / "empty", resume_from_checkpoint="latest"))


def test_cli_reads_a_yaml_config_and_flags_win(tiny_model_dir, data, tmp_path):
    from autodeco_lp.cli.main import autodeco

    config = tmp_path / "fit.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ndata: {data}\nmax-steps: 3\nlearning_rate: 1.0e-3\n"
        "mlp_hidden_size: 16\nuse_cpu: true\ndisable_tqdm: true\nsave_steps: 0\n"
    )
    result = CliRunner().invoke(
        autodeco, ["fit", "--config", str(config), "--output-dir", str(tmp_path / "o"), "--max-steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    card = json.loads((tmp_path / "o" / "README.md").read_text().split("```json")[1].split("```")[0])
    assert card["learning_rate"] == 1e-3 and card["max_steps"] == 2


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "`--data` is required"),
        (
            ["--data", "x.jsonl", "--output-dir", "o", "--train-heads", "all"],
            "`--train-heads` has to be one of both, temperature, top_p, but is 'all'",
        ),
        (
            ["--data", "x.jsonl", "--output-dir", "o", "--easy-token-drop", "2"],
            r"`easy_token_drop` \(--easy-token-drop\) has to be in \[0, 1\], but is 2.0",
        ),
        (["--config", "bad.yaml"], "`--config` 'bad.yaml' has an unknown option 'lr'; known options: adam_beta1"),
    ],
)
def test_cli_errors_name_the_option(tmp_path, monkeypatch, args, match):
    from autodeco_lp.cli.fit import fit_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("lr: 1\n")
    result = CliRunner().invoke(fit_command, args)
    assert result.exit_code != 0
    assert __import__("re").search(match, result.output), result.output


def test_bf16_base_keeps_fp32_heads_and_a_bf16_cache(tiny_model_dir, data, tmp_path):
    result = fit(fit_args(tiny_model_dir, data, tmp_path, bf16=True, max_steps=2))
    meta = json.loads((tmp_path / "hidden_cache" / "cache_meta.json").read_text())
    assert meta["storage_dtype"] == "bfloat16" and result.cached
    assert all(t.dtype == torch.float32 for t in heads_state(tmp_path).values())
    assert torch.isfinite(torch.tensor(result.loss))


def test_example_config_file_is_valid():
    from autodeco_lp.training.args import read_config_file

    path = Path(__file__).resolve().parents[1] / "examples" / "fit.yaml"
    args = FitArgs.from_options({**read_config_file(path), "data": "x.jsonl", "output_dir": "out"})
    assert args.learning_rate == 1e-3 and args.num_train_epochs == 5


def test_resume_ignores_half_written_checkpoints(tiny_model_dir, data, tmp_path):
    from autodeco_lp.training.resume import resolve_resume

    fit(fit_args(tiny_model_dir, data, tmp_path, save_steps=2, max_steps=5))
    (tmp_path / ".checkpoint-4.tmp-abc").mkdir()  # a save killed before its rename
    (tmp_path / "checkpoint-6").mkdir()  # a folder without its state file
    assert resolve_resume(tmp_path, "latest").name == "checkpoint-4"
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-6"))


def test_tensorboard_without_the_package_is_a_clear_error(tiny_model_dir, data, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the tensorboard package"):
            fit(fit_args(tiny_model_dir, data, tmp_path, report_to="tensorboard"))
    else:
        fit(fit_args(tiny_model_dir, data, tmp_path, report_to="tensorboard", max_steps=2))
        assert any((tmp_path / "runs").iterdir())


def test_console_scripts_point_at_the_commands():
    """`autodeco-fit` and `autodeco` (the README's commands) are installed entry points."""
    from importlib.metadata import entry_points

    from autodeco_lp.cli.fit import main as fit_main
    from autodeco_lp.cli.main import autodeco as autodeco_group

    scripts = {e.name: e for e in entry_points(group="console_scripts")}
    assert scripts["autodeco-fit"].load() is fit_main
    assert scripts["autodeco"].load() is autodeco_group
    assert "fit" in autodeco_group.commands and "sample" in autodeco_group.commands["data"].commands


def test_importance_weighted_fit_differs_from_the_released_objective(tiny_model_dir, data, tmp_path):
    """The option reaches the loss (other heads than the released objective's) and the model card."""
    fit(fit_args(tiny_model_dir, data, tmp_path / "released", max_steps=3))
    fit(
        fit_args(
            tiny_model_dir,
            data,
            tmp_path / "importance",
            max_steps=3,
            sequence_weighting="importance",
            importance_clip=4.0,
        )
    )
    released, weighted = heads_state(tmp_path / "released"), heads_state(tmp_path / "importance")
    assert any(not torch.allclose(released[k], weighted[k]) for k in released)
    assert "sequence weighting importance (clip 4.0)" in (tmp_path / "importance" / "README.md").read_text()


def test_recipes_fill_only_what_the_user_left_unset(tmp_path):
    from autodeco_lp.training.args import RECIPES, SMALL_MODEL_PARAMETERS
    from autodeco_lp.training.losses import LossConfig

    released = FitArgs(data="d.jsonl", output_dir=str(tmp_path), recipe="released")
    assert released.learning_rate == 5e-6 and released.num_train_epochs == 1.0
    assert released.loss_config() == LossConfig()  # the released objective: LossConfig's defaults
    small = FitArgs(data="d.jsonl", output_dir=str(tmp_path), recipe="small", learning_rate=2e-3)
    assert small.learning_rate == 2e-3 and small.num_train_epochs == RECIPES["small"].num_train_epochs
    auto = FitArgs(data="d.jsonl", output_dir=str(tmp_path), loss={"dft": False})
    assert auto.learning_rate is None  # decided once the model's size is known
    with pytest.raises(ValueError, match="call FitArgs.resolved"):
        auto.loss_config()
    tiny, large = auto.resolved(135_000_000), auto.resolved(SMALL_MODEL_PARAMETERS + 1)
    assert (tiny.recipe, large.recipe) == ("small", "released")
    assert tiny.loss_config().dft is False and large.loss_config().dft is False
    assert (tiny.learning_rate, tiny.num_train_epochs, large.learning_rate) == (1e-3, 5.0, 5e-6)
    assert tiny.loss["easy_token_drop"] == LossConfig().easy_token_drop  # resolved: every loss option written out
    with pytest.raises(ValueError, match="`--recipe` has to be one of auto, released, small, but is 'big'"):
        FitArgs(data="d.jsonl", output_dir=str(tmp_path), recipe="big")


def test_soft_top_p_option_reaches_the_loss_config(tmp_path):
    """`--soft-top-p topk` (docs/training.md) is what the loss uses; exact is the default."""
    args = FitArgs(data="d.jsonl", output_dir=str(tmp_path), recipe="released", loss={"soft_top_p": "topk"})
    assert args.loss_config().soft_top_p == "topk"
    assert FitArgs(data="d.jsonl", output_dir=str(tmp_path), recipe="released").loss_config().soft_top_p == "exact"
    from autodeco_lp.cli.fit import fit_command

    result = CliRunner().invoke(fit_command, ["--help"])
    assert "--soft-top-p" in result.output
