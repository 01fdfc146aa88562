"""Backfill: months of history from JSONL, CSV or Parquet, through Kafka or (``--direct``)
through the worker's own sink.  Not built yet: issue "Batch backfill and export"."""
