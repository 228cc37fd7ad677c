"""The queue: what runs now and what waits, in order; reorder it or take runs out."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from latentgraph.server.errors import ERROR_RESPONSES, ApiError
from latentgraph.server.run_queue import NotPending
from latentgraph.server.schemas import QueueOrder, QueueState, Removed, RunSummary, queue_state
from latentgraph.server.state import ServerState, get_state

router = APIRouter(prefix="/api/queue", tags=["queue"], responses=ERROR_RESPONSES)


@router.get("", summary="Running and queued runs", response_model=QueueState)
def get_queue(state: ServerState = Depends(get_state)) -> QueueState:
    """Queued runs are listed in the order they will run: higher priority first, then oldest first,
    unless reordered."""
    return QueueState(**queue_state(*state.queue.snapshot()))


@router.put("/order", summary="Reorder the queue", response_model=QueueState)
def reorder_queue(body: QueueOrder, state: ServerState = Depends(get_state)) -> QueueState:
    """Move the listed queued runs to the front, in the listed order; the others keep their order
    behind them. `{"run_ids": [id]}` moves one run to the front. 409 if a listed run is not queued
    (it may have started meanwhile)."""
    try:
        state.queue.reorder(body.run_ids)
    except NotPending as exc:
        raise ApiError(409, "not_queued", f"not queued (unknown, running or finished): {', '.join(exc.run_ids)}") from None
    return QueueState(**queue_state(*state.queue.snapshot()))


@router.delete("/{run_id}", summary="Take a run out of the queue", response_model=RunSummary)
def remove_from_queue(run_id: str, state: ServerState = Depends(get_state)) -> RunSummary:
    """The run is marked cancelled and never starts. A running run is not in the queue: cancel it
    with POST /api/runs/{id}/cancel."""
    return RunSummary.of(state.runs.remove_queued(run_id))


@router.delete("", summary="Empty the queue", response_model=Removed)
def clear_queue(state: ServerState = Depends(get_state)) -> Removed:
    """Every queued run is marked cancelled; the running run goes on."""
    return Removed(removed=[r.id for r in state.runs.clear_queue()])
