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

from latentgraph.engine import CancelToken, Event, Executor, find_issues
from latentgraph.server.bounds import StoredBounds
from latentgraph.server.event_log import EventWriter
from latentgraph.server.hub import EventHub
from latentgraph.server.messages import MAX_PROGRESS_KEPT, RunMessage, run_message, server_event
from latentgraph.server.run_queue import ActiveRun, RunQueue
from latentgraph.server.store import CANCELLED, FAILED, INTERRUPTED, RunRecord, RunStore

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
        cancel point once `cancel` is set. Returns the outcome; raises WorkerLost when the process
        or machine executing it went away mid-run (the dispatcher re-queues the run); raising
        anything else is a bug the caller survives.

        A worker may also have `wait_ready(timeout) -> bool` (the dispatcher takes no run while it
        says False, e.g. while a remote worker restarts) and `prefer(runs) -> int | None` (which of
        the leading queued runs it takes; see RunQueue.take)."""
        ...


class WorkerLost(Exception):
    """The worker executing a run went away mid-run (its process or machine died): the run did not
    end and may be run again from the start elsewhere. `worker` names it."""

    def __init__(self, message: str, worker: str = "") -> None:
        super().__init__(message)
        self.worker = worker


class LocalWorker:
    """Executes jobs on an executor in this process."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def execute(self, job: Job, cancel: CancelToken, publish: Publish) -> Outcome:
        # Checked again: a model or input image may have gone since the run was queued.
        graph, issues = find_issues(job.workflow, self.executor.registry, job.outputs, services=self.executor.services)
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
                        **({"disabled": result.disabled} if result.disabled else {}),  # bypassed, muted
                        "seconds": result.seconds})


SEQ_BLOCK = 256  # seqs reserved in the store at a time (one short write per this many events)
MAX_ATTEMPTS = 3  # times a run is started before a lost worker makes it `interrupted` instead of re-queued


class Dispatcher:
    """One thread: take the next run, execute it on the worker, publish and record what happens.

    A failing run (or a failing worker) never stops it. `stop` cancels the run in progress, which
    is then recorded as interrupted, and leaves the queued runs queued for the next start; a run
    that does not stop within the grace period is recorded as interrupted by `stop` itself.

    Every event is published to the hub at once and appended to the event writer, which stores
    it a fraction of a second later; the run's final state and its closing event are stored in
    one transaction before that event is published, so whoever sees it can read the final run.
    """

    def __init__(self, queue: RunQueue, store: RunStore, hub: EventHub, worker: Worker,
                 preview_max_side: int = 256, name: str = "latentgraph-worker",
                 events: EventWriter | None = None, bounds: StoredBounds | None = None,
                 after_run: Callable[[], None] = lambda: None, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.queue = queue
        self.store = store
        self.hub = hub
        self.worker = worker
        self.preview_max_side = preview_max_side
        self.events = events if events is not None else EventWriter(store)
        self.bounds = bounds if bounds is not None else StoredBounds()
        self.after_run = after_run
        self.max_attempts = max_attempts
        self._ready = getattr(worker, "wait_ready", None)
        self._prefer = getattr(worker, "prefer", None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._record_lock = threading.Lock()  # who records the run in progress: its thread, or stop()
        self._current: ActiveRun | None = None
        self._abandoned: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.queue.close()
        self.queue.cancel_all_running()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._record_lock:
                active, self._current = self._current, None
                if active is not None:
                    self._abandoned.add(active.record.id)
            if active is not None:  # it never reached a cancel point: record it as cut off now
                log.warning("run %s did not stop within %.0f s; recorded as interrupted", active.record.id, timeout)
                self._record_interrupted(active.record, f"the server shut down and the run did not stop within {timeout:g} s")
        self.events.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._ready is not None and not self._ready(1.0):
                    continue  # e.g. a remote worker restarting: leave the queue to the others
                active = self.queue.take(timeout=1.0, prefer=self._prefer)
            except Exception:  # the store failed to mark it running: try again shortly
                log.exception("could not take the next run")
                self._stopping.wait(1.0)
                continue
            if active is None:
                continue
            with self._record_lock:
                self._current = active
            requeued = False
            try:
                requeued = self._execute(active)
            except Exception:  # e.g. the store failed: log it, keep serving the queue
                log.exception("run %s could not be recorded", active.record.id)
            finally:
                with self._record_lock:
                    self._current = None
                self.queue.done(active.record.id, active)
                if not requeued:
                    self.hub.run_stored(active.record.id)
            try:
                self.after_run()
            except Exception:
                log.exception("after-run housekeeping failed")

    def _execute(self, active: ActiveRun) -> bool:
        """Run it and record its end; True when it went back to the queue instead (worker lost)."""
        run = active.record
        seq = active.seq or self.store.last_seq(run.id)
        reserved = seq
        progress_stored = 0
        final: list[RunMessage] = []

        def publish(event: Event) -> None:
            nonlocal seq, reserved, progress_stored
            if event.type == "run_cancelled" and self._stopping.is_set():
                event = Event("run_interrupted", event.run_id, {**event.data, "reason": "the server is shutting down"},
                              event.timestamp)
            seq += 1
            if seq > reserved:  # stored before any client can see a seq past the reservation
                reserved = seq + SEQ_BLOCK
                try:
                    self.store.reserve_seq(run.id, reserved)
                except Exception:
                    log.exception("could not reserve event numbers for run %s", run.id)
            if event.type != "node_progress":  # progress data is the executor's own, small and fixed
                event = Event(event.type, event.run_id, self.bounds.bound(event.data, "", []), event.timestamp)
            message = run_message(event, seq, self.preview_max_side)
            if message.terminal:  # stored with the run's final state, then sent
                final.append(message)
                return
            if message.type != "node_progress" or progress_stored < MAX_PROGRESS_KEPT:
                progress_stored += message.type == "node_progress"
                self.events.append(message.record)
            self.hub.publish(message, run.client_id)

        try:
            outcome = self.worker.execute(Job(run.id, run.workflow, run.outputs), active.cancel, publish)
        except WorkerLost as exc:
            log.warning("run %s: %s", run.id, exc)
            outcome = self._worker_lost(active, exc, publish, lambda: seq)
            if outcome is None:
                return True
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
        notes: list[dict[str, Any]] = []
        run.results = self.bounds.bound(outcome.results, "results", notes)
        run.errors = self.bounds.bound(outcome.errors, "errors", notes)
        run.summary = {**outcome.summary, **({"truncated": notes} if notes else {})}
        if progress_stored >= MAX_PROGRESS_KEPT:
            run.summary["progress_events_stored"] = progress_stored
        run.error = _first_error(run)
        if outcome.status == INTERRUPTED:  # its worker was lost too often: say why, not "the server stopped"
            run.error = outcome.errors[0]["message"] if outcome.errors else run.error
        self.events.flush()
        with self._record_lock:
            if run.id in self._abandoned:  # stop() has recorded it as interrupted already
                return False
            self._current = None
            self.store.finish(run, [m.record for m in final])
        for message in final:
            self.hub.publish(message, run.client_id)
        return False

    def _worker_lost(self, active: ActiveRun, lost: WorkerLost, publish: Publish,
                     last_seq: Callable[[], int]) -> Outcome | None:
        """A worker went away mid-run: back to the front of the queue (None), or, cancelled or past
        `max_attempts`, the outcome to record (its closing event published)."""
        run = active.record
        where = f" ({lost.worker})" if lost.worker and lost.worker not in str(lost) else ""
        if active.cancel.cancelled and not self._stopping.is_set():
            publish(Event("run_cancelled", run.id, {"seconds": 0.0, "node": None, "reason": f"{lost}{where}"}))
            return Outcome(CANCELLED)
        if active.attempt >= self.max_attempts:
            reason = f"the worker running it was lost {active.attempt} times; the last time: {lost}{where}"
            publish(Event("run_interrupted", run.id, {"reason": reason}))
            return Outcome(INTERRUPTED, errors=[{"node": None, "error_type": "WorkerLost", "message": reason}])
        publish(Event("run_requeued", run.id, {"reason": str(lost), "worker": lost.worker, "attempt": active.attempt,
                                               "max_attempts": self.max_attempts}))
        self.events.flush()  # the next attempt numbers on from the stored events
        if not self.queue.requeue(active, last_seq()):
            reason = f"the server stopped while the run was being re-queued after: {lost}{where}"
            publish(Event("run_interrupted", run.id, {"reason": reason}))
            return Outcome(INTERRUPTED, errors=[{"node": None, "error_type": "WorkerLost", "message": reason}])
        return None

    def _record_interrupted(self, run: RunRecord, reason: str) -> None:
        self.events.flush()
        message = server_event(run.id, self.store.next_seq(run.id), "run_interrupted", {"reason": reason})
        run.status, run.finished, run.error = INTERRUPTED, time.time(), "the server stopped while this run was running"
        self.store.finish(run, [message.record])
        self.hub.publish(message, run.client_id)
        self.hub.run_stored(run.id)


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


__all__ = ["Dispatcher", "Job", "LocalWorker", "MAX_ATTEMPTS", "Outcome", "Worker", "WorkerLost"]
