"""heads/registry.json: released pairs, matching by name_or_path, and the error listing the pairs."""

from __future__ import annotations

import pytest

from autodeco_lp import AutoDeco
from autodeco_lp.hub.registry import find_heads, load_registry, resolve_heads_for_model
from tests.conftest import tiny_llama

RELEASED = {
    "Jadeislaw/AutoDeco-Llama-Nemotron-8B": "nvidia/Llama-3.1-Nemotron-Nano-8B-v1",
    "Jadeislaw/AutoDeco-R1-Distill-Qwen-7B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "Jadeislaw/AutoDeco-Qwen3-30B-A3B-Instruct-2507": "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "Jadeislaw/AutoDeco-GPT-Oss-20B": "openai/gpt-oss-20b",
    "Jadeislaw/AutoDeco-GPT-Oss-120B": "openai/gpt-oss-120b",
    "zacks917/AutoDeco-Qwen3-235B-A22B-Thinking-2507": "Qwen/Qwen3-235B-A22B-Thinking-2507",
}


def test_registry_lists_the_released_heads():
    entries = {e.heads: e.base_model for e in load_registry()}
    assert RELEASED.items() <= entries.items()


@pytest.mark.parametrize(
    "name",
    [
        "openai/gpt-oss-20b",
        "OpenAI/GPT-OSS-20B",
        "/models/gpt-oss-20b/",
        "/root/.cache/huggingface/hub/models--openai--gpt-oss-20b/snapshots/0123abcd",
    ],
)
def test_matching_by_name_or_path(name):
    assert find_heads(name).heads == "Jadeislaw/AutoDeco-GPT-Oss-20B"


def test_no_match_lists_known_pairs():
    model = tiny_llama()
    model.name_or_path = "my/unknown-model"
    with pytest.raises(
        ValueError,
        match=r"(?s)no registered AutoDeco heads for model 'my/unknown-model'"
        r".*openai/gpt-oss-20b  ->  Jadeislaw/AutoDeco-GPT-Oss-20B",
    ):
        resolve_heads_for_model(model)
    with pytest.raises(ValueError, match="no registered AutoDeco heads"):
        AutoDeco.from_pretrained(model)
    assert find_heads("openai/gpt-oss-20b-extra") is None


def test_readme_commands_are_what_ci_runs():
    """The README's two set-up commands stay true: CI runs the test one verbatim, and the main-job
    one is the same set-up followed by generation on the embedded model with the shipped heads."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    blocks = (root / "README.md").read_text().split("```bash\n")
    main_job, tests = blocks[1].split("\n")[0], blocks[2].split("\n")[0]
    setup = tests.removesuffix(" && .venv/bin/pytest")
    assert tests.endswith("&& .venv/bin/pytest") and "torch==2.13.0" in setup
    assert main_job.startswith(setup + " && .venv/bin/autodeco generate --model smollm2 --show-trace")
    assert tests in (root / ".ci" / "run").read_text()


def test_every_local_entry_loads_and_matches_its_packaged_model_folder():
    """Shipped heads (SmolLM2, Gemma3): weights load, their config names the registered base model,
    and the converted model's cache folder (what `load_model` sets as name_or_path) finds them."""
    from autodeco_lp import AutoDecoHeads
    from autodeco_lp.hub.models import GEMMA3, SMOLLM2, cache_root
    from autodeco_lp.hub.registry import registry_dir

    local = [e for e in load_registry() if e.heads.startswith(str(registry_dir()))]
    assert {e.base_model for e in local} == {SMOLLM2.model_id, GEMMA3.model_id}
    for packaged in (SMOLLM2, GEMMA3):
        entry = find_heads(str(cache_root() / packaged.cache_name))
        assert entry is not None and entry.base_model == packaged.model_id
        assert AutoDecoHeads.from_pretrained(entry.heads).config.base_model_name_or_path == packaged.model_id


def test_control_heads_ship_beside_the_registered_ones():
    """The control-trained heads are not in the registry (one entry per base model) but ship as a folder."""
    from autodeco_lp import AutoDecoHeads
    from autodeco_lp.hub.registry import registry_dir

    plain = AutoDecoHeads.from_pretrained(registry_dir() / "smollm2-135m-instruct")
    control = AutoDecoHeads.from_pretrained(registry_dir() / "smollm2-135m-instruct-control")
    assert control.config.to_dict() == plain.config.to_dict()
    assert (
        "| plain-language control | commands `default`"
        in (registry_dir() / "smollm2-135m-instruct-control" / "README.md").read_text()
    )
