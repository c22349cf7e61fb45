"""Options of `autodeco bench generate`; each field's metadata is its `--help` text."""

from __future__ import annotations

from dataclasses import dataclass, field

from autodeco_lp.engines.factory import BACKENDS
from autodeco_lp.evaluation.arg_checks import check_positive_int, check_torch_device
from autodeco_lp.evaluation.bench import STATIC_TEMPERATURE, STATIC_TOP_P


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """`"1,8"` -> (1, 8); a ValueError naming `--batch-sizes` for anything but positive ints."""
    try:
        sizes = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"`--batch-sizes` has to list positive ints, but is {text!r}; pass e.g. --batch-sizes 1,8")
    return sizes


@dataclass
class BenchArgs:
    """`autodeco bench generate`: decode overhead of AutoDeco against static sampling."""

    model: str = field(default="smollm2", metadata={"help": "Hub id, folder, or `smollm2`."})
    heads: str | None = field(
        default=None, metadata={"help": "Heads folder or Hub id; default: the registry entry for --model."}
    )
    new_tokens: int = field(default=32, metadata={"help": "Tokens generated per run (min = max)."})
    repeats: int = field(default=7, metadata={"help": "Interleaved static/AutoDeco pairs per batch size."})
    batch_sizes: str = field(default="1,8", metadata={"help": "Comma-separated batch sizes."})
    device: str | None = field(default=None, metadata={"help": "torch device; default: CUDA if available."})
    backend: str = field(
        default="hf",
        metadata={
            "help": "hf: transformers generate; vllm: plain vLLM at static "
            f"T={STATIC_TEMPERATURE}, P={STATIC_TOP_P} vs AutoDeco in vLLM.",
            "choices": BACKENDS,
        },
    )
    sizes: tuple[int, ...] = field(init=False, metadata={"cli": False})  # `batch_sizes` parsed

    def __post_init__(self) -> None:
        check_positive_int("--new-tokens", self.new_tokens, "pass e.g. --new-tokens 32")
        check_positive_int("--repeats", self.repeats, "pass e.g. --repeats 7")
        self.sizes = parse_batch_sizes(self.batch_sizes)
        if self.backend not in BACKENDS:
            raise ValueError(f"`--backend` has to be one of {', '.join(BACKENDS)}, but is {self.backend!r}")
        check_torch_device("--device", self.device)
