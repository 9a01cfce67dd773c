#!/usr/bin/env bash
# Idempotent set-up: dataset package, .venv/ with pinned torch, dnc + pipelines + dev tools.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false \
  DVC_NO_ANALYTICS=1

# 1. The default dataset ships as a Debian package (Fashion-MNIST IDX files).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
      (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null))
  else
    echo "setup: install the Debian package 'dataset-fashion-mnist' (sudo apt-get install" \
      "dataset-fashion-mnist) or set data.root in params.yaml to a folder holding its files" >&2
  fi
fi

# 2. The virtual environment.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
STAMP=.venv/.dnc-installed
WANT=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --disable-pip-version-check uv
# uv does not read pip's config: hand it the local wheel mirrors pip knows, where they exist.
FIND_LINKS=$(pip config get global.find-links 2>/dev/null || true)
EXTRA_INDEX=$(pip config get global.extra-index-url 2>/dev/null || true)
[ -n "$FIND_LINKS" ] && export UV_FIND_LINKS="${FIND_LINKS// /,}"
[ -n "$EXTRA_INDEX" ] && export UV_EXTRA_INDEX_URL="$EXTRA_INDEX"
# Bytecode is compiled at install: the environment may set PYTHONDONTWRITEBYTECODE, and
# compiling torch at every import costs seconds per process.
# uv's cache lives outside the work tree, shared by every clone on the machine, and the venv
# hard-links its files: a set-up clone costs the venv alone, not venv + a copy of the cache.
export UV_INDEX_STRATEGY=unsafe-best-match UV_CACHE_DIR="${DNC_UV_CACHE:-$HOME/.cache/dnc-uv}" \
  UV_LINK_MODE=hardlink UV_COMPILE_BYTECODE=1
.venv/bin/python -m uv pip install -q --python .venv/bin/python -e ".[pipelines,dev]"
echo "$WANT" > "$STAMP"
