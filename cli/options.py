"""Click options built from a config dataclass, so each command's flags and help live in one place."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; `bool` -> bool."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def dataclass_options(config_cls: type, skip: tuple[str, ...] = ()) -> Callable:
    """Decorate a click command with one `--field-name` option per dataclass field.

    Booleans become `--flag/--no-flag`. Defaults come from the dataclass, so `config_cls(**kwargs)`
    receives exactly what the user typed or the documented default.
    """

    hints = typing.get_type_hints(config_cls)  # resolves annotations written under `from __future__`

    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(config_cls)):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = f.metadata.get("help", "")
            if "flag_value" in f.metadata:  # `--flag` alone means flag_value; `--flag VALUE` also works
                option = click.option(
                    flag, f.name, is_flag=False, flag_value=f.metadata["flag_value"], default=default, help=help_text
                )
            elif kind is bool:
                option = click.option(
                    f"{flag}/--no-{flag[2:]}", f.name, default=default, show_default=True, help=help_text
                )
            else:
                option = click.option(
                    flag, f.name, type=kind, default=default, show_default=default is not None, help=help_text
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
