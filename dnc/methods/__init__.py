"""Training methods as plugins: one module per method, registered with `@register_method`.

Importing this package registers the built-in methods: `splitnet`, `cooperative`,
`auxiliary`, `multiview`. docs/extending.md shows how to add one.
"""

from dnc.methods import auxiliary, cooperative, multiview, splitnet  # noqa: F401  (registers)
from dnc.methods.base import (
    Method,
    Task,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "Method",
    "Task",
    "get_method",
    "list_methods",
    "register_method",
]
