"""Orchestration around the `dnc` library: DVC stage entry points, Prefect flows and
deployments, MLflow tracking, Optuna search, reports and plots.

Imports `dnc`; `dnc` never imports this package.
"""
