"""DecodeInSlices: released records decoded into rows, a slice at a time.

Each statement of a window's transaction waits for this process to send the next one, so a long
decode without a pause stalls the windows being written (docs/performance.md: slices of a
thousand records made window writes markedly shorter).  ``poll`` decodes a slice, hands it to
the window, and lets the event loop run the writes before the next slice.
"""

from __future__ import annotations

import asyncio
from collections import deque

from workers.clock import Clock
from workers.stream.decode import Decoder
from workers.stream.messages import Decoded, Released
from workers.stream.step import Step, by_deadline


class DecodeInSlices:
    def __init__(
        self, decoder: Decoder, clock: Clock, next_step: Step[Decoded], slice_records: int
    ) -> None:
        self.decoder = decoder
        self.clock = clock
        self.next_step = next_step
        self.slice_records = slice_records
        self._released: deque[Released] = deque()

    def submit(self, message: Released) -> None:
        self._released.append(message)

    def demand(self) -> int:
        return self.next_step.demand()

    async def poll(self, wait: float = 0.0) -> None:
        size = self.slice_records
        while self._released:
            released = self._released.popleft()
            records, now = released.records, self.clock.now()
            for start in range(0, max(len(records), 1), size):
                last = start + size >= len(records)
                self.next_step.submit(
                    Decoded(
                        self.decoder.decode(records[start : start + size], now),
                        released.next_offsets if last else {},
                        released.progress if last else None,
                    )
                )
                if not last:
                    await asyncio.sleep(0)
        await self.next_step.poll(wait)

    async def join(self, deadline: float | None) -> None:
        async with by_deadline(deadline):
            await self.poll()
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        self._released.clear()
        self.next_step.terminate()
