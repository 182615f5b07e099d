"""A wake-up call from the threads that write to the asyncio tasks that wait (watch streams,
the scheduler).

Writes run in worker threads (``asyncio.to_thread``), waiters in event loops, possibly several
(tests run servers in their own loops). A version counter closes the race between "read the
database" and "start waiting": a waiter passes the version it saw before reading and returns at
once when a write happened in between. Waiters also time out, so a change made by another
process (which cannot notify this one) is seen after at most one poll interval.
"""

from __future__ import annotations

import asyncio
import threading


class ChangeSignal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def version(self) -> int:
        return self._version

    def notify(self) -> None:
        """Wake every waiter; callable from any thread."""
        with self._lock:
            self._version += 1
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, seen_version: int, timeout: float) -> None:
        """Return after a notify that came after ``seen_version``, or after ``timeout``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._version != seen_version:
                return
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
