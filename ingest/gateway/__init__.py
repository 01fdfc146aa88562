"""The HTTP gateway (``feedbackflow api``): native routes and the seed systems' routes,
validated with ``ingest.wire`` and ``ingest.metrics`` and published to Kafka after the broker's
ack.  Not built yet: issue "HTTP gateway"."""
