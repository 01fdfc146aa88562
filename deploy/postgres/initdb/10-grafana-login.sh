#!/bin/sh
# Grafana's login role: read-only through feedbackflow_reader, never the superuser.
# The postgres image runs this once, on an empty data directory, before anything else connects.
# feedbackflow_reader is created here as `feedbackflow migrate` would (migration 0001 keeps a role
# that exists), so that the grant can be made now; the migration then gives the role its reads.
# GRAFANA_DB_USER and GRAFANA_DB_PASSWORD come from docker-compose.yml.
set -eu
psql --set ON_ERROR_STOP=1 --no-psqlrc \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set login="${GRAFANA_DB_USER:-grafana}" --set password="${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}" <<'SQL'
SELECT 'CREATE ROLE feedbackflow_reader NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'feedbackflow_reader') \gexec
CREATE ROLE :"login" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE feedbackflow_reader;
ALTER ROLE :"login" SET default_transaction_read_only = on;
SQL
