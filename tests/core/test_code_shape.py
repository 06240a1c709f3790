"""The code's shape rules from CONTRIBUTING.md that a linter does not check."""

from __future__ import annotations

import ast
from pathlib import Path

import keyturn

ROOT = Path(keyturn.__file__).parent
LIMIT = 60


def test_no_function_is_over_sixty_lines() -> None:
    """Migrations aside: a longer function is split before it lands."""
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 60 lines: " + ", ".join(long)


def test_the_protocol_stays_under_four_hundred_lines() -> None:
    """Strategies, failures and the rotation record live beside it (issue 16)."""
    assert len((ROOT / "engine" / "protocol.py").read_text().splitlines()) < 400
