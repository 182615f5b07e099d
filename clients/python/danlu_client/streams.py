"""Event streams that survive a dropped connection (a restarted service, a network blip)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from danlu_client.errors import from_rpc_error

RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


def resumable_events(
    open_stream: Callable[[int], Any],
    after_sequence: int,
    *,
    attempts: int,
    backoff: float,
    max_backoff: float,
    sleep: Callable[[float], None],
) -> Iterator[Any]:
    """Yield numbered events from ``open_stream(after_sequence)``; on UNAVAILABLE reopen it
    after the last sequence yielded, so nothing is missed or repeated. After ``attempts``
    failures in a row (backoff doubling up to ``max_backoff``) the error is raised."""
    last, failures = after_sequence, 0
    while True:
        call = open_stream(last)
        try:
            for event in call:
                failures = 0
                if event.sequence <= last:
                    continue
                last = event.sequence
                yield event
            return
        except grpc.RpcError as err:
            if err.code() not in RECONNECT_CODES or failures >= attempts:
                raise from_rpc_error(err) from None
        finally:
            call.cancel()
        failures += 1
        sleep(min(max_backoff, backoff * 2 ** (failures - 1)))
