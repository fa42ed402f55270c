"""One cancellation ends the fleet view, however busy its broker connection is.

Python 3.11's `asyncio.wait_for` returns the awaited result when a cancellation arrives
just as that result is ready: the cancellation is lost and the loop around it runs on.
The fleet view read every message that way, so `dockctl fleet` (and a test cancelling its
view) could go on for ever once messages kept coming. Here messages are always ready and
the cancellation lands at every point of the read loop in turn."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from agent.mqtt import fleet
from agent.mqtt.transport import Message, PahoTransport

GENEROUS_S = 30.0  # only a lost cancellation runs this long


class AlwaysReady:
    """A connection with a new message on every turn of the event loop."""

    def __init__(self) -> None:
        self.reads = 0

    async def next_message(self) -> Message:
        self.reads += 1
        await asyncio.sleep(0)  # the next one arrives with the loop's next turn
        return Message(topic="elsewhere/x", payload=b"{}")


async def _cancel_after(task: asyncio.Task[None], turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=GENEROUS_S)
    if not done:  # lost: stop it for good before failing
        while not task.done():
            task.cancel()
            await asyncio.sleep(0)
        pytest.fail(f"the view ran on after a cancellation {turns} loop turns in")
    assert task.cancelled(), task.exception()


@pytest.mark.parametrize("with_repair", [False, True])
async def test_one_cancellation_ends_the_view_at_any_point_of_its_read_loop(
        with_repair: bool) -> None:
    for turns in range(40):
        conn = AlwaysReady()
        model = fleet.FleetModel("dock/v1")
        transport = cast(PahoTransport, conn)
        requester = fleet._GapRequester(transport, model, 1.0) if with_repair else None
        task = asyncio.create_task(
            fleet._follow(transport, model, 0.01, lambda: None, requester))
        await _cancel_after(task, turns)
        assert conn.reads > 0 or turns == 0


async def test_one_cancellation_ends_the_settling_read_at_any_point() -> None:
    for turns in range(40):
        conn = AlwaysReady()
        task = asyncio.create_task(
            fleet._collect(cast(PahoTransport, conn), fleet.FleetModel("dock/v1"), 5.0))
        await _cancel_after(task, turns)
