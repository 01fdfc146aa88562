"""Every Kafka connection's options come from one place (ingest.kafka_client): TLS and SASL from
``FEEDBACKFLOW_KAFKA__*``, and mistakes in them named before anything connects."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ingest import kafka_client
from ingest.kafka_client import ClientSettings, KafkaSettings, TokenFile, client_options
from tests.unit.certificates import self_signed_certificate


def _settings(**kafka: Any) -> ClientSettings:
    return ClientSettings(kafka_bootstrap="broker:9093", kafka=KafkaSettings(**kafka))


def test_plaintext_by_default_with_nothing_else() -> None:
    assert client_options(_settings()) == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_gets_the_mechanism_the_user_and_a_context_trusting_the_ca(
    mechanism: str, tmp_path: Path
) -> None:
    ca = self_signed_certificate(tmp_path)
    options = client_options(
        _settings(
            security_protocol="SASL_SSL",
            ssl_cafile=ca.cert,
            sasl_mechanism=mechanism,
            sasl_username="svc",
            sasl_password="s3cret",
        )
    )
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ffca"),),)]
    assert options == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    pair = self_signed_certificate(tmp_path)
    options = client_options(
        _settings(security_protocol="SSL", ssl_certfile=pair.cert, ssl_keyfile=pair.key)
    )
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


async def test_oauthbearer_reads_the_token_file_at_each_authentication(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    options = client_options(
        _settings(
            security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file=token
        )
    )
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, TokenFile)
    assert await provider.token() == "first"
    token.write_text("renewed")
    assert await provider.token() == "renewed"


@pytest.mark.parametrize(
    ("kafka", "named"),
    [
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism: required"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "sasl_username"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "sasl_oauth_token_file",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": "c.pem"}, "ssl_keyfile"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_a_bad_security_setting_is_named(kafka: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        KafkaSettings(**kafka)


def test_the_environment_sets_security_for_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": "b-1.msk:9096",
        "FEEDBACKFLOW_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "FEEDBACKFLOW_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "FEEDBACKFLOW_KAFKA__SASL_USERNAME": "feedbackflow",
        "FEEDBACKFLOW_KAFKA__SASL_PASSWORD": "pw",
        "FEEDBACKFLOW_KAFKA__PARTITIONS": "12",
        "FEEDBACKFLOW_KAFKA__REPLICATION_FACTOR": "3",
        "FEEDBACKFLOW_DATABASE_URL": "postgresql://elsewhere/db",  # the worker's, ignored here
    }.items():
        monkeypatch.setenv(name, value)
    settings = ClientSettings()
    assert (settings.kafka.partitions, settings.kafka.replication_factor) == (12, 3)
    options = client_options(settings)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "pw"
    assert "ssl_context" in options


async def test_explicit_idempotence_on_a_broker_without_it_is_an_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuses(settings: ClientSettings) -> tuple[bool, str]:
        return False, "UnknownError"

    monkeypatch.setattr(kafka_client, "_TAKES_IDEMPOTENT", {})
    monkeypatch.setattr(kafka_client, "_ask_init_producer_id", refuses)
    required = ClientSettings(kafka_bootstrap="tansu:9092", kafka_idempotence=True)
    with pytest.raises(kafka_client.KafkaUnsupported, match="FEEDBACKFLOW_KAFKA_IDEMPOTENCE"):
        await kafka_client.producer_idempotence(required)
    auto = required.model_copy(update={"kafka_idempotence": "auto"})
    assert await asyncio.gather(*(kafka_client.producer_idempotence(auto) for _ in range(2))) == [
        False,
        False,
    ]
