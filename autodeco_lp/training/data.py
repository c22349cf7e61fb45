"""Training data: JSONL rows -> token ids with a per-token loss mask.

Row formats (one JSON object per line):
- `{"messages": [{"role": ..., "content": ...}, ...]}`: rendered with the tokenizer's chat
  template; the loss covers the assistant turns only (their text and end-of-turn markup).
- `{"prompt": "...", "completion": "..."}`: plain concatenation; the loss covers the completion
  and an EOS token appended after it, so the heads also learn the stopping step. With
  `"eos": false` no EOS is appended (few-shot rows, whose completion ends at a newline).
- `{"text": "..."}`: the loss covers every token after the first.
Any other keys (e.g. `meta`) are ignored.

Nothing is sliced off: no `[1:]` on the ids (the authors' trainer drops a real first token that
way for tokenizers without BOS). Position t's hidden state predicts token t+1, so the first token
of a sequence is never a target, by construction.
Sequences longer than `max_length` are truncated at the end. A row with no supervised token
left after truncation is skipped and counted; a malformed row stops everything with its file and
line number before any training starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodeco_lp.hub.jsonl import jsonl_lines, parse_json


@dataclass(frozen=True)
class Example:
    """One tokenised row. `loss_mask[j]` is True when token j is a training target."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]

    @property
    def num_targets(self) -> int:
        return sum(self.loss_mask[1:])


@dataclass(frozen=True)
class Dataset:
    examples: list[Example]
    source: str
    sha256: str
    rows: int
    skipped_empty: int
    truncated: int
    # Extra versions of every example (e.g. with a control command added): variants[k][i] is
    # version k of examples[i]; an empty Example when that version has no target left.
    variants: tuple[tuple[Example, ...], ...] = ()

    @property
    def num_targets(self) -> int:
        return sum(e.num_targets for e in self.examples)


def _render_messages(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """Full chat text and the character spans of the assistant turns."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(through) or not through.startswith(before):
            raise ValueError("the chat template does not render conversations as growing prefixes")
        spans.append((len(before), len(through)))
    return text, spans


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` has to be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError('each message has to be {"role": str, "content": str}')
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("`messages` has no assistant turn, so nothing would be trained on")
    return messages


def tokenize_row(row: Any, tokenizer, max_length: int) -> tuple[Example, bool]:
    """`(example, truncated)` for one parsed JSON row; ValueError says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError(f"a row has to be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("`messages` rows need a tokenizer with a chat template; use prompt/completion rows")
        text, spans = _render_messages(tokenizer, _check_messages(row["messages"]))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        mask = [any(lo <= start < hi for lo, hi in spans) for start, _ in encoded["offset_mapping"]]
    elif "prompt" in row or "completion" in row:
        prompt, completion = row.get("prompt"), row.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise ValueError('prompt/completion rows need "prompt" (str) and a non-empty "completion" (str)')
        if not isinstance(row.get("eos", True), bool):
            raise ValueError(f'"eos" has to be true or false, but is {row["eos"]!r}')
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        full = tokenizer(prompt + completion, add_special_tokens=True)["input_ids"]
        # Token boundaries can merge across the join; the target starts where the ids diverge.
        shared = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
        eos = [tokenizer.eos_token_id] if row.get("eos", True) and tokenizer.eos_token_id is not None else []
        ids = list(full) + eos
        mask = [i >= shared for i in range(len(ids))]
    elif "text" in row:
        if not isinstance(row["text"], str) or not row["text"]:
            raise ValueError('"text" has to be a non-empty string')
        ids = list(tokenizer(row["text"], add_special_tokens=True)["input_ids"])
        mask = [True] * len(ids)
    else:
        raise ValueError('a row needs "messages", "prompt" + "completion", or "text"; found keys ' + str(sorted(row)))
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    return Example(tuple(ids), tuple(mask)), truncated


def _hub_dataset_rows(name: str) -> tuple[list[str], str]:
    """Rows of a Hugging Face `datasets` dataset (`NAME` or `NAME:SPLIT`) as JSON lines."""
    try:
        import datasets  # noqa: PLC0415 - optional (Hub datasets by name), not a dependency
    except ImportError as exc:
        raise ValueError(
            f"`--data` {name!r} is not a file; pass a JSONL file, or install `datasets` to read a Hub dataset by name."
        ) from exc
    repo, _, split = name.partition(":")
    try:
        rows = datasets.load_dataset(repo, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; report them all the same way
        raise ValueError(f"`--data` {name!r}: no such file, and the Hub dataset could not be loaded: {exc}") from exc
    lines = [json.dumps(dict(row), default=str) for row in rows]
    return lines, hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _decode_utf8(raw: bytes, path: Path) -> str:
    """`raw` as UTF-8 text; an error names the file, line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} at column {column} is not UTF-8 ({exc.reason}); "
            "JSONL training data has to be UTF-8 text."
        ) from exc


def load_jsonl(path: str | Path, tokenizer, max_length: int, variants=()) -> Dataset:
    """Tokenise every row of a JSONL file (or a Hub dataset `NAME[:SPLIT]` when `datasets` is
    installed and no such file exists). Errors name the file and line; empty data is an error.

    `variants`: functions `(row dict, example index) -> row dict`; each kept row is also
    tokenised in every variant (see `Dataset.variants`)."""
    if max_length < 2:
        raise ValueError(f"`--max-length` has to be >= 2, but is {max_length}")
    path = Path(path)
    if path.is_file():
        raw = path.read_bytes()
        lines, digest = jsonl_lines(_decode_utf8(raw, path)), hashlib.sha256(raw).hexdigest()
    elif path.exists():
        raise ValueError(f"`--data` {str(path)!r} is not a file; pass a JSONL file (see the README's data formats).")
    else:
        lines, digest = _hub_dataset_rows(str(path))
    examples, skipped, truncated, rows = [], 0, 0, 0
    versions: list[list[Example]] = [[] for _ in variants]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rows += 1
        row = parse_json(line, f"{path}:{number}")  # names path:line itself, deep nesting included
        try:
            example, was_truncated = tokenize_row(row, tokenizer, max_length)
            if example.num_targets == 0:
                skipped += 1
                continue
            for make, version in zip(variants, versions):
                variant, _ = tokenize_row(make(row, len(examples)), tokenizer, max_length)
                version.append(variant if variant.num_targets else Example((), ()))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
        truncated += was_truncated
        examples.append(example)
    if not examples:
        raise ValueError(
            f"{path} has no usable rows ({rows} rows, {skipped} with no supervised token within "
            f"--max-length {max_length}); nothing to train on."
        )
    return Dataset(examples, str(path), digest, rows, skipped, truncated, tuple(tuple(v) for v in versions))
