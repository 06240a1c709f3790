"""Failed-authentication limiter: N failures per window per client address, in memory.

Bounded twice: at most `limit` timestamps per address and at most `max_clients` addresses
(least recently failing forgotten first), so a flood of addresses cannot grow it without end.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_clients, self.clock = limit, window, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Seconds until *client* may try again, or None if it is not blocked."""
        with self._lock:
            times = self._recent(client)
            if times is None or len(times) < self.limit:
                return None
            return max(1, math.ceil(times[0] + self.window - self.clock()))

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._recent(client) or deque(maxlen=self.limit)
            times.append(self.clock())
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def __len__(self) -> int:
        return len(self._failures)
