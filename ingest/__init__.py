"""How events come in.

Read in this order:

- ``ingest.wire``: the public wire format v1 (pydantic models, and the JSON Schema files
  generated from them for producers in any language).
- ``ingest.metrics``: the metric registry (``feedbackflow.toml``'s ``[metrics.*]``) that types
  each feedback's value and decides which targets it may name.
- ``ingest.topics``: topic names and their creation (co-partitioned inputs).
- ``ingest.sdk``: the Python producer services use.
- ``ingest.gateway``: the HTTP front door (TensorZero, MLflow and log10 clients unchanged).
- ``ingest.backfill``: history from files, through Kafka or straight into Postgres.

The first four depend on nothing of ``workers``; the gateway and backfill are hosts that may
use ``workers``' settings and storage (the layering is drawn in docs/architecture.md).
"""
