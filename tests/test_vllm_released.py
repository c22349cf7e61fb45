"""AutoDeco inside vLLM: the released merged and lightweight layouts (tiny random Llama), seeds, refusals.

Each test starts and deletes its own in-process engines.
"""

from __future__ import annotations

import gc
import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from autodeco_lp import AutoDecoConfig, AutoDecoHeads
from autodeco_lp.hub.checkpoint import export_official
from autodeco_lp.hub.models import SMOLLM2, packaged_model_dir
from autodeco_lp.hub.registry import find_heads
from tests.conftest import tiny_char_tokenizer
from tests.vllm_support import (  # noqa: I001 (first: skips, or fails under CI, without vLLM)
    CHATS,
    ENGINE,
    LLM,
    NEW_TOKENS,
    SamplingParams,
    assert_trace_matches,
    hf_overrides,
    pop_trace,
)

pytestmark = pytest.mark.vllm


# ---------------------------------------------------------------------------- released layouts, tiny model


def _tiny_base(folder):
    tokenizer = tiny_char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def _random_heads(vocab: int) -> AutoDecoHeads:
    torch.manual_seed(3)
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=128, vocab_size=vocab)).eval()
    with torch.no_grad():  # spread the outputs so that a wrong input shows
        for p in heads.parameters():
            p.mul_(4)
    return heads


def _write_merged(folder, model, tokenizer, heads):
    """The authors' merged layout: base weights under `llm.*`, head tensors, sharded with an index."""
    export_official(heads.config, heads.state_dict(), folder, base_config=model.config.to_dict())  # config.json
    (folder / "model.safetensors").unlink()  # the lightweight weights file; the merged shards replace it
    base = {f"llm.{k}": v.contiguous() for k, v in model.state_dict().items()}
    head = {k: v.to(torch.bfloat16).contiguous() for k, v in heads.state_dict().items()}
    shards = {"model-00001-of-00002.safetensors": base, "model-00002-of-00002.safetensors": head}
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-tiny")
    model, tokenizer = _tiny_base(root / "base")
    heads = _random_heads(len(tokenizer))
    export_official(heads.config, heads.state_dict(), root / "lightweight", base_config=model.config.to_dict())
    (root / "merged").mkdir()
    _write_merged(root / "merged", model, tokenizer, heads)
    # The lightweight and merged files hold bf16 heads (as released): compare with those weights.
    released = AutoDecoHeads.from_pretrained(root / "lightweight")
    return root, model, released


PROMPTS = ["Hello there, how", "1 + 1 =", "The quick brown fox jumps over the lazy dog and then"]


@pytest.mark.parametrize("layout", ["merged", "lightweight"])
def test_released_layouts_serve_with_hf_parity(tiny, layout):
    root, model, heads = tiny
    if layout == "merged":  # served as it is: model_type "autodeco", llm.* weights, heads inside
        llm = LLM(str(root / "merged"), seed=0, hf_overrides={"autodeco": {"record_trace": True}}, **ENGINE)
    else:  # base model + the released lightweight heads folder
        overrides = hf_overrides(str(root / "lightweight"), record_trace=True)
        llm = LLM(str(root / "base"), seed=0, hf_overrides=overrides, **ENGINE)
    params = SamplingParams(temperature=1.0, max_tokens=8, ignore_eos=True)
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert_trace_matches(outs, pop_trace(llm), model, heads)
    greedy = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    del llm
    gc.collect()
    with torch.no_grad():  # greedy = the base model's argmax: the llm.* weights were loaded
        for out in greedy:
            ids = torch.tensor([out.prompt_token_ids])
            want = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8)[0, ids.shape[1] :]
            assert list(out.outputs[0].token_ids) == want.tolist()


def test_heads_for_another_model_are_refused(tiny):
    root, _, _ = tiny
    smol_heads_dir = find_heads(SMOLLM2.model_id).heads
    with pytest.raises(Exception, match=r"expect hidden_size=576 but .* has final hidden states of width 128"):
        LLM(str(root / "base"), hf_overrides=hf_overrides(smol_heads_dir), **ENGINE)


@pytest.mark.integration
def test_engine_seed_makes_autodeco_sampling_reproducible():
    smol_dir = str(packaged_model_dir(SMOLLM2))
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    # Same engine seed, two fresh engines: the same samples.
    first = LLM(smol_dir, seed=7, hf_overrides=hf_overrides(), **ENGINE)
    a = [o.outputs[0].token_ids for o in first.chat(CHATS, params, use_tqdm=False)]
    del first
    gc.collect()
    second = LLM(smol_dir, seed=7, hf_overrides=hf_overrides(), **ENGINE)
    b = [o.outputs[0].token_ids for o in second.chat(CHATS, params, use_tqdm=False)]
    del second
    gc.collect()
    assert a == b
