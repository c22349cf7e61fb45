"""Prompts in, completions out, with the per-token T and P that produced them (`autodeco generate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from autodeco_lp.processor import AutoDeco
from autodeco_lp.sampling import format_prompts


@dataclass
class GenerateArgs:
    """Options of `autodeco generate`; each field's metadata is its `--help` text."""

    model: str = field(default="smollm2", metadata={"help": "Hub id, local folder, or 'smollm2' (the embedded model)."})
    heads: str | None = field(
        default=None, metadata={"help": "Heads folder or Hub id; default: the registry entry for --model."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens to generate per prompt."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    chat: bool = field(default=True, metadata={"help": "Wrap prompts in the tokenizer's chat template if it has one."})
    show_trace: bool = field(default=False, metadata={"help": "Print every generated token with its T and P."})
    temperature_scale: float = field(default=1.0, metadata={"help": "Multiply the predicted temperatures."})
    top_p_scale: float = field(default=1.0, metadata={"help": "Multiply the predicted top-p values."})
    device: str | None = field(default=None, metadata={"help": "torch device, e.g. cuda; default: CUDA if available."})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` has to be a positive integer, but is {self.max_new_tokens}")


@dataclass
class Completion:
    prompt: str
    text: str
    tokens: list[str]  # one decoded string per generated token (EOS and padding excluded)
    temperature: list[float]  # applied T for each token in `tokens`
    top_p: list[float]  # applied P for each token in `tokens`


def generate_text(
    model, tokenizer, prompts: list[str], autodeco: AutoDeco, *, max_new_tokens: int = 64, chat: bool = True, seed: int = 0
) -> list[Completion]:
    """Sample one completion per prompt with AutoDeco alone deciding T and P (no other warpers)."""
    if not prompts:
        raise ValueError("`prompts` is empty; pass at least one prompt.")
    texts = format_prompts(tokenizer, list(prompts), chat)
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(model.device)
    torch.manual_seed(seed)
    out = model.generate(
        **enc,
        do_sample=True,
        # Neutralise generate's own warpers so only AutoDeco's T and P apply (README: "the rule").
        temperature=1.0,
        top_p=1.0,
        top_k=None,
        max_new_tokens=max_new_tokens,
        logits_processor=[autodeco],
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = out[:, enc["input_ids"].shape[1]:]  # (rows, steps)
    trace = autodeco.trace
    eos = model.generation_config.eos_token_id
    stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    completions = []
    for row, prompt in enumerate(prompts):
        ids = new_tokens[row].tolist()
        length = next((i for i, tok in enumerate(ids) if tok in stop_ids), len(ids))
        ids = ids[:length]
        completions.append(
            Completion(
                prompt=prompt,
                text=tokenizer.decode(ids, skip_special_tokens=True),
                tokens=[tokenizer.decode([tok]) for tok in ids],
                temperature=trace.temperature[:length, row].tolist(),
                top_p=trace.top_p[:length, row].tolist(),
            )
        )
    return completions
