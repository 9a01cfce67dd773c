#!/usr/bin/env bash
# Start/stop a scratch PostgreSQL cluster on 127.0.0.1 for the PostgreSQL-backed tests.
#   source scripts/postgres.sh start   # exports DNC_TEST_POSTGRES_URL (its password inside)
#   scripts/postgres.sh stop
# Never open to other local users: scram-sha-256 password auth for every connection (no trust),
# a random password made at initdb and kept in $PGDIR/password (mode 0600), TCP on 127.0.0.1
# only, and the Unix socket in $PGDIR/socket (mode 0700, socket file 0700).
# Environment: PGDIR (default /tmp/dnc-pg), PGPORT (default 55432), PGBIN (default: newest found).

_dnc_pg() (
  set -euo pipefail
  PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  PGDIR=${PGDIR:-/tmp/dnc-pg}
  PGPORT=${PGPORT:-55432}
  # initdb refuses to run as root: as root, run the cluster as the postgres user.
  RUN="sh -c" OWNER=$(id -un)
  if [ "$(id -u)" = 0 ]; then RUN="su postgres -s /bin/sh -c" OWNER=postgres; fi
  case "$1" in
    start)
      if [ -z "$PGBIN" ] && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq postgresql >/dev/null 2>&1 ||
          (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)
        PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
      fi
      if [ ! -x "$PGBIN/initdb" ]; then
        echo "postgres.sh: no PostgreSQL found (set PGBIN)" >&2
        exit 2
      fi
      install -d -m 0700 -o "$OWNER" "$PGDIR" "$PGDIR/socket"
      if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
        # 48 hex digits: URL-safe, so the password goes into the URL unencoded.
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$PGDIR/password")
        chown "$OWNER" "$PGDIR/password"
        $RUN "$PGBIN/initdb -D $PGDIR/data -U postgres --auth=scram-sha-256 \
          --pwfile=$PGDIR/password" >/dev/null
      elif [ ! -s "$PGDIR/password" ]; then
        echo "postgres.sh: $PGDIR/data has no password file (an old trust-auth cluster?);" \
          "stop it and remove $PGDIR, or set PGDIR" >&2
        exit 2
      fi
      if ! $RUN "$PGBIN/pg_ctl -D $PGDIR/data status" >/dev/null 2>&1; then
        $RUN "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -w start \
          -o '-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR/socket \
          -c unix_socket_permissions=0700'" >/dev/null
      fi
      echo "postgresql+psycopg://postgres:$(cat "$PGDIR/password")@127.0.0.1:$PGPORT/postgres"
      ;;
    stop)
      [ -n "$PGBIN" ] && [ -f "$PGDIR/data/PG_VERSION" ] || exit 0
      $RUN "$PGBIN/pg_ctl -D $PGDIR/data -m fast -w stop" >/dev/null 2>&1 || true
      ;;
    *)
      echo "usage: source scripts/postgres.sh start | scripts/postgres.sh stop" >&2
      exit 2
      ;;
  esac
)

# The work runs in a subshell (its `set -e` never reaches a shell that sources this file); only
# the export happens here.
if _dnc_pg_url=$(_dnc_pg "${1:-start}"); then
  if [ -n "$_dnc_pg_url" ]; then
    export DNC_TEST_POSTGRES_URL="$_dnc_pg_url"
    # Print it without the password.
    echo "postgres: ${_dnc_pg_url%%:*}://postgres:***@${_dnc_pg_url#*@}" \
      "(password in ${PGDIR:-/tmp/dnc-pg}/password)"
  fi
  unset _dnc_pg_url
  unset -f _dnc_pg
else
  _dnc_pg_rc=$?
  unset _dnc_pg_url
  unset -f _dnc_pg
  # `return` when sourced, `exit` when run as a script.
  return "$_dnc_pg_rc" 2>/dev/null || exit "$_dnc_pg_rc"
fi
