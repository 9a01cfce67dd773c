"""What a result was computed on: CPU model and library versions (no torch import)."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def platform_line() -> str:
    """`<CPU model>, torch 2.x, Python 3.x`: CPU results repeat exactly on one machine but
    differ in the last digits between CPU models (Intel vs AMD), so a report says which."""
    torch = importlib.metadata.version("torch")
    return f"{cpu_model()}, torch {torch}, Python {platform.python_version()}"
