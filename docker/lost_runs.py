"""What the stack does with a flow run whose worker died (killed container, lost machine).

A flow run sends a heartbeat every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (30 in the
stack). A dead worker's run would stay RUNNING for ever; this automation acts when a run's
heartbeats stop for `SILENCE_S` without it reaching a final state:

    python docker/lost_runs.py retry   # reschedule it: another worker runs it again; the
                                       # training resumes from its checkpoint (runs/ volume)
                                       # and continues the same MLflow run
    python docker/lost_runs.py crash   # mark it CRASHED, with the reason as its message

`retry` has no retry limit: a run that kills its worker every time (out of memory) comes
back every time; use `crash` where that can happen. Re-running replaces the automation.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

NAME = "dnc: lost flow runs"
SILENCE_S = 90  # three missed heartbeats
FINAL = ("Completed", "Failed", "Cancelled", "Crashed")
MESSAGE = f"no heartbeat for {SILENCE_S} s: its worker died"


def lost_run_action(mode: str) -> ChangeFlowRunState:
    """The state a lost run is moved to: AwaitingRetry (Scheduled) or Crashed."""
    if mode == "retry":
        state, name = StateType.SCHEDULED, "AwaitingRetry"
    elif mode == "crash":
        state, name = StateType.CRASHED, "Crashed"
    else:
        raise SystemExit(f"DNC_LOST_RUNS={mode!r}: expected retry or crash")
    # force: the run is still RUNNING on the server, which does not allow RUNNING -> SCHEDULED.
    return ChangeFlowRunState(state=state, name=name, message=MESSAGE, force=True)


def automation(mode: str) -> AutomationCore:
    """Proactive trigger: after a heartbeat, expect another (or a final state) in time."""
    trigger = EventTrigger(
        posture=Posture.Proactive,
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL)},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        for_each={"prefect.resource.id"},
        threshold=1,
        within=timedelta(seconds=SILENCE_S),
    )
    return AutomationCore(name=NAME, trigger=trigger, actions=[lost_run_action(mode)])


def main(mode: str) -> None:
    """Create (or replace) the automation on the server at PREFECT_API_URL."""
    wanted = automation(mode)
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(NAME):
            client.delete_automation(old.id)
        client.create_automation(wanted)
    print(f"automation {NAME!r}: {mode} after {SILENCE_S} s without a heartbeat")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "retry")
