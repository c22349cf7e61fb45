"""What a fit trusts, round two: the hidden-state cache follows the model's contents (not its path),
a checkpoint continues only the run that wrote it, and a failing final save keeps the earlier results."""

from __future__ import annotations

import errno
import json
import re
import shutil

import pytest
import torch

from autodeco_lp.hub.digest import model_sha256
from autodeco_lp.training import fit
from autodeco_lp.training.data import tokenize_row
from autodeco_lp.training.hidden import CacheSpec, examples_sha256
from tests.conftest import tiny_char_tokenizer, tiny_llama
from tests.test_training_fit import fit_args, heads_state, write_data

HEADS_FILES = ("autodeco_heads.safetensors", "autodeco_config.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data") / "train.jsonl", rows=16)


def _save_model(folder, **overrides):
    """A tiny model folder (`tiny_llama(**overrides)` + the char tokenizer), replacing what was there."""
    shutil.rmtree(folder, ignore_errors=True)
    tiny_llama(vocab=len(tiny_char_tokenizer()), max_positions=256, **overrides).save_pretrained(folder)
    tiny_char_tokenizer().save_pretrained(folder)
    return folder


def _fingerprint(out):
    return json.loads((out / "hidden_cache" / "cache_meta.json").read_text())["fingerprint"]


# --- the cache follows contents ------------------------------------------------------------------


def test_model_digest_follows_weights_and_config_not_the_path(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    moved = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    assert model_sha256(model) == model_sha256(AutoModelForCausalLM.from_pretrained(moved))
    changed = AutoModelForCausalLM.from_pretrained(moved)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3  # one weight, deep inside
    assert model_sha256(changed) != model_sha256(model)
    assert model_sha256(model.to(torch.bfloat16)) != model_sha256(AutoModelForCausalLM.from_pretrained(moved))
    other_config = AutoModelForCausalLM.from_pretrained(moved, rms_norm_eps=1e-3)  # same tensors, other states
    assert model_sha256(other_config) != model_sha256(AutoModelForCausalLM.from_pretrained(moved))


def test_cache_fingerprint_follows_the_tokenised_examples(tmp_path):
    tok = tiny_char_tokenizer()
    rows = [tokenize_row({"text": t}, tok, 64)[0] for t in ("hello there", "ab")]
    shorter = [tokenize_row({"text": t}, tok, 6)[0] for t in ("hello there", "ab")]  # another --max-length
    spec = CacheSpec(tmp_path, rows, "0" * 64, torch.float32, 32, 0, True, 4, 1e9, 1, False)
    assert spec.fingerprint["examples_sha256"] == examples_sha256(rows) != examples_sha256(shorter)
    assert examples_sha256(rows) != examples_sha256(rows[::-1])  # ids index the cache: order counts
    assert spec.fingerprint["examples"] == 2 and spec.fingerprint["targets"] == sum(e.num_targets for e in rows)


def test_a_replaced_base_model_rebuilds_the_cache(data, tmp_path):
    """`--overwrite-output-dir` after overwriting the --model folder trains on the new model's states."""
    model = _save_model(tmp_path / "model", seed=0)
    out = tmp_path / "out"
    fit(fit_args(model, data, out, max_steps=3))
    before = _fingerprint(out)
    _save_model(model, seed=1)  # another model of the same shape, at the same path
    fit(fit_args(model, data, out, max_steps=3, overwrite_output_dir=True))
    assert _fingerprint(out)["model_sha256"] != before["model_sha256"]
    fresh = tmp_path / "fresh"
    fit(fit_args(model, data, fresh, max_steps=3))
    assert _fingerprint(fresh) == _fingerprint(out)
    reused, rebuilt = heads_state(fresh), heads_state(out)
    for name in reused:
        assert torch.equal(reused[name], rebuilt[name]), name


def test_an_unchanged_cache_is_reused(tiny_model_dir, data, tmp_path):
    out = tmp_path / "out"
    fit(fit_args(tiny_model_dir, data, out, max_steps=2))
    part = out / "hidden_cache" / "part-0.hidden.npy"
    stamp = part.stat().st_mtime_ns, part.stat().st_ino
    fit(fit_args(tiny_model_dir, data, out, max_steps=2, overwrite_output_dir=True, learning_rate=1e-3))
    assert (part.stat().st_mtime_ns, part.stat().st_ino) == stamp


# --- a checkpoint continues only its own run -----------------------------------------------------


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    fit(fit_args(tiny_model_dir, data, out, save_steps=2, max_steps=4))
    return out / "checkpoint-2"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"model": "seed=1"}, [r"run model_sha256: '[0-9a-f]{12}\.\.\.' -> '[0-9a-f]{12}\.\.\.'"]),
        ({"model": "hidden_size=48"}, ["heads hidden_size: 32 -> 48", "run model_sha256"]),
        ({"mlp_hidden_size": 8}, ["heads mlp_hidden_size: 16 -> 8", "option mlp_hidden_size: 16 -> 8"]),
        ({"learning_rate": 1e-3}, ["option learning_rate: 0.003 -> 0.001"]),
        ({"train_heads": "temperature"}, ["heads enable_top_p_head: True -> False", "option train_heads"]),
        ({"seed": 5}, ["run seed: 42 -> 5", "option seed: 42 -> 5"]),
    ],
)
def test_resuming_another_runs_checkpoint_is_refused_naming_what_differs(
    tiny_model_dir, data, first_run, tmp_path, change, expected
):
    model = tiny_model_dir
    if "model" in change:
        key, value = change.pop("model").split("=")
        model = _save_model(tmp_path / "other-model", **{key: int(value)})
    args = fit_args(model, data, tmp_path / "out", save_steps=2, max_steps=4, resume_from_checkpoint=str(first_run))
    with pytest.raises(ValueError, match=f"cannot resume exactly from {first_run}") as info:
        fit(type(args)(**{**args.to_dict(), **change}))
    message = str(info.value)
    for pattern in expected:
        assert re.search(pattern, message), message
    assert "Resume with that run's base model, data and options" in message
    assert not (tmp_path / "out" / HEADS_FILES[0]).exists()


def test_only_options_that_change_no_step_may_differ_on_resume(tiny_model_dir, data, first_run, tmp_path):
    """Logging, saving, micro-batching and the model's path may change; the heads come out the same."""
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved-model")
    out = tmp_path / "out"
    fit(
        fit_args(
            moved,
            data,
            out,
            save_steps=3,
            max_steps=4,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=4,
            logging_steps=2,
            cache=False,
            resume_from_checkpoint=str(first_run),
        )
    )
    ref, run = heads_state(first_run.parent), heads_state(out)
    for name in ref:  # streaming instead of the fp16 cache: agreement to fp16 rounding
        torch.testing.assert_close(ref[name], run[name], rtol=0, atol=2e-4, msg=name)


# --- a failing final save ------------------------------------------------------------------------


def test_a_failing_final_save_keeps_the_earlier_heads_card_and_metrics(tiny_model_dir, data, tmp_path, monkeypatch):
    import autodeco_lp.hub.checkpoint as checkpoint

    out = tmp_path / "out"
    fit(fit_args(tiny_model_dir, data, out, max_steps=2))
    assert not (out / "metrics.jsonl.partial").exists()
    kept = {name: (out / name).read_bytes() for name in (*HEADS_FILES, "README.md", "metrics.jsonl")}

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)  # a part written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        fit(fit_args(tiny_model_dir, data, out, max_steps=3, seed=7, overwrite_output_dir=True))
    for name, content in kept.items():
        assert (out / name).read_bytes() == content, name
    lines = (out / "metrics.jsonl.partial").read_text().splitlines()  # the failed run's own lines stay apart
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]

    monkeypatch.undo()
    fit(fit_args(tiny_model_dir, data, out, max_steps=3, seed=7, overwrite_output_dir=True))
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (out / HEADS_FILES[0]).read_bytes() != kept[HEADS_FILES[0]]
    assert not (out / "metrics.jsonl.partial").exists()
