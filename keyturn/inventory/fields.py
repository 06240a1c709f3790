"""Pydantic field types for text from outside (the inventory file and API bodies).

They apply keyturn.domain.inputs: `Line` is one line of text (names, usernames, reasons),
`Para` may hold tabs and newlines (a purpose), `SecretValue` is a secret's value (only NUL and
lone surrogates are refused). Errors name the kind of problem, never the value, under the
error type `unsafe_text`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from keyturn.domain.inputs import secret_problem, text_problem

UNSAFE = "unsafe_text"


def _refuse(problem: str) -> PydanticCustomError:
    return PydanticCustomError(UNSAFE, "{problem}", {"problem": problem})


def line(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise _refuse(problem)
    return value


def para(value: str) -> str:
    problem = text_problem(value, multiline=True)
    if problem:
        raise _refuse(problem)
    return value


def secret(value: str) -> str:
    problem = secret_problem(value)
    if problem:
        raise _refuse(problem)
    return value


Line = Annotated[str, AfterValidator(line)]
Para = Annotated[str, AfterValidator(para)]
SecretValue = Annotated[str, AfterValidator(secret)]


MAX_TAGS = 64


def tags(value: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
    """Tags: at most 64, keys of 1-63 characters, values of at most 200, one line each."""
    keys = list(value)
    values = list(value.values()) if isinstance(value, dict) else []
    if len(keys) > MAX_TAGS:
        raise PydanticCustomError("too_long", f"at most {MAX_TAGS} tags")
    for key in keys:
        if not 1 <= len(key) <= 63:
            raise PydanticCustomError("string_too_long", "a tag name has 1-63 characters")
        line(key)
    for item in values:
        if len(item) > 200:
            raise PydanticCustomError("string_too_long", "a tag value has at most 200 characters")
        line(item)
    return value


Tags = Annotated[dict[str, str] | list[str], AfterValidator(tags)]


def first_problem(data: Any, path: str = "") -> str | None:
    """Where the first string (or key) of parsed data holds what no text field accepts
    (NUL, lone surrogates, control characters other than tab and newline), or None."""
    if isinstance(data, str):
        problem = text_problem(data, multiline=True)
        return f"{path or 'value'}: {problem}" if problem else None
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)):
                return f"{path or 'file'}: a key {problem}"
            found = first_problem(value, where)
            if found:
                return found
    if isinstance(data, list):
        for index, value in enumerate(data):
            found = first_problem(value, f"{path}[{index}]")
            if found:
                return found
    return None
