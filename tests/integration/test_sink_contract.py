"""One contract, two sinks: the in-memory fake the unit tests use and the real PostgresSink.

What the chain relies on of a sink is written once here and run against both (arroyo runs one
suite against its local and its Kafka backends), so a test that passes with the fake proves as
much as this suite reaches of the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from ingest.topics import TopicNames
from tests.fakes import MemorySink
from workers.postgres.sink import PostgresSink
from workers.stream.decode import Decoder
from workers.stream.sink import Sink
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("contract-test")
RETENTION = timedelta(days=90)


@pytest.fixture(params=["memory", "postgres"])
async def sink(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Sink]:
    real: Sink = (
        MemorySink() if request.param == "memory" else PostgresSink(database_url, RETENTION)
    )
    try:
        yield real
    finally:
        await real.close()


def _window(events: int = 300, seed: int = 3) -> WindowContents:
    """Predictions, feedback for some of them, and one message that is not JSON."""
    messages = data.generate(events, seed=seed).messages
    records = data.as_records(messages, TOPICS)
    records.append(data.Record(TOPICS.feedback, 0, len(records), records[0].timestamp, b"k", b"{"))
    batch = Decoder(data.registry(), TOPICS, RETENTION).decode(records, datetime.now(UTC))
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**6, monotonic=lambda: 0.0)
    buffer.add(batch, {(TOPICS.feedback, 0): len(records)})
    return buffer.drain()


async def test_a_window_is_written_whole(sink: Sink) -> None:
    contents = _window()
    outcome = await sink.write(contents, datetime.now(UTC))
    assert outcome.predictions_inserted == len(contents.predictions) > 0
    assert outcome.feedback_inserted == len(contents.feedback) > 0
    assert outcome.dead_letters_inserted == len(contents.dead_letters) == 1


async def test_a_replayed_window_changes_nothing(sink: Sink) -> None:
    contents = _window()
    await sink.write(contents, datetime.now(UTC))
    replay = await sink.write(contents, datetime.now(UTC))
    assert (replay.predictions_inserted, replay.feedback_inserted) == (0, 0)
    assert replay.dead_letters_inserted == 0


async def test_a_window_overlapping_an_earlier_one_inserts_only_what_is_new(sink: Sink) -> None:
    first, second = _window(seed=3), _window(seed=4)
    await sink.write(first, datetime.now(UTC))
    both = WindowContents(
        first.predictions + second.predictions,
        first.feedback + second.feedback,
        [],
        {},
        first.events + second.events,
    )
    outcome = await sink.write(both, datetime.now(UTC))
    assert outcome.predictions_inserted == len(second.predictions)
    assert outcome.feedback_inserted == len(second.feedback)


async def test_resolution_waits_for_what_the_writer_says(sink: Sink) -> None:
    awaited: list[str] = []

    async def window_before_committed() -> None:
        awaited.append("the window before")

    await sink.write(_window(), datetime.now(UTC), window_before_committed)
    assert awaited == ["the window before"]
