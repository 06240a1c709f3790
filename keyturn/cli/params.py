"""Plain values for plain parameters, without Pydantic (issue 23).

Typer (0.2x) coerces every parameter through a Pydantic TypeAdapter, built the first time the
parameter is processed: `keyturn get` imported Pydantic and built five adapters (~0.15 s of its
start-up) to turn strings into strings. Here each parameter of a built command gets a runtime
coercion that answers the common cases itself (a missing value, a `str`, a `bool`, a decimal
`int` within its bounds: exactly what the adapter returns for them) and hands every other
value to Typer's own adapter, built only then, so a refused value gets Typer's message word
for word.
`tests/cli/test_params.py` reads the two against each other.

With a Typer that has no such layer (no `typer._coercion`), this does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from typer import _click as click

try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # pragma: no cover - an older Typer: no adapters to avoid
    RuntimeParam = None  # type: ignore[assignment,misc]

__all__ = ["plain", "speed_up"]

# A decimal that int() and Pydantic read alike: no sign, no leading zero, no "_", no space.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,17}")
_UNSURE = object()


def plain(annotation: Any, info: Any, value: Any) -> Any:
    """The coerced *value* when it is a case answered here, else `_UNSURE`."""
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and not getattr(info, "clamp", False):
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            number = int(value)
        elif type(value) is int:
            number = value
        else:
            return _UNSURE
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is None or number >= low) and (high is None or number <= high):
            return number
    return _UNSURE


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _Plain(RuntimeParam):
        """Typer's coercion contract: plain cases here, the rest through Typer's adapter."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: click.Context) -> Any:
            done = plain(self.annotation, self.parameter_info, value)
            if done is not _UNSURE:
                return done
            typer_own = build_runtime_param(self.descriptor)
            param._runtime_param = typer_own  # from now on, Typer's as it would be
            return typer_own._coerce_value(value, param=param, ctx=ctx)


def speed_up(command: click.Command, *, deep: bool = True) -> click.Command:
    """Give *command*'s parameters (and its subcommands', for a group) the plain coercion.
    Any type qualifies (a missing value never needs an adapter) but file parameters, which
    Typer opens, and a custom parser. *deep*: a group's subcommands too."""
    if RuntimeParam is None:  # pragma: no cover
        return command
    # Typer makes the help option at parse time, once (kept in _help_option).
    made = getattr(command, "_help_option", None)
    for param in [*command.params, *([made] if made is not None else [])]:
        descriptor = getattr(param, "type_descriptor", None)
        if (
            isinstance(descriptor, TypeDescriptor)
            and getattr(param, "_runtime_param", False) is None
            and descriptor.file_annotation is None
            and descriptor.parameter_info.parser is None
        ):
            param._runtime_param = _Plain(
                descriptor.parameter_info, descriptor.annotation, descriptor
            )
    for sub in getattr(command, "commands", {}).values() if deep else ():
        speed_up(sub)
    return command
