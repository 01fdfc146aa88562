"""PublishDeadLetters: a written window's dead letters mirrored to the dead-letter topic.

The ``dead_letters`` table is the record, written in the window's transaction; the topic is for
alerting and replay tools, at least once: a window's offsets are committed only after its dead
letters were published, so a crash in between publishes them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from workers.stream.decode import DeadLetter
from workers.stream.messages import WrittenWindow
from workers.stream.step import Step, by_deadline

Publish = Callable[[Sequence[DeadLetter]], Awaitable[None]]


class PublishDeadLetters:
    def __init__(self, publish: Publish | None, next_step: Step[WrittenWindow]) -> None:
        self.publish = publish
        self.next_step = next_step
        self._written: list[WrittenWindow] = []

    def submit(self, message: WrittenWindow) -> None:
        self._written.append(message)

    def demand(self) -> int:
        return self.next_step.demand()

    async def poll(self, wait: float = 0.0) -> None:
        while self._written:
            written = self._written[0]
            if self.publish is not None and written.dead_letters:
                await self.publish(written.dead_letters)
            self.next_step.submit(self._written.pop(0))
        await self.next_step.poll()

    async def join(self, deadline: float | None) -> None:
        async with by_deadline(deadline):
            await self.poll()
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        self._written.clear()
        self.next_step.terminate()
