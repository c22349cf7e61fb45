"""A new `generate` call is recognised at its prefill forward, not by the prompt length: a prompt
that is exactly the previous call's output starts a fresh trace and fresh generation checks."""

from __future__ import annotations

import warnings

import pytest
import torch

from autodeco_lp import AutoDeco
from tests.conftest import random_heads, tiny_llama

SAMPLE = dict(do_sample=True, top_k=None, temperature=1.0, top_p=1.0)


def test_output_fed_back_as_prompt_gets_a_fresh_trace_and_fresh_checks():
    model = tiny_llama()
    prompt = torch.tensor([[1, 7, 9, 11]])
    with AutoDeco(model, random_heads()) as autodeco:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # sampling as documented: no warning
            out = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), **SAMPLE, max_new_tokens=3, min_new_tokens=3,
                logits_processor=[autodeco],
            )  # fmt: skip
        assert len(autodeco.trace) == 3
        # The next prompt has exactly the length the previous call would have reached next.
        with pytest.warns(UserWarning, match="greedy decoding"):
            model.generate(
                out, attention_mask=torch.ones_like(out), do_sample=False, max_new_tokens=7, min_new_tokens=7,
                logits_processor=[autodeco],
            )  # fmt: skip
        assert len(autodeco.trace) == 7  # not 3 + 7


def test_one_token_prompts_start_a_generation_each():
    model = tiny_llama()
    prompt = torch.tensor([[5]])
    with AutoDeco(model, random_heads()) as autodeco:
        for steps in (4, 2):
            model.generate(
                prompt, attention_mask=torch.ones_like(prompt), **SAMPLE, max_new_tokens=steps, min_new_tokens=steps,
                logits_processor=[autodeco],
            )  # fmt: skip
            assert len(autodeco.trace) == steps


def test_prefill_flag_is_consumed_and_cleared_on_close():
    model = tiny_llama()
    autodeco = AutoDeco(model, random_heads())
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    assert autodeco._capture.take_prefill() is True
    assert autodeco._capture.take_prefill() is False  # consumed
    with torch.no_grad():
        model(torch.tensor([[4]]))  # one position: a decode step, not a prefill
    assert autodeco._capture.take_prefill() is False
    autodeco.close()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))  # the pre-hook is gone with the lm_head hook
    assert autodeco._capture.take_prefill() is False
