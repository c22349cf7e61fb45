"""Hostile files, round two: deeply nested JSON in every reader of a user's file, and merged checkpoints
that are incomplete, ambiguous or claim another base model (checked on the weight stream, no engine)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoConfig, LlamaConfig, Qwen2Config

from autodeco_lp.evaluation.records import read_cache
from autodeco_lp.hub.jsonl import MAX_NESTING, nesting_depth, parse_json
from autodeco_lp.hub.options_file import read_mapping
from autodeco_lp.tasks.problems import JsonlTask
from autodeco_lp.training.data import load_jsonl
from autodeco_lp.vllm.model import _base_architecture
from autodeco_lp.vllm.options import AutoDecoVllmOptions
from autodeco_lp.vllm.released import register_released_config
from autodeco_lp.vllm.weights import load_base_weights
from tests.conftest import tiny_char_tokenizer

# 100,000 levels: json and PyYAML recurse once per level, far past Python's stack.
DEEP = {
    "closed list": "[" * 100_000 + "]" * 100_000,
    "open list": "[" * 100_000,
    "objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
}


def _read(kind: str, tmp_path, deep: str):
    """Read a file whose second line (or value) is `deep` with the reader of `kind`."""
    if kind == "training data":
        path = tmp_path / "d.jsonl"
        path.write_text('{"prompt": "a", "completion": "b"}\n' + deep + "\n")
        return path, lambda: load_jsonl(path, tiny_char_tokenizer(), 64)
    if kind == "task":
        path = tmp_path / "t.jsonl"
        path.write_text('{"question": "a", "answer": "b"}\n' + deep + "\n")
        return path, lambda: JsonlTask(path, 10)
    if kind == "eval cache":
        path = tmp_path / "cache-x.jsonl"
        path.write_text("\n" + deep + "\n")
        return path, lambda: read_cache(path)
    path = tmp_path / ("c.yaml" if kind == "yaml config" else "c.json")
    path.write_text("a: 1\nb: " + deep + "\n" if kind == "yaml config" else '{"a": 1,\n"b": ' + deep + "}\n")
    return path, lambda: read_mapping(path, f"`--config` {str(path)!r}")


@pytest.mark.parametrize("deep", list(DEEP), ids=list(DEEP))
@pytest.mark.parametrize("kind", ["training data", "task", "eval cache", "yaml config", "json config"])
def test_deep_nesting_is_refused_naming_file_and_line(tmp_path, kind, deep):
    """Training data used to end in a RecursionError; the configs named no line."""
    path, read = _read(kind, tmp_path, DEEP[deep])
    with pytest.raises(ValueError, match="nested") as info:
        read()
    assert f"{path}:2" in str(info.value)


def test_nesting_depth_ignores_brackets_inside_strings():
    text = json.dumps({"completion": "[" * 500, "messages": [{"content": "{{"}]})
    assert nesting_depth(text) == 3
    assert parse_json(text, "f:1")["completion"] == "[" * 500  # a completion full of brackets still reads
    limit = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert nesting_depth(limit) == MAX_NESTING and parse_json(limit, "f:1") is not None
    with pytest.raises(ValueError, match=rf"^f:7: JSON nested {MAX_NESTING + 1} levels deep"):
        parse_json("[" + limit + "]", "f:7")
    with pytest.raises(ValueError, match=r"^f:3: not JSON \(Expecting") as info:
        parse_json("{not json", "f:3")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_a_torn_deep_last_cache_line_is_still_skipped(tmp_path):
    """A killed writer's last line (no newline) is regenerated, whatever it holds."""
    path = tmp_path / "cache-x.jsonl"
    path.write_text("[" * 100_000)
    assert read_cache(path) == {}


# ---------------------------------------------------------------------------- merged checkpoints (no engine)


class StandInBase(nn.Module):
    """The parameters of a one-layer vLLM Llama and its loader's rule: q/k/v and gate/up land in packed
    parameters, and the names of the parameters written are returned (as vLLM's `load_weights` does)."""

    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self) -> None:
        super().__init__()
        shapes = {
            "model.embed_tokens.weight": (8, 4),
            "model.layers.0.self_attn.qkv_proj.weight": (12, 4),
            "model.layers.0.self_attn.o_proj.weight": (4, 4),
            "model.layers.0.mlp.gate_up_proj.weight": (16, 4),
            "model.layers.0.mlp.down_proj.weight": (4, 8),
            "model.norm.weight": (4,),
            "lm_head.weight": (8, 4),
        }
        self.params = {name: nn.Parameter(torch.full(shape, float("nan"))) for name, shape in shapes.items()}
        for i, param in enumerate(self.params.values()):
            self.register_parameter(f"p{i}", param)

    def named_parameters(self, *args, **kwargs):  # the vLLM names, not the stand-in's attribute names
        return iter(self.params.items())

    def load_weights(self, weights) -> set[str]:
        # shard module -> (packed module, shard index): "q_proj" -> ("qkv_proj", 0)
        shards = {s: (p, i) for p, names in self.packed_modules_mapping.items() for i, s in enumerate(names)}
        loaded = set()
        for name, tensor in weights:
            *parents, module, leaf = name.split(".")
            packed, index = shards.get(module, (module, 0))
            target = ".".join([*parents, packed, leaf])
            param = self.params[target]  # vLLM raises for a name it has no parameter for
            rows = tensor.shape[0]
            param.data[index * rows : (index + 1) * rows] = tensor
            loaded.add(target)
        return loaded


def _stream(prefix="llm.", drop=(), extra=()):
    base = StandInBase()
    names = [
        "model.embed_tokens.weight",
        *(f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"),
        *(f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
        "model.norm.weight",
        "lm_head.weight",
    ]
    shapes = {"o": (4, 4), "gate": (8, 4), "up": (8, 4), "down": (4, 8)}
    pairs = []
    for name in names:
        if name in drop:
            continue
        leaf = name.split(".")[-2].removesuffix("_proj")
        shape = shapes.get(leaf, (4, 4) if leaf in "qkv" else (8, 4))
        pairs.append((prefix + name, torch.ones((4,) if name.endswith("norm.weight") else shape)))
    pairs += [(name, torch.ones(4)) for name in extra]
    pairs.append(("temp_head.mlp.0.weight", torch.ones(2, 4)))  # a head tensor: skipped, read elsewhere
    return base, pairs


@pytest.mark.parametrize("prefix", ["llm.", ""])
def test_a_complete_checkpoint_loads_every_parameter(prefix):
    base, pairs = _stream(prefix)
    loaded = load_base_weights(base, pairs, check=True)
    assert loaded == {name for name, _ in base.named_parameters()}
    assert all(not p.isnan().any() for _, p in base.named_parameters())


@pytest.mark.parametrize(
    "dropped",
    ["model.layers.0.mlp.down_proj.weight", "model.norm.weight", "model.layers.0.self_attn.k_proj.weight"],
)
def test_a_missing_base_tensor_is_refused_by_name(dropped):
    """vLLM 0.32 exempts linear layers from its own check: this used to serve an uninitialised weight."""
    base, pairs = _stream(drop=(dropped,))
    with pytest.raises(ValueError, match=rf"no tensor 'llm\.{re.escape(dropped)}': vLLM would serve that weight"):
        load_base_weights(base, pairs, check=True)
    load_base_weights(StandInBase(), pairs, check=False)  # quantized models: left to vLLM's own check


def test_one_base_tensor_under_two_names_is_refused():
    """`llm.model.norm.weight` and `model.norm.weight`: the later one used to win silently."""
    base, pairs = _stream(extra=("model.norm.weight",))
    with pytest.raises(ValueError, match=r"both 'llm\.model\.norm\.weight' and 'model\.norm\.weight'"):
        load_base_weights(base, pairs, check=True)
    base, pairs = _stream()
    with pytest.raises(ValueError, match=r"'llm\.model\.norm\.weight' twice"):
        load_base_weights(base, [*pairs, ("llm.model.norm.weight", torch.zeros(4))], check=True)


def test_a_base_architecture_other_than_the_checkpoints_is_refused():
    """`base_architecture: GemmaForCausalLM` on a Llama checkpoint used to load (the names match)."""
    supported = {"LlamaForCausalLM", "GemmaForCausalLM", "TransformersForCausalLM"}
    plain = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    released = {"model_type": "autodeco", "architectures": ["AutoDecoModelForCausalLM"], "base_model_type": "llama"}
    gemma = AutoDecoVllmOptions(base_architecture="GemmaForCausalLM")
    for raw in (plain, released):
        with pytest.raises(ValueError, match="is 'GemmaForCausalLM', but the checkpoint's config.json describes"):
            _base_architecture(gemma, SimpleNamespace(), raw, supported)
        assert _base_architecture(AutoDecoVllmOptions(), SimpleNamespace(), raw, supported) == "LlamaForCausalLM"
    backend = AutoDecoVllmOptions(base_architecture="TransformersForCausalLM")
    assert _base_architecture(backend, SimpleNamespace(), plain, supported) == "TransformersForCausalLM"
    custom = {"architectures": ["MyLlamaForCausalLM"]}  # vLLM lacks it: choosing one is the way to serve it
    assert _base_architecture(gemma, SimpleNamespace(), custom, supported) == "GemmaForCausalLM"


@pytest.mark.parametrize(("config_class", "own_type"), [(LlamaConfig, "llama"), (Qwen2Config, "qwen2")])
def test_a_base_model_type_the_configs_keys_contradict_is_refused(tmp_path, config_class, own_type):
    """`base_model_type: gemma` on a Llama checkpoint used to read as a Gemma config and load."""
    register_released_config()
    config = config_class(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, vocab_size=50).to_dict()
    config.update(model_type="autodeco", architectures=["AutoDecoModelForCausalLM"], enable_top_p_head=True)
    for claimed in ("gemma", "mistral"):
        (tmp_path / "config.json").write_text(json.dumps({**config, "base_model_type": claimed}))
        with pytest.raises(ValueError, match=rf"`base_model_type` is '{claimed}', but .* a '{own_type}' config"):
            AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "base_model_type": own_type}))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), config_class)
    # A config another transformers version wrote (a key none writes today) is no evidence: it reads as before.
    (tmp_path / "config.json").write_text(json.dumps({**config, "base_model_type": "gemma", "old_key": 1}))
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "GemmaConfig"
