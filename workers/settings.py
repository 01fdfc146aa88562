"""Settings: one typed, frozen object for every process (pydantic-settings).

Precedence, highest first: a CLI flag, a ``FEEDBACKFLOW_*`` environment variable (nested with
``__``: ``FEEDBACKFLOW_PIPELINE__WINDOW=1s``), the ``[pipeline]`` table of the config file
(``feedbackflow.toml``, which also declares the metrics: ``ingest.metrics``), then the defaults
here.  The metric config says *what* is measured; these say *where* things run and *how*.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingest.kafka_client import ENV_PREFIX, ClientSettings

__all__ = [
    "ENV_PREFIX",
    "GatewaySettings",
    "PipelineSettings",
    "Settings",
    "describe_duration",
    "parse_duration",
]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """``"5m"``, ``"1s"``, ``"90d"``, ``"250ms"`` (or a timedelta); positive."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a duration like '5m', '1s', '90d' or '250ms'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def describe_duration(value: timedelta) -> str:
    """The shortest spelling ``parse_duration`` reads back: ``5m``, ``1s``, ``90d``, ``250ms``."""
    millis = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


class PipelineSettings(BaseModel):
    """How the worker windows and writes (``[pipeline]``), and the tunables of its hot path.

    The tunables' defaults were measured (docs/performance.md); they are settings so that an
    operator can change one without a release, not because they need changing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Duration = timedelta(minutes=5)
    retention: Duration = timedelta(days=90)
    # A window also closes when it holds this many events: memory is bounded by it.
    max_window_events: int = Field(default=50_000, gt=0)
    # Windows written at once, each on its own Postgres connection.  Memory holds the filling
    # window plus these; two let Postgres use two cores while the worker decodes.  Not three:
    # the window buffer drops ids of the one window before it, the only one that may be
    # uncommitted while the next is written.
    windows_in_flight: Literal[1, 2] = 2
    # Records asked for in one fetch.
    fetch_max_records: int = Field(default=10_000, gt=0)
    # Records decoded between two turns of the event loop (workers.stream.decoding).
    decode_slice_records: int = Field(default=1_000, gt=0)
    # The longest feedback waits for its predictions partition (workers.stream.hold_back) is a
    # window, but never less than this: the wait's clock also runs while the loop is held up by
    # writes in flight, and with 1 s windows feedback gave up waiting too soon (measured).
    hold_back_min_seconds: float = Field(default=30.0, ge=0)
    # Attempts at a window write while the database is unavailable, with back-off; 0 is for as
    # long as it takes (the window waits, bounded, and /health says why).
    write_attempts: int = Field(default=0, ge=0)
    # How long a partition revocation may spend writing what was read before the partitions
    # move; past it the windows are abandoned uncommitted (the new owner's replay is a no-op).
    revoke_flush_seconds: float = Field(default=20.0, gt=0)
    # Tag keys feedback may select predictions by (a tag selector, log10's
    # completion_tags_selector).  The worker indexes these keys' tags as it writes predictions
    # (feedbackflow.prediction_tags), so that a selector reaches its predictions without reading
    # every prediction; other keys cost nothing.  A selector needs an item on one of them.
    selectable_tags: tuple[str, ...] = ()
    # How often the worker expires pending feedback and drops day partitions past retention.
    retention_every_seconds: float = Field(default=3600.0, gt=0)

    @property
    def hold_back_seconds(self) -> float:
        return max(self.window.total_seconds(), self.hold_back_min_seconds)


Scope = Literal["predictions", "feedback", "admin"]


class GatewaySettings(BaseModel):
    """The HTTP gateway (``feedbackflow api``, ``ingest.gateway``): who may write, and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Off only when said so (the demo and dev stack do): anyone who reaches the port may write.
    # The gateway logs it loudly at start.
    auth: bool = True
    # Signs and checks end-user feedback tokens (HS256 JWTs); unset, tokens are refused.
    token_secret: SecretStr | None = Field(default=None)
    # How long a minted end-user token lasts unless the request asks for less.
    token_ttl_seconds: int = Field(default=86_400, gt=0, le=90 * 86_400)
    # How long an API key's look-up is trusted: a revoked key stops working within this.
    key_cache_seconds: float = Field(default=2.0, ge=0)
    # Browser origins allowed to post feedback (end-user tokens), e.g. https://app.example.com.
    cors_origins: list[str] = Field(default_factory=list)
    # A request body larger than this is refused (413) before it is read whole.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # One event's encoded size at most: Apache Kafka's default message.max.bytes is 1 MB.
    max_event_bytes: int = Field(default=1_000_000, gt=0)
    # Items (predictions and feedback together) one POST /v1/batch may carry.
    max_batch_items: int = Field(default=1_000, gt=0)
    # How long the producer holds a request's event for others to share its produce request:
    # concurrent requests then cost the broker and the gateway one round trip, not one each.
    linger_ms: int = Field(default=2, ge=0, le=100)
    # How long a request waits for the broker's ack before answering 503 with Retry-After.
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long an Idempotency-Key is remembered: a retry within it gets the first answer.
    idempotency_seconds: float = Field(default=86_400.0, gt=0)
    # An MLflow assessment name the metric config does not declare: defined at run time as an
    # untyped (json) metric when false, refused (400, naming the known metrics) when true.
    strict_metrics: bool = False


class Settings(ClientSettings):
    """Every process's settings: the Kafka client's (``ingest.kafka_client``: the address,
    TLS, SASL, idempotence, the topics), and the rest here."""

    # The rest of the configuration (environment prefix, nesting) is ClientSettings'.
    model_config = SettingsConfigDict(extra="forbid")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # The config file: [metrics.*] for ingest.metrics, [pipeline] for ``pipeline`` below.
    config: Path = Path("feedbackflow.toml")
    # How often worker and gateway re-read the metrics defined at run time (stored in Postgres,
    # workers.postgres.metric_definitions): a new one is seen everywhere within this.
    metric_refresh_seconds: float = Field(default=2.0, gt=0)
    consumer_group: str = "feedbackflow-worker"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # How long a command waits at start-up for PostgreSQL and Kafka to answer (retrying with
    # back-off) before it exits with a one-line error and its exit code (workers.startup).
    start_timeout_seconds: float = Field(default=60.0, ge=0)
    # Whether the worker applies migrations at start-up (it then needs DDL rights).  Off, a
    # worker finding the schema behind its code refuses to start, naming `feedbackflow migrate`.
    migrate_on_start: bool = True
    # Log lines as text (for people) or JSON (one object a line, for collectors); the level.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # How long the group waits for a silent worker before moving its partitions.  Lower means a
    # crashed worker's partitions move sooner (tansu also answers a join after half of it).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    # Static group membership (KIP-345): a stable id per worker (a pod's name) lets a restarted
    # worker take its partitions back at once instead of after the session timeout.
    kafka_group_instance_id: str | None = Field(default=None, min_length=1, max_length=249)
    pipeline: PipelineSettings = PipelineSettings()
    gateway: GatewaySettings = GatewaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        pipeline_table = _PipelineTable(settings_cls, init_settings, env_settings)
        return init_settings, env_settings, pipeline_table

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Flags (those not None) over the environment over the config file's ``[pipeline]``
        over defaults."""
        return cls(**{name: value for name, value in flags.items() if value is not None})


class _PipelineTable(PydanticBaseSettingsSource):
    """The ``[pipeline]`` table of the config file that the flags or environment name."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self.init_settings, self.env_settings = init_settings, env_settings

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ reads the whole table

    def __call__(self) -> dict[str, Any]:
        path = self.init_settings().get("config") or self.env_settings().get("config")
        path = Path(path) if path else Path("feedbackflow.toml")
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return {}  # a missing or broken file is the metric registry's to report
        table = document.get("pipeline")
        return {"pipeline": table} if isinstance(table, dict) else {}
