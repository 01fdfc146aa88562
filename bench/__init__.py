"""The feedbackflow benchmark: ``python -m bench.run`` (see docs/performance.md).

It measures the worker against the two ceilings it cannot beat (consuming + validating, and
COPY into Postgres) and against the naive faust agent it replaced, on the same messages, in one
run, so that the ratios are not comparisons between different days or machines.
"""
