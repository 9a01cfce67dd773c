#!/usr/bin/env bash
# A private Docker engine for CI and development machines that have only the docker client.
#   source scripts/docker-engine.sh start   # installs if missing; exports DOCKER_HOST
#   scripts/docker-engine.sh base           # builds the local base image dnc-base:bookworm
#   scripts/docker-engine.sh stop           # stops the engine and removes its data root
# The engine lives under DNC_DOCKER_DIR (default: a new /tmp/dnc-docker.XXXX), with no
# iptables rules and no default bridge: it leaves the host's network alone, and compose's
# own networks (with DNS by service name) still work. No registry is needed: `base` builds
# a Debian image from the distribution's packages (docs/docker.md).
set -euo pipefail
BASE_TAG=${DNC_DOCKER_BASE:-dnc-base:bookworm}

_engine_install() {
  command -v dockerd >/dev/null && command -v docker-compose >/dev/null &&
    command -v debootstrap >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "docker-engine: install docker.io docker-compose debootstrap (apt-get)" >&2
    return 2
  fi
  apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null 2>&1 ||
    (apt-get update -qq && apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null)
}

_engine_start() {
  _engine_install
  DNC_DOCKER_DIR=${DNC_DOCKER_DIR:-$(mktemp -d /tmp/dnc-docker.XXXX)}
  mkdir -p "$DNC_DOCKER_DIR"
  local d=$DNC_DOCKER_DIR
  # setsid: the engine outlives this shell's job control; stop kills it by its pidfile.
  setsid dockerd --data-root "$d/root" --exec-root "$d/exec" -H "unix://$d/docker.sock" \
    --pidfile "$d/docker.pid" --iptables=false --bridge=none --storage-driver=overlay2 \
    >"$d/dockerd.log" 2>&1 </dev/null &
  export DOCKER_HOST="unix://$d/docker.sock" DNC_DOCKER_DIR
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "docker-engine: dockerd did not start; see $d/dockerd.log" >&2
    tail -5 "$d/dockerd.log" >&2
    return 1
  fi
  echo "DOCKER_HOST=$DOCKER_HOST"
}

_engine_base() {
  # The public python:3.11-slim-bookworm needs a registry; this is the same Debian release
  # with its Python 3.11, built from packages (~80 s, ~300 MB) and imported once per engine.
  if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "$BASE_TAG"
    return 0
  fi
  local rootfs
  rootfs=$(mktemp -d /tmp/dnc-rootfs.XXXX)
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" \
    >"$rootfs.log" 2>&1 || {
    tail -5 "$rootfs.log" >&2
    rm -rf "$rootfs" "$rootfs.log"
    return 1
  }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_TAG" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  echo "$BASE_TAG"
}

_engine_stop() {
  local d=${DNC_DOCKER_DIR:-}
  if [ -z "$d" ] && [[ "${DOCKER_HOST:-}" == unix:///tmp/dnc-docker.* ]]; then
    d=$(dirname "${DOCKER_HOST#unix://}")
  fi
  [ -n "$d" ] && [ -d "$d" ] || return 0
  if [ -f "$d/docker.pid" ]; then
    local pid
    pid=$(cat "$d/docker.pid")
    # Containers first (their shims hold mounts), then the engine itself.
    docker ps -q 2>/dev/null | xargs -r docker kill >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # overlay2 and the exec root leave mounts behind after a kill: unmount, deepest first.
  grep -o " $d/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$d"
  echo "docker-engine: stopped, removed $d"
}

case "${1:-start}" in
  start) _engine_start ;;
  base) _engine_base ;;
  stop) _engine_stop ;;
  *) echo "usage: docker-engine.sh start|base|stop" >&2; exit 2 ;;
esac
