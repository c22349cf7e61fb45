"""`AutoDecoConfig`: everything needed to rebuild a pair of heads, and nothing else.

The dataclass validates itself in `__post_init__` and round-trips through a plain dict
(`to_dict` / `from_dict`), which is what `autodeco_config.json` holds on disk.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from autodeco_lp.version import __version__

# The released heads use a 256-wide hidden layer in both MLPs.
DEFAULT_MLP_HIDDEN_SIZE = 256
# The top-p head always reads T next to h; the enhanced features add 4 statistics of the
# distribution: [h, T] or [h, T, max_prob, entropy, prob_var, top5_sum].
NUM_STATISTICS = 4


@dataclass
class AutoDecoConfig:
    """Shape and switches of a pair of AutoDeco heads.

    Args:
        hidden_size: width H of the base model's final hidden state (the input of `lm_head`).
        vocab_size: width V of the base model's logits (`config.vocab_size`); `None` when a
            released checkpoint does not record it. Used to refuse heads meant for another model.
        enable_temperature_head: build (and use) the temperature head; off means T = 1.
        enable_top_p_head: build (and use) the top-p head; off means P = 1.
        use_enhanced_features: feed the top-p head [h, T, 4 statistics] as released; off feeds [h, T].
        mlp_hidden_size: width of the hidden layer of both MLPs (256 in every released checkpoint).
        base_model_name_or_path: the base model the heads were trained on (Hub id or path).
        base_model_revision: the base model's revision (commit or tag) when known.
        library_version: version of `autodeco_lp` that wrote the checkpoint.
    """

    hidden_size: int
    vocab_size: int | None = None
    enable_temperature_head: bool = True
    enable_top_p_head: bool = True
    use_enhanced_features: bool = True
    mlp_hidden_size: int = DEFAULT_MLP_HIDDEN_SIZE
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    library_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "mlp_hidden_size"):
            _check_positive_int(name, getattr(self, name))
        if self.vocab_size is not None:
            _check_positive_int("vocab_size", self.vocab_size)
        for name in ("enable_temperature_head", "enable_top_p_head", "use_enhanced_features"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` has to be a bool, but is {getattr(self, name)!r}")
        for name in ("base_model_name_or_path", "base_model_revision"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"`{name}` has to be a string or None, but is {getattr(self, name)!r}")
        if not isinstance(self.library_version, str):
            raise TypeError(f"`library_version` has to be a string, but is {self.library_version!r}")
        if not (self.enable_temperature_head or self.enable_top_p_head):
            raise ValueError(
                "`enable_temperature_head` and `enable_top_p_head` are both False: a checkpoint "
                "needs at least one head. Enable one of them."
            )

    @property
    def top_p_input_size(self) -> int:
        """Input width of the top-p head: H + 1 ([h, T]), or H + 5 with the enhanced features."""
        return self.hidden_size + 1 + (NUM_STATISTICS if self.use_enhanced_features else 0)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The released tensor names of the enabled heads and their shapes (what a checkpoint must hold)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for prefix, enabled, width in (
            ("temp_head", self.enable_temperature_head, self.hidden_size),
            ("top_p_head", self.enable_top_p_head, self.top_p_input_size),
        ):
            if enabled:
                shapes[f"{prefix}.mlp.0.weight"] = (self.mlp_hidden_size, width)
                shapes[f"{prefix}.mlp.0.bias"] = (self.mlp_hidden_size,)
                shapes[f"{prefix}.mlp.2.weight"] = (1, self.mlp_hidden_size)
                shapes[f"{prefix}.mlp.2.bias"] = (1,)
        return shapes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AutoDecoConfig:
        """Build a config from a dict; unknown keys warn and are dropped, missing required keys raise.

        `source` names the file in messages (e.g. the path of `autodeco_config.json`).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(
                f"{source} is missing the required key(s) {missing}; add them (e.g. "
                f'"hidden_size": <width of the base model\'s hidden state>).'
            )
        unknown = sorted(set(data) - names)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown key(s) {unknown}.", UserWarning, stacklevel=2)
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` has to be a positive integer, but is {value!r}")
