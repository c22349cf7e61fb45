"""Click options built from a config dataclass, so each command's flags and help live in one place."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click

from autodeco_lp.hub.options_file import field_types, flag, option_name


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; `bool` -> bool."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def dataclass_options(config_cls: type, skip: tuple[str, ...] = (), defaults_unset: bool = False) -> Callable:
    """Decorate a click command with one option per dataclass field (fields with `cli: False` metadata and
    those in `skip` get none).

    The flag is `--field-name`, or the field's `flag` metadata where that differs (`option_name`); the
    value arrives under the option name. Booleans become `--flag/--no-flag`. Defaults come from the
    dataclass, so `config_cls(**kwargs)` receives exactly what the user typed or the documented default;
    with `defaults_unset` every option defaults to None (shown with the dataclass default in the help), so
    the caller can tell an option the user gave from one left to another source (a recipe). A field without
    a default is a required option; `choices` metadata (a tuple of strings) makes a `click.Choice`.
    """

    hints = field_types(config_cls)

    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(config_cls)):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            name, flag_text = option_name(f), flag(f)
            kind = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = f.metadata.get("help", "")
            shown_default = default is not None
            if defaults_unset:  # click would show None: the dataclass default goes into the help instead
                text = str(default).lower() if isinstance(default, bool) else str(default)
                default, shown_default, help_text = None, False, f"{help_text}  [default: {text}]"
            if "flag_value" in f.metadata:  # `--flag` alone means flag_value; `--flag VALUE` also works
                option = click.option(
                    flag_text, name, is_flag=False, flag_value=f.metadata["flag_value"], default=default, help=help_text
                )
            elif kind is bool:
                option = click.option(
                    f"{flag_text}/--no-{flag_text[2:]}",
                    name,
                    default=default,
                    show_default=shown_default if defaults_unset else True,
                    help=help_text,
                )
            else:
                choices = f.metadata.get("choices")
                # A required option gets no default at all: click 8.3+ takes an explicit None as a given value.
                missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                given = {"required": True} if missing else {"default": default, "show_default": shown_default}
                option = click.option(
                    flag_text, name, type=click.Choice(choices) if choices else kind, help=help_text, **given
                )
            command = option(command)
        return command

    return decorate


# `--task-option KEY=VALUE`, shared by the commands that take a `--task`.
task_option = click.option(
    "--task-option",
    "task_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Option of the task's generator, repeatable, e.g. --task-option min_digits=1 (values parsed as JSON).",
)
