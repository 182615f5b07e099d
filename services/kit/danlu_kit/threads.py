"""A service's own threads for blocking calls that may wait on another service.

In `danlu up` every service answers from one event loop, and handlers run their blocking core
calls in that loop's default executor. A call that blocks on *another* service (the training
service resolving a dataset through the registry) must not hold one of those threads: if such
calls filled the default executor, each would wait for a registry handler that needs a free
thread, and everything would hang (seen with 12 concurrent chats on a fresh adapter).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class OffloadPool:
    """Run blocking calls in dedicated threads, with the caller's context variables (request
    id, forwarded bearer token) travelling along as ``asyncio.to_thread`` would carry them."""

    def __init__(self, max_workers: int, name: str):
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args) -> T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, functools.partial(context.run, fn, *args))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
