"""Optuna search: the search space and budgets (`space`), the durable study (`study`), the
trial objective (`objective`), a worker (`run`), its reports (`report`), the CLI and the Prefect
flow (`flow`)."""
