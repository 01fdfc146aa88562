"""Settings: one typed, frozen object for connections and names.

Precedence: CLI flag, then environment variable, then default.  The metric config file
(``feedbackflow.toml``) says *what* is measured; these say *where* things run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_VARS = {
    "kafka_bootstrap": "FEEDBACKFLOW_KAFKA_BOOTSTRAP",
    "database_url": "FEEDBACKFLOW_DATABASE_URL",
    "config_path": "FEEDBACKFLOW_CONFIG",
    "topic_prefix": "FEEDBACKFLOW_TOPIC_PREFIX",
    "consumer_group": "FEEDBACKFLOW_CONSUMER_GROUP",
    "http_port": "FEEDBACKFLOW_HTTP_PORT",
    "kafka_idempotence": "FEEDBACKFLOW_KAFKA_IDEMPOTENCE",
    "kafka_session_timeout_ms": "FEEDBACKFLOW_KAFKA_SESSION_TIMEOUT_MS",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", min_length=1)
    database_url: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres")
    config_path: Path = Path("feedbackflow.toml")
    topic_prefix: str = Field(default="feedbackflow", pattern=r"^[A-Za-z0-9._-]+$")
    consumer_group: str = "feedbackflow-worker"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # Apache Kafka: on.  The embedded tansu broker does not implement InitProducerId, so the
    # embedded stack turns it off; duplicates a retry may cause are absorbed by the sink anyway.
    kafka_idempotence: bool = True
    # How long the group waits for a silent worker before moving its partitions.  Lower means a
    # crashed worker's partitions move sooner (tansu also answers a join after half of it).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Environment over defaults, flags (those not None) over both."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {name: env[var] for name, var in ENV_VARS.items() if env.get(var)}
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls.model_validate(values)
