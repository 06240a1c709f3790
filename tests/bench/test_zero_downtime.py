"""The short version of `bench/zero_downtime.py`: a few rotations per target x strategy on
the real servers, with SDK clients working throughout; not one operation may fail."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "zero_downtime", ROOT / "bench" / "zero_downtime.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(ROOT / "bench"))  # as when it runs as a script: `import servers`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


@pytest.mark.timeout(900)
def test_no_operation_fails_through_rotations() -> None:
    bench = _bench()
    args = argparse.Namespace(rotations=2, threads=2, idle=0.5, only="", verbose=False, pause=0.0)
    results = bench.run(args)
    assert {(r.kind, r.strategy) for r in results} == {
        (kind, strategy) for kind, strategies in bench.SUPPORTED.items() for strategy in strategies
    }
    for r in results:
        assert r.rotations == 2, (r.kind, r.strategy)
        assert r.ops > 0 and r.busy, (r.kind, r.strategy)
        assert r.failed == 0, (r.kind, r.strategy, r.errors)
    # `single` has the target refuse the old value at `set`: the SDK must have fallen back.
    assert all(r.fallbacks > 0 for r in results if r.strategy == "single")
