"""Decoding methods, by name, as `autodeco eval --methods` spells them.

- `greedy`: argmax (one sample per problem; seeds do not matter).
- `default`: sampling at T = 1, P = 1, no top-k.
- `autodeco`: both heads; `temperature-only`: the temperature head with P = 1;
  `top-p-only`: the top-p head with T = 1.
- `meanshift`: static sampling at the mean T and P that AutoDeco applied over the same prompts
  (the baseline of "Token-Level Control or Just a Better Mean?"); runs AutoDeco first.
- `oracle-grid`: the paper's oracle: sweep T = 0.1 .. 1.0 at P = 1, then P = 0.1 .. 1.0 at the
  best T, scored on the evaluation problems themselves (which is what makes it an oracle).
- `static:T,P`: any fixed pair, e.g. `static:0.7,0.95`.
"""

from __future__ import annotations

import re

from autodeco_lp.engines.decoding import Decoding

DERIVED = ("meanshift", "oracle-grid", "oracle-validation")
GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))


BASIC = {
    "greedy": Decoding("greedy"),
    "default": Decoding("static", 1.0, 1.0),
    "autodeco": Decoding("autodeco"),
    "temperature-only": Decoding("autodeco", use_top_p_head=False),
    "top-p-only": Decoding("autodeco", use_temperature_head=False),
}


def parse_static(name: str) -> Decoding:
    try:
        t, p = (float(x) for x in name.split(":", 1)[1].split(","))
    except ValueError as exc:
        raise ValueError(f"`--methods` entry {name!r} has to look like static:T,P (e.g. static:0.7,0.95)") from exc
    if not (t > 0 and 0 < p <= 1):
        raise ValueError(f"`--methods` entry {name!r}: T has to be > 0 and P in (0, 1]")
    return Decoding("static", t, p)


def split_methods(text: str) -> list[str]:
    """The comma-separated names in `text`, in order, `static:T,P` kept whole (it has its own comma)."""
    return [n.strip() for n in re.findall(r"\s*static:[^,]+,[^,]+|[^,]+", text) if n.strip()]


def parse_methods(text: str) -> list[str]:
    """Validated method names in the order given (duplicates dropped)."""
    names = []
    for name in split_methods(text):
        if name not in BASIC and name not in DERIVED and not name.startswith("static:"):
            known = ", ".join([*BASIC, *DERIVED, "static:T,P"])
            raise ValueError(f"`--methods` has an unknown method {name!r}; known: {known}")
        if name.startswith("static:"):
            parse_static(name)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("`--methods` is empty")
    return names
