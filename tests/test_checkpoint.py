"""Native save/load, every released layout, Hub resolution (offline cache), and clear errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autodeco_lp import AutoDecoHeads
from autodeco_lp.hub import checkpoint, files, source
from autodeco_lp.hub.checkpoint import export_official
from tests.conftest import HIDDEN, VOCAB, bf16_state, random_heads, same_heads


def _released_config(**extra) -> dict:
    """A lightweight released config.json: the whole base config plus the AutoDeco keys."""
    return {
        "model_type": "autodeco",
        "architectures": ["AutoDecoModelForCausalLM"],
        "base_model_type": "llama",
        "base_model_name_or_path": "/private/trainer/path",
        "hidden_size": HIDDEN,
        "vocab_size": VOCAB,
        "num_hidden_layers": 2,
        "temperature_hidden_size": HIDDEN,
        "top_p_hidden_size": HIDDEN,
        "use_enhanced_features": True,
        **extra,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- native


def test_native_round_trip_and_file_layout(tmp_path):
    heads = random_heads()
    heads.config.base_model_name_or_path = "org/base"
    heads.save_pretrained(tmp_path / "h")
    assert sorted(os.listdir(tmp_path / "h")) == ["autodeco_config.json", "autodeco_heads.safetensors"]
    text = (tmp_path / "h" / "autodeco_config.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["hidden_size"] == HIDDEN and data["vocab_size"] == VOCAB and data["library_version"]
    assert {"base_model_name_or_path", "base_model_revision"} <= set(data)
    loaded = AutoDecoHeads.from_pretrained(tmp_path / "h")
    assert same_heads(heads, loaded) and loaded.config == heads.config
    assert (
        AutoDecoHeads.from_pretrained(tmp_path / "h", base_model_name_or_path="x/y").config.base_model_name_or_path
        == "x/y"
    )


def test_overwrite_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-5").mkdir()
    random_heads(seed=1).save_pretrained(out)
    second = random_heads(seed=2)
    second.save_pretrained(out)
    assert (out / "checkpoint-5").is_dir() and same_heads(AutoDecoHeads.from_pretrained(out), second)
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_crash_during_save_leaves_the_good_checkpoint(tmp_path, monkeypatch):
    good = random_heads(seed=1)
    good.save_pretrained(tmp_path / "h")

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint, "save_file", crash)  # the native save's writer, looked up in checkpoint.py
    with pytest.raises(KeyboardInterrupt):
        random_heads(seed=2).save_pretrained(tmp_path / "h")
    with pytest.raises(KeyboardInterrupt):
        random_heads(seed=2).save_pretrained(tmp_path / "new")
    monkeypatch.undo()
    assert same_heads(AutoDecoHeads.from_pretrained(tmp_path / "h"), good)
    assert not (tmp_path / "new").exists()
    assert sorted(os.listdir(tmp_path)) == ["h"] and sorted(os.listdir(tmp_path / "h")) == [
        "autodeco_config.json",
        "autodeco_heads.safetensors",
    ]


def test_config_and_weights_from_different_saves_are_detected(tmp_path):
    random_heads().save_pretrained(tmp_path / "a")
    random_heads(hidden=16, vocab=VOCAB).save_pretrained(tmp_path / "b")
    os.replace(tmp_path / "b" / "autodeco_config.json", tmp_path / "a" / "autodeco_config.json")
    with pytest.raises(ValueError, match="come from different saves"):
        AutoDecoHeads.from_pretrained(tmp_path / "a")


# ----------------------------------------------------------------------------- released layouts


@pytest.mark.parametrize("weights_name", ["model.safetensors", "autodeco_heads.safetensors", "heads-00001.safetensors"])
def test_lightweight_release_bf16(tmp_path, weights_name):
    heads = random_heads()
    _write_json(tmp_path / "config.json", _released_config(enable_temperature_head=True, enable_top_p_head=True))
    save_file(bf16_state(heads), str(tmp_path / weights_name))
    loaded = AutoDecoHeads.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32  # upcast
    assert same_heads(heads, loaded, atol=1e-2)
    assert loaded.config.vocab_size == VOCAB and loaded.config.base_model_name_or_path == "/private/trainer/path"
    assert (
        AutoDecoHeads.from_pretrained(tmp_path, base_model_name_or_path="org/base").config.base_model_name_or_path
        == "org/base"
    )


def test_old_config_keys_train_temp_train_top_p(tmp_path):
    heads = random_heads(enable_top_p_head=False)
    _write_json(tmp_path / "config.json", _released_config(train_temp=True, train_top_p=False))
    save_file(bf16_state(random_heads()), str(tmp_path / "autodeco_heads.safetensors"))  # top-p tensors present
    with pytest.warns(UserWarning, match="disables top_p_head"):
        loaded = AutoDecoHeads.from_pretrained(tmp_path)
    assert loaded.top_p_head is None and loaded.config.enable_top_p_head is False
    assert heads.state_dict().keys() == loaded.state_dict().keys()


def test_merged_sharded_release_reads_only_head_tensors(tmp_path, monkeypatch):
    heads = random_heads()
    base = {
        "llm.model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN),
        "llm.lm_head.weight": torch.randn(VOCAB, HIDDEN),
    }
    save_file(base, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(bf16_state(heads), str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in base}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in heads.state_dict()})
    _write_json(tmp_path / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    _write_json(tmp_path / "config.json", _released_config())
    opened = []
    real = files.read_safetensors
    monkeypatch.setattr(
        files,
        "read_safetensors",
        lambda path, keep=lambda k: True: (opened.append(Path(path).name), real(path, keep))[1],
    )
    assert same_heads(heads, AutoDecoHeads.from_pretrained(tmp_path), atol=1e-2)
    assert opened == ["model-00002-of-00002.safetensors"]


@pytest.mark.parametrize("prefix", ["module.adapter.", "adapter."])
def test_megatron_export_without_config(tmp_path, prefix):
    heads = random_heads(vocab=None)
    save_file(bf16_state(heads, prefix), str(tmp_path / "adapter.safetensors"))
    loaded = AutoDecoHeads.from_pretrained(tmp_path)
    assert same_heads(heads, loaded, atol=1e-2) and loaded.config.hidden_size == HIDDEN


def test_legacy_bin_loads_with_weights_only_and_refuses_code(tmp_path):
    heads = random_heads()
    torch.save(heads.state_dict(), tmp_path / "autodeco_heads.bin")
    assert same_heads(heads, AutoDecoHeads.from_pretrained(tmp_path))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil"
    evil.mkdir()
    with open(evil / "autodeco_heads.bin", "wb") as f:
        pickle.dump({"temp_head.mlp.0.weight": Payload()}, f)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        AutoDecoHeads.from_pretrained(evil)
    assert not (tmp_path / "pwned").exists()


def test_export_official_is_loadable_as_a_release(tmp_path):
    heads = random_heads()
    heads.config.base_model_name_or_path = "org/base"
    export_official(
        heads.config,
        heads.state_dict(),
        tmp_path / "official",
        base_config={"model_type": "llama", "hidden_size": HIDDEN, "vocab_size": VOCAB},
    )
    config = json.loads((tmp_path / "official" / "config.json").read_text())
    assert config["model_type"] == "autodeco" and config["architectures"] == ["AutoDecoModelForCausalLM"]
    assert config["base_model_type"] == "llama" and config["temperature_hidden_size"] == HIDDEN
    assert sorted(os.listdir(tmp_path / "official")) == ["config.json", "model.safetensors"]
    loaded = AutoDecoHeads.from_pretrained(tmp_path / "official")
    assert same_heads(heads, loaded, atol=1e-2) and loaded.config.base_model_name_or_path == "org/base"


# ----------------------------------------------------------------------------- Hub


def _fake_hub_cache(
    cache: Path, repo_id: str, files: dict[str, Path], commit: str = "a" * 40, ref: str = "main"
) -> None:
    """Lay files out the way huggingface_hub caches a repo snapshot."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    for name, src in files.items():
        (snapshot / name).write_bytes(src.read_bytes())


def _merged_release(folder: Path, heads: AutoDecoHeads) -> dict[str, Path]:
    folder.mkdir()
    save_file(bf16_state(heads), str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {"llm.lm_head.weight": "model-00001-of-00002.safetensors"}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in heads.state_dict()})
    _write_json(folder / "model.safetensors.index.json", {"weight_map": weight_map})
    _write_json(folder / "config.json", _released_config())
    # The base shard is deliberately absent: loading must never need it.
    return {p.name: p for p in folder.iterdir()}


def test_hub_repo_from_offline_cache_in_a_subprocess(tmp_path):
    heads = random_heads()
    files = _merged_release(tmp_path / "release", heads)
    _fake_hub_cache(tmp_path / "cache", "Jadeislaw/AutoDeco-Tiny", files)
    native = tmp_path / "native"
    random_heads(seed=7).save_pretrained(native)
    _fake_hub_cache(
        tmp_path / "cache", "me/tiny-heads", {p.name: p for p in native.iterdir()}, commit="b" * 40, ref="v1"
    )
    torch.save(heads.state_dict(), tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from autodeco_lp import AutoDecoHeads
        h = AutoDecoHeads.from_pretrained("Jadeislaw/AutoDeco-Tiny")
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert all(torch.allclose(h.state_dict()[k], expected[k].float(), atol=1e-2) for k in expected)
        n = AutoDecoHeads.from_pretrained("me/tiny-heads", revision="v1")
        assert n.config.hidden_size == {HIDDEN}
        try:
            AutoDecoHeads.from_pretrained("me/tiny-heads")  # no 'main' ref cached
        except ValueError as exc:
            assert "holds no heads of 'me/tiny-heads'" in str(exc) and "HF_HUB_OFFLINE" in str(exc), exc
        else:
            raise AssertionError("expected a ValueError")
        print("ok")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def _fake_hub(monkeypatch, fake_download) -> None:
    """A reachable Hub: the repo probe answers, files come from `fake_download` (looked up in hub/source.py)."""
    monkeypatch.setattr(source.HfApi, "repo_info", lambda self, repo_id, **kwargs: object())
    monkeypatch.setattr(source, "hf_hub_download", fake_download)


def test_hub_fetches_only_needed_files(tmp_path, monkeypatch):
    from huggingface_hub.errors import EntryNotFoundError

    heads = random_heads()
    files = _merged_release(tmp_path / "release", heads)
    asked = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, token=None, local_files_only=False):
        asked.append(filename)
        if filename not in files:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(files[filename])

    _fake_hub(monkeypatch, fake_download)
    assert same_heads(heads, AutoDecoHeads.from_pretrained("org/heads", revision="abc"), atol=1e-2)
    assert "model-00001-of-00002.safetensors" not in asked
    assert "model-00002-of-00002.safetensors" in asked
    assert len(asked) == len(set(asked)), asked  # one request per file name, never the same file twice


def test_hub_loads_a_loose_export_asking_for_each_file_once(tmp_path, monkeypatch):
    from huggingface_hub.errors import EntryNotFoundError

    heads = random_heads()
    (tmp_path / "release").mkdir()  # a Megatron-style export: one safetensors file, no config
    save_file(
        {k: v.contiguous() for k, v in heads.state_dict().items()}, str(tmp_path / "release" / "model.safetensors")
    )
    asked = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, token=None, local_files_only=False):
        asked.append(filename)
        path = tmp_path / "release" / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    _fake_hub(monkeypatch, fake_download)
    loaded = AutoDecoHeads.from_pretrained("org/heads", base_model_name_or_path="org/base")
    assert same_heads(heads, loaded)
    assert sorted(asked) == sorted(set(asked)), asked  # the layout probe and the load share fetched files


# ----------------------------------------------------------------------------- errors


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    heads = random_heads()
    heads.save_pretrained(tmp_path / "h")
    state = heads.state_dict()
    partial = {k: v for k, v in state.items() if k != "top_p_head.mlp.2.bias"}
    save_file(partial, str(tmp_path / "h" / "autodeco_heads.safetensors"))
    with pytest.raises(ValueError, match=r"missing head tensors \['top_p_head.mlp.2.bias'\]"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")
    save_file({**state, "temp_head.extra": torch.zeros(1)}, str(tmp_path / "h" / "autodeco_heads.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected tensors \['temp_head.extra'\]"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")


def test_nan_weights_are_refused(tmp_path):
    heads = random_heads()
    with torch.no_grad():
        heads.temp_head.mlp[0].weight[0, 0] = float("nan")
    heads.save_pretrained(tmp_path / "h")
    with pytest.raises(ValueError, match="temp_head.mlp.0.weight holds NaN or inf"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")


def test_truncated_safetensors(tmp_path):
    random_heads().save_pretrained(tmp_path / "h")
    path = tmp_path / "h" / "autodeco_heads.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")


def test_config_missing_required_key(tmp_path):
    random_heads().save_pretrained(tmp_path / "h")
    cfg = tmp_path / "h" / "autodeco_config.json"
    data = json.loads(cfg.read_text())
    del data["hidden_size"]
    cfg.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"autodeco_config.json is missing the required key\(s\) \['hidden_size'\]"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")


def test_unknown_config_key_warns(tmp_path):
    random_heads().save_pretrained(tmp_path / "h")
    cfg = tmp_path / "h" / "autodeco_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "future_option": 3}))
    with pytest.warns(UserWarning, match="future_option"):
        AutoDecoHeads.from_pretrained(tmp_path / "h")


def test_nothing_loadable_and_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("hi")
    with pytest.raises(ValueError, match="nothing loadable in folder"):
        AutoDecoHeads.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a file; pass the folder"):
        AutoDecoHeads.from_pretrained(tmp_path / "empty" / "README.md")
    with pytest.raises(ValueError, match="no such folder"):
        AutoDecoHeads.from_pretrained(str(tmp_path / "does" / "not" / "exist"))


def test_hidden_size_disagreement_in_release(tmp_path):
    _write_json(tmp_path / "config.json", _released_config(hidden_size=64))
    save_file(bf16_state(random_heads()), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="hidden_size=64 but the head tensors have width 32"):
        AutoDecoHeads.from_pretrained(tmp_path)


def test_saving_onto_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; pass a folder path"):
        random_heads().save_pretrained(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"
