"""`VllmSampler` against a fake vLLM (no engine): engine choice and switching, request ids to traces,
EOS / stop-token cuts, `ignore_eos`, and heads looked up only for AutoDeco engines."""

from __future__ import annotations

import json
import sys
import types

import pytest

from autodeco_lp.engines import Decoding, Seeding
from autodeco_lp.engines.vllm_sampler import VllmSampler
from autodeco_lp.tasks.prompting import Prompts

EOS, TOKENIZER_EOS = 2, 3  # the generation config's EOS; another EOS only vLLM's tokenizer knows


class _Tokenizer:
    eos_token_id = TOKENIZER_EOS

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i < 4))


class _Recorder:
    def __init__(self):
        self.pairs = {}

    def pop_all(self):
        pairs, self.pairs = self.pairs, {}
        return pairs


class _FakeLLM:
    """Each request i generates the token ids `script(i)` (vLLM keeps the token it stopped at); an AutoDeco engine
    records one (T, P) per generated token under vLLM's internal id `"<i>-<suffix>"`."""

    started: list[dict] = []
    script = staticmethod(lambda i: [ord("a") + i % 20, ord("b"), EOS, ord("z")])

    def __init__(self, source, **options):
        self.options = options
        self.autodeco = "hf_overrides" in options
        self.model = types.SimpleNamespace(autodeco_trace=_Recorder() if self.autodeco else None)
        self.params = []
        _FakeLLM.started.append(options)

    def generate(self, prompts, params, use_tqdm=False):
        outputs = []
        for i in range(len(params)):
            ids = self.script(i)
            if self.autodeco:
                self.model.autodeco_trace.pairs[f"{i}-1a2b3c4d"] = [(0.1 * (k + 1), 0.9) for k in range(len(ids))]
            completion = types.SimpleNamespace(token_ids=ids)
            outputs.append(types.SimpleNamespace(request_id=str(i), outputs=[completion]))
        self.params.extend(params)
        return outputs

    def apply_model(self, function):
        return [function(self.model)]


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    module = types.ModuleType("vllm")
    module.LLM = _FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(_FakeLLM, "started", [])
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": EOS}))
    return tmp_path


def _sampler(folder, heads=lambda: "heads/dir"):
    return VllmSampler(str(folder), _Tokenizer(), heads, max_model_len=64)


def test_autodeco_samples_cut_at_eos_with_their_own_trace(fake_vllm):
    sampler = _sampler(fake_vllm)
    prompts = [[ord("q"), i] for i in range(6)]  # 12 requests: ids "1" and "10", "11" must not be confused
    rows = sampler.sample_ids(prompts, Decoding("autodeco"), [[7, 8]] * 6, max_new_tokens=4)
    assert [len(row) for row in rows] == [2] * 6
    for i, sample in enumerate(s for row in rows for s in row):
        assert sample.token_ids == (ord("a") + i, ord("b")) and sample.finished
        assert sample.temperature == pytest.approx((0.1, 0.2)) and sample.top_p == (0.9, 0.9)
    (options,) = _FakeLLM.started
    block = options["hf_overrides"]["autodeco"]
    assert block["heads"] == "heads/dir" and block["record_trace"] is True
    assert options["enable_chunked_prefill"] is False and options["generation_config"] == "vllm"
    params = sampler._llm.params
    assert [p.seed for p in params[:2]] == [7, 8] and (params[0].temperature, params[0].top_p) == (1.0, 1.0)
    assert params[0].stop_token_ids == [EOS]


def test_engines_switch_by_decoding_and_greedy_reuses_any(fake_vllm):
    asked = []
    sampler = _sampler(fake_vllm, heads=lambda: asked.append(1) or "heads/dir")
    static = sampler.sample_ids([[ord("q")]], Decoding("static", 0.005, 0.9), [[1]], max_new_tokens=4)
    assert static[0][0].temperature is None and asked == []  # plain engine: no heads looked up, no trace
    assert sampler._llm.params[0].temperature == 0.01 and sampler._llm.params[0].top_p == 0.9  # the HF floor on T
    sampler.sample_ids([[ord("q")]], Decoding("autodeco", use_top_p_head=False), [[1]], max_new_tokens=4)
    greedy = sampler.sample_ids([[ord("q")]], Decoding("greedy"), [[0]], max_new_tokens=4)
    assert len(_FakeLLM.started) == 2 and asked == [1]  # greedy ran on the AutoDeco engine
    assert _FakeLLM.started[1]["hf_overrides"]["autodeco"]["use_top_p_head"] is False
    assert greedy[0][0].temperature is None  # greedy records carry no trace, as on the HF path
    assert sampler._llm.params[-1].temperature == 0.0 and sampler._llm.params[-1].seed is None
    # Other head settings: another engine.
    sampler.sample_ids([[ord("q")]], Decoding("autodeco"), [[1]], max_new_tokens=4)
    assert len(_FakeLLM.started) == 3


def test_vllms_own_eos_is_cut_and_ignore_eos_keeps_every_token(fake_vllm, monkeypatch):
    monkeypatch.setattr(_FakeLLM, "script", staticmethod(lambda i: [ord("a"), TOKENIZER_EOS]))
    sampler = _sampler(fake_vllm)
    (row,) = sampler.sample_ids([[ord("q")]], Decoding("static", 0.7, 1.0), [[1]], max_new_tokens=4)
    assert row[0].token_ids == (ord("a"),) and row[0].finished
    monkeypatch.setattr(_FakeLLM, "script", staticmethod(lambda i: [ord("a"), EOS, ord("c")]))
    (row,) = sampler.sample_ids([[ord("q")]], Decoding("static", 0.7, 1.0), [[1]], max_new_tokens=3, ignore_eos=True)
    assert row[0].num_tokens == 3 and sampler._llm.params[-1].stop_token_ids is None
    assert sampler._llm.params[-1].ignore_eos is True


def test_stop_strings_reach_vllm_and_cut_as_on_the_hf_path(fake_vllm, monkeypatch):
    monkeypatch.setattr(_FakeLLM, "script", staticmethod(lambda i: [ord(c) for c in "12\nQ"]))
    sampler = _sampler(fake_vllm)
    (row,) = sampler.sample_ids([[ord("q")]], Decoding("autodeco"), [[1]], max_new_tokens=8, stop_strings=("\n",))
    assert sampler._llm.params[-1].stop == ["\n"]
    assert (row[0].text, row[0].num_tokens, row[0].finished) == ("12", 2, True)
    assert row[0].temperature == pytest.approx((0.1, 0.2))  # the trace cut with the tokens


class _Chars(_Tokenizer):
    """Tokenizes text one character a token (BOS 1 first when asked)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1] * add_special_tokens + [ord(c) for c in text]}


class _Bar:
    def __init__(self):
        self.steps = []

    def update(self, n):
        self.steps.append(n)


def test_the_sampler_interface_seeds_each_sample_and_sizes_the_engine_from_the_prompts(fake_vllm):
    sampler = VllmSampler(str(fake_vllm), _Chars(), lambda: "heads/dir")  # no fixed max_model_len
    prompts = Prompts(["ab", "abcdef", "a", "abc"], True, ("\n",))
    seeding = Seeding(99, "static:0.700,1.000", 3)
    bar = _Bar()
    rows = sampler.sample(
        prompts, 1, 4, Decoding("static", 0.7, 1.0), seeding, samples=2, max_new_tokens=5, batch_size=4, progress=bar
    )
    assert [len(row) for row in rows] == [2, 2, 2] and bar.steps == [2, 1]  # 4 rows: 2 prompts a call
    (options,) = _FakeLLM.started
    assert options["max_model_len"] == 1 + 6 + 5  # BOS + the longest of all the prompts + new tokens
    seeds = [p.seed for p in sampler._llm.params]
    assert seeds == [seeding.sample_seed(i, j) for i in (1, 2, 3) for j in (0, 1)]  # problems count over all prompts
    assert sampler._llm.params[0].stop == ["\n"]
    sampler.sample(prompts, 0, 1, Decoding("static", 0.7, 1.0), seeding, samples=1, max_new_tokens=5, batch_size=4)
    assert len(_FakeLLM.started) == 1  # the same prompts: the same engine
    longer = Prompts(["x" * 20], True, ())
    sampler.sample(longer, 0, 1, Decoding("static", 0.7, 1.0), seeding, samples=1, max_new_tokens=5, batch_size=4)
    assert [o["max_model_len"] for o in _FakeLLM.started] == [12, 26]  # longer prompts: a larger engine
