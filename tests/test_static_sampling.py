"""Static sampling goes through `StaticNucleus` (our nucleus filter) and samples exactly what
transformers' own Temperature + TopP warpers sample."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

from autodeco_lp import AutoDeco
from autodeco_lp.inference import features, sampling
from autodeco_lp.inference.sampling import StaticNucleus, sample_completions
from tests.conftest import left_padded_batch, random_heads, tiny_llama


class _Identity(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores


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
    other = _Identity()  # any caller processor (AutoDeco): passed through, no StaticNucleus added
    sample_completions(model, tokenizer, texts, num_samples=2, max_new_tokens=3, logits_processor=[other])
    sample_completions(model, tokenizer, texts, greedy=True, max_new_tokens=3)
    (t1, p1), (t2, p2), (t3, p3) = seen
    assert t1 == 1.0 and len(p1) == 1 and isinstance(p1[0], sampling.StaticNucleus)
    assert (p1[0].temperature, p1[0].top_p) == (0.6, 0.9)
    assert p2 == [other] and t2 == 1.0  # T and P stay 1: the caller's processor decides them
    assert t3 is None and p3 == []
    assert len(static) == 2 and all(len(s) == 2 for s in static)


def test_p_equal_to_one_is_known_in_advance_and_never_sorts(monkeypatch):
    # A static P = 1 and AutoDeco without its top-p head filter nothing: they skip the nucleus filter
    # (and its vocabulary sort) and return the temperature-scaled scores, as generate at top_p = 1.
    model, scores = tiny_llama(), torch.randn(3, 97)
    monkeypatch.setattr(features, "rank_order", lambda *a, **k: pytest.fail("sorted the vocabulary at P = 1"))
    torch.testing.assert_close(StaticNucleus(0.5, 1.0)(None, scores), scores / 0.5, rtol=0, atol=0)
    batch = left_padded_batch()
    with AutoDeco(model, random_heads(), use_top_p_head=False, record_trace=True) as autodeco:
        model.generate(**batch, do_sample=True, top_k=None, max_new_tokens=3, logits_processor=[autodeco])
        assert bool((autodeco.trace.top_p == 1).all())
    with pytest.raises(pytest.fail.Exception, match="sorted the vocabulary"):  # P < 1 still filters
        StaticNucleus(0.5, 0.9)(None, scores)
