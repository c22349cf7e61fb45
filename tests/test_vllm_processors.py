"""The AutoDeco logits processors driven with vLLM's own interface objects (no engine).

Model Runner V2 cannot start on these machines (its Triton has no CPU backend), so its processor is
driven here with real `LogitsContext` / `LogitsProcRequestState` objects; the V1 processor with real
`BatchUpdate`s. Both are compared with a naive reference written below.
"""

from __future__ import annotations  # noqa: I001 (tests.vllm_support first: skips or fails without vLLM)

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tests.vllm_support  # noqa: F401
from autodeco_lp.vllm import sampling
from autodeco_lp.vllm.interfaces import check_vllm_version
from autodeco_lp.vllm.processors import AutoDecoLogitsProcessor, AutoDecoV1Processor, is_autodeco_engine
from autodeco_lp.vllm.sampling import Staged, stage
from autodeco_lp.vllm.trace import TraceRecorder, trace_for
from vllm import SamplingParams
from vllm.v1.sample.logits_processor.interface import BatchUpdate, MoveDirectionality
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsContext,
    LogitsProcessor,
    LogitsProcRequestState,
)

V = 40


def _config(architectures=("AutoDecoForCausalLM",), autodeco=None):
    hf_config = SimpleNamespace(architectures=list(architectures))
    if autodeco is not None:
        hf_config.autodeco = autodeco
    return SimpleNamespace(model_config=SimpleNamespace(hf_config=hf_config), scheduler_config=None)


def _request_state(slots: int, prefill_len):
    buffer = SimpleNamespace(np=np.asarray(prefill_len), gpu=torch.tensor(prefill_len))
    return LogitsProcRequestState(
        device=torch.device("cpu"), max_num_reqs=slots, vocab_size=V,
        all_token_ids=None, prompt_len=buffer, prefill_len=buffer, total_len=None,
    )  # fmt: skip


def _context(slots: list[int], pos: list[int]) -> LogitsContext:
    mapping = torch.tensor(slots)
    return LogitsContext(
        expanded_idx_mapping=mapping, idx_mapping=mapping, idx_mapping_np=np.asarray(slots),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.long), input_ids=torch.zeros(len(slots)),
        pos=torch.tensor(pos), seq_lens_upper_bound_np=np.asarray(pos) + 1,
    )  # fmt: skip


def naive(logits: torch.Tensor, t: float, p: float, request_t: float) -> torch.Tensor:
    """logits / t; -inf outside the smallest most-probable set of softmax(logits / (t * request_t)) of mass >= p."""
    probs = torch.softmax(logits / (t * request_t), dim=-1)
    order = sorted(range(len(probs)), key=lambda i: -probs[i].item())
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += probs[i].item()
        if mass >= p:
            break
    out = torch.full_like(logits, -float("inf"))
    out[kept] = logits[kept] / t
    return out


@pytest.fixture(autouse=True)
def _clean_staging():
    sampling.take_quietly()
    yield
    sampling.take_quietly()


def test_entry_point_class_is_each_runners_interface():
    v2 = AutoDecoLogitsProcessor(_config(), _request_state(4, [1] * 4))
    assert isinstance(v2, LogitsProcessor) and type(v2) is AutoDecoLogitsProcessor
    v1 = AutoDecoLogitsProcessor(_config(), torch.device("cpu"), False)  # how the V1 runner builds it
    assert type(v1) is AutoDecoV1Processor and v1.is_argmax_invariant()


def test_v2_rows_reordered_greedy_and_switched_off_requests():
    torch.manual_seed(0)
    processor = AutoDecoLogitsProcessor(_config(), _request_state(6, [3] * 6))
    requests = {  # slot -> params
        0: SamplingParams(temperature=1.0),
        2: SamplingParams(temperature=0.5, top_p=1.0),
        3: SamplingParams(temperature=0.0),  # greedy: left alone
        5: SamplingParams(temperature=1.0, extra_args={"autodeco": False}),  # switched off
    }
    assert [processor.add_request(slot, params) for slot, params in requests.items()] == [True, True, False, False]
    slots = [5, 2, 3, 0]  # this step's rows, reordered
    logits = torch.randn(4, V) * 3
    t, p = torch.tensor([0.7, 1.3, 0.4, 0.9]), torch.tensor([0.5, 0.8, 0.3, 0.95])
    stage(Staged(t, p, None))
    out = processor.apply(logits.clone(), _context(slots, [5, 5, 5, 5]))
    torch.testing.assert_close(out[0], logits[0])  # switched off
    torch.testing.assert_close(out[2], logits[2])  # greedy
    torch.testing.assert_close(out[1], naive(logits[1], 1.3, 0.8, 0.5))  # request T 0.5 folded into the nucleus
    torch.testing.assert_close(out[3], naive(logits[3], 0.9, 0.95, 1.0))


def test_v2_declines_everything_on_a_plain_model_and_refuses_a_block_without_the_architecture():
    plain = AutoDecoLogitsProcessor(_config(("LlamaForCausalLM",)), _request_state(2, [1, 1]))
    assert plain.add_request(0, SamplingParams(temperature=1.0)) is False
    logits = torch.randn(1, V)
    assert plain.apply(logits, _context([0], [3])) is logits
    with pytest.raises(ValueError, match=r'has an "autodeco" block but the architecture is \[\'LlamaForCausalLM\'\]'):
        is_autodeco_engine(_config(("LlamaForCausalLM",), autodeco={"heads": "h"}))


def test_v2_refuses_to_sample_without_staged_values_or_with_other_rows():
    processor = AutoDecoLogitsProcessor(_config(), _request_state(2, [1, 1]))
    processor.add_request(0, SamplingParams(temperature=1.0))
    with pytest.raises(RuntimeError, match="vLLM samples 1 rows but the AutoDeco model computed T and P for none"):
        processor.apply(torch.randn(1, V), _context([0], [3]))
    stage(Staged(torch.ones(2), torch.ones(2), None))
    with pytest.raises(RuntimeError, match="for 2 rows"):
        processor.apply(torch.randn(1, V), _context([0], [3]))


def test_v1_batch_updates_added_moved_removed():
    torch.manual_seed(1)
    processor = AutoDecoLogitsProcessor(_config(), torch.device("cpu"), False)
    a, b, c = SamplingParams(temperature=1.0), SamplingParams(temperature=0.0), SamplingParams(temperature=2.0)
    added = [(0, a, [1], []), (1, b, [1], []), (2, c, [1], [])]
    processor.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
    # request a finishes; c moves into its index; then b and c swap: rows are now (c, b).
    processor.update_state(
        BatchUpdate(batch_size=2, removed=[0], added=[], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)])
    )
    processor.update_state(BatchUpdate(batch_size=2, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)]))
    logits = torch.randn(2, V) * 3  # V1: already divided by the request temperature
    stage(Staged(torch.tensor([0.8, 0.6]), torch.tensor([0.9, 0.4]), None))
    out = processor.apply(logits.clone())
    torch.testing.assert_close(out[0], logits[0])  # b, greedy
    torch.testing.assert_close(out[1], naive(logits[1], 0.6, 0.4, 1.0))  # c


def test_top_p_head_off_divides_only():
    processor = AutoDecoLogitsProcessor(_config(), _request_state(1, [1]))
    processor.add_request(0, SamplingParams(temperature=1.0))
    logits = torch.randn(1, V)
    stage(Staged(torch.tensor([0.5]), None, None))
    torch.testing.assert_close(processor.apply(logits.clone(), _context([0], [3])), logits / 0.5)


def test_request_switch_must_be_a_bool():
    with pytest.raises(ValueError, match=r'`extra_args\["autodeco"\]` has to be true or false, but is \'no\''):
        AutoDecoLogitsProcessor.validate_params(SamplingParams(extra_args={"autodeco": "no"}))
    AutoDecoV1Processor.validate_params(SamplingParams(extra_args={"autodeco": False}))


def test_v2_trace_skips_rows_of_an_unfinished_prompt():
    # Row 0 is a chunk of a 10-token prompt (its token is thrown away); row 1 samples a real token.
    processor = AutoDecoLogitsProcessor(_config(), _request_state(2, [10, 3]))
    for slot in (0, 1):
        processor.add_request(slot, SamplingParams(temperature=1.0))
    from autodeco_lp.vllm import request_ids

    request_ids._note(["r0-x", "r1-y"], None)
    recorder = TraceRecorder()
    stage(Staged(torch.tensor([0.5, 0.7]), torch.tensor([0.9, 0.8]), recorder))
    processor.apply(torch.randn(2, V), _context([0, 1], [4, 5]))
    trace = recorder.pop_all()
    assert list(trace) == ["r1-y"] and trace["r1-y"] == [pytest.approx((0.7, 0.8))]


def test_trace_for_n_greater_than_one_and_the_cap(caplog):
    trace = {"7-ab": [(1.0, 0.5)], "0_8-cd": [(0.1, 0.2)], "1_8-cd": [(0.3, 0.4)], "2_8-cd": [(0.5, 0.6)]}
    assert trace_for(trace, "7") == [(1.0, 0.5)]
    assert [trace_for(trace, "8", i) for i in range(3)] == [[(0.1, 0.2)], [(0.3, 0.4)], [(0.5, 0.6)]]
    with pytest.raises(KeyError, match="request '9' completion 0: 0 matching traces"):
        trace_for(trace, "9")
    recorder = TraceRecorder(max_tokens=4)
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            recorder.record(["a", "b"], [float(step)] * 2, [0.5] * 2)
    held = recorder.pop_all()
    assert list(held) == ["b"] and len(held["b"]) == 3  # "a" (oldest) dropped to stay within 4 pairs
    assert "dropping the oldest requests" in caplog.text


def test_version_policy(caplog):
    assert check_vllm_version("0.32.0+cpu") and check_vllm_version("0.33.0")
    with caplog.at_level(logging.WARNING):
        assert check_vllm_version("0.34.1") is False
    assert "vLLM 0.34.1 is newer than the lines it was checked on (0.32.x, 0.33.x)" in caplog.text
    with pytest.raises(RuntimeError, match=r"needs vLLM >= 0\.32 .* but vLLM 0\.31\.2 is installed"):
        check_vllm_version("0.31.2")
