"""Kafka over TLS for real: the SDK and the worker, configured only through the
``FEEDBACKFLOW_KAFKA__*`` settings, reach a broker that listens only on TLS (a TLS listener in
front of tansu, which serves none), verify its certificate against the CA they are given, and
what they send lands joined in Postgres.  A client without the CA is refused."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from ingest.kafka_client import KafkaSettings
from ingest.sdk.producer import FeedbackflowProducer
from ingest.topics import TopicNames, create_topics
from tests.faults.servers import broker_behind_proxy
from tests.integration.harness import (
    isolated_settings,
    metric_registry,
    running_worker,
    wait_for_count,
)
from tests.unit.certificates import self_signed_certificate


async def test_the_sdk_and_the_worker_speak_tls_to_the_broker_and_verify_it(
    database_url: str, db: asyncpg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = self_signed_certificate(tmp_path)
    cert, key = pair.cert, pair.key
    listener = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    listener.load_cert_chain(cert, key)
    async with broker_behind_proxy(tls=listener) as (_proxy, bootstrap):
        tls = KafkaSettings(security_protocol="SSL", ssl_cafile=cert)
        settings = isolated_settings(bootstrap, database_url).model_copy(update={"kafka": tls})
        await create_topics(settings, TopicNames(settings.topic_prefix))
        async with running_worker(settings, metric_registry()):
            async with FeedbackflowProducer(settings=settings) as producer:
                prediction = await producer.log_prediction(
                    application="secure", join_key="tls-1", outputs={"text": "hi"}
                )
                await producer.log_feedback(metric="haiku_rating", join_key="tls-1", value=True)
            await wait_for_count(
                db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
            )
        # Without the CA, the client refuses the broker's certificate: TLS is really checked.
        untrusting = settings.model_copy(update={"kafka": KafkaSettings(security_protocol="SSL")})
        with pytest.raises(KafkaConnectionError):
            async with FeedbackflowProducer(settings=untrusting) as producer:
                await producer.log_feedback(
                    metric="haiku_rating", join_key=f"tls-{uuid.uuid4()}", value=True
                )
    stored = await db.fetchval(
        "SELECT prediction_id FROM feedbackflow.feedback WHERE join_key = 'tls-1'"
    )
    assert stored == prediction.prediction_id
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
