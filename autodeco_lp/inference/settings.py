"""How predicted T and P become applied T and P: scales, clamps, head switches. Engine-agnostic.

Used by the HF processor (`AutoDeco`) and the vLLM plugin (`autodeco_lp.vllm`), so both turn the
heads' outputs into the same applied values and refuse the same bad options with the same message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from autodeco_lp.inference.features import MIN_TEMPERATURE


def check_positive(name: str, value: float, allow_inf: bool = False) -> float:
    """`value` as a float, or a ValueError naming `name`, the value and the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not value > 0:
        raise ValueError(f"`{name}` has to be a positive float, but is {value!r}")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"`{name}` has to be a finite positive float, but is {value!r}; pass a finite number.")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """`value` if it is a bool; a string such as "false" is refused, since `bool("false")` is True."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` has to be True or False, but is {value!r}")
    return value


def check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` has to be a float in [0, 1], but is {value!r}")
    return float(value)


@dataclass(frozen=True)
class DecodingSettings:
    """Options that map the heads' `(T, P)` to the applied `(T, P)`, validated on construction.

    Args:
        temperature_scale: multiplies the predicted T (as the authors' server does). Finite, > 0.
        top_p_scale: multiplies the predicted P before the clamp. Finite, > 0.
        min_temperature / max_temperature: clamp of the applied T; `max_temperature=inf` (default)
            means no upper cap. `min_temperature` defaults to `features.MIN_TEMPERATURE` (1e-2).
        min_top_p / max_top_p: clamp of the applied P, within [0, 1]; `max_top_p` > 0.
        use_temperature_head: False applies T = 1 (top-p head only).
        use_top_p_head: False applies P = 1 (temperature head only).
    """

    temperature_scale: float = 1.0
    top_p_scale: float = 1.0
    min_temperature: float = MIN_TEMPERATURE
    max_temperature: float = float("inf")
    min_top_p: float = 0.0
    max_top_p: float = 1.0
    use_temperature_head: bool = True
    use_top_p_head: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("temperature_scale", check_positive("temperature_scale", self.temperature_scale))
        set_("top_p_scale", check_positive("top_p_scale", self.top_p_scale))
        set_("min_temperature", check_positive("min_temperature", self.min_temperature))
        set_("max_temperature", check_positive("max_temperature", self.max_temperature, allow_inf=True))
        if self.min_temperature > self.max_temperature:
            raise ValueError(
                f"`min_temperature` and `max_temperature` have to satisfy min_temperature <= max_temperature, "
                f"but are {self.min_temperature!r} and {self.max_temperature!r}"
            )
        set_("min_top_p", check_probability("min_top_p", self.min_top_p))
        set_("max_top_p", check_probability("max_top_p", self.max_top_p))
        if self.min_top_p > self.max_top_p:
            raise ValueError(
                f"`min_top_p` and `max_top_p` have to satisfy 0 <= min_top_p <= max_top_p <= 1.0, "
                f"but are {self.min_top_p!r} and {self.max_top_p!r}"
            )
        if self.max_top_p == 0:
            raise ValueError("`max_top_p` has to be > 0, but is 0; use greedy decoding instead.")
        check_bool("use_temperature_head", self.use_temperature_head)
        check_bool("use_top_p_head", self.use_top_p_head)

    @classmethod
    def from_dict(cls, options: dict, where: str) -> DecodingSettings:
        """From a dict of the field names (e.g. vLLM's `hf_overrides`); unknown keys are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; known options are {sorted(known)}.")
        return cls(**options)

    def for_heads(self, heads) -> DecodingSettings:
        """These settings with a head the checkpoint lacks switched off (its output is then 1), so heads
        fitted without a top-p head never pay for a nucleus sort. Both engines call this once."""
        return replace(
            self,
            use_temperature_head=self.use_temperature_head and heads.temp_head is not None,
            use_top_p_head=self.use_top_p_head and heads.top_p_head is not None,
        )

    def predict(self, heads, hidden: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Applied `(T, P)`, each `(rows,)` fp32, from `heads` on hidden `(rows, H)` and raw logits `(rows, V)`.
        A top-p head switched off is not run (its MLP and the statistics over the vocabulary are skipped)."""
        return self.apply(*heads(hidden, logits, run_top_p_head=self.use_top_p_head))

    def apply(self, temperature: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Applied `(T, P)` from the heads' `(T, P)`, each `(rows,)` fp32: scaled, clamped, or 1 for a head off."""
        # Operations that cannot change a value are skipped (decided on these Python settings, never on a
        # tensor): each one is a kernel launch per decoding step on a GPU. `x * 1.0 == x` for every float,
        # and the top-p head ends in a sigmoid, so its P is already in [0, 1].
        if not self.use_temperature_head:
            temperature = torch.ones_like(temperature)
        else:
            if self.temperature_scale != 1.0:
                temperature = temperature * self.temperature_scale
            temperature = temperature.clamp(self.min_temperature, self.max_temperature)
        if not self.use_top_p_head:
            top_p = torch.ones_like(top_p)
        else:
            if self.top_p_scale != 1.0:
                top_p = top_p * self.top_p_scale
            if self.top_p_scale != 1.0 or (self.min_top_p, self.max_top_p) != (0.0, 1.0):
                top_p = top_p.clamp(self.min_top_p, self.max_top_p)
        return temperature, top_p
