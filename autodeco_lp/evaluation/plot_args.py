"""Options of the `autodeco plot` commands; each field's metadata is its `--help` text.

A field without a default is a required option. Every `--out` is an image file whose folder is created
when the figure is saved; an existing folder given as `--out` is refused here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autodeco_lp.evaluation.arg_checks import check_positive_int

_MODEL_HELP = "Hub id, folder, or `smollm2`."
_HEADS_HELP = "Heads folder or Hub id; default: the registry entry for --model."
_RESULTS_HELP = "An `autodeco eval --out` folder (or its results.json)."
_OUT_HELP = "Image file (.png, .svg, .pdf); its folder is created if missing."


def check_out(out: str) -> None:
    """`--out` names a file to write, not an existing folder."""
    if Path(out).is_dir():
        raise ValueError(f"`--out` has to name an image file, but {out!r} is a folder; pass e.g. --out {out}/plot.png")


@dataclass
class TracePlotArgs:
    """`autodeco plot trace`: per-token T and P along one generation."""

    out: str = field(metadata={"help": _OUT_HELP})
    model: str = field(default="smollm2", metadata={"help": _MODEL_HELP})
    heads: str | None = field(default=None, metadata={"help": _HEADS_HELP})
    max_new_tokens: int = field(default=40, metadata={"help": "Tokens to generate."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def __post_init__(self) -> None:
        check_out(self.out)
        check_positive_int("--max-new-tokens", self.max_new_tokens, "pass e.g. --max-new-tokens 40")


@dataclass
class ResultsPlotArgs:
    """`autodeco plot grid` and `autodeco plot passk`: a figure from an `autodeco eval` results.json."""

    results: str = field(metadata={"help": _RESULTS_HELP})
    out: str = field(metadata={"help": _OUT_HELP})

    def __post_init__(self) -> None:
        check_out(self.out)


@dataclass
class FrontierPlotArgs:
    """`autodeco plot frontier`: pass@1 against pass@k of the static decodings and the candidates."""

    results: str = field(
        metadata={"help": _RESULTS_HELP + " With static decodings (default, static:T,P, oracle-grid)."}
    )
    out: str = field(metadata={"help": _OUT_HELP})
    k: int | None = field(default=None, metadata={"help": "The pass@k axis; default: 16, else the largest k there."})

    def __post_init__(self) -> None:
        check_out(self.out)
        check_positive_int("--k", self.k, "leave it out for 16 or the largest k in the results")


@dataclass
class TopPPlotArgs:
    """`autodeco plot top-p`: the top-p head's P against the base entropy, and the loss of a constant P."""

    data: str = field(metadata={"help": "Training JSONL (the rows the heads were fitted on)."})
    out: str = field(metadata={"help": "Image file; a .json with the numbers is written beside it."})
    model: str = field(default="smollm2", metadata={"help": _MODEL_HELP})
    heads: str | None = field(default=None, metadata={"help": _HEADS_HELP})
    max_length: int = field(default=512, metadata={"help": "Tokens per row at most (longer rows are cut)."})
    max_rows: int | None = field(default=None, metadata={"help": "Use only the first N rows."})

    def __post_init__(self) -> None:
        check_out(self.out)
        check_positive_int("--max-length", self.max_length, "pass e.g. --max-length 512")
        check_positive_int("--max-rows", self.max_rows, "leave it out to use every row")
