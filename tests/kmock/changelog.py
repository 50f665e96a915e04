"""The one resourceVersion counter and the log of every change, which watches
replay from when they resume and follow while they are open.

A write takes the next version and joins the log in one synchronous step, and
a watch subscribes and copies its backlog in one synchronous step, so under
asyncio no change can fall between a watch's backlog and its queue.
"""

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Change:
    version: int
    kind: str  # kinds.Kind.name
    type: str  # ADDED, MODIFIED or DELETED
    obj: dict[str, Any]  # as of this change; for DELETED, its last state at this version
    before: dict[str, Any] | None  # None for ADDED


@dataclass(eq=False)
class Subscription:
    """One open watch: the changes of its kind, then None when it must end."""
    kind: str
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)

    def close(self) -> None:
        self.queue.put_nowait(None)


class TooOld(Exception):
    """The asked-for version is older than what the log still holds."""


class ChangeLog:
    def __init__(self, capacity: int = 100_000) -> None:
        self.version = 0
        # Changes at or below this version are forgotten; resuming from before
        # it is answered with 410 Expired.
        self.compacted = 0
        self._capacity = capacity
        self._changes: collections.deque[Change] = collections.deque()
        self._subscriptions: set[Subscription] = set()

    def commit(self, kind: str, type_: str, obj: dict[str, Any], before: dict[str, Any] | None) -> Change:
        """Stamp `obj` with the next version, log it, and hand it to open watches.

        `obj` belongs to the log from here on: callers never change it again.
        """
        self.version += 1
        obj.setdefault('metadata', {})['resourceVersion'] = str(self.version)
        change = Change(self.version, kind, type_, obj, before)
        self._changes.append(change)
        while len(self._changes) > self._capacity:
            self.compacted = self._changes.popleft().version
        for sub in self._subscriptions:
            if sub.kind == kind:
                sub.queue.put_nowait(change)
        return change

    def subscribe(self, kind: str, since: int | None) -> tuple[Subscription, list[Change]]:
        """Open a watch of `kind`. With `since`, also return the logged changes
        after that version (raises TooOld if some of them are forgotten)."""
        if since is not None and since < self.compacted:
            raise TooOld(f'too old resource version: {since} ({self.compacted})')
        backlog = [] if since is None else [c for c in self._changes if c.kind == kind and c.version > since]
        sub = Subscription(kind)
        self._subscriptions.add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def compact(self) -> int:
        """Forget every change so far and end every open watch. Returns how
        many were ended.

        The counter moves on by one, so that every version handed out before
        is now too old: even a watcher whose last bookmark was the newest
        version gets 410 when it resumes and must list again, which is what a
        test compacting the log wants to see.
        """
        self.version += 1
        self.compacted = self.version
        self._changes.clear()
        return self.close_all()

    def close_all(self) -> int:
        subs = list(self._subscriptions)
        for sub in subs:
            sub.close()
        return len(subs)

    def open_watches(self) -> dict[str, int]:
        return dict(collections.Counter(sub.kind for sub in self._subscriptions))

    def __len__(self) -> int:
        return len(self._changes)
