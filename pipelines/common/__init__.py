"""Helpers every pipelines command shares: the CLI error wrapper, the params options and
number formatting."""
