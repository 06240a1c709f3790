"""The worker's bounded pool (keyturn.scheduler.worker.Flights): at most `concurrency`
rotations in flight, no more on one target than its lane allows, and a finished rotation's
place filled at once (no waiting for a whole batch)."""

from __future__ import annotations

from concurrent.futures import Future

from keyturn.domain.errors import KeyturnError
from keyturn.engine.protocol import Outcome
from keyturn.scheduler.worker import Flights, Lane

SLOW = Lane("mailu", None, 1)  # a target that takes one rotation at a time
FAST = Lane("pg", None, 4)


def _fly(flights: Flights) -> dict[int, Future[Outcome | KeyturnError]]:
    started = {}
    for rotation_id, lane in flights.ready():
        future: Future[Outcome | KeyturnError] = Future()
        flights.fly(future, lane)
        started[rotation_id] = future
    return started


def _land(future: Future[Outcome | KeyturnError], rotation_id: int) -> None:
    future.set_result(KeyturnError(f"rotation {rotation_id} ended"))


def test_one_target_never_gets_more_than_its_lane() -> None:
    flights = Flights(concurrency=4)
    for rotation_id, lane in [(1, SLOW), (2, SLOW), (3, FAST), (4, SLOW), (5, FAST)]:
        flights.queue(rotation_id, lane)
    first = _fly(flights)
    assert sorted(first) == [1, 3, 5]  # one mailu rotation, the pg ones beside it
    assert flights.per_target == {"mailu": 1, "pg": 2}
    assert flights.room() == 0  # 3 running + 2 queued: nothing more is claimed
    _land(first[1], 1)
    assert [str(x) for x in flights.landed()] == ["rotation 1 ended"]
    assert sorted(_fly(flights)) == [2]  # the next mailu one takes the freed place at once
    assert [rid for rid, _ in flights.waiting] == [4]


def test_the_pool_bound_holds_across_targets() -> None:
    flights = Flights(concurrency=2)
    for rotation_id in range(1, 6):
        flights.queue(rotation_id, FAST)
    started = _fly(flights)
    assert sorted(started) == [1, 2] and len(flights.running) == 2
    _land(started[2], 2)
    flights.landed()
    assert sorted(_fly(flights)) == [3]  # one place freed, one rotation started
    assert flights.room() == 0
