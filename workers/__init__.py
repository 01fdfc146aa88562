"""What happens after Kafka.

Read in this order:

- ``workers.stream``: the hot path, a chain of small steps (hold back, decode, window, write,
  dead letters, commit offsets) driven by a loop that only fetches, submits and polls.
- ``workers.postgres``: the sink that writes a window in one transaction, its SQL, day
  partitions, retention and migrations.
- ``workers.host``: the worker process (a faust app), its ``/metrics`` and ``/health``.
- ``workers.read_model``: the typed queries that the demo's check, export, the report and the
  dashboards share.
- ``workers.export`` and ``workers.report``: joined feedback out as files and as a PNG.
- ``workers.devstack``: the embedded broker and Postgres, ``feedbackflow dev`` and the demo
  (the ``embedded`` extra).
- ``workers.testing``: synthetic traffic shared by the tests and the bench.
- ``workers.settings`` (one typed settings object), ``workers.telemetry`` (the Prometheus
  metrics), ``workers.clock``, and ``workers.cli`` (``feedbackflow``, which nothing imports).
"""
