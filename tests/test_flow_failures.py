"""A failed flow run says why, where Prefect's clients look: the failed state's message (the
UI, `flow-run inspect`) and a one-line ERROR log (what `deployment run --watch` prints)."""

from __future__ import annotations

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_failed_run_carries_the_one_line_reason(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from pipelines.prefect import flows

    state = flows.experiment_flow(
        params_path=str(ROOT / "params.yaml"),
        overrides={"split.factor": 0},
        out_dir=str(tmp_path / "run"),
        data_store=str(tmp_path / "store"),
        return_state=True,
    )
    run_id = state.state_details.flow_run_id
    APILogWorker.drain_all(timeout=30)  # logs are shipped in the background
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run_id).state  # as the UI and CLI read it
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert stored.is_failed()
    assert "ConfigError: split.factor: " in stored.message and "\n" not in stored.message
    errors = [log.message for log in logs if log.level >= 40]
    assert any(m.startswith("error: split.factor: ") and "\n" not in m for m in errors), errors
    assert not (tmp_path / "run").exists()
