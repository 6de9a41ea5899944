"""A bounded memory of what this process has finished, to answer a message that returns.

After nats-server is killed, a message whose ack was lost comes back (even with a
delivery count of 1), and the server may have forgotten the ``Nats-Msg-Id`` of a
copy it already handed out. Whatever this process finished itself it remembers
here, for a while, so such a message costs a lookup, not a second run. Another
process (after a crash of this one) does not know, and does the work again: steps
stay at-least-once, each attempt carrying its idempotency key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RecentlyDone:
    """The last ``size`` keys added (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._size = size

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class RecentResults:
    """The last results this process stored, by idempotency key, within a byte budget.

    A task that comes back after its result was stored gets that result published
    again (the server may have lost it with a kill, under lazy fsync) instead of a
    second run; a result that does not fit the budget is simply not kept, and its
    task, should it come back, runs again.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self._results: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0

    def add(self, key: str, reply_to: str, body: bytes) -> None:
        if key in self._results or len(body) > self._max_bytes // 16:
            return
        self._results[key] = (reply_to, body)
        self._bytes += len(body)
        while len(self._results) > self._size or self._bytes > self._max_bytes:
            _, (_, dropped) = self._results.popitem(last=False)
            self._bytes -= len(dropped)

    def get(self, key: str) -> tuple[str, bytes] | None:
        return self._results.get(key)

    def __len__(self) -> int:
        return len(self._results)
