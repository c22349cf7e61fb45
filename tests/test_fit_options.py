"""`autodeco-fit`'s options: one source per option (LossConfig for the objective), the recipes as overrides,
and the typed config loader shared with `autodeco eval ablation --config` (no model is loaded here)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autodeco_lp.cli.fit import fit_command
from autodeco_lp.evaluation.ablation import read_recipes
from autodeco_lp.hub.options_file import SHOWN_CHARS, typed_value
from autodeco_lp.training.args import LOSS_OPTIONS, OPTIONS, RECIPES, FitArgs, read_config_file
from autodeco_lp.training.losses import LossConfig

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str], monkeypatch) -> FitArgs:
    """The `FitArgs` the command would train with (fit itself replaced)."""
    seen = []
    monkeypatch.setattr("autodeco_lp.cli.fit.fit", lambda args, command: seen.append(args) or 1 / 0)
    result = CliRunner().invoke(fit_command, argv)
    assert seen, result.output
    return seen[0]


def cli_error(argv: list[str]) -> str:
    result = CliRunner().invoke(fit_command, argv)
    assert result.exit_code != 0
    return result.output


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fit.yaml"
    path.write_text(text)
    return path


def test_every_loss_option_has_one_flag_with_its_help():
    """Every LossConfig field but the two --train-heads decides is a flag, named by its metadata."""
    help_text = " ".join(CliRunner().invoke(fit_command, ["--help"]).output.split())
    assert set(LOSS_OPTIONS) == {f.name for f in dataclasses.fields(LossConfig)} - {"train_temperature", "train_top_p"}
    for name, f in LOSS_OPTIONS.items():
        flag = "--" + f.metadata.get("flag", name).replace("_", "-")
        assert flag in help_text, flag
        assert " ".join(f.metadata["help"].split())[:40] in help_text, name
    # The names command lines and config files already use, and the one that had no flag before.
    for flag in ("--temperature-loss-weight", "--top-p-loss-weight", "--loss-chunk-size", "--topk-eps"):
        assert flag in help_text
    assert "[default: 30.0]" in help_text and "--no-dft" in help_text


def test_loss_flags_reach_the_loss_config_and_win_over_the_recipe(tmp_path, monkeypatch):
    argv = ["--data", "d.jsonl", "--output-dir", str(tmp_path), "--recipe", "released"]
    default = parse(argv, monkeypatch)
    assert default.loss == {} and default.loss_config() == LossConfig()
    args = parse(
        [
            *argv,
            *("--temperature-loss-weight", "2", "--top-p-loss-weight", "0.5", "--loss-chunk-size", "64"),
            *("--topk-eps", "0.01", "--soft-top-p", "topk", "--no-dft", "--control-t-margin", "0.2"),
        ],
        monkeypatch,
    )
    config = args.loss_config()
    assert (config.temperature_weight, config.top_p_weight, config.chunk_size) == (2.0, 0.5, 64)
    assert (config.topk_eps, config.soft_top_p, config.dft, config.control_t_margin) == (0.01, "topk", False, 0.2)
    # A flag wins over a recipe's loss override; an unset option takes the recipe's value.
    monkeypatch.setitem(RECIPES, "released", dataclasses.replace(RECIPES["released"], loss={"alpha": 5.0}))
    assert FitArgs.from_options({"data": "d", "output_dir": "o", "recipe": "released"}).loss_config().alpha == 5.0
    assert parse([*argv, "--alpha", "7"], monkeypatch).loss_config().alpha == 7.0


def test_config_file_loss_options_flat_or_in_a_block_and_cli_wins(tmp_path, monkeypatch):
    flat = write(tmp_path, "recipe: released\nlearning_rate: 5e-6\ntemperature_loss_weight: 3\nloss_chunk_size: 32\n")
    args = parse(["--config", str(flat), "--data", "d", "--output-dir", "o", "--loss-chunk-size", "16"], monkeypatch)
    assert args.learning_rate == 5e-6 and isinstance(args.learning_rate, float)  # YAML 1.1 reads 5e-6 as a string
    assert args.loss_config().temperature_weight == 3.0 and args.loss_config().chunk_size == 16  # the flag wins
    block = write(tmp_path, "recipe: small\nloss: {temperature_weight: 3, chunk_size: 32}\noutcome: {problems: 7}\n")
    args = parse(["--config", str(block), "--data", "d", "--output-dir", "o"], monkeypatch)
    assert args.loss_config().temperature_weight == 3.0 and args.outcome.problems == 7
    # What a fit records (`to_dict`, printed in its model card) reads back as a config file.
    resolved = args.resolved(10**6)
    write(tmp_path, yaml.safe_dump(resolved.to_dict()))
    assert FitArgs.from_options(read_config_file(tmp_path / "fit.yaml")) == resolved
    twice = write(tmp_path, "alpha: 3\nloss: {alpha: 4}\n")
    with pytest.raises(ValueError, match="sets option alpha twice"):
        read_config_file(twice)
    with pytest.raises(ValueError, match=r"key loss: unknown option 'temperature_loss_weight'; known: alpha, "):
        read_config_file(write(tmp_path, "loss: {temperature_loss_weight: 3}\n"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_length: abc", "key max_length has to be int, but is 'abc' (str)"),
        ("max_length: 2.5", "key max_length has to be int, but is 2.5 (float)"),
        ("seed: abc", "key seed has to be int, but is 'abc' (str)"),
        ("learning_rate: fast", "key learning_rate has to be float or null, but is 'fast' (str)"),
        ("learning_rate: .nan", "key learning_rate has to be float or null, but is nan (float)"),
        ('bf16: "maybe"', "key bf16 has to be bool (one of true, yes, on, y, false, no, off, n), but is 'maybe'"),
        ("use_cpu: 1", "key use_cpu has to be bool (one of true,"),
        ("train_heads: [a, b]", "key train_heads has to be str (a single value, not a list or mapping), but is ["),
        ("train_heads: yes", "key train_heads has to be str, but is True (bool)"),
        ("loss: {alpha: high}", "key loss.alpha has to be float, but is 'high' (str)"),
        ("loss: 3", "key loss has to be a mapping of loss options, but is 3"),
        ("task_options: 3", "key task_options has to be a mapping, but is 3 (int)"),
        ("lerning_rate: 1", "has an unknown option 'lerning_rate'; known options: "),
        ("- a\n- b", "has to hold a mapping of option: value, but holds a list"),
        ("a: " + "[" * 1_500 + "]" * 1_500, "is nested too deeply to be an options file"),
        ("seed: [1", "cannot be read: while parsing a flow sequence"),
    ],
)
def test_config_values_of_the_wrong_type_are_refused_naming_file_key_and_value(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ValueError) as info:
        read_config_file(path)
    assert f"`--config` {str(path)!r}" in str(info.value) and message in str(info.value), str(info.value)
    assert message in cli_error(["--config", str(path), "--data", "d", "--output-dir", "o"]).replace("\n", " ")


def test_quoted_booleans_are_the_yaml_words_they_are(tmp_path, monkeypatch):
    """`bf16: "false"` trained in bf16 and `use_cpu: "no"` was true before the loader typed them."""
    path = write(tmp_path, 'bf16: "false"\nuse_cpu: "no"\ncache: "on"\ndisable_tqdm: "Yes"\nseed: "7"\n')
    args = parse(["--config", str(path), "--data", "d", "--output-dir", "o"], monkeypatch)
    assert (args.bf16, args.use_cpu, args.cache, args.disable_tqdm, args.seed) == (False, False, True, True, 7)


def test_a_yaml_alias_bomb_fails_fast_with_a_short_message(tmp_path):
    """Nine levels of ten aliases: 10^9 items if expanded. Refused before anything walks it."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("train_heads: *a8")
    path = write(tmp_path, "\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="holds more than 100000 values") as info:
        read_config_file(path)
    assert time.perf_counter() - started < 2.0 and len(str(info.value)) < 400
    # A field's value, however large, is quoted at most SHOWN_CHARS characters long.
    with pytest.raises(ValueError) as info:
        typed_value([["y" * 1000] * 50] * 50, str, "key train_heads")
    assert len(str(info.value)) < 2 * SHOWN_CHARS + 100
    with pytest.raises(ValueError) as info:
        typed_value("z" * 10**6, int, "key seed")
    assert len(str(info.value)) < 2 * SHOWN_CHARS + 100


def test_option_names_are_unique_and_the_shipped_configs_are_valid():
    assert not set(LOSS_OPTIONS) & {f.name for f in dataclasses.fields(FitArgs)}
    assert {"temperature_loss_weight", "loss_chunk_size", "topk_eps", "task", "seed"} <= set(OPTIONS)
    args = FitArgs.from_options({**read_config_file(ROOT / "examples" / "fit.yaml"), "data": "x", "output_dir": "o"})
    assert args.learning_rate == 1e-3 and args.num_train_epochs == 5
    for path in sorted((ROOT / "docs").glob("*.yaml")):
        config = read_recipes(path)
        for overrides in config["recipes"].values():
            FitArgs.from_options({**config["fit"], **overrides, "output_dir": "o"})  # every recipe is valid


def test_ablation_config_is_typed_like_fit_configs(tmp_path):
    base = "out: o\ntasks: {t: {task: reasoning_gym:products}}\n"
    path = tmp_path / "a.yaml"
    path.write_text(
        base + "fit: {learning_rate: 5e-6, loss: {alpha: 3}}\neval: {problems: 4}\nrecipes: {r: {dft: 'no'}}\n"
    )
    config = read_recipes(path)
    assert config["fit"] == {"learning_rate": 5e-6, "alpha": 3.0} and config["recipes"]["r"] == {"dft": False}
    for bad, message in [
        ("fit: {max_length: 2.5}\nrecipes: {}\n", "section fit, key max_length has to be int, but is 2.5"),
        ("fit: {}\neval: {problems: abc}\nrecipes: {}\n", "section eval, key problems has to be int, but is 'abc'"),
        ("fit: {}\nrecipes: {r: {seed: abc}}\n", "recipe r, key seed has to be int, but is 'abc'"),
        ("fit: {}\nrecipes: [a]\n", "`recipes` has to be a dict"),
    ]:
        path.write_text(base + bad)
        with pytest.raises(ValueError) as info:
            read_recipes(path)
        assert message in str(info.value) and str(path) in str(info.value), str(info.value)


def test_resume_compares_the_loss_options_one_by_one_and_lets_the_chunk_size_change():
    from autodeco_lp import AutoDecoConfig
    from autodeco_lp.training.resume import check_same_run

    heads = AutoDecoConfig(hidden_size=8, vocab_size=11)
    saved = FitArgs(data="d", output_dir="o").resolved(10**6).to_dict()
    state = {"data": {"rows": 3}, "args": saved}
    chunk = FitArgs(data="d", output_dir="o", loss={"chunk_size": 8}).resolved(10**6).to_dict()
    check_same_run(Path("ckpt"), state, heads, {"rows": 3}, chunk, heads)  # memory only: same run
    alpha = FitArgs(data="d", output_dir="o", loss={"alpha": 10.0}).resolved(10**6).to_dict()
    with pytest.raises(ValueError, match="option loss.alpha: 30.0 -> 10.0"):
        check_same_run(Path("ckpt"), state, heads, {"rows": 3}, alpha, heads)


def test_the_outcome_objective_command_line_is_unchanged(tmp_path, monkeypatch):
    """The flags of a running outcome fit (it may be resumed with the same command) mean what they meant."""
    args = parse(
        [
            *("--objective", "outcome", "--task", "reasoning_gym:products"),
            *("--task-option", "min_digits=1", "--task-option", "max_digits=1"),
            *("--init-heads", "heads/smollm2-135m-instruct", "--output-dir", str(tmp_path), "--rounds", "60"),
            "--resume-from-checkpoint",
        ],
        monkeypatch,
    )
    assert args.outcome.task_options == {"min_digits": 1, "max_digits": 1} and args.outcome.rounds == 60
    assert args.resume_from_checkpoint == "latest" and args.learning_rate == 1e-4 and args.loss == {}
