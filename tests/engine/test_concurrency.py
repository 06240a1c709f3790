"""Two processes rotating the same credential at once: exactly one rotation happens."""

from __future__ import annotations

from sqlalchemy import select

from keyturn.db.models import Rotation
from tests.support.keyturn import Harness


def test_two_processes_one_rotation(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    s = setup("single")
    s.faults(set="slow", slow_seconds=2)
    procs = [kt.popen("rotate", "acme/smtp-admin", "--reason", f"racer {i}") for i in range(2)]
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    assert "already in progress" in loser
    with kt.app.db.read() as session:
        rotations = session.execute(select(Rotation)).scalars().all()
    assert len(rotations) == 1 and rotations[0].status == "done"
    assert s.calls()["set"] == 1
    assert sorted(st for st, _, _ in s.values().values()) == ["current", "retired"]
    assert s.accepts(*s.current())
