"""Batched sampling with a static (T, P) or any logits processors: used by the data builder and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autodeco_lp.inference.features import hard_top_p_filter, scale_by_temperature


class StaticNucleus:
    """A logits processor for static sampling: `hard_top_p_filter(scores / T, P)` with a fixed T and P.

    What transformers' Temperature + TopP warpers compute (bit for bit, except the order of equal
    scores at the nucleus boundary, see `hard_top_p_filter`), with the faster sort of
    `features.rank_order`: static sampling at P < 1 then pays no `torch.sort`. Use it with
    `temperature=1.0, top_p=1.0` in `generate`, so that transformers adds no warper of its own.
    T is floored at `features.MIN_TEMPERATURE` (1e-2), as for AutoDeco.
    """

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scale_by_temperature(scores, self.temperature)  # a new fp32 tensor
        # P = 1 filters nothing: no sort, as `generate` adds no top-p warper at 1
        return scaled if self.top_p >= 1 else hard_top_p_filter(scaled, self.top_p)


@dataclass(frozen=True)
class Sample:
    """One completion: its text, its token ids (EOS and padding excluded) and, when an AutoDeco
    processor with a trace took part, the T and P applied at each of those tokens."""

    text: str
    token_ids: tuple[int, ...]
    temperature: tuple[float, ...] | None = None
    top_p: tuple[float, ...] | None = None
    finished: bool = True  # ended at EOS or a stop string, not cut off by max_new_tokens
    # The text the token that completed a stop string added after `text` ("\n\n" where Gemma3 ends a few-shot
    # answer with its "\n\n" token, not "\n"); "" when the completion ended at EOS or ran out of tokens.
    stop_text: str = ""
    # Every token the decoding chose for this completion: `token_ids` plus the EOS or stop-string token
    # that ended it, when one did (what an on-policy objective scores); () where not recorded.
    sampled_ids: tuple[int, ...] = ()

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_temperature(self) -> float | None:
        return sum(self.temperature) / len(self.temperature) if self.temperature else None

    @property
    def mean_top_p(self) -> float | None:
        return sum(self.top_p) / len(self.top_p) if self.top_p else None


def uses_chat_template(tokenizer, chat: bool = True) -> bool:
    return bool(chat and getattr(tokenizer, "chat_template", None))


def format_prompts(tokenizer, prompts: list[str], chat: bool = True) -> list[str]:
    """Wrap each prompt as one user turn of the tokenizer's chat template (when `chat` and it has one)."""
    if uses_chat_template(tokenizer, chat):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    return list(prompts)


def stop_token_ids(generation_config) -> set[int]:
    """The token ids that end a completion: the generation config's `eos_token_id` (one or a list)."""
    eos = generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _cut_at_stop(tokenizer, ids: list[int], stop_strings) -> tuple[int, str, str]:
    """(tokens before the one that completes a stop string, text before that stop string, the text that
    token adds from the stop string on; "" when no stop string occurs)."""
    for length in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:length], skip_special_tokens=True)
        cuts = [text.find(s) for s in stop_strings if s in text]
        if cuts:
            return length - 1, text[: min(cuts)], text[min(cuts) :]
    return len(ids), tokenizer.decode(ids, skip_special_tokens=True), ""


def completion_sample(
    tokenizer, ids: list[int], stop: set[int], stop_strings=(), temperature=None, top_p=None
) -> Sample:
    """One generated row as a `Sample`, whichever engine generated it: cut at the first `stop` token
    (EOS) and, with `stop_strings`, before the token that completes one (`ids` may run past either:
    padding, or an engine that keeps the stop token). `temperature`/`top_p`: the per-token trace
    aligned with `ids` (or None), cut to the kept tokens."""
    length = next((i for i, tok in enumerate(ids) if tok in stop), len(ids))
    finished = length < len(ids)
    stop_text = ""
    if stop_strings:
        length, text, stop_text = _cut_at_stop(tokenizer, ids[:length], stop_strings)
        finished = finished or bool(stop_text)
    else:
        text = tokenizer.decode(ids[:length], skip_special_tokens=True)
    t = p = None
    if temperature is not None:
        t, p = tuple(temperature[:length]), tuple(top_p[:length])
    sampled = length + 1 if finished else length  # the ending token was chosen by the decoding too
    return Sample(text, tuple(ids[:length]), t, p, finished, stop_text, tuple(ids[:sampled]))


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    texts: list[str],
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    logits_processor: list | None = None,
    add_special_tokens: bool = False,
    stop_strings: tuple[str, ...] | list[str] = (),
    progress=None,
) -> list[list[Sample]]:
    """`num_samples` completions for each already-formatted prompt text.

    Only the given (T, P) shape the distribution: generate's own `top_k=50` default is switched
    off. Pass `add_special_tokens=True` for raw (non-chat) prompts so BOS is added. Prompts are
    batched `batch_size // num_samples` at a time, left padded; the seed is set once, so the same
    call gives the same completions.

    A completion ends at EOS or, with `stop_strings` (few-shot prompts: a newline), at the first
    token whose text completes a stop string; that token, like EOS, is not part of `token_ids`
    or the trace, and the text ends just before the stop string.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"`num_samples` and `batch_size` have to be positive, but are {num_samples} and {batch_size}")
    tokenizer.padding_side = "left"
    per_call = max(1, batch_size // num_samples)
    stop = stop_token_ids(model.generation_config)
    torch.manual_seed(seed)
    results: list[list[Sample]] = []
    traced = next(
        (p for p in logits_processor or [] if hasattr(p, "trace") and getattr(p, "record_trace", False)), None
    )
    # Explicit do_sample=False: a model whose generation_config samples by default stays greedy.
    processors = list(logits_processor or [])
    if greedy:
        sampling = {"do_sample": False}
    elif processors:  # the caller's processors (AutoDeco) decide T and P
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
    else:  # static (T, P) through our nucleus filter: transformers' warpers' result, a faster sort
        sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": None}
        processors = [StaticNucleus(temperature, top_p)]
    for start in range(0, len(texts), per_call):
        chunk = texts[start : start + per_call]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(
            model.device
        )
        out = model.generate(
            **enc,
            **sampling,
            num_return_sequences=1 if greedy else num_samples,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=processors,
            **({"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}),
        )
        new = out[:, enc["input_ids"].shape[1] :].tolist()  # (rows * samples, steps)
        trace = traced.trace if traced is not None else None  # (steps, rows * samples) each
        per_prompt = 1 if greedy else num_samples
        for row in range(len(chunk)):
            samples = []
            for r in range(row * per_prompt, (row + 1) * per_prompt):
                t = p = None
                if trace is not None:
                    t, p = trace.temperature[:, r].tolist(), trace.top_p[:, r].tolist()
                samples.append(completion_sample(tokenizer, new[r], stop, stop_strings, t, p))
            results.append(samples)
        if progress is not None:
            progress.update(len(chunk))
    return results
