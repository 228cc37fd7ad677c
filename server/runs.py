"""Runs as the API sees them: submit (validated), cancel, remove from the queue, read, forget.

It ties the store (what is recorded), the queue (what waits) and the hub (who is told) together,
so the routes stay thin and the order of those steps is decided in one place.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Iterable

from latentgraph.engine import NodeRegistry, WorkflowInvalid, find_issues
from latentgraph.server.errors import ApiError
from latentgraph.server.hub import EventHub
from latentgraph.server.messages import server_event
from latentgraph.server.run_queue import RunQueue
from latentgraph.server.store import CANCELLED, FINISHED, INTERRUPTED, QUEUED, RUNNING, RunRecord, RunStore


class RunService:
    def __init__(self, store: RunStore, queue: RunQueue, hub: EventHub, registry: NodeRegistry,
                 services: Any = None, max_queued: int = 0, max_queued_per_client: int = 0) -> None:
        self.store = store
        self.queue = queue
        self.hub = hub
        self.registry = registry
        self.services = services  # what nodes check their limits against at validation
        self.max_queued = max_queued  # 0: no bound
        self.max_queued_per_client = max_queued_per_client

    def recover(self) -> tuple[list[str], int]:
        """At start-up: mark runs the last process left running as interrupted (with a
        run_interrupted event numbered after every event a client may have seen of them) and
        queue again the runs that were waiting. Returns both."""
        interrupted = self.store.recover()
        self.store.add_events([
            server_event(run_id, self.store.next_seq(run_id), "run_interrupted",
                         {"reason": "the server stopped while this run was running"}).record
            for run_id in interrupted])
        return interrupted, self.queue.load()

    def submit(self, workflow: Any, *, client_id: str | None = None, priority: int = 0,
               outputs: list[str] | None = None, run_id: str | None = None,
               extras: Callable[[Any], dict[str, Any]] | None = None) -> tuple[RunRecord, int]:
        """Validate and queue a workflow. Raises WorkflowInvalid with every problem found, or
        ApiError 429 when the queue (or this client's share of it) is full. `run_id`: the id to give
        it (default: a new one); `extras`: called with the validated graph, returns what the store
        keeps with the run (name -> JSON value, RunStore.extras)."""
        self._check_room(client_id)
        graph, issues = find_issues(workflow, self.registry, outputs, services=self.services)
        if graph is None:
            raise WorkflowInvalid(issues)
        run = RunRecord(id=run_id or uuid.uuid4().hex, status=QUEUED, workflow=graph.workflow.to_dict(),
                        priority=priority, client_id=client_id, outputs=list(outputs) if outputs else None)
        queued = server_event(run.id, 1, "run_queued", {"priority": priority, "client_id": client_id,
                                                        "outputs": list(graph.outputs)})
        self.store.insert(run, [queued.record], extras(graph) if extras is not None else None)
        self.hub.publish(queued, client_id)  # before the queue: a worker may take it at once
        position = self.queue.submit(replace(run))  # the worker's copy changes; this one says "queued"
        return run, position

    def _check_room(self, client_id: str | None) -> None:
        if self.max_queued and len(self.queue) >= self.max_queued:
            raise ApiError(429, "queue_full", f"the queue holds {len(self.queue)} runs, its limit (--max-queued "
                                              f"{self.max_queued}); submit again once some have run")
        if self.max_queued_per_client:
            mine = self.queue.count(client_id)
            if mine >= self.max_queued_per_client:
                who = f"client {client_id!r}" if client_id else "submissions without a client_id"
                raise ApiError(429, "queue_full", f"{who} already have {mine} runs queued, the limit per client "
                                                  f"(--max-queued-per-client {self.max_queued_per_client})")

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a queued run (it never starts) or a running one (it stops at its next step)."""
        removed = self.queue.remove(run_id)
        if removed is not None:
            return self._record_cancelled(removed)
        if self.queue.cancel_running(run_id):
            return self.get(run_id)
        run = self.get(run_id)
        raise ApiError(409, "run_finished", f"run {run_id!r} has already {_ended(run.status)}; there is nothing to cancel")

    def remove_queued(self, run_id: str) -> RunRecord:
        removed = self.queue.remove(run_id)
        if removed is None:
            run = self.get(run_id)
            if run.status == RUNNING:
                raise ApiError(409, "run_running", f"run {run_id!r} is running, not queued; cancel it with "
                                                   f"POST /api/runs/{run_id}/cancel")
            raise ApiError(409, "not_queued", f"run {run_id!r} is not queued (it has {_ended(run.status)})")
        return self._record_cancelled(removed)

    def clear_queue(self) -> list[RunRecord]:
        return [self._record_cancelled(run) for run in self.queue.remove_all()]

    def _record_cancelled(self, run: RunRecord) -> RunRecord:
        run.status, run.finished, run.position, run.error = CANCELLED, time.time(), None, "cancelled before it started"
        message = server_event(run.id, self.store.next_seq(run.id), "run_cancelled",
                               {"seconds": 0.0, "node": None, "queued": True})
        self.store.finish(run, [message.record])
        self.hub.publish(message, run.client_id)
        self.hub.run_stored(run.id)
        return run

    def get(self, run_id: str) -> RunRecord:
        run = self.store.get(run_id)
        if run is None:
            raise ApiError(404, "run_not_found", f"there is no run {run_id!r}")
        return run

    def events(self, run: RunRecord) -> list[dict[str, Any]]:
        """A run's events so far: from the hub while it is active, from the store once it is
        finished (the store has them all by the time its status says so)."""
        live = self.hub.live_events(run.id) if run.status not in FINISHED else None
        return live if live is not None else self.store.events(run.id)

    def list(self, *, limit: int, offset: int, statuses: Iterable[str] | None, client_id: str | None) -> tuple[list[RunRecord], int]:
        return self.store.list(limit=limit, offset=offset, statuses=statuses, client_id=client_id)

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.status not in FINISHED:
            raise ApiError(409, "run_active", f"run {run_id!r} is {run.status}; cancel it before deleting it")
        self.store.delete(run_id)

    def clear_history(self) -> int:
        return self.store.delete_finished()


def _ended(status: str) -> str:
    return {INTERRUPTED: "been interrupted", CANCELLED: "been cancelled"}.get(status, status)


__all__ = ["RunService"]
