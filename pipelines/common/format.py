"""One way to print a count of parameters or MACs, in every table, plot and log line."""

from __future__ import annotations

_UNITS = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def si(value: float, digits: int | None = 2) -> str:
    """12345 -> '12.35k' (`digits` decimals; None: as few as needed, '12.345k', for plot
    ticks); values under 1000 as they are ('512', '0.5')."""
    for unit, scale in _UNITS:
        if abs(value) >= scale:
            scaled = value / scale
            return f"{scaled:g}{unit}" if digits is None else f"{scaled:.{digits}f}{unit}"
    return f"{value:g}"
