"""The worker's consumer tuning reaches aiokafka's fetcher (a private attribute: an aiokafka
upgrade that renames it must fail here, not silently bring back 100 ms fetch stalls)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.topics import TopicNames, create_topics
from workers.devstack.servers import TansuBroker
from workers.host.worker import PREFETCH_BACKOFF_SECONDS, refetch_drained_partitions_sooner


async def test_the_fetcher_refetches_drained_partitions_after_the_worker_backoff(
    kafka: TansuBroker,
) -> None:
    topics = TopicNames(f"t{uuid.uuid4().hex[:10]}")
    await create_topics(kafka.bootstrap, topics, partitions=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await consumer.start()
    consumer.assign([TopicPartition(topics.predictions, 0)])
    try:
        assert consumer._fetcher._prefetch_backoff == 0.1  # aiokafka's own, unconfigurable
        refetch_drained_partitions_sooner(consumer)
        assert consumer._fetcher._prefetch_backoff == PREFETCH_BACKOFF_SECONDS
        assert await consumer.getmany(timeout_ms=200) == {}  # and it still fetches
    finally:
        await consumer.stop()
