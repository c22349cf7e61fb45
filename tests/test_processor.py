"""The processor inside `generate`: exactness against plain references, every cache and batch
layout, dtypes, options, warnings, refusals, and leaving the model untouched."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from autodeco_lp import AutoDeco, AutoDecoLogitsProcessor
from tests.conftest import VOCAB, constant_heads, left_padded_batch, random_heads, tiny_llama

SAMPLE = dict(do_sample=True, top_k=None, temperature=1.0, top_p=1.0)


def _reference_trace(model, heads, out, prompt_mask, steps):
    """T and P recomputed from a full forward (no cache) over the generated sequences."""
    mask = torch.cat(
        [prompt_mask, torch.ones(out.shape[0], out.shape[1] - prompt_mask.shape[1], dtype=prompt_mask.dtype)], 1
    )
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = model.model(input_ids=out, attention_mask=mask, position_ids=position_ids).last_hidden_state
        logits = model.lm_head(hidden)
        positions = slice(prompt_mask.shape[1] - 1, prompt_mask.shape[1] - 1 + steps)
        t, p = heads(hidden[:, positions].float(), logits[:, positions].float())  # (rows, steps)
    return t.T, p.T  # (steps, rows)


def assert_trace_matches_full_forward(model, heads, batch, steps, tol, **generate_kwargs):
    """Generate exactly `steps` tokens with AutoDeco and compare its trace with `_reference_trace`."""
    with AutoDeco(model, heads) as autodeco:
        out = model.generate(
            **batch,
            **SAMPLE,
            max_new_tokens=steps,
            min_new_tokens=steps,
            logits_processor=[autodeco],
            **generate_kwargs,
        )
        trace = autodeco.trace
    assert trace.temperature.shape == (steps, batch["input_ids"].shape[0])
    assert trace.temperature.dtype == torch.float32 and torch.isfinite(trace.temperature).all()
    t_ref, p_ref = _reference_trace(model, heads, out, batch["attention_mask"], steps)
    torch.testing.assert_close(trace.temperature, t_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(trace.top_p, p_ref, atol=tol, rtol=tol)
    return trace


@pytest.mark.parametrize("cache", [None, "static"])
def test_trace_matches_a_full_forward_with_left_padding(cache):
    torch.manual_seed(0)
    assert_trace_matches_full_forward(
        tiny_llama(), random_heads(), left_padded_batch(), 6, 1e-4, cache_implementation=cache
    )


def test_constant_heads_reproduce_transformers_warpers_in_generate():
    model = tiny_llama()
    batch = left_padded_batch()
    with AutoDeco(model, constant_heads(0.7, 0.8)) as autodeco:
        torch.manual_seed(3)
        ours = model.generate(**batch, **SAMPLE, max_new_tokens=8, logits_processor=[autodeco])
    torch.manual_seed(3)
    theirs = model.generate(**batch, do_sample=True, top_k=None, temperature=0.7, top_p=0.8, max_new_tokens=8)
    assert torch.equal(ours, theirs)


def test_constant_heads_match_warpers_on_scores_without_modifying_them():
    model = tiny_llama()
    with AutoDeco(model, constant_heads(0.6, 0.7)) as autodeco:
        ids = torch.randint(3, VOCAB, (4, 5))
        with torch.no_grad():
            scores = model(ids).logits[:, -1, :].float()
        before = scores.clone()
        ours = autodeco(ids, scores)
    expected = LogitsProcessorList([TemperatureLogitsWarper(0.6), TopPLogitsWarper(0.7)])(ids, scores.clone())
    assert torch.equal(scores, before)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    torch.testing.assert_close(ours[~torch.isinf(ours)], expected[~torch.isinf(expected)])


def test_beam_sampling_rows_are_batch_times_beams():
    model = tiny_llama()
    batch = left_padded_batch(rows=2)
    with AutoDeco(model, constant_heads(0.9, 0.85)) as autodeco:
        torch.manual_seed(5)
        ours = model.generate(**batch, **SAMPLE, num_beams=3, max_new_tokens=5, logits_processor=[autodeco])
        assert autodeco.trace.temperature.shape == (5, 6)
    torch.manual_seed(5)
    theirs = model.generate(
        **batch, do_sample=True, top_k=None, temperature=0.9, top_p=0.85, num_beams=3, max_new_tokens=5
    )
    assert torch.equal(ours, theirs)


def test_beam_search_with_random_heads_matches_full_forward_per_row():
    """Each beam row's T must come from that row's own hidden state, after beam reordering."""
    model, heads = tiny_llama(), random_heads()
    batch = left_padded_batch(rows=2)
    seen = []
    with AutoDeco(model, heads) as autodeco:
        original = autodeco.__call__

        def spy(input_ids, scores):
            result = original(input_ids, scores)
            seen.append((input_ids.clone(), autodeco.trace.temperature[-1].clone()))
            return result

        processor = type("P", (), {"__call__": lambda self, i, s: spy(i, s)})()
        model.generate(**batch, **SAMPLE, num_beams=2, max_new_tokens=3, min_new_tokens=3, logits_processor=[processor])
    for input_ids, temperature in seen:
        rows = input_ids.shape[0]
        prompt_mask = batch["attention_mask"].repeat_interleave(2, 0)
        t_ref, _ = _reference_trace(model, heads, input_ids, prompt_mask, input_ids.shape[1] - prompt_mask.shape[1] + 1)
        torch.testing.assert_close(temperature, t_ref[-1], atol=1e-4, rtol=1e-4)
        assert rows == 4


@pytest.mark.parametrize(
    "model_dtype,heads_dtype",
    [(torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)],
)
def test_dtypes(model_dtype, heads_dtype):
    model, heads = tiny_llama().to(model_dtype), random_heads().to(heads_dtype)
    assert_trace_matches_full_forward(model, heads, left_padded_batch(), 4, 3e-2)


def test_options_scale_clamp_and_switches():
    model = tiny_llama()
    batch = left_padded_batch()
    base = constant_heads(0.5, 0.6)
    cases = [
        (dict(temperature_scale=2.0, top_p_scale=1.5), 1.0, 0.9),
        (dict(max_temperature=0.3, min_top_p=0.95), 0.3, 0.95),
        (dict(use_temperature_head=False), 1.0, 0.6),
        (dict(use_top_p_head=False), 0.5, 1.0),
        (dict(top_p_scale=3.0), 0.5, 1.0),  # clamped to max_top_p = 1
    ]
    for kwargs, t, p in cases:
        with AutoDeco(model, base, **kwargs) as autodeco:
            model.generate(**batch, **SAMPLE, max_new_tokens=2, logits_processor=[autodeco])
            torch.testing.assert_close(autodeco.trace.temperature, torch.full((2, 3), t), atol=1e-5, rtol=0)
            torch.testing.assert_close(autodeco.trace.top_p, torch.full((2, 3), p), atol=1e-5, rtol=0)
    with AutoDeco(model, base, record_trace=False) as autodeco:
        model.generate(**batch, **SAMPLE, max_new_tokens=2, logits_processor=[autodeco])
        assert len(autodeco.trace) == 0


def test_trace_resets_per_generate_call():
    model = tiny_llama()
    with AutoDeco(model, random_heads()) as autodeco:
        model.generate(**left_padded_batch(), **SAMPLE, max_new_tokens=5, logits_processor=[autodeco])
        model.generate(**left_padded_batch(rows=2, length=4), **SAMPLE, max_new_tokens=3, logits_processor=[autodeco])
        assert autodeco.trace.temperature.shape == (3, 2)
        assert len(autodeco.trace.row(1)) == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(temperature_scale=0), "`temperature_scale` has to be a positive float, but is 0"),
        (dict(top_p_scale=-1), "`top_p_scale` has to be a positive float, but is -1"),
        (dict(min_top_p=0.9, max_top_p=0.5), "`min_top_p` and `max_top_p` have to satisfy"),
        (dict(min_temperature=2.0, max_temperature=1.0), "`min_temperature` and `max_temperature`"),
        (dict(min_tokens_to_keep=0), "`min_tokens_to_keep` has to be a positive integer"),
    ],
)
def test_arguments_are_validated_in_init(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoDeco(tiny_llama(), random_heads(), **kwargs)


def test_heads_for_another_model_are_refused():
    with pytest.raises(ValueError, match=r"heads expect hidden_size=16 but .* width 32"):
        AutoDeco(tiny_llama(), random_heads(hidden=16))
    with pytest.raises(ValueError, match=r"heads expect vocab_size=50 but .* has 97 logits"):
        AutoDeco(tiny_llama(), random_heads(vocab=50))
    with pytest.raises(TypeError, match="`heads` has to be an AutoDecoHeads"):
        AutoDeco(tiny_llama(), "path")


def test_model_untouched_and_hooks_removed_even_when_generate_raises():
    model = tiny_llama()
    ids = torch.randint(3, VOCAB, (2, 5))
    with torch.no_grad():
        before_logits = model(ids).logits
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    lm_head = model.get_output_embeddings()
    with pytest.raises(ValueError, match="prompt-lookup"):
        with AutoDeco(model, random_heads()) as autodeco:
            assert len(lm_head._forward_hooks) == 1
            model.generate(
                input_ids=ids[:1], **SAMPLE, prompt_lookup_num_tokens=2, max_new_tokens=3, logits_processor=[autodeco]
            )
    assert len(lm_head._forward_hooks) == 0 and len(lm_head._forward_pre_hooks) == 0
    assert model.state_dict().keys() == before_state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before_state.items())
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before_logits)
    # Without `with`: attached at construction, removed by close(), idempotent.
    autodeco = AutoDecoLogitsProcessor(model, random_heads())
    assert len(lm_head._forward_hooks) == 1
    autodeco.close()
    autodeco.close()
    assert len(lm_head._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="was closed"):
        autodeco(ids, torch.zeros(2, VOCAB))


def test_assisted_decoding_is_refused():
    model, assistant = tiny_llama(), tiny_llama(seed=4)
    ids = torch.randint(3, VOCAB, (1, 5))
    with AutoDeco(model, random_heads()) as autodeco:
        with pytest.raises(ValueError, match="assisted or prompt-lookup"):
            model.generate(
                input_ids=ids, **SAMPLE, assistant_model=assistant, max_new_tokens=3, logits_processor=[autodeco]
            )


def test_call_without_a_new_forward_is_refused():
    model = tiny_llama()
    ids = torch.randint(3, VOCAB, (1, 4))
    with AutoDeco(model, random_heads()) as autodeco:
        with torch.no_grad():
            scores = model(ids).logits[:, -1].float()
        autodeco(ids, scores)
        with pytest.raises(RuntimeError, match="without a new forward"):
            autodeco(torch.cat([ids, ids[:, :1]], 1), scores)


def test_warnings_for_greedy_and_for_warpers_after_ours():
    model = tiny_llama()
    batch = left_padded_batch()
    with AutoDeco(model, random_heads()) as autodeco:
        with pytest.warns(UserWarning, match="greedy decoding"):
            model.generate(**batch, do_sample=False, max_new_tokens=2, logits_processor=[autodeco])
        with pytest.warns(UserWarning, match=r"\{'top_k': 50\}"):
            model.generate(**batch, do_sample=True, max_new_tokens=2, logits_processor=[autodeco])
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    with AutoDeco(model, random_heads()) as autodeco:
        with pytest.warns(UserWarning, match=r"'temperature': 0.6, 'top_p': 0.9"):
            model.generate(**batch, do_sample=True, top_k=None, max_new_tokens=2, logits_processor=[autodeco])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the documented rule silences everything
            model.generate(**batch, **SAMPLE, max_new_tokens=2, logits_processor=[autodeco])
    with AutoDeco(model, random_heads()) as autodeco, warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(**batch, **SAMPLE, max_new_tokens=2, logits_processor=[autodeco])


def test_pipeline_text_generation():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, pipeline

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    model = tiny_llama()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    with AutoDeco(model, random_heads()) as autodeco, warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = generator("w5 w6 w7", logits_processor=[autodeco], **SAMPLE, max_new_tokens=4, min_new_tokens=4)
        assert autodeco.trace.temperature.shape == (4, 1)
    assert out[0]["generated_text"].startswith("w5 w6 w7")


def test_heads_moved_to_model_device_and_from_pretrained(tmp_path):
    model = tiny_llama()
    heads = random_heads()
    heads.save_pretrained(tmp_path / "h")
    with AutoDeco.from_pretrained(model, tmp_path / "h", top_p_scale=0.5) as autodeco:
        assert autodeco.heads.device == model.lm_head.weight.device and autodeco.top_p_scale == 0.5
        model.generate(**left_padded_batch(), **SAMPLE, max_new_tokens=2, logits_processor=[autodeco])
        assert torch.all(autodeco.trace.top_p <= 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_model_and_heads():
    model = tiny_llama().to("cuda", torch.bfloat16)
    heads = random_heads()  # on CPU: moved to the model's device
    batch = {k: v.cuda() for k, v in left_padded_batch().items()}
    with AutoDeco(model, heads) as autodeco:
        model.generate(**batch, **SAMPLE, max_new_tokens=4, logits_processor=[autodeco])
        assert autodeco.heads.device.type == "cuda" and torch.isfinite(autodeco.trace.temperature).all()


@pytest.mark.integration  # ~40 s of compilation on CPU
def test_torch_compile_static_cache_no_recompiles_and_same_output():
    from torch._dynamo.utils import counters

    model, heads = tiny_llama(), random_heads()
    batch = left_padded_batch()
    kwargs = dict(**SAMPLE, max_new_tokens=6, min_new_tokens=6, cache_implementation="static")
    with AutoDeco(model, heads) as autodeco:
        torch.manual_seed(0)
        eager = model.generate(**batch, **kwargs, logits_processor=[autodeco])
        eager_trace = autodeco.trace.temperature
    counters.clear()
    model.forward = torch.compile(model.forward, dynamic=False)
    with AutoDeco(model, heads) as autodeco:
        torch.manual_seed(0)
        compiled = model.generate(**batch, **kwargs, logits_processor=[autodeco])
        torch.testing.assert_close(autodeco.trace.temperature, eager_trace, atol=1e-5, rtol=1e-5)
    assert torch.equal(eager, compiled)
    assert counters["stats"]["unique_graphs"] <= 2  # prefill + decode: the hook causes no recompiles


def test_processors_never_closed_release_their_hooks_and_warn():
    """50 AutoDeco objects dropped without close(): the garbage-collected ones leave no hook (and no
    logits) behind, and attaching next to a live, unclosed one warns."""
    import gc

    model, heads = tiny_llama(), random_heads()
    prompt = torch.tensor([[1, 5, 6, 7]])
    with pytest.warns(UserWarning, match="still attached"):
        for _ in range(50):
            autodeco = AutoDeco(model, heads)
            model.generate(
                prompt, attention_mask=torch.ones_like(prompt), **SAMPLE, max_new_tokens=2, logits_processor=[autodeco]
            )
    gc.collect()
    # The last one, plus at most the one before it: on Python < 3.13 the generate-config check reads
    # this frame's f_locals, whose snapshot keeps the previous `autodeco` until the next read.
    assert 1 <= len(model.lm_head._forward_hooks) <= 2 and 1 <= len(model._forward_pre_hooks) <= 2
    del autodeco
    gc.collect()
    assert len(model.lm_head._forward_hooks) <= 1 and len(model._forward_pre_hooks) <= 1
    # Without generate (nothing reads frames) every dropped processor is gone at once.
    model = tiny_llama()
    with pytest.warns(UserWarning, match="still attached"):
        for _ in range(50):
            autodeco = AutoDeco(model, heads)
            autodeco._capture.logits = torch.zeros(1000)
    gc.collect()
    assert len(model.lm_head._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1
    del autodeco
    gc.collect()
    assert len(model.lm_head._forward_hooks) == 0 and len(model._forward_pre_hooks) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with AutoDeco(model, heads):
            pass
        with AutoDeco(model, heads):  # the first was closed: no warning
            pass


def test_a_top_p_head_switched_off_or_absent_is_never_run(model, heads):
    """P = 1 needs no top-p head: neither its MLP nor the statistics over the vocabulary run at a step,
    and settings built for heads without a top-p head switch it off (both engines use `for_heads`)."""
    from autodeco_lp.inference.settings import DecodingSettings

    def refuse(*args, **kwargs):
        raise AssertionError("the top-p head ran although P = 1 is applied")

    heads.top_p_head.forward = refuse
    prompt = torch.tensor([[1, 5, 6, 7]])
    with AutoDeco(model, heads, use_top_p_head=False) as autodeco:
        model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=None, max_new_tokens=3,
            min_new_tokens=3, logits_processor=[autodeco],
        )  # fmt: skip
        assert torch.equal(autodeco.trace.top_p, torch.ones(3, 1))
    heads.top_p_head = None
    settings = DecodingSettings().for_heads(heads)
    assert settings.use_temperature_head and not settings.use_top_p_head
