"""End to end on the embedded SmolLM2-135M-Instruct (marked `integration`; CI runs them)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from autodeco_lp import AutoDeco, AutoDecoConfig, AutoDecoHeads
from autodeco_lp.cli.main import autodeco as cli
from autodeco_lp.hub import models as embedded_models
from autodeco_lp.hub.models import EMBEDDED_MODEL_ID, load_model
from tests.test_processor import SAMPLE, assert_trace_matches_full_forward

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def smol_heads(tmp_path_factory):
    torch.manual_seed(0)
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=576, vocab_size=49152, base_model_name_or_path=EMBEDDED_MODEL_ID))
    folder = tmp_path_factory.mktemp("heads") / "smol"
    heads.save_pretrained(folder)
    return heads, folder


def test_embedded_model_identity_and_cache(smollm2, monkeypatch):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.name_or_path == EMBEDDED_MODEL_ID
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|im_end|>"
    # Later loads come from the safetensors cache, never the GGUF again.
    monkeypatch.setattr(embedded_models, "embedded_gguf_path", lambda: pytest.fail("GGUF re-read"))
    again, _ = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def test_generate_left_padded_batch_matches_full_forward(smollm2, smol_heads):
    model, tokenizer = smollm2
    heads, _ = smol_heads
    prompts = ["What is 2 + 3?", "Name a colour.", "Write one word about the sea, please, right now."]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    assert (enc["attention_mask"][:, 0] == 0).any()  # really left-padded
    torch.manual_seed(0)
    trace = assert_trace_matches_full_forward(model, heads, dict(enc), 8, 2e-3)
    # The first step of a padded row predicts what the same prompt alone predicts.
    single = tokenizer(texts[0:1], return_tensors="pt")
    with AutoDeco(model, heads) as autodeco:
        model.generate(**single, **SAMPLE, max_new_tokens=1, logits_processor=[autodeco])
        torch.testing.assert_close(autodeco.trace.temperature[0, 0], trace.temperature[0, 0], atol=2e-3, rtol=2e-3)


def test_cli_generate_shows_trace(smol_heads):
    _, folder = smol_heads
    result = CliRunner().invoke(
        cli,
        [
            "generate",
            "--model",
            "smollm2",
            "--heads",
            str(folder),
            "--max-new-tokens",
            "6",
            "--show-trace",
            "What is 2 + 3?",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "### What is 2 + 3?" in lines
    header = lines.index(next(line for line in lines if line.split() == ["token", "T", "P"]))
    rows = lines[header + 1 : header + 7]
    assert rows and all(0 < float(r.split()[-2]) < 2 and 0 < float(r.split()[-1]) <= 1 for r in rows)


def test_cli_errors_are_one_clear_line(tmp_path, smol_heads):
    result = CliRunner().invoke(cli, ["generate", "--heads", str(tmp_path / "nope" / "x"), "hi"])
    assert result.exit_code == 1 and "Error: `path_or_repo_id`" in result.output and "Traceback" not in result.output
    wrong = tmp_path / "wrong"
    AutoDecoHeads(AutoDecoConfig(hidden_size=64)).save_pretrained(wrong)
    result = CliRunner().invoke(cli, ["generate", "--heads", str(wrong), "hi"])
    assert result.exit_code == 1 and "hidden_size=64" in result.output
    result = CliRunner().invoke(cli, ["generate", "--max-new-tokens", "0", "--heads", str(smol_heads[1]), "hi"])
    assert result.exit_code == 1 and "`max_new_tokens` has to be a positive integer, but is 0" in result.output


def test_cli_export_official(tmp_path, smol_heads):
    heads, folder = smol_heads
    result = CliRunner().invoke(cli, ["export", "--heads", str(folder), "--out", str(tmp_path / "official")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "official" / "config.json").read_text())
    assert config["model_type"] == "autodeco" and config["base_model_type"] == "llama"
    assert config["num_hidden_layers"] == 30 and config["base_model_name_or_path"] == EMBEDDED_MODEL_ID
    loaded = AutoDecoHeads.from_pretrained(tmp_path / "official")
    for name, value in heads.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, atol=1e-2, rtol=1e-2)


def test_example_script_runs(smol_heads):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "generate_with_heads.py"
    result = subprocess.run(
        [sys.executable, str(script), str(smol_heads[1]), "What is 17 + 25?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "T=" in line]
    assert 1 <= len(lines) <= 32 and all("P=" in line for line in lines)  # stops early at EOS


def test_cli_export_native(tmp_path, smol_heads):
    heads, folder = smol_heads
    result = CliRunner().invoke(
        cli, ["export", "--heads", str(folder), "--out", str(tmp_path / "n"), "--format", "native"]
    )
    assert result.exit_code == 0, result.output
    loaded = AutoDecoHeads.from_pretrained(tmp_path / "n")
    assert loaded.config == heads.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in heads.state_dict().items())
