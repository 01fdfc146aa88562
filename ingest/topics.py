"""Topic names and their creation: both input topics get the same partition count.

Co-partitioned topics put a prediction and its feedback on the same partition number.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


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


async def create_topics(
    bootstrap: str, topics: TopicNames, partitions: int = 4, replication_factor: int = 1
) -> list[str]:
    """Create the three topics if missing; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name in (*topics.inputs, topics.dead_letter)
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
