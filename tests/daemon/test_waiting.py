"""wait_at_most: a bounded wait that never swallows a cancellation (daemon/waiting.py)."""

from __future__ import annotations

import asyncio

import pytest

from daemon.waiting import wait_at_most


async def _loop_until_cancelled(ready: asyncio.Event, wait) -> None:
    """What the peer channel's receive loop does: wait a little, look again, for ever."""
    while True:
        await wait(ready, 10.0)
        ready.clear()


async def _cancel_as_the_event_is_set(wait) -> asyncio.Task:
    ready = asyncio.Event()
    task = asyncio.create_task(_loop_until_cancelled(ready, wait))
    await asyncio.sleep(0)              # the task now waits on the event
    ready.set()                         # ... which wakes it in the same turn
    task.cancel()                       # as it is cancelled
    await asyncio.wait({task}, timeout=2.0)
    return task


def test_a_cancel_in_the_turn_the_event_is_set_ends_the_loop():
    task = asyncio.run(_cancel_as_the_event_is_set(wait_at_most))
    assert task.done() and task.cancelled()


def test_the_python_3_11_wait_for_pattern_it_replaces_loses_that_cancel():
    """The reason for wait_at_most: the same loop written with wait_for keeps running."""
    async def old_wait(ready, seconds):
        try:
            await asyncio.wait_for(ready.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def run():
        task = await _cancel_as_the_event_is_set(old_wait)
        alive = not task.done()
        task.cancel()                   # a second request does reach it
        await asyncio.wait({task}, timeout=2.0)
        return alive, task.cancelled()

    alive, cancelled_later = asyncio.run(run())
    if not alive:
        pytest.fail("wait_for no longer loses this cancellation on this Python: "
                    "the workaround and this test can go")
    assert cancelled_later


@pytest.mark.parametrize("set_it", [False, True])
def test_it_returns_whether_the_event_was_set(set_it):
    async def run():
        ready = asyncio.Event()
        if set_it:
            asyncio.get_running_loop().call_later(0.01, ready.set)
        return await wait_at_most(ready, 0.2)
    assert asyncio.run(run()) is set_it
