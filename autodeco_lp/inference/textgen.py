"""Prompts in, completions out, with the per-token T and P that produced them (`autodeco generate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.sampling import format_prompts, sample_completions, uses_chat_template


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
    model,
    tokenizer,
    prompts: list[str],
    autodeco: AutoDeco,
    *,
    max_new_tokens: int = 64,
    chat: bool = True,
    seed: int = 0,
) -> list[Completion]:
    """Sample one completion per prompt with AutoDeco alone deciding T and P (no other warpers)."""
    if not prompts:
        raise ValueError("`prompts` is empty; pass at least one prompt.")
    if not autodeco.record_trace:
        raise ValueError(
            "`autodeco` has record_trace=False; generate_text reports per-token T and P, so it needs the trace."
        )
    # One generate call for all prompts; only AutoDeco's T and P apply (README: "the rule").
    samples = sample_completions(
        model,
        tokenizer,
        format_prompts(tokenizer, list(prompts), chat),
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=len(prompts),
        logits_processor=[autodeco],
        add_special_tokens=not uses_chat_template(tokenizer, chat),
    )
    completions = [
        Completion(
            prompt=prompt,
            text=sample.text,
            tokens=[tokenizer.decode([tok]) for tok in sample.token_ids],
            temperature=list(sample.temperature),
            top_p=list(sample.top_p),
        )
        for prompt, (sample,) in zip(prompts, samples)
    ]
    return completions
