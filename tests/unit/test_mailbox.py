"""The actor mailbox: FIFO, bounded, back-pressure on a full mailbox, one reader."""

from __future__ import annotations

import anyio
import pytest

from natsflow.actors.mailbox import Mailbox


async def test_fifo_bounded_and_back_pressure() -> None:
    box: Mailbox[int] = Mailbox(2)
    box.send_nowait(1)
    box.send_nowait(2)
    with pytest.raises(anyio.WouldBlock):
        box.send_nowait(3)
    sent: list[int] = []

    async def writer() -> None:
        await box.send(3)  # waits for room
        sent.append(3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        assert sent == []  # still blocked: the mailbox is full
        assert await box.receive() == 1
    assert sent == [3]
    assert [await box.receive(), await box.receive()] == [2, 3]
    with pytest.raises(anyio.WouldBlock):
        box.receive_nowait()


async def test_a_waiting_reader_is_woken_and_can_be_cancelled() -> None:
    box: Mailbox[str] = Mailbox(4)
    got: list[str] = []

    async def reader() -> None:
        got.append(await box.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        box.send_nowait("hello")
    assert got == ["hello"]

    with anyio.move_on_after(0.01):
        await box.receive()  # nothing comes: cancelled cleanly
    box.send_nowait("after")
    assert await box.receive() == "after"
