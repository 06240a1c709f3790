"""keyturn.cli.params against Typer's own coercion: what the fast path answers, it answers as
Typer's Pydantic adapter does; everything else goes to the adapter (same value, same message)."""

from __future__ import annotations

import pytest
from typer._adapters import build_adapter
from typer.models import OptionInfo

from keyturn.cli import params
from tests.support.keyturn import Harness

VALUES = ["0", "1", "7", "007", "-1", "+3", " 3", "3 ", "3.0", "1_000", "abc", "", "9" * 30, "٣"]
BOUNDS = [(None, None), (1, None), (1, 64), (0, 0)]


@pytest.mark.parametrize(("low", "high"), BOUNDS)
def test_an_int_answered_here_is_the_adapters_answer(low: int | None, high: int | None) -> None:
    info = OptionInfo(min=low, max=high)
    adapter = build_adapter(int, info)
    answered = 0
    for value in [*VALUES, 5, 70]:
        mine = params.plain(int, info, value)
        if mine is params._UNSURE:
            continue
        answered += 1
        assert mine == adapter.validate_python(value) and type(mine) is int, value
    assert answered  # the fast path is taken for plain numbers


@pytest.mark.parametrize("annotation", [str, bool])
def test_str_and_bool_pass_through_unchanged(annotation: type) -> None:
    adapter = build_adapter(annotation, OptionInfo())
    for value in ["x", "", " a b ", "[/b]", True, False]:
        mine = params.plain(annotation, OptionInfo(), value)
        if mine is not params._UNSURE:
            assert mine == adapter.validate_python(value) and type(mine) is annotation


def test_a_refused_value_gets_typers_message(kt: Harness) -> None:
    for value, words in [("abc", "valid integer"), ("0", "greater than or equal to 1")]:
        result = kt.cli("get", "app/none", "--version", value)
        assert result.code == 2 and words in " ".join(result.err.split()), result.err


def test_plain_values_reach_the_command(kt: Harness) -> None:
    kt.write("inv.toml", '[[credentials]]\nid = "app/db"\ninitial_secret = "env:V"\n')
    assert kt.cli("apply", "inv.toml", env={"V": "value-one-xyz"}).code == 0
    got = kt.cli("get", "app/db", "--version", "1")
    assert got.code == 0 and got.out == "value-one-xyz\n"
