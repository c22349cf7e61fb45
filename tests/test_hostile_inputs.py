"""Issue 16 probe: hostile inputs that lost data or gave a silent wrong result, now refused."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from autodeco_lp import AutoDeco, AutoDecoHeads
from autodeco_lp.hub.checkpoint import export_official
from tests.conftest import random_heads, tiny_llama


def test_saving_to_an_empty_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    heads = random_heads()
    with pytest.raises(ValueError, match="empty"):
        heads.save_pretrained("")
    with pytest.raises(ValueError, match="empty"):
        export_official(heads.config, heads.state_dict(), "")
    assert os.listdir(tmp_path) == []


def test_a_folder_under_one_of_our_file_names_is_never_replaced(tmp_path):
    random_heads().save_pretrained(tmp_path)
    (tmp_path / "autodeco_config.json").unlink()
    (tmp_path / "autodeco_config.json").mkdir()
    (tmp_path / "autodeco_config.json" / "mine.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a file"):
        random_heads(seed=2).save_pretrained(tmp_path)
    assert (tmp_path / "autodeco_config.json" / "mine.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not a regular file"):
        AutoDecoHeads.from_pretrained(tmp_path)


def test_export_never_replaces_a_base_models_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"lm_head.weight": torch.ones(2, 2)}, str(tmp_path / "model.safetensors"))
    heads = random_heads()
    with pytest.raises(ValueError, match="not an AutoDeco config"):
        export_official(heads.config, heads.state_dict(), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "autodeco"}))
    with pytest.raises(ValueError, match="not AutoDeco heads"):
        export_official(heads.config, heads.state_dict(), tmp_path)
    assert "lm_head.weight" in open(tmp_path / "model.safetensors", "rb").read(200).decode("latin-1")
    # Our own export is replaced as usual.
    (tmp_path / "model.safetensors").unlink()
    export_official(heads.config, heads.state_dict(), tmp_path)
    export_official(heads.config, heads.state_dict(), tmp_path)


def test_a_string_switch_in_a_released_config_is_refused(tmp_path):
    """`"enable_top_p_head": "false"` used to read as True (bool of a non-empty string)."""
    config = {"model_type": "autodeco", "hidden_size": 32, "enable_top_p_head": "false"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(dict(random_heads().state_dict()), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="enable_top_p_head.*true or false"):
        AutoDecoHeads.from_pretrained(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_pipe_or_a_link_loop_as_config_fails_at_once(tmp_path):
    random_heads().save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "autodeco_config.json").unlink()
    os.mkfifo(tmp_path / "a" / "autodeco_config.json")  # opening it would block forever
    with pytest.raises(ValueError, match="not a regular file"):
        AutoDecoHeads.from_pretrained(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "autodeco_config.json").symlink_to("autodeco_config.json")
    with pytest.raises(ValueError, match="looping link"):
        AutoDecoHeads.from_pretrained(tmp_path / "b")


def test_one_head_tensor_under_two_wrapped_names_is_refused(tmp_path):
    state = random_heads().state_dict()
    both = {**state, **{"module." + k: v.clone() + 1 for k, v in state.items()}}
    save_file(both, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="twice"):
        AutoDecoHeads.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["record_trace", "use_temperature_head", "use_top_p_head"])
def test_switches_of_the_processor_must_be_bools(name):
    """`record_trace="no"` used to mean True."""
    with pytest.raises(TypeError, match=name):
        AutoDeco(tiny_llama(), random_heads(), **{name: "no"})


def test_one_layout_is_never_written_next_to_another(tmp_path):
    """`autodeco export --out` onto a native heads folder used to succeed and leave a folder that
    no longer loads (two layouts)."""
    heads = random_heads()
    heads.save_pretrained(tmp_path / "native")
    with pytest.raises(ValueError, match="another checkpoint layout"):
        export_official(heads.config, heads.state_dict(), tmp_path / "native")
    export_official(heads.config, heads.state_dict(), tmp_path / "official")
    with pytest.raises(ValueError, match="another checkpoint layout"):
        heads.save_pretrained(tmp_path / "official")
    for folder in ("native", "official"):
        AutoDecoHeads.from_pretrained(tmp_path / folder)
