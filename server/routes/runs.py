"""Runs: submit a workflow, list and read runs with their results and events, cancel, forget."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Response
from pydantic_core import PydanticSerializationError

from latentgraph.engine.jsonsafe import json_safe
from latentgraph.server.errors import ERROR_RESPONSES
from latentgraph.server.schemas import CLIENT_ID_PATTERN, Deleted, RunDetail, RunList, RunSummary, SubmitRun
from latentgraph.server.state import ServerState, get_state
from latentgraph.server.store import QUEUED, STATUSES

router = APIRouter(prefix="/api/runs", tags=["runs"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, summary="Submit a workflow", response_model=RunSummary)
def submit_run(body: SubmitRun, state: ServerState = Depends(get_state)) -> RunSummary:
    """Validate the workflow and queue it. The answer has the run's `id` and its `position` in the
    queue (0: it runs next). A workflow with problems is not queued: 422 with `errors`, every
    problem as `{node, input, code, message}`. Follow the run on the websocket (pass the same
    `client_id` there, or subscribe to the id) or poll GET /api/runs/{id}."""
    run, position = state.runs.submit(body.workflow, client_id=body.client_id, priority=body.priority,
                                      outputs=body.outputs)
    return RunSummary.of(run, position)


@router.get("", summary="List runs", response_model=RunList)
def list_runs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
              status: str | None = Query(None, description=f"comma-separated statuses: {', '.join(STATUSES)}",
                                         pattern=rf"^({'|'.join(STATUSES)})(,({'|'.join(STATUSES)}))*$"),
              client_id: str | None = Query(None, pattern=CLIENT_ID_PATTERN),
              state: ServerState = Depends(get_state)) -> RunList:
    """Runs, newest first, a page at a time; `total` counts every run that matches."""
    runs, total = state.runs.list(limit=limit, offset=offset, statuses=status.split(",") if status else None,
                                  client_id=client_id)
    return RunList(runs=[RunSummary.of(r, state.queue.position(r.id) if r.status == QUEUED else None) for r in runs],
                   total=total, limit=limit, offset=offset)


@router.delete("", summary="Clear finished runs from the history", response_model=Deleted)
def clear_history(state: ServerState = Depends(get_state)) -> Deleted:
    """Forget every finished run (succeeded, failed, cancelled, interrupted) and its events.
    Queued and running runs stay; image files stay in the output folder."""
    return Deleted(deleted=state.runs.clear_history())


@router.get("/{run_id}", summary="One run with its results and events", response_model=RunDetail)
def get_run(run_id: str, events: bool = Query(True, description="include the run's events"),
            state: ServerState = Depends(get_state)) -> Response:
    """The run's status, workflow, results (what each output node reported: saved images,
    shown values), errors and, unless `events=false`, its events so far (previews as sizes only)."""
    # A plain function: FastAPI runs it in its thread pool. Reading, validating and encoding a big
    # run (hundreds of MB of events) all happen here, as JSON bytes, never on the event loop that
    # serves the websockets (FastAPI would encode a returned model on the loop).
    run = state.runs.get(run_id)
    position = state.queue.position(run_id) if run.status == QUEUED else None
    detail = RunDetail.of_run(run, position, state.runs.events(run) if events else [])
    try:
        body = detail.model_dump_json()
    except PydanticSerializationError:  # a lone surrogate stored before the store replaced them
        body = json.dumps(json_safe(detail.model_dump()), separators=(",", ":"), default=str)
    return Response(body, media_type="application/json")


@router.post("/{run_id}/cancel", summary="Cancel a queued or running run", response_model=RunSummary)
def cancel_run(run_id: str, state: ServerState = Depends(get_state)) -> RunSummary:
    """A queued run is taken out of the queue and marked cancelled at once. A running run stops
    at its next cancel point (between nodes, or the next sampler step) and its status turns
    `cancelled` then: wait for its `run_cancelled` event. 409 if it has already finished."""
    run = state.runs.cancel(run_id)
    return RunSummary.of(run)


@router.delete("/{run_id}", status_code=204, summary="Forget a finished run")
def delete_run(run_id: str, state: ServerState = Depends(get_state)) -> Response:
    state.runs.delete(run_id)
    return Response(status_code=204)
