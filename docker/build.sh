#!/usr/bin/env bash
# Build the stack's two images, dnc:$DNC_TAG and dnc-postgres:$DNC_TAG (default latest).
#   docker/build.sh                  # from the public base python:3.11-slim-bookworm
#   docker/build.sh --local          # no registry: a local Debian base, the host's CA bundle
#                                    # and pip's local wheel mirrors (what CI does)
# Options one by one: --local-base, --host-ca, --local-mirrors. DNC_BASE overrides the base.
# Builds use the host network (--network=host): an engine started by
# scripts/docker-engine.sh has no default bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${DNC_TAG:-latest}
BASE=${DNC_BASE:-python:3.11-slim-bookworm}
local_base=0 host_ca=0 mirrors=0
for arg in "$@"; do
  case "$arg" in
    --local) local_base=1 host_ca=1 mirrors=1 ;;
    --local-base) local_base=1 ;;
    --host-ca) host_ca=1 ;;
    --local-mirrors) mirrors=1 ;;
    *) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

pids=() ca=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$ca" ] && rm -f "$ca"
  return 0
}
trap cleanup EXIT

[ "$local_base" = 1 ] && BASE=$(bash scripts/docker-engine.sh base)
if [ "$host_ca" = 1 ]; then
  ca=docker/certs/host-bundle.crt
  cp /etc/ssl/certs/ca-certificates.crt "$ca"
fi

# pip's file:// indexes (local wheel mirrors) served on loopback for the build's pip/uv;
# an http(s) index is passed through as it is.
# Fixed ports where free: the URLs are a build argument, and a changed argument would
# rebuild the (minutes-long) dependency layer.
DNC_MIRROR_PORT=${DNC_MIRROR_PORT:-38701}
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))  # taken: any port (the dependency layer is rebuilt)
print(s.getsockname()[1])
PY
}
extra=""
if [ "$mirrors" = 1 ]; then
  for url in $(pip config get global.extra-index-url 2>/dev/null || true); do
    if [[ "$url" == file://* ]]; then
      dir=${url#file://}
      dir=${dir%/}
      port=$(free_port $((DNC_MIRROR_PORT + ${#pids[@]})))
      python3 -m http.server --bind 127.0.0.1 --directory "$(dirname "$dir")" "$port" \
        >/dev/null 2>&1 &
      pids+=($!)
      extra="$extra http://127.0.0.1:$port/$(basename "$dir")/"
    else
      extra="$extra $url"
    fi
  done
  sleep 1
fi

build() {  # build TAG DOCKERFILE CONTEXT [ARGS...]: the log is shown only on failure
  local tag=$1 file=$2 context=$3 log
  shift 3
  log=$(mktemp /tmp/dnc-build.XXXX.log)
  if ! docker build --network=host -f "$file" --build-arg BASE="$BASE" "$@" -t "$tag" \
    "$context" >"$log" 2>&1; then
    tail -40 "$log" >&2
    rm -f "$log"
    echo "build.sh: building $tag failed" >&2
    return 1
  fi
  rm -f "$log"
  echo "built $tag (base $BASE)"
}
build "dnc-postgres:$TAG" docker/postgres.Dockerfile docker
build "dnc:$TAG" docker/Dockerfile . --build-arg EXTRA_INDEX_URL="${extra# }"
# A rebuild leaves the previous images untagged (7 GB each): remove those of this stack only.
docker image prune -f --filter label=org.dnc.stack=true >/dev/null
