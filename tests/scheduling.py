"""Costliest files first under `pytest -n N --dist loadfile`, and a record of what each costs.

xdist's loadfile hands out whole files, the ones with the most tests first. Here the costly
files are end-to-end ones with 1-3 tests each (a DVC pipeline, torchrun jobs, a Prefect
deployment), so they were handed out last and ran alone at the end while the other workers
sat idle: ~80 idle CPU-seconds in a 7-8 minute run on 2 cores. `CostFirst` hands out files
by the CPU seconds `costs.json` records for them, costliest first (longest-processing-time
first list scheduling), and gives a worker its next file only once it has one test left, so
no worker holds a queue of costly files while another is idle. Files missing from the
record come after the recorded ones, in xdist's order.

`pytest -n 2 --dist loadfile --record-costs` writes the record again: each test's CPU
seconds (its process's and those of the processes it waited for), summed per file, for the
files the run ran (and passed).
"""

from __future__ import annotations

import json
import resource
from collections import defaultdict
from pathlib import Path

import pytest
from xdist.scheduler import LoadFileScheduling

COSTS = Path(__file__).with_name("costs.json")
PROPERTY = "cpu_seconds"


def recorded() -> dict[str, float]:
    """The recorded CPU seconds per file; none without a record (xdist's order then)."""
    if not COSTS.exists():
        return {}
    try:
        return dict(json.loads(COSTS.read_text())["cpu_seconds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise pytest.UsageError(f"{COSTS}: unreadable cost record ({exc!r})") from exc


class CostFirst(LoadFileScheduling):
    """xdist's loadfile scheduling, its queue in the recorded order of cost."""

    def __init__(self, config, log=None) -> None:
        super().__init__(config, log)
        self.costs = recorded()
        self.ordered = False

    def _assign_work_unit(self, node) -> None:
        if not self.ordered:  # the first call: xdist has just built its queue
            # sorted() is stable: unrecorded files keep xdist's order (most tests first)
            queue = sorted(self.workqueue.items(), key=lambda kv: -self.costs.get(kv[0], 0))
            self.workqueue.clear()
            self.workqueue.update(queue)
            self.ordered = True
        super()._assign_work_unit(node)

    def _reschedule(self, node) -> None:
        # xdist tops a worker up once it has 2 tests left, so a worker running a costly
        # 2-test file also holds the next costly file while another worker may idle. A
        # worker keeps its last test back until it knows the next one: 1 left means it is
        # about to idle, and that is when it gets its next file here.
        if self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
            return
        super()._reschedule(node)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Recorder:
    """Each test's CPU seconds, carried to the controller in its teardown report."""

    def __init__(self) -> None:
        self.per_file: dict[str, float] = defaultdict(float)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        item.stash[_START] = _cpu()
        yield

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item, call) -> None:
        if call.when == "teardown":  # before the report is made from the item
            item.user_properties.append((PROPERTY, _cpu() - item.stash[_START]))

    def pytest_runtest_logreport(self, report) -> None:
        for name, seconds in report.user_properties:
            if name == PROPERTY:
                self.per_file[report.nodeid.split("::")[0]] += seconds

    def write(self) -> None:
        """Updates the files this run ran; the others keep their recorded cost."""
        cpu = {**recorded(), **self.per_file}
        record = {
            "about": "CPU seconds per test file in a whole-suite run: tests/scheduling.py",
            "command": "pytest -n 2 --dist loadfile --record-costs",
            "cpu_seconds": {f: round(s, 1) for f, s in sorted(cpu.items())},
        }
        COSTS.write_text(json.dumps(record, indent=1) + "\n")


_START = pytest.StashKey[float]()
