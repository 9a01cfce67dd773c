"""Experiment tracking: the `Tracker` protocol (`base`), the MLflow implementation
(`mlflow_run`, `store`, `schema`, `logged_model`), tracked stage runs (`runner`), `runs reap` and
`compare`. Importing this package imports no tracker library."""
