"""A window the sink refuses for its data is split until the rows at fault are found: they become
dead letters with the sink's own words, and everything else is written."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.fakes import TOPICS, TP, FakeConsumer, MemorySink, loop_over, run_until_all_committed
from workers.stream.decode import Decoder
from workers.stream.refusals import UNKNOWN_PARTITION, write_isolating_refusals
from workers.stream.sink import SinkRefused, WindowOutcome
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic
from workers.testing.traffic import Record, prediction_payload


@dataclass
class RefusingSink(MemorySink):
    """Refuses any window holding a prediction of application ``poison`` (as a CHECK would)."""

    writes: int = 0
    resolved_after: list[str] = field(default_factory=list)

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        self.writes += 1
        if any(p.application == "poison" for p in contents.predictions):
            raise SinkRefused('new row violates check constraint "no_poison"', "application")
        return await super().write(contents, now, resolve_after)


def _window(predictions: int, poison_at: set[int]) -> WindowContents:
    rng, now_ms = random.Random(2), int(time.time() * 1000)
    records = []
    for i in range(predictions):
        _, value = prediction_payload(rng, now_ms)
        if i in poison_at:
            value = value.replace(b'"generate_haiku"', b'"poison"')
        records.append(Record(TOPICS.predictions, 0, i, now_ms, None, value))
    decoder = Decoder(traffic.registry(), TOPICS, traffic.RETENTION)
    buffer = WindowBuffer(length_seconds=1, max_events=10**6, monotonic=time.monotonic)
    buffer.add(decoder.decode(records, datetime.now(UTC)), {TP(TOPICS.predictions, 0): predictions})
    return buffer.drain()


async def test_the_refused_rows_become_dead_letters_and_the_rest_is_written() -> None:
    sink = RefusingSink()
    contents = _window(200, poison_at={3, 77, 150})

    async def write(
        part: WindowContents, after: Callable[[], Awaitable[object]] | None
    ) -> WindowOutcome:
        return await sink.write(part, datetime.now(UTC), after)

    outcome, refused = await write_isolating_refusals(
        write, contents, None, TOPICS, datetime.now(UTC)
    )
    assert outcome.predictions_inserted == 197
    assert len(sink.prediction_ids) == 197
    assert sorted(d.kafka_offset for d in refused) == sorted(
        contents.predictions[i].prediction_id.int & ((1 << 63) - 1) for i in (3, 77, 150)
    )
    assert {(d.topic, d.kafka_partition, d.error_field) for d in refused} == {
        (TOPICS.predictions, UNKNOWN_PARTITION, "application")
    }
    assert all("no_poison" in d.reason and b'"poison"' in d.payload for d in refused)
    assert outcome.dead_letters_inserted == 3  # the dead letters are written, with the rest
    # About log2(200) writes for each bad row, not one per row.
    assert sink.writes < 3 * 2 * 9


async def test_a_window_without_refusals_is_written_once() -> None:
    sink = RefusingSink()

    async def write(
        part: WindowContents, after: Callable[[], Awaitable[object]] | None
    ) -> WindowOutcome:
        return await sink.write(part, datetime.now(UTC), after)

    outcome, refused = await write_isolating_refusals(
        write, _window(50, poison_at=set()), None, TOPICS, datetime.now(UTC)
    )
    assert (outcome.predictions_inserted, refused, sink.writes) == (50, [], 1)


async def test_through_the_loop_a_refused_row_neither_stops_the_partition_nor_is_lost() -> None:
    """Offsets go past the refused row, its dead letter is counted, the next window flows."""
    rng, now_ms = random.Random(3), int(time.time() * 1000)
    batches = []
    for w in range(2):
        batch = []
        for i in range(5):
            _, value = prediction_payload(rng, now_ms)
            if (w, i) == (0, 2):
                value = value.replace(b'"generate_haiku"', b'"poison"')
            batch.append(Record(TOPICS.predictions, 0, w * 5 + i, now_ms, None, value))
        batches.append(batch)
    consumer, sink = FakeConsumer(batches), RefusingSink()
    loop = loop_over(consumer, sink, per_window=5)
    await run_until_all_committed(loop, consumer)
    assert len(sink.prediction_ids) == 9
    assert consumer.commits[-1] == {TP(TOPICS.predictions, 0): 10}
    dead = loop.telemetry.dead_letters.labels(TOPICS.predictions, "application")
    assert dead._value.get() == 1
    assert loop.telemetry.windows.labels("split")._value.get() == 1


def test_outcomes_add_up() -> None:
    a = WindowOutcome(1, 2, 3, Counter(joined=1), 4, 5)
    b = WindowOutcome(10, 20, 30, Counter(joined=2, expired=1), 40, 50)
    assert a.plus(b) == WindowOutcome(11, 22, 33, Counter(joined=3, expired=1), 44, 55)


async def test_a_refused_dead_letter_is_kept_without_its_payload() -> None:
    writes: list[WindowContents] = []

    async def write(
        part: WindowContents, after: Callable[[], Awaitable[object]] | None
    ) -> WindowOutcome:
        if any(d.payload for d in part.dead_letters):
            raise SinkRefused("payload too large")
        writes.append(part)
        return WindowOutcome(0, 0, len(part.dead_letters), Counter(), 0)

    records = [Record(TOPICS.feedback, 0, 0, int(time.time() * 1000), b"k", b"{not json")]
    decoder = Decoder(traffic.registry(), TOPICS, traffic.RETENTION)
    batch = decoder.decode(records, datetime.now(UTC))
    contents = WindowContents([], [], batch.dead_letters, {}, 1)
    outcome, refused = await write_isolating_refusals(
        write, contents, None, TOPICS, datetime.now(UTC)
    )
    assert (outcome.dead_letters_inserted, refused) == (1, [])
    (kept,) = writes[0].dead_letters
    assert kept.payload == b""
    assert "payload refused by the database" in kept.reason
