"""What the steps hand each other, from the fetch to the commit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.stream.decode import DeadLetter, DecodedBatch, KafkaRecord
from workers.stream.sink import WindowOutcome

# aiokafka's TopicPartition, kept abstract so that the steps are testable without Kafka.
Partition = Any


@dataclass(frozen=True)
class Progress:
    """Where the consumer stood on its assigned partitions right after a fetch."""

    positions: Mapping[Partition, int]
    highwaters: Mapping[Partition, int | None]

    def read_to_the_end(self, tp: Partition) -> bool:
        """Whether ``tp`` has been read to its end, or is not this worker's (then there is
        nothing to wait for).  Before the first fetch of a partition its end is unknown."""
        if tp not in self.highwaters or tp not in self.positions:
            return True
        highwater = self.highwaters[tp]
        return highwater is not None and self.positions[tp] >= highwater

    @property
    def lag(self) -> int | None:
        """Records not read yet on the assigned partitions; None while an end is unknown."""
        lag = 0
        for tp, highwater in self.highwaters.items():
            position = self.positions.get(tp)
            if highwater is None or position is None:
                return None
            lag += max(highwater - position, 0)
        return lag


NO_PROGRESS = Progress({}, {})


@dataclass(frozen=True)
class Fetched:
    """One fetch: records by partition, in offset order.  Loop → hold back."""

    records: Mapping[Partition, list[KafkaRecord]]
    progress: Progress


@dataclass(frozen=True)
class Released:
    """Records handed on in each partition's order, and the offset after the last of each.
    Hold back → decode."""

    records: list[KafkaRecord]
    next_offsets: dict[Partition, int]
    progress: Progress


@dataclass(frozen=True)
class Decoded:
    """Rows and dead letters of released records.  Decode → window.  A release decoded in
    slices hands on its offsets and progress with its last slice only."""

    batch: DecodedBatch
    next_offsets: dict[Partition, int]
    progress: Progress | None


@dataclass(frozen=True)
class WrittenWindow:
    """A window whose transaction has committed.  Writer → dead letters → commit offsets.
    Its rows are not kept: they are in Postgres, and memory is bounded by the windows that are
    being filled or written, not by those waiting for their offsets to be committed."""

    next_offsets: dict[Partition, int]
    events: int
    dead_letters: list[DeadLetter]
    outcome: WindowOutcome
    seconds: float
