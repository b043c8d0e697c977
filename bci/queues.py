"""A bounded queue with an explicit overflow policy and counted drops.

Every queue between services is bounded (rule 5 of the design). When full, the
policy decides: ``drop_oldest`` (keep the freshest data, for real-time paths),
``drop_newest`` (refuse the new item) or ``block`` (the producer waits: backpressure).
Every dropped item is counted and visible in :meth:`BoundedQueue.stats`.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

OverflowPolicy = Literal["drop_oldest", "drop_newest", "block"]


class BoundedQueue(Generic[T]):
    """An asyncio queue of at most ``maxsize`` items; not thread-safe (one event loop)."""

    def __init__(
        self, maxsize: int, policy: OverflowPolicy = "drop_oldest", name: str = ""
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if policy not in ("drop_oldest", "drop_newest", "block"):
            raise ValueError(f"unknown overflow policy {policy!r}")
        self.maxsize = maxsize
        self.policy: OverflowPolicy = policy
        self.name = name
        self._items: collections.deque[T] = collections.deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self.put_count = 0
        self.dropped = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, item: T) -> bool:
        """Add ``item``; when full apply the policy (``block`` acts as ``drop_newest``).

        Returns False when ``item`` itself was dropped.
        """
        self.put_count += 1
        if self.full():
            self.dropped += 1
            if self.policy == "drop_oldest":
                self._items.popleft()
            else:
                return False
        self._items.append(item)
        self.high_water = max(self.high_water, len(self._items))
        self._not_empty.set()
        if self.full():
            self._not_full.clear()
        return True

    async def put(self, item: T) -> bool:
        """Add ``item``; with the ``block`` policy wait for room, else as :meth:`put_nowait`."""
        if self.policy == "block":
            while self.full():
                await self._not_full.wait()
        return self.put_nowait(item)

    def get_nowait(self) -> T:
        """Remove and return the oldest item; raise :class:`asyncio.QueueEmpty` if none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._not_empty.clear()
        self._not_full.set()
        return item

    async def get(self) -> T:
        """Wait for an item and return it (wrap in ``asyncio.timeout`` for a deadline)."""
        while not self._items:
            await self._not_empty.wait()
        return self.get_nowait()

    def stats(self) -> dict[str, int | str]:
        """Counters for metrics and reports: size, puts, drops, high-water mark."""
        return {
            "name": self.name,
            "policy": self.policy,
            "size": len(self._items),
            "maxsize": self.maxsize,
            "put": self.put_count,
            "dropped": self.dropped,
            "high_water": self.high_water,
        }
