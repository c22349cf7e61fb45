"""Data loading, batching and the hidden states the trainer feeds the loss."""

from __future__ import annotations

import json

import pytest
import torch

from autodeco_lp.training import batches
from autodeco_lp.training.data import load_jsonl, tokenize_row
from autodeco_lp.training.hidden import supervised_hidden_states
from tests.conftest import tiny_char_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_char_tokenizer()


def test_messages_supervise_only_assistant_turns_including_end_of_turn(tok):
    row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    example, truncated = tokenize_row(row, tok, 100)
    targets = tok.decode([i for i, m in zip(example.input_ids, example.loss_mask) if m])
    assert targets == "4<|im_end|>\n" and not truncated


def test_prompt_completion_appends_eos_and_text_keeps_every_token(tok):
    example, _ = tokenize_row({"prompt": "Q: 1+1=", "completion": "2"}, tok, 100)
    assert [t for t, m in zip(example.input_ids, example.loss_mask) if m] == [
        tok.convert_tokens_to_ids("2"),
        tok.eos_token_id,
    ]
    example, _ = tokenize_row({"text": "abc"}, tok, 100)
    # No [1:] slice: the first token stays in the sequence (it is just never a target).
    assert example.input_ids == tuple(tok("abc")["input_ids"]) and example.num_targets == 2


def test_truncation_and_rows_without_targets(tmp_path, tok):
    long = {"messages": [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "yes"}]}
    short = {"text": "hello"}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(long) + "\n\n" + json.dumps(short) + "\n")
    data = load_jsonl(path, tok, max_length=20)
    assert len(data.examples) == 1 and data.skipped_empty == 1 and data.rows == 2
    assert len(data.examples[0].input_ids) == 5


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", r"d.jsonl:2: "),
        ('{"messages": [{"role": "user", "content": "hi"}]}', r"d.jsonl:2: .*no assistant turn"),
        ('{"prompt": "a"}', r"d.jsonl:2: .*non-empty \"completion\""),
        ('{"question": "a"}', r"d.jsonl:2: a row needs \"messages\""),
        ("[1, 2]", r"d.jsonl:2: a row has to be a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, tok, line, match):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_jsonl(path, tok, 64)


def test_empty_data_is_an_error(tmp_path, tok):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no usable rows"):
        load_jsonl(path, tok, 64)
    with pytest.raises(ValueError, match="is not a file|no such file"):  # offline: no Hub dataset either
        load_jsonl(tmp_path / "missing.jsonl", tok, 64)
    with pytest.raises(ValueError, match="is not a file; pass a JSONL file"):
        load_jsonl(tmp_path, tok, 64)


def test_supervised_hidden_states_are_exactly_lm_head_inputs(tiny_model_dir, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = [{"text": "hello there"}, {"prompt": "ab", "completion": "cd"}]
    examples = [tokenize_row(r, tok, 64)[0] for r in rows]
    states = supervised_hidden_states(model, examples, tok.pad_token_id)
    for example, (hidden, labels) in zip(examples, states):
        logits = model(torch.tensor([example.input_ids])).logits[0]  # (S, V), unpadded
        positions = [t for t in range(len(example.input_ids) - 1) if example.loss_mask[t + 1]]
        torch.testing.assert_close(model.lm_head(hidden), logits[positions], rtol=1e-4, atol=1e-5)
        assert labels.tolist() == [example.input_ids[t + 1] for t in positions]


def test_micro_batches_respect_count_and_token_budget():
    lengths = [10, 30, 5, 100, 20, 20]
    groups = batches.micro_batches(list(range(6)), lengths, batch_size=3, max_tokens=60)
    assert sum(groups, []) == list(range(6))
    for g in groups:
        assert len(g) <= 3 and (len(g) == 1 or max(lengths[i] for i in g) * len(g) <= 60)


def test_process_shares_partition_each_step_and_order_is_seeded():
    order = batches.epoch_order(23, seed=5, epoch=1)
    assert order == batches.epoch_order(23, seed=5, epoch=1) != batches.epoch_order(23, seed=5, epoch=2)
    for step in range(batches.steps_per_epoch(23, 8)):
        shares = [batches.step_examples(order, step, 8, r, 3) for r in range(3)]
        assert sorted(sum(shares, [])) == sorted(batches.step_examples(order, step, 8, 0, 1))
    assert torch.equal(batches.drop_uniforms(1, 0, 7, 5), batches.drop_uniforms(1, 0, 7, 5))


def test_sharded_path_reads_the_same_hidden_states(tiny_model_dir, tok, tmp_path):
    """FSDP/DeepSpeed models are called through their wrapper; both paths give the same states,
    and a process with fewer batches pads its forward calls to `min_batches`."""
    from transformers import AutoModelForCausalLM

    from autodeco_lp.training.hidden import HiddenStateCache, build_part, write_meta

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    examples = [tokenize_row({"text": t}, tok, 64)[0] for t in ("hello there", "ab", "a longer row of text")]
    direct = supervised_hidden_states(model, examples, tok.pad_token_id)
    wrapped = supervised_hidden_states(model, examples, tok.pad_token_id, sharded=True)
    for (h1, y1), (h2, y2) in zip(direct, wrapped):
        torch.testing.assert_close(h1, h2)
        assert torch.equal(y1, y2)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    build_part(tmp_path, model, examples, [0, 2], "part-0", tok.pad_token_id, batch_size=1, sharded=True, min_batches=4)
    assert len(calls) == 4
    write_meta(tmp_path, {"fingerprint": {}, "parts": ["part-0"], "storage_dtype": "float16", "hidden_size": 32})
    cache = HiddenStateCache(tmp_path)
    assert len(cache) == 2
    torch.testing.assert_close(cache[2][0].float(), direct[2][0], rtol=1e-3, atol=1e-3)
