"""The checkpoint layouts this package reads, one small class each, kept in one registry.

Each layout has `detect(probe) -> instance | None` (does the source hold this layout; reads file
headers only) and `read() -> (config, tensors)` (the config and the head tensors under their plain
names, unchecked: `checkpoint.read_heads` checks them against the config). `detect_layout(source)`
asks every layout in `LAYOUTS`; a source that two layouts claim is refused with both listed, and a
source no layout claims is read as `Loose`.

- `Native`: `autodeco_config.json` + `autodeco_heads.safetensors` (or the weights alone, whose
  metadata embeds the config: what a save killed between its renames leaves);
- `Lightweight` (released): `config.json` (`model_type: "autodeco"`, base config inlined, old keys
  `train_temp` / `train_top_p` accepted) + `model.safetensors` or `autodeco_heads.safetensors` (else
  the folder's one `*.safetensors` holding head tensors, as the official loader scans); or
  `model.safetensors` alone with the config embedded by `export_official`;
- `Merged` (released): `model.safetensors.index.json` + shards: only the shards holding head tensors
  are opened (and, from the Hub, downloaded), and only the head tensors are read;
- `Legacy`: `autodeco_heads.bin`, read with `torch.load(weights_only=True)` only (no pickle code runs);
- `Loose` (Megatron exports): no config, the folder's one `*.safetensors` holding head tensors, keys
  prefixed `module.adapter.` or `adapter.`, usually bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.files import (
    CONFIG_NAME,
    LEGACY_BIN_NAME,
    METADATA_CONFIG_KEY,
    OFFICIAL_CONFIG_NAME,
    OFFICIAL_INDEX_NAME,
    OFFICIAL_WEIGHTS_NAME,
    WEIGHTS_NAME,
    check_floating,
    config_from_json,
    embedded_config,
    head_tensor_name,
    head_tensors_from,
    holds_heads,
    read_json,
    read_safetensors,
)
from autodeco_lp.hub.released_config import config_from_released
from autodeco_lp.hub.source import HubRepo, LocalFolder, check_member_name

Source = LocalFolder | HubRepo
Tensors = dict[str, torch.Tensor]


@dataclass
class Probe:
    """The files every layout's `detect` looks at, fetched once per load (None: absent)."""

    source: Source
    native_config: Path | None
    native_weights: Path | None
    official_config: Path | None
    official_weights: Path | None
    index: Path | None
    legacy: Path | None
    raw: dict[str, Any]  # config.json parsed; {} without one

    @classmethod
    def of(cls, source: Source) -> Probe:
        official_config = source.get(OFFICIAL_CONFIG_NAME)
        return cls(
            source=source,
            native_config=source.get(CONFIG_NAME),
            native_weights=source.get(WEIGHTS_NAME),
            official_config=official_config,
            official_weights=source.get(OFFICIAL_WEIGHTS_NAME),
            index=source.get(OFFICIAL_INDEX_NAME),
            legacy=source.get(LEGACY_BIN_NAME),
            raw=read_json(official_config) if official_config is not None else {},
        )

    @property
    def autodeco_config_json(self) -> bool:
        """Whether `config.json` is an AutoDeco export's (a base model's config.json is not ours)."""
        return self.official_config is not None and self.raw.get("model_type") == "autodeco"


class Native:
    name: ClassVar[str] = "native"
    files: ClassVar[str] = f"{CONFIG_NAME} + {WEIGHTS_NAME}"
    strict: ClassVar[bool] = True  # our own saves hold exactly the tensors their config describes

    def __init__(self, source: Source, config_path: Path | None, weights: Path | None) -> None:
        self.source, self.config_path, self.weights = source, config_path, weights

    @classmethod
    def detect(cls, probe: Probe) -> Native | None:
        weights = probe.native_weights
        if probe.native_config is None and (weights is None or embedded_config(weights) is None):
            return None
        return cls(probe.source, probe.native_config, weights)

    def read(self) -> tuple[AutoDecoConfig, Tensors]:
        if self.weights is None:
            raise ValueError(
                f"{self.source.description} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the save was incomplete. "
                "Save the heads again."
            )
        tensors, metadata = read_safetensors(self.weights)
        saved = metadata.get(METADATA_CONFIG_KEY)
        if self.config_path is None:
            # A save killed between moving the old config away and writing the new one: the weights
            # carry their own config.
            return config_from_json(saved, f"{self.weights} (embedded config)"), tensors
        config = AutoDecoConfig.from_dict(read_json(self.config_path), source=str(self.config_path))
        if saved is not None:
            saved_config = config_from_json(saved, f"{self.weights} (embedded config)").to_dict()
            on_disk = config.to_dict()
            differing = sorted(k for k in on_disk if k != "library_version" and saved_config.get(k) != on_disk[k])
            if differing:
                raise ValueError(
                    f"{self.config_path} and {self.weights} come from different saves (they disagree on "
                    f"{differing}); save the heads again."
                )
        return config, tensors


# Fields of the config that describe the tensors (what a lightweight config.json and the config
# embedded by `export_official` must agree on).
_STRUCTURAL = (
    "hidden_size",
    "vocab_size",
    "enable_temperature_head",
    "enable_top_p_head",
    "use_enhanced_features",
    "mlp_hidden_size",
)


class _Released:
    """A released layout: head tensors found by name, the config built from the released config.json
    (switches) and the tensors (shapes). Subclasses say where the tensors are (`head_tensors`)."""

    strict: ClassVar[bool] = False  # released files may hold more than the heads (a merged base model)

    def __init__(self, source: Source, raw: dict[str, Any] | None, path: Path | None) -> None:
        # raw: the released config.json (None for a lightweight export whose config.json a killed save
        # moved away); path: the file the tensors come from (a weights file, an index, a .bin).
        self.source, self.raw, self.path = source, raw, path

    def head_tensors(self) -> tuple[Tensors, dict[str, str]]:
        """The head tensors under their plain names, and the metadata of the file they came from."""
        if self.path is None:
            return {}, {}
        return head_tensors_from(self.path)

    def read(self) -> tuple[AutoDecoConfig, Tensors]:
        tensors, metadata = self.head_tensors()
        if not tensors:
            raise ValueError(
                f"nothing loadable in {self.source.description}: expected {CONFIG_NAME} + {WEIGHTS_NAME} (native), "
                f"{OFFICIAL_CONFIG_NAME} + {OFFICIAL_WEIGHTS_NAME} or {WEIGHTS_NAME} (released), "
                f"{OFFICIAL_INDEX_NAME} + shards (merged), or {LEGACY_BIN_NAME}, holding tensors named "
                "temp_head.* / top_p_head.*. If this is a Hub repo and you are offline, download it first."
            )
        # Only `export_official` embeds our config in a lightweight weights file.
        embedded = metadata.get(METADATA_CONFIG_KEY)
        saved = config_from_json(embedded, f"{self.path} (embedded config)") if embedded is not None else None
        if saved is not None and self.raw is None:  # config.json moved away by a killed save: the weights carry it
            return saved, tensors
        config = config_from_released(self.raw or {}, tensors, self.source.description)
        differing = [k for k in _STRUCTURAL if saved is not None and getattr(config, k) != getattr(saved, k)]
        if differing:
            raise ValueError(
                f"{OFFICIAL_CONFIG_NAME} and {self.path} in {self.source.description} come from different saves "
                f"(they disagree on {differing}); export the heads again."
            )
        return config, tensors


class Merged(_Released):
    name: ClassVar[str] = "merged"
    files: ClassVar[str] = f"{OFFICIAL_INDEX_NAME} + its shards"

    @classmethod
    def detect(cls, probe: Probe) -> Merged | None:
        return cls(probe.source, probe.raw, probe.index) if probe.index is not None else None

    def head_tensors(self) -> tuple[Tensors, dict[str, str]]:
        index = read_json(self.path)
        weight_map = index.get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{self.path}: `weight_map` has to map tensor names to shard file names.")
        shards = sorted({shard for key, shard in weight_map.items() if head_tensor_name(key) is not None})
        for shard in shards:  # every name checked before any shard is fetched
            check_member_name(shard, str(self.path))
        tensors: Tensors = {}
        for shard in shards:
            shard_path = self.source.get(shard)
            if shard_path is None:
                raise ValueError(
                    f"{self.source.description}: {OFFICIAL_INDEX_NAME} places head tensors in {shard!r}, "
                    "which cannot be found (offline and not cached?). Download it or go online."
                )
            for name, value in head_tensors_from(shard_path)[0].items():
                if name in tensors:
                    raise ValueError(f"{self.path}: head tensor {name} is stored in two shards.")
                tensors[name] = value
        return tensors, {}


class Lightweight(_Released):
    name: ClassVar[str] = "lightweight"
    files: ClassVar[str] = f"{OFFICIAL_CONFIG_NAME} (model_type autodeco) + weights"

    def __init__(self, source: Source, raw: dict[str, Any] | None, candidates: list[Path]) -> None:
        super().__init__(source, raw, None)  # the weights file is chosen when read
        self.candidates = candidates  # the files under a released weights name

    @classmethod
    def detect(cls, probe: Probe) -> Lightweight | None:
        # An index makes it `Merged`; weights with our config embedded beside native files are the
        # native save's (what a killed `export_official` may leave is read as native then).
        if probe.index is not None:
            return None
        embedded_export = (
            probe.official_weights is not None
            and Native.detect(probe) is None
            and embedded_config(probe.official_weights) is not None
        )
        if not (probe.autodeco_config_json or embedded_export):
            return None
        candidates = [p for p in (probe.native_weights, probe.official_weights) if p is not None]
        return cls(probe.source, probe.raw if probe.autodeco_config_json else None, candidates)

    def head_tensors(self) -> tuple[Tensors, dict[str, str]]:
        named = [p for p in self.candidates if holds_heads(p)]
        if len(named) > 1:
            raise ambiguous(self.source.description, "two weight files with head tensors", [p.name for p in named])
        self.path = named[0] if named else single_heads_file(self.source)
        return super().head_tensors()


class Legacy(_Released):
    name: ClassVar[str] = "legacy"
    files: ClassVar[str] = LEGACY_BIN_NAME

    @classmethod
    def detect(cls, probe: Probe) -> Legacy | None:
        return cls(probe.source, probe.raw, probe.legacy) if probe.legacy is not None else None

    def head_tensors(self) -> tuple[Tensors, dict[str, str]]:
        try:
            state = torch.load(str(self.path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
            raise ValueError(
                f"{self.path} cannot be read with torch.load(weights_only=True) ({type(exc).__name__}). It may "
                "hold pickled code, which is never run here; convert it to safetensors in a trusted environment."
            ) from exc
        if not isinstance(state, dict):
            raise ValueError(f"{self.path} holds a {type(state).__name__}, expected a dict of tensors.")
        tensors = {k: v for key, v in state.items() if (k := head_tensor_name(key)) is not None and torch.is_tensor(v)}
        check_floating(tensors, self.path)
        return tensors, {}


class Loose(_Released):
    """What no other layout claims: no config of ours, the source's one safetensors file with head tensors."""

    name: ClassVar[str] = "loose"
    files: ClassVar[str] = "one *.safetensors file holding head tensors"

    @classmethod
    def detect(cls, probe: Probe) -> Loose:
        return cls(probe.source, {}, None)

    def head_tensors(self) -> tuple[Tensors, dict[str, str]]:
        self.path = single_heads_file(self.source)
        return super().head_tensors()[0], {}  # no config of ours: any embedded one is not compared


# Every layout a source can claim, in one table as PEFT dispatches adapters; `Loose` is the fallback.
LAYOUTS: tuple[type[Native] | type[_Released], ...] = (Native, Merged, Lightweight, Legacy)


def detect_layout(source: Source) -> Native | _Released:
    """The one layout `source` holds, having read only file headers and the small config files."""
    probe = Probe.of(source)
    found = [layout for layout in (cls.detect(probe) for cls in LAYOUTS) if layout is not None]
    if len(found) > 1:
        raise ambiguous(source.description, "several checkpoint layouts", [f"{x.name}: {x.files}" for x in found])
    return found[0] if found else Loose.detect(probe)


def single_heads_file(source: Source) -> Path | None:
    """The one `*.safetensors` file of `source` that holds head tensors (None without one)."""
    weights = [p for p in source.safetensors_files() if holds_heads(p)]
    if len(weights) > 1:
        raise ambiguous(source.description, "several weight files with head tensors", [p.name for p in weights])
    return weights[0] if weights else None


def ambiguous(where: str, what: str, candidates: list[str]) -> ValueError:
    listed = "\n".join(f"  {c}" for c in candidates)
    return ValueError(
        f"{where} is ambiguous: it holds {what}:\n{listed}\nMove all but one of them out of the folder "
        "(or load the one you mean from a folder of its own)."
    )
