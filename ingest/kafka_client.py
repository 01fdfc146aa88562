"""How every Kafka client of feedbackflow connects, from one set of settings.

The SDK, the worker's consumer and producers, the gateway's publisher and the topic admin all
build their aiokafka clients from ``client_options``: the broker's address, TLS and SASL
(``FEEDBACKFLOW_KAFKA__*``), so a managed Kafka (MSK, Confluent Cloud, Aiven) is one set of
environment variables for every process.  ``ClientSettings`` is the part of the settings a
producing service needs; it reads the same environment as the worker (``workers.settings``
extends it) and lives here, with the base dependencies, so the SDK needs nothing more.

Idempotent producers need the broker's ``InitProducerId``.  Apache Kafka has it; the embedded
tansu broker answers it with an error, and aiokafka then fails every send with ``UnknownError``.
``producer_idempotence`` asks the broker once per process and address: with the default
``auto`` a broker without it gets producers without idempotence and ONE warning saying so;
with ``true`` it is an error that names the setting.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    for_code,
)
from aiokafka.protocol.transaction import InitProducerIdRequest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("feedbackflow.kafka")

ENV_PREFIX = "FEEDBACKFLOW_"
IDEMPOTENCE_SETTING = "FEEDBACKFLOW_KAFKA_IDEMPOTENCE"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
Idempotence = bool | Literal["auto"]


class KafkaSettings(BaseModel):
    """TLS, SASL and the topics' shape (``FEEDBACKFLOW_KAFKA__<KEY>``), for every connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: SecurityProtocol = "PLAINTEXT"
    # TLS: the CA that signed the brokers' certificates (unset: the system's CAs), and a client
    # certificate and key for mutual TLS.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    # PLAIN and SCRAM.
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # OAUTHBEARER: a file holding the current token, read at each authentication, so that
    # whatever renews it (a sidecar, a projected service-account token) needs no restart.
    sasl_oauth_token_file: Path | None = None
    # The topics `feedbackflow topics` and the worker create (both inputs alike: co-partitioned).
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"sasl_mechanism: required with security_protocol {self.security_protocol}"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(
                "sasl_mechanism: needs security_protocol SASL_SSL (or SASL_PLAINTEXT), "
                f"not {self.security_protocol}"
            )
        if self.sasl_mechanism == "OAUTHBEARER":
            if self.sasl_oauth_token_file is None:
                raise ValueError("sasl_oauth_token_file: required with OAUTHBEARER")
        elif self.sasl_mechanism is not None and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(f"sasl_username, sasl_password: required with {self.sasl_mechanism}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile, ssl_keyfile: give both (mutual TLS) or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


class ClientSettings(BaseSettings):
    """What a Kafka client needs, from ``FEEDBACKFLOW_*`` (the worker's ``Settings`` adds the
    rest).  Other ``FEEDBACKFLOW_*`` variables are ignored here: they are the worker's."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,
        frozen=True,
        extra="ignore",
    )

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=1)
    # ``auto``: idempotent when the broker takes it, else not, with one warning; ``true``:
    # required (an error naming this setting if the broker cannot); ``false``: off.
    kafka_idempotence: Idempotence = "auto"
    topic_prefix: str = Field(default="feedbackflow", pattern=r"^[A-Za-z0-9._-]+$")
    kafka: KafkaSettings = KafkaSettings()


def as_client_settings(given: str | ClientSettings) -> ClientSettings:
    """A bootstrap address alone means plaintext with the defaults (tests, the embedded stack);
    nothing is read from the environment for it."""
    if isinstance(given, ClientSettings):
        return given
    return ClientSettings.model_construct(
        kafka_bootstrap=given,
        kafka_idempotence="auto",
        topic_prefix="feedbackflow",
        kafka=KafkaSettings(),
    )


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER's token, read from a file each time a connection authenticates."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def token(self) -> str:
        return (await asyncio.to_thread(self.path.read_text, encoding="utf-8")).strip()


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None and kafka.ssl_keyfile is not None:
        password = kafka.ssl_key_password
        context.load_cert_chain(
            str(kafka.ssl_certfile),
            str(kafka.ssl_keyfile),
            password.get_secret_value() if password else None,
        )
    return context


def client_options(given: str | ClientSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client takes (producer, consumer, admin, client)."""
    settings = as_client_settings(given)
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.tls:
        options["ssl_context"] = tls_context(kafka)
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_mechanism == "OAUTHBEARER" and kafka.sasl_oauth_token_file is not None:
        options["sasl_oauth_token_provider"] = TokenFile(kafka.sasl_oauth_token_file)
    elif kafka.sasl_mechanism is not None:
        options["sasl_plain_username"] = kafka.sasl_username
        password = kafka.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


class KafkaUnsupported(RuntimeError):
    """The broker lacks what a setting asks for; the message names the setting."""


# Per bootstrap address, whether its brokers take idempotent producers: asked once a process.
_TAKES_IDEMPOTENT: dict[str, tuple[bool, str]] = {}
_TRANSIENT = (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError)


async def _ask_init_producer_id(settings: ClientSettings) -> tuple[bool, str]:
    """Whether a broker grants a producer id (what an idempotent producer asks first), and the
    error it answered if not.  Connection errors propagate: the caller retries those."""
    client = AIOKafkaClient(**client_options(settings))
    try:
        await client.bootstrap()
        for _ in range(10):
            response = await client.send(
                client.get_random_node(),
                InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
            )
            error = for_code(response.error_code)
            if response.error_code == 0:
                return True, ""
            if not issubclass(error, _TRANSIENT):
                return False, error.__name__
            await asyncio.sleep(0.2)
        return False, error.__name__
    finally:
        await client.close()


async def producer_idempotence(given: str | ClientSettings) -> bool:
    """Whether producers of these settings are idempotent (see the module's docstring)."""
    settings = as_client_settings(given)
    wanted = settings.kafka_idempotence
    if wanted is False:
        return False
    address = settings.kafka_bootstrap
    if address not in _TAKES_IDEMPOTENT:
        _TAKES_IDEMPOTENT[address] = await _ask_init_producer_id(settings)
        supported, answer = _TAKES_IDEMPOTENT[address]
        if not supported and wanted == "auto":
            log.warning(
                "Kafka at %s does not take idempotent producers (InitProducerId answered %s): "
                "producing without idempotence, so a retried send may reach the topic twice "
                "(the worker stores it once). Set %s=false to say so and skip this check.",
                address,
                answer,
                IDEMPOTENCE_SETTING,
            )
    supported, answer = _TAKES_IDEMPOTENT[address]
    if not supported and wanted is True:
        raise KafkaUnsupported(
            f"Kafka at {address} does not take idempotent producers (InitProducerId answered "
            f"{answer}), which {IDEMPOTENCE_SETTING}=true requires: set it to auto or false"
        )
    return supported


def new_producer(
    given: str | ClientSettings, *, idempotent: bool, **options: Any
) -> AIOKafkaProducer:
    """A producer (``acks=all``) on these settings' connection; ``options`` are aiokafka's."""
    return AIOKafkaProducer(
        **client_options(given), enable_idempotence=idempotent, acks="all", **options
    )


async def start_producer(given: str | ClientSettings, **options: Any) -> AIOKafkaProducer:
    """A started producer, idempotent when the settings and the broker allow."""
    producer = new_producer(given, idempotent=await producer_idempotence(given), **options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
