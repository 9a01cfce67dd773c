"""tests/scheduling.py: xdist hands out the recorded costliest files first, one at a time."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import scheduling


class Node:
    """The part of xdist's WorkerController a scheduler talks to."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.append(indexes)

    def shutdown(self) -> None:
        self.shutting_down = True


COLLECTION = [
    *(f"tests/test_many.py::t{i}" for i in range(6)),  # most tests: xdist's first
    "tests/test_e2e.py::t0",
    "tests/test_e2e.py::t1",
    "tests/test_mid.py::t0",
    *(f"tests/test_new.py::t{i}" for i in range(3)),  # not in the record
]
COSTS = {"tests/test_e2e.py": 60.0, "tests/test_mid.py": 20.0, "tests/test_many.py": 5.0}


def files_sent(node: Node) -> list[str]:
    return [COLLECTION[batch[0]].split("::")[0] for batch in node.sent]


@pytest.fixture()
def sched(monkeypatch):
    monkeypatch.setattr(scheduling, "recorded", lambda: COSTS)
    config = SimpleNamespace(
        getvalue=lambda name: {"tx": ["popen"] * 2, "numprocesses": 2}.get(name),
        option=SimpleNamespace(loadscopereorder=True, numprocesses=2, tx=None),
    )
    sched = scheduling.CostFirst(config)
    nodes = [Node("gw0"), Node("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    return sched, nodes


def finish(sched, node: Node, n: int) -> None:
    """`n` of the node's pending tests complete, in order."""
    for _ in range(n):
        work = sched.assigned_work[node].values()
        nodeid = next(i for unit in work for i, done in unit.items() if not done)
        sched.mark_test_complete(node, COLLECTION.index(nodeid))


def test_costliest_files_go_first_and_a_worker_gets_more_only_when_about_to_idle(sched):
    sched, (a, b) = sched
    # The costliest first, one each. A worker keeps its last test back until it knows the
    # next one, so b (1 test) is idle and gets the next file now; a, with 2 left, does
    # not (xdist alone would top it up, and hand out test_many first: most tests).
    assert files_sent(a) == ["tests/test_e2e.py"]
    assert files_sent(b) == ["tests/test_mid.py", "tests/test_many.py"]
    finish(sched, a, 1)  # one left: a gets the next file, the unrecorded one
    assert files_sent(a) == ["tests/test_e2e.py", "tests/test_new.py"]
    assert not sched.workqueue


def test_a_missing_record_is_xdist_order_and_a_broken_one_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(scheduling, "COSTS", tmp_path / "costs.json")
    assert scheduling.recorded() == {}
    (tmp_path / "costs.json").write_text("{")
    with pytest.raises(pytest.UsageError, match="costs.json"):
        scheduling.recorded()
    (tmp_path / "costs.json").write_text(json.dumps({"cpu_seconds": {"a.py": 1.5}}))
    assert scheduling.recorded() == {"a.py": 1.5}


def test_record_updates_only_the_files_run(monkeypatch, tmp_path):
    monkeypatch.setattr(scheduling, "COSTS", tmp_path / "costs.json")
    (tmp_path / "costs.json").write_text(json.dumps({"cpu_seconds": {"a.py": 1.0, "b.py": 2.0}}))
    recorder = scheduling.Recorder()
    for nodeid, seconds in [("b.py::x", 0.25), ("b.py::y", 0.5), ("c.py::z", 3.0)]:
        report = SimpleNamespace(nodeid=nodeid, user_properties=[(scheduling.PROPERTY, seconds)])
        recorder.pytest_runtest_logreport(report)
    recorder.write()
    assert scheduling.recorded() == {"a.py": 1.0, "b.py": 0.8, "c.py": 3.0}
