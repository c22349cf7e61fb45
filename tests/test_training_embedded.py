"""Training on the embedded SmolLM2-135M-Instruct, and the shipped heads (marked `integration`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autodeco_lp import AutoDecoHeads
from autodeco_lp.hub.models import EMBEDDED_MODEL_ID
from autodeco_lp.hub.registry import find_heads
from autodeco_lp.training import FitArgs, fit

pytestmark = pytest.mark.integration


def test_fit_on_the_embedded_model(tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"What is {a} * {b}?"}, {"role": "assistant", "content": str(a * b)}]}
        for a in range(2, 6)
        for b in range(3, 7)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = fit(
        FitArgs(
            model="smollm2",
            data=str(data),
            output_dir=str(tmp_path / "out"),
            max_steps=2,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            learning_rate=1e-3,
            save_steps=1,
            disable_tqdm=True,
        )
    )
    assert result.cached and result.steps == 2 and torch.isfinite(torch.tensor(result.loss))
    heads = AutoDecoHeads.from_pretrained(tmp_path / "out")
    assert heads.config.base_model_name_or_path == EMBEDDED_MODEL_ID and heads.config.hidden_size == 576
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in (tmp_path / "out" / "README.md").read_text()


def test_shipped_heads_are_registered_and_load():
    folder = find_heads(EMBEDDED_MODEL_ID).heads
    heads = AutoDecoHeads.from_pretrained(folder)
    assert heads.config.base_model_name_or_path == EMBEDDED_MODEL_ID
    assert heads.config.vocab_size == 49152 and heads.temp_head is not None and heads.top_p_head is not None
    card = (Path(folder) / "README.md").read_text()
    assert "autodeco-fit" in card and "autodeco data sample" in card
