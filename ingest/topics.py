"""Topic names and their creation: both input topics get the same partition count.

Co-partitioned topics put a prediction and its feedback on the same partition number.  The
partition count and replication factor are settings (``FEEDBACKFLOW_KAFKA__PARTITIONS``,
``__REPLICATION_FACTOR``); ``feedbackflow topics`` creates the topics or checks them, for
clusters that do not let clients create topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ingest.kafka_client import ClientSettings, as_client_settings, client_options


@dataclass(frozen=True)
class TopicNames:
    prefix: str = "feedbackflow"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}.predictions"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}.feedback"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.predictions, self.feedback)

    @property
    def all(self) -> tuple[str, str, str]:
        return (*self.inputs, self.dead_letter)


async def create_topics(
    connection: str | ClientSettings,
    topics: TopicNames,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create the three topics if missing; return the names created now.  The partition count
    and replication factor are the settings' unless given."""
    kafka = as_client_settings(connection).kafka
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions or kafka.partitions,
                replication_factor=replication_factor or kafka.replication_factor,
            )
            for name in topics.all
            if name not in existing
        ]
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created


async def topic_problems(connection: str | ClientSettings, topics: TopicNames) -> list[str]:
    """What is wrong with the existing topics, one line each: missing, or input topics whose
    partition counts differ (they must be co-partitioned)."""
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topics.all if name not in existing]
        present = [name for name in topics.inputs if name in existing]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    problems = [f"{name}: missing" for name in missing]
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        problems.append(f"input topics have different partition counts ({listed}): they must match")
    return problems
