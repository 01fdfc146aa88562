"""Monitoring as code: the Grafana dashboards and the Prometheus alert rules, built in Python with
Grafana's own grafana-foundation-sdk and committed as the files Grafana and Prometheus load
(``deploy/grafana/dashboards/``, ``deploy/prometheus/rules/``).  ``feedbackflow dashboards``
writes them and ``--check`` fails when the committed files and this code drift apart.

The PromQL reads the metric names that ``workers/telemetry.py`` and
``ingest/gateway/telemetry.py`` define; a test runs every expression against a real Prometheus
scraping a real worker and gateway, so a renamed metric breaks a test, not a dashboard.
"""
