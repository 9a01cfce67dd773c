"""Prefect side: the flows, their tasks and tables, deployments (`serve`).

The entrypoints of prefect.yaml live here; absolute imports mean the `prefect` library is never
shadowed by this package (only `python pipelines/...py` as a script would, so run modules with
`python -m`)."""
