#!/usr/bin/env bash
# Start/stop a scratch PostgreSQL 15 cluster on 127.0.0.1 for the PostgreSQL-backed tests.
#   source scripts/postgres.sh start   # exports DNC_TEST_POSTGRES_URL (SQLAlchemy URL base)
#   scripts/postgres.sh stop
set -euo pipefail
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
PGDIR=${PGDIR:-/tmp/dnc-pg}
PGPORT=${PGPORT:-55432}
case "${1:-start}" in
  start)
    if [ -z "$PGBIN" ] && [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq postgresql >/dev/null 2>&1 ||
        (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)
      PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    RUN="sh -c"
    # initdb refuses to run as root: run the cluster as the postgres user.
    if [ "$(id -u)" = 0 ]; then RUN="su postgres -s /bin/sh -c"; fi
    install -d -o "$( [ "$(id -u)" = 0 ] && echo postgres || id -un)" "$PGDIR"
    if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
      $RUN "$PGBIN/initdb -D $PGDIR/data -U postgres --auth=trust" >/dev/null
    fi
    $RUN "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR' -w start" >/dev/null
    export DNC_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT"
    echo "postgres: $DNC_TEST_POSTGRES_URL"
    ;;
  stop)
    RUN="sh -c"; [ "$(id -u)" = 0 ] && RUN="su postgres -s /bin/sh -c"
    $RUN "$PGBIN/pg_ctl -D $PGDIR/data -m fast -w stop" >/dev/null 2>&1 || true
    ;;
esac
