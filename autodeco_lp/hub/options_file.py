"""Options held in dataclasses: their user-facing names, and typed values read from YAML or JSON files.

Every command that reads options from a file (`autodeco-fit --config`, `autodeco eval ablation --config`)
goes through `read_mapping` and `typed_value`, so a file's value ends up with exactly the type of the
dataclass field it fills, or the command stops with a message naming the file, the key, the value and
the expected type.

Why the checks are needed: PyYAML implements YAML 1.1, which reads `5e-6` (no dot) as the *string*
"5e-6", so a float field needs string parsing; a quoted `"false"` or `"no"` is a non-empty string, so a
plain truth test would read it as true; and YAML aliases let a few lines describe a list of 10^9 items
(each alias is a reference, so loading is cheap but printing or walking it is not). Hence containers are
refused for scalar fields before anything looks inside them, every loaded document is walked with a
node budget, and every value quoted in a message is capped at `SHOWN_CHARS` characters.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autodeco_lp.hub.jsonl import MAX_NESTING

SHOWN_CHARS = 100
# Nodes (mappings, lists and scalars, counting every alias expansion) a file may hold; option files hold tens.
MAX_NODES = 100_000
# The YAML 1.1 boolean words (PyYAML reads them unquoted as booleans; quoted, they arrive as strings).
TRUE_WORDS = ("true", "yes", "on", "y")
FALSE_WORDS = ("false", "no", "off", "n")

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother = 2, 4, 4, SHOWN_CHARS, SHOWN_CHARS


def shown(value: Any) -> str:
    """`repr(value)` bounded in work and length: at most `SHOWN_CHARS` characters, containers cut short."""
    text = _repr.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def option_name(f: dataclasses.Field) -> str:
    """A field's user-facing option name (snake_case): its `flag` metadata where the flag differs from the
    field's name (e.g. `temperature_loss_weight` for `LossConfig.temperature_weight`), else the field name."""
    return f.metadata.get("flag", f.name).replace("-", "_")


def flag(f: dataclasses.Field) -> str:
    """A field's command-line flag: `--` and its option name in dashes."""
    return "--" + option_name(f).replace("_", "-")


def field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (annotations written under `from __future__` are strings)."""
    return typing.get_type_hints(config_cls)


def _count_nodes(value: Any, budget: int) -> int:
    """Nodes left of `budget` after walking `value`; stops (returns < 0) as soon as the budget is spent,
    so an alias bomb costs at most `budget` steps."""
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return budget
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return budget


def _check_nesting(text: str, path: Path, what: str) -> None:
    """Refuse, naming path:line, a document nested deeper than `MAX_NESTING`: PyYAML's composer recurses
    once per level (a RecursionError, after ~1 s, at ~1,000), while its event parser does not, so the
    events are counted first and the walk stops at the first level too deep."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise ValueError(
                    f"{what} is nested too deeply to be an options file: {path}:{event.start_mark.line + 1} "
                    f"opens a level deeper than {MAX_NESTING}; an options file is a mapping of option: value"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON, a subset of YAML) file, checked to be small.

    `what` names the file's role in messages, e.g. "`--config` 'fit.yaml'".
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        _check_nesting(text, path, what)
        raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())  # PyYAML's message spans lines; it names the line and column
        raise ValueError(f"{what} cannot be read: {reason[: 2 * SHOWN_CHARS]}") from exc
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{what} has to hold a mapping of option: value, but holds a {type(raw).__name__}")
    if _count_nodes(raw, MAX_NODES) < 0:
        raise ValueError(
            f"{what} holds more than {MAX_NODES} values (counting every YAML alias expansion); "
            "an options file holds a few dozen: remove the repeated aliases"
        )
    for key in raw:
        if not isinstance(key, str):
            raise ValueError(f"{what}: every key has to be a name, but {shown(key)} is a {type(key).__name__}")
    return raw


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise TypeError


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):  # 2.5 is refused, not truncated
        raise TypeError
    return int(value)  # "512" -> 512; "abc" -> ValueError


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    number = float(value)  # "5e-6" (a YAML 1.1 string) -> 5e-06; "abc" -> ValueError
    if not math.isfinite(number):
        raise ValueError
    return number


def _as_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):  # `seeds: 0` -> "0"; `yes` is refused
        raise TypeError
    return str(value)


def _as_mapping(value: Any) -> dict:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError
    return dict(value)


_CONVERTERS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str, dict: _as_mapping}


def typed_value(value: Any, annotation: Any, where: str) -> Any:
    """`value` as the type `annotation` (bool, int, float, str, `dict[str, ...]`, or one of these `| None`).

    `where` names the file and key in the message, e.g. "`--config` 'fit.yaml', key learning_rate".
    Raises `ValueError` naming `where`, the value (capped) and the expected type.
    """
    options = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = list(typing.get_args(annotation))
    if value is None and type(None) in options:
        return None
    for option in options:
        convert = _CONVERTERS.get(typing.get_origin(option) or option)
        if convert is None:
            continue
        try:
            return convert(value)
        except (TypeError, ValueError):
            continue
    hint = ""
    if bool in options:
        hint = f" (one of {', '.join(TRUE_WORDS + FALSE_WORDS)})"
    elif isinstance(value, (list, dict)):
        hint = " (a single value, not a list or mapping)"
    raise ValueError(
        f"{where} has to be {_type_name(annotation)}{hint}, but is {shown(value)} ({type(value).__name__})"
    )


def typed_fields(config_cls: type, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`values` (field name -> raw value) converted to the field types of `config_cls`; unknown names are
    refused, listing the known ones."""
    types_ = field_types(config_cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(f"{what} has unknown keys {shown(unknown)}; known keys: {', '.join(sorted(types_))}")
    return {name: typed_value(value, types_[name], f"{what}, key {name}") for name, value in values.items()}
