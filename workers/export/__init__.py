"""Export: joined feedback out as JSONL, CSV or Parquet, read through ``workers.read_model``.
Not built yet: issue "Batch backfill and export"."""
