"""TumblingWindow: decoded events buffered until their window closes, then handed to the writer.

A window closes when its time is up (processing time), when it holds the size cap, or early
while a backlog drains (``workers.stream.catch_up``).  A closed window the writer cannot take
yet (``MessageRejected``: windows in flight at their limit) is kept and offered again on every
poll; meanwhile the chain's demand is zero, so the loop reads nothing more.
"""

from __future__ import annotations

import time

from workers.stream.catch_up import CatchUp
from workers.stream.messages import Decoded
from workers.stream.step import MessageRejected, Step, seconds_left
from workers.stream.window import WindowBuffer, WindowContents


class TumblingWindow:
    def __init__(
        self, buffer: WindowBuffer, catch_up: CatchUp, next_step: Step[WindowContents]
    ) -> None:
        self.buffer = buffer
        self.catch_up = catch_up
        self.next_step = next_step
        self._closed: WindowContents | None = None
        self._close_now = False

    def submit(self, message: Decoded) -> None:
        self.buffer.add(message.batch, message.next_offsets)
        if message.progress is not None:
            # After the batch is in: the rule compares what the window holds with what is left.
            self._close_now |= self.catch_up.close_now(message.progress.lag, self.buffer.events)

    def demand(self) -> int:
        return 0 if self._closed is not None else self.buffer.room()

    def seconds_left(self) -> float:
        """Until the filling window's time is up (its whole length while it is empty)."""
        return self.buffer.seconds_left()

    async def poll(self, wait: float = 0.0) -> None:
        if self._closed is None and (self._close_now or self.buffer.due()):
            self._close()
        self._hand_on()
        await self.next_step.poll(wait)
        self._hand_on()  # the poll may have made room

    async def join(self, deadline: float | None) -> None:
        if self._closed is None:
            self._close()
        self._hand_on()
        while self._closed is not None:
            left = seconds_left(deadline, time.monotonic())
            # Returns as soon as the oldest write in flight is done, which makes room.
            await self.next_step.poll(wait=1.0 if left is None else min(left, 1.0))
            self._hand_on()
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        self._closed = None
        self.buffer.drain()
        self.next_step.terminate()

    def _close(self) -> None:
        self._close_now = False
        contents = self.buffer.drain()
        if contents.next_offsets:
            self._closed = contents

    def _hand_on(self) -> None:
        if self._closed is None:
            return
        try:
            self.next_step.submit(self._closed)
        except MessageRejected:
            return
        self._closed = None
