#!/bin/sh
# The stack's one-shot set-up (compose service prefect-deploy), run from /app: the work
# pool, the deployments of docker/prefect.yaml, and what happens to a run whose worker died.
# Idempotent: re-running updates all three.
set -eu
prefect --no-prompt work-pool create dnc --type process --overwrite >/dev/null
prefect --no-prompt deploy --all --prefect-file docker/prefect.yaml
python docker/lost_runs.py "${DNC_LOST_RUNS:-retry}"
