"""The chain of steps, built anew for every assignment of partitions (arroyo's factory).

hold back → decode → window → write → dead letters → commit offsets.  Each step knows only the
next; what they share (the sink, the telemetry, the clock) is long-lived and passed in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from workers.clock import Clock
from workers.health import PipelineHealth
from workers.settings import PipelineSettings
from workers.stream.catch_up import CatchUp
from workers.stream.commit_offsets import CommitOffsets, OffsetCommitter
from workers.stream.dead_letters import Publish, PublishDeadLetters
from workers.stream.decode import Decoder, KafkaRecord
from workers.stream.decoding import DecodeInSlices
from workers.stream.hold_back import FeedbackHoldBack, HoldBackStep
from workers.stream.sink import Sink
from workers.stream.tumbling_window import TumblingWindow
from workers.stream.unknown_metrics import RecheckUnknownMetrics
from workers.stream.window import WindowBuffer
from workers.stream.window_writer import Retry, WindowWriter
from workers.telemetry import WorkerTelemetry


@dataclass(frozen=True)
class Chain:
    """The first step, which the loop submits to and polls, and the window, whose time left
    bounds how long a fetch may wait."""

    head: HoldBackStep
    window: TumblingWindow


@dataclass(frozen=True)
class ChainParts:
    """What every chain of one worker shares."""

    consumer: OffsetCommitter
    decoder: Decoder
    sink: Sink
    publish_dead_letters: Publish | None
    clock: Clock
    telemetry: WorkerTelemetry
    pipeline: PipelineSettings
    partition_of: Callable[[str, int], object]
    health: PipelineHealth = field(default_factory=PipelineHealth)
    # The back-off of window writes (attempts from the settings); tests make it short.
    retry_delays: tuple[float, float] = (Retry.first_delay, Retry.max_delay)
    monotonic: Callable[[], float] = time.monotonic
    # Re-reads the metrics defined at run time (workers.postgres.metric_definitions); with it,
    # feedback for a metric defined a moment ago is decoded again instead of dead-lettered.
    refresh_metrics: Callable[[], Awaitable[object]] | None = None

    def build(self) -> Chain:
        pipeline, topics = self.pipeline, self.decoder.topics
        commit = CommitOffsets(self.consumer, self.telemetry, self.health)
        dead_letters = PublishDeadLetters(
            self.publish_dead_letters, commit, self.health, self.telemetry
        )
        writer = WindowWriter(
            self.sink,
            dead_letters,
            self.clock,
            self.telemetry,
            max_in_flight=pipeline.windows_in_flight,
            retry=Retry(pipeline.write_attempts, *self.retry_delays),
            topics=topics,
            health=self.health,
            recheck=None
            if self.refresh_metrics is None
            else RecheckUnknownMetrics(self.decoder, self.refresh_metrics),
        )
        buffer = WindowBuffer(
            length_seconds=pipeline.window.total_seconds(),
            max_events=pipeline.max_window_events,
            monotonic=self.monotonic,
        )
        window = TumblingWindow(buffer, CatchUp(pipeline.max_window_events), writer)
        decode = DecodeInSlices(self.decoder, self.clock, window, pipeline.decode_slice_records)
        hold_back: FeedbackHoldBack[KafkaRecord] = FeedbackHoldBack(
            topics.predictions,
            topics.feedback,
            partition_of=self.partition_of,
            max_held=pipeline.max_window_events,
            max_wait_seconds=pipeline.hold_back_seconds,
            monotonic=self.monotonic,
        )
        return Chain(HoldBackStep(hold_back, decode), window)
