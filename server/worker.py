"""Executing queued runs: the `Worker` interface, the in-process worker, and the dispatcher thread.

A `Worker` executes one run and reports its events; it knows nothing of the queue, the store or
websockets. The `Dispatcher` takes runs from the queue in order, hands each to its worker,
numbers and publishes the events, and records the outcome. Today there is one dispatcher with a
`LocalWorker` on the shared executor (so loaded models stay loaded between runs); a pool of GPU
machines means more dispatchers, each with a worker that forwards the job over the network.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from engine import CancelToken, Event, Executor, find_issues
from server.hub import EventHub
from server.messages import RunMessage, run_message
from server.run_queue import ActiveRun, RunQueue
from server.store import CANCELLED, FAILED, INTERRUPTED, RunStore

log = logging.getLogger(__name__)

Publish = Callable[[Event], None]


@dataclass(frozen=True)
class Job:
    """What a worker needs to execute a run: JSON only, so it can travel to another machine."""

    run_id: str
    workflow: dict[str, Any]
    outputs: list[str] | None = None


@dataclass
class Outcome:
    status: str  # succeeded, failed or cancelled
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # output node → reported results
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # executed, cached, skipped, seconds


class Worker(Protocol):
    def execute(self, job: Job, cancel: CancelToken, publish: Publish) -> Outcome:
        """Run the job to its end, calling `publish` with each event in order, and stop at the next
        cancel point once `cancel` is set. Returns the outcome; raising is a bug the caller survives."""
        ...


class LocalWorker:
    """Executes jobs on an executor in this process."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def execute(self, job: Job, cancel: CancelToken, publish: Publish) -> Outcome:
        # Checked again: a model or input image may have gone since the run was queued.
        graph, issues = find_issues(job.workflow, self.executor.registry, job.outputs)
        if graph is None:
            errors = [i.to_dict() for i in issues]
            publish(Event("run_finished", job.run_id, {"status": FAILED, "seconds": 0.0, "results": {}, "errors": errors}))
            return Outcome(FAILED, errors=errors)

        def forward(event: Event) -> None:
            if event.run_id == job.run_id:
                publish(event)

        unsubscribe = self.executor.events.subscribe(forward)
        try:
            result = self.executor.run(graph, run_id=job.run_id, cancel=cancel)
        finally:
            unsubscribe()
        return Outcome(result.status, result.results, [e.to_dict() for e in result.errors],
                       {"executed": result.executed, "cached": result.cached, "skipped": result.skipped,
                        "seconds": result.seconds})


class Dispatcher:
    """One thread: take the next run, execute it on the worker, publish and record what happens.

    A failing run (or a failing worker) never stops it. `stop` cancels the run in progress, which
    is then recorded as interrupted, and leaves the queued runs queued for the next start.
    """

    def __init__(self, queue: RunQueue, store: RunStore, hub: EventHub, worker: Worker,
                 preview_max_side: int = 256, name: str = "latentgraph-worker") -> None:
        self.queue = queue
        self.store = store
        self.hub = hub
        self.worker = worker
        self.preview_max_side = preview_max_side
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.queue.close()
        self.queue.cancel_all_running()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                active = self.queue.take(timeout=1.0)
            except Exception:  # the store failed to mark it running: try again shortly
                log.exception("could not take the next run")
                time.sleep(1.0)
                continue
            if active is None:
                continue
            try:
                self._execute(active)
            except Exception:  # e.g. the store failed: log it, keep serving the queue
                log.exception("run %s could not be recorded", active.record.id)
            finally:
                self.queue.done(active.record.id)
                self.hub.run_stored(active.record.id)

    def _execute(self, active: ActiveRun) -> None:
        run = active.record
        seq = self.store.last_seq(run.id)
        events: list[dict[str, Any]] = []
        final: list[RunMessage] = []

        def publish(event: Event) -> None:
            nonlocal seq
            if event.type == "run_cancelled" and self._stopping.is_set():
                event = Event("run_interrupted", event.run_id, {**event.data, "reason": "the server is shutting down"},
                              event.timestamp)
            seq += 1
            message = run_message(event, seq, self.preview_max_side)
            events.append(message.record)
            if message.terminal:  # sent once stored: whoever sees it can read the final run at once
                final.append(message)
            else:
                self.hub.publish(message, run.client_id)

        try:
            outcome = self.worker.execute(Job(run.id, run.workflow, run.outputs), active.cancel, publish)
        except Exception as exc:
            log.exception("worker failed on run %s", run.id)
            error = {"node": None, "error_type": type(exc).__name__, "message": f"the worker failed: {exc}"}
            outcome = Outcome(FAILED, errors=[error])
            if not final:
                publish(Event("run_finished", run.id, {"status": FAILED, "seconds": 0.0, "results": {}, "errors": [error]}))

        run.status = outcome.status
        if outcome.status == CANCELLED and self._stopping.is_set():
            run.status = INTERRUPTED
        run.finished = time.time()
        run.results, run.errors, run.summary = outcome.results, outcome.errors, outcome.summary
        run.error = _first_error(run)
        self.store.finish(run, events)
        for message in final:
            self.hub.publish(message, run.client_id)


def _first_error(run: Any) -> str | None:
    if run.status == INTERRUPTED:
        return "the server stopped while this run was running"
    if run.status == CANCELLED:
        return "cancelled"
    if run.errors:
        first = run.errors[0]
        more = f" (and {len(run.errors) - 1} more)" if len(run.errors) > 1 else ""
        where = f"node {first['node']!r}: " if first.get("node") else ""
        return f"{where}{first.get('message', 'failed')}{more}"
    return None


__all__ = ["Dispatcher", "Job", "LocalWorker", "Outcome", "Worker"]
