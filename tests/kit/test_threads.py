"""OffloadPool: blocking calls in a service's own threads, context variables carried along."""

from __future__ import annotations

import asyncio
import threading

from danlu_kit.request_context import caller_token_var
from danlu_kit.threads import OffloadPool


def test_runs_in_its_own_threads_with_the_callers_context():
    pool = OffloadPool(2, "test-offload")

    async def call():
        caller_token_var.set("token-of-the-caller")
        return await pool.run(lambda: (threading.current_thread().name, caller_token_var.get()))

    try:
        name, token = asyncio.run(call())
    finally:
        pool.shutdown()
    assert name.startswith("test-offload") and token == "token-of-the-caller"


def test_a_full_default_executor_does_not_block_offloaded_calls():
    """The deadlock it prevents: the default executor is busy with calls that wait for an
    answer only an offloaded call can give."""
    pool = OffloadPool(1, "test-offload")
    released = threading.Event()

    async def scenario():
        loop = asyncio.get_running_loop()
        from concurrent.futures import ThreadPoolExecutor

        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        waiting = asyncio.ensure_future(asyncio.to_thread(released.wait, 10))
        await pool.run(released.set)  # would never run if it needed the default executor
        return await waiting

    try:
        assert asyncio.run(scenario()) is True
    finally:
        pool.shutdown()
