"""`Decoding`: one concrete way to decode (greedy, a static T and P, or the AutoDeco heads), what a sampler
takes and what names results in the evaluation cache."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    """One concrete way to decode; `key` names it in the result cache."""

    kind: str  # greedy | static | autodeco
    temperature: float = 1.0
    top_p: float = 1.0
    use_temperature_head: bool = True
    use_top_p_head: bool = True

    @property
    def key(self) -> str:
        if self.kind == "greedy":
            return "greedy"
        if self.kind == "static":
            return f"static:{self.temperature:.3f},{self.top_p:.3f}"
        return f"autodeco:T={int(self.use_temperature_head)},P={int(self.use_top_p_head)}"

    @property
    def heads_setting(self) -> tuple[bool, bool] | None:
        """Which heads decide T and P (temperature head, top-p head); None when no head takes part."""
        return (self.use_temperature_head, self.use_top_p_head) if self.kind == "autodeco" else None
