#!/bin/sh
# First start: a cluster in $PGDATA with password (SCRAM) auth for every TCP client, and
# one database per name in $POSTGRES_DATABASES (MLflow and Optuna both own an
# `alembic_version` table: they cannot share one). Later starts reuse the volume.
set -eu
: "${POSTGRES_USER:=dnc}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
: "${POSTGRES_DATABASES:=mlflow optuna prefect}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # Socket-only while the databases are made: the healthcheck (TCP) stays red until then.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start \
    >/dev/null
  for db in $POSTGRES_DATABASES; do createdb -h /tmp -U "$POSTGRES_USER" "$db"; done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
