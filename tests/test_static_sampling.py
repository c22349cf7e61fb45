"""Static sampling goes through `StaticNucleus` (our nucleus filter) and samples exactly what
transformers' own Temperature + TopP warpers sample."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autodeco_lp.inference import sampling
from autodeco_lp.inference.sampling import StaticNucleus, sample_completions
from tests.conftest import left_padded_batch, tiny_llama


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.8), (1.0, 0.5), (0.3, 1.0)])
def test_static_nucleus_in_generate_equals_transformers_warpers(temperature, top_p):
    model = tiny_llama()
    batch = left_padded_batch()
    torch.manual_seed(11)
    ours = model.generate(
        **batch, do_sample=True, top_k=None, temperature=1.0, top_p=1.0, max_new_tokens=8,
        logits_processor=[StaticNucleus(temperature, top_p)],
    )  # fmt: skip
    torch.manual_seed(11)
    theirs = model.generate(**batch, do_sample=True, top_k=None, temperature=temperature, top_p=top_p, max_new_tokens=8)
    assert torch.equal(ours, theirs)


def test_sample_completions_uses_it_for_static_settings_only(tiny_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = []
    real = model.generate

    def spy(*args, **kwargs):
        seen.append((kwargs["temperature"] if kwargs.get("do_sample") else None, kwargs["logits_processor"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    texts = ["1+1=", "2+2="]
    static = sample_completions(model, tokenizer, texts, num_samples=2, temperature=0.6, top_p=0.9, max_new_tokens=3)
    other = object.__new__(StaticNucleus)  # any caller processor: passed through, no StaticNucleus added
    other.temperature, other.top_p = 1.0, 1.0
    sample_completions(model, tokenizer, texts, num_samples=2, max_new_tokens=3, logits_processor=[other])
    sample_completions(model, tokenizer, texts, greedy=True, max_new_tokens=3)
    (t1, p1), (t2, p2), (t3, p3) = seen
    assert t1 == 1.0 and len(p1) == 1 and isinstance(p1[0], sampling.StaticNucleus)
    assert (p1[0].temperature, p1[0].top_p) == (0.6, 0.9)
    assert p2 == [other] and t3 is None and p3 == []
    assert len(static) == 2 and all(len(s) == 2 for s in static)
