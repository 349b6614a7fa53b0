"""Bounded waits that never swallow a cancellation.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` returns normally when the task is cancelled
in the same turn as the event is set, and turns the cancellation into a TimeoutError when it
arrives while the timeout is being handled. A loop that waits that way and ignores
TimeoutError then never ends: a node stuck at shutdown with its peer channel's receive task
"cancelling" for ever was found so (its wait for a readable socket runs every 0.1 s).
``asyncio.timeout`` counts cancellation requests and re-raises any that are not its own.
"""

from __future__ import annotations

import asyncio


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it is set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
