"""PublishDeadLetters: a written window's dead letters mirrored to the dead-letter topic.

The ``dead_letters`` table is the record, written in the window's transaction, whole; the topic
is for alerting and replay tools, at least once: a window's offsets are committed only after its
dead letters were published, so a crash in between publishes them again.

Publishing never holds the offsets for ever.  While the broker is away the window waits here
and the next poll tries again (its offsets could not be committed meanwhile anyway); an error
that no retry can mend (a topic that refuses the record) is counted and logged, and the window
goes on: its dead letters are in the table.  The publisher itself keeps every record within the
broker's size limit (``dead_letter_record``), so one large bad event cannot be that error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka.errors import KafkaError, KafkaTimeoutError

from workers.health import PipelineHealth
from workers.stream.decode import DeadLetter
from workers.stream.messages import WrittenWindow
from workers.stream.step import Step, by_deadline
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

Publish = Callable[[Sequence[DeadLetter]], Awaitable[None]]

# A dead letter's record on its topic stays within what the producer may send, whatever the
# event was: a 1.5 MB bad event used to fail its publish for ever (the table keeps it whole).
DEAD_LETTER_RECORD_BYTES = 900 * 1024
RECORD_OVERHEAD_BYTES = 100 * 1024  # key (truncated below), headers, batch framing
DEAD_LETTER_KEY_BYTES = 16 * 1024
DEAD_LETTER_REASON_BYTES = 4096


def dead_letter_record(
    dead: DeadLetter,
) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """The dead-letter topic's record of ``dead``: the payload as far as it fits, and headers
    that say what it was, where it came from, and whether it was cut."""
    payload, key = dead.payload, dead.message_key
    headers = [
        ("feedbackflow-error-field", dead.error_field.encode()[:DEAD_LETTER_REASON_BYTES]),
        ("feedbackflow-reason", dead.reason.encode()[:DEAD_LETTER_REASON_BYTES]),
        (
            "feedbackflow-source",
            f"{dead.topic}/{dead.kafka_partition}/{dead.kafka_offset}".encode(),
        ),
    ]
    if len(payload) > DEAD_LETTER_RECORD_BYTES or (key and len(key) > DEAD_LETTER_KEY_BYTES):
        headers.append(("feedbackflow-truncated", f"payload {len(payload)} bytes".encode()))
        payload = payload[:DEAD_LETTER_RECORD_BYTES]
        key = key[:DEAD_LETTER_KEY_BYTES] if key else key
    return payload, key, headers


# How long one window's dead letters may take to publish before the next poll tries again.
PUBLISH_TIMEOUT_SECONDS = 10.0


class PublishDeadLetters:
    def __init__(
        self,
        publish: Publish | None,
        next_step: Step[WrittenWindow],
        health: PipelineHealth | None = None,
        telemetry: WorkerTelemetry | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publish = publish
        self.telemetry = telemetry
        self.next_step = next_step
        self.health = health or PipelineHealth()
        self.monotonic = monotonic
        self._written: list[WrittenWindow] = []
        self._retry_at = 0.0
        self._delay = 0.5

    def submit(self, message: WrittenWindow) -> None:
        self._written.append(message)

    def demand(self) -> int:
        return self.next_step.demand()

    async def poll(self, wait: float = 0.0) -> None:
        while self._written and self.monotonic() >= self._retry_at:
            dead_letters = self._written[0].dead_letters
            if (
                dead_letters
                and self.publish is not None
                and not await self._published(dead_letters)
            ):
                break
            self.next_step.submit(self._written.pop(0))
        await self.next_step.poll()

    async def _published(self, dead_letters: Sequence[DeadLetter]) -> bool:
        """Whether the window may go on: published, or refused for good."""
        assert self.publish is not None
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await self.publish(dead_letters)
        except KafkaError as exc:
            if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
                log.error(
                    "dead letters not published to their topic (they are in the table): %r", exc
                )
                self.telemetry_unpublished(len(dead_letters))
                self.health.working("dead-letter topic")
                return True
            self._wait_for_the_broker(exc)
            return False
        except (TimeoutError, OSError) as exc:
            self._wait_for_the_broker(exc)
            return False
        self.health.working("dead-letter topic")
        self._delay = 0.5
        return True

    def _wait_for_the_broker(self, exc: BaseException) -> None:
        self.health.failing("dead-letter topic", repr(exc))
        self._retry_at = self.monotonic() + self._delay
        self._delay = min(self._delay * 2, 10.0)

    def telemetry_unpublished(self, count: int) -> None:
        if self.telemetry is not None:
            self.telemetry.dead_letters_unpublished.inc(count)

    async def join(self, deadline: float | None) -> None:
        async with by_deadline(deadline):
            await self.poll()
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        self._written.clear()
        self.next_step.terminate()
