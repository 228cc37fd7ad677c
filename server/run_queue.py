"""The queue of runs: priority first, then first come first served; reorderable; persisted.

Thread-safe: HTTP handlers submit, reorder and cancel on the event loop while workers `take` in
their threads. The order of queued runs is kept in the store's `position` column, so a restart
resumes them in the same order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from latentgraph.engine import CancelToken
from latentgraph.server.store import QUEUED, RUNNING, RunRecord, RunStore

# What a worker pool's dispatcher may say when it takes a run: given the runs it may choose from
# (the leading runs of the queue, all of one priority, in queue order), the index of the one it
# takes, or None to take none of them now (another worker suits them better).
Preference = Callable[[Sequence["RunRecord"]], "int | None"]
PREFERENCE_WINDOW = 256  # queued runs a preference looks at, at most


@dataclass
class ActiveRun:
    """A run a worker took from the queue, with the token that cancels it."""

    record: RunRecord
    cancel: CancelToken = field(default_factory=CancelToken)
    attempt: int = 1  # 2, 3...: taken again after the worker running it was lost (see RunQueue.requeue)
    seq: int = 0  # a requeued run: the last seq its earlier attempts published (0: read the store)


class NotPending(LookupError):
    """The named runs are not waiting in the queue (unknown, running or finished)."""

    def __init__(self, run_ids: list[str]) -> None:
        self.run_ids = run_ids
        super().__init__(", ".join(run_ids))


class RunQueue:
    def __init__(self, store: RunStore, on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_change = on_change
        self._pending: list[RunRecord] = []  # in the order they will run
        self._running: dict[str, ActiveRun] = {}
        self._attempts: dict[str, int] = {}  # run → times it was taken, for runs put back by `requeue`
        self._seqs: dict[str, int] = {}  # requeued run → the last seq published for it
        self._cond = threading.Condition()
        self._closed = False
        # A worker pool sets this: what a queued run needs that a worker may hold (its checkpoint
        # names), read off the whole workflow once when the run enters the queue; kept in `needs`.
        self.needs_of: Callable[[dict], frozenset[str]] | None = None
        self.needs: dict[str, frozenset[str]] = {}

    def load(self) -> int:
        """Take up the runs the store holds as queued (after a restart). Returns how many."""
        with self._cond:
            self._pending = [self._slim(r) for r in self.store.pending()]
            self._renumber()
            self._cond.notify_all()
            return len(self._pending)

    # --- the submitting side ---------------------------------------------------------------------

    def submit(self, run: RunRecord) -> int:
        """Queue a run (already in the store) behind every run of the same or higher priority.
        Returns how many runs are ahead of it in the queue."""
        with self._cond:
            run = self._slim(run)
            index = next((i for i, r in enumerate(self._pending) if r.priority < run.priority), len(self._pending))
            self._pending.insert(index, run)
            self._place(index)
            self._cond.notify_all()  # with a pool, the worker that prefers it may not be the one woken first
        self.on_change()
        return index

    def reorder(self, run_ids: Iterable[str]) -> None:
        """Move the given queued runs to the front, in the given order; the others keep theirs."""
        run_ids = list(dict.fromkeys(run_ids))
        with self._cond:
            by_id = {r.id: r for r in self._pending}
            missing = [i for i in run_ids if i not in by_id]
            if missing:
                raise NotPending(missing)
            chosen = set(run_ids)
            self._pending = [by_id[i] for i in run_ids] + [r for r in self._pending if r.id not in chosen]
            self._renumber()
        self.on_change()

    def remove(self, run_id: str) -> RunRecord | None:
        """Take a queued run out of the queue (the caller records it as cancelled)."""
        with self._cond:
            for index, run in enumerate(self._pending):
                if run.id == run_id:
                    del self._pending[index]
                    self._forget(run_id)
                    break
            else:
                return None
        self.on_change()
        return run

    def remove_all(self) -> list[RunRecord]:
        with self._cond:
            removed, self._pending = self._pending, []
            for run in removed:
                self._forget(run.id)
        if removed:
            self.on_change()
        return removed

    def cancel_running(self, run_id: str) -> bool:
        """Ask a running run to stop (it stops at its next cancel point). False if it is not running."""
        with self._cond:
            active = self._running.get(run_id)
        if active is None:
            return False
        active.cancel.cancel()
        return True

    def cancel_all_running(self) -> None:
        with self._cond:
            for active in self._running.values():
                active.cancel.cancel()

    # --- the worker side -------------------------------------------------------------------------

    def take(self, timeout: float | None = None, prefer: Preference | None = None) -> ActiveRun | None:
        """The next run, marked running; waits up to `timeout` seconds. None on timeout or close.

        `prefer` (a worker pool's dispatcher) picks among the leading queued runs of the highest
        waiting priority, e.g. one whose model its worker has loaded; when it picks none, the call
        waits for the queue to change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                index = self._choose(prefer) if self._pending else None
                if index is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            run = self._pending.pop(index)
            stored = self.store.get(run.id)  # the whole workflow, which the queue does not hold
            if stored is not None:
                run.workflow = stored.workflow
            run.status, run.started, run.position = RUNNING, time.time(), None
            self.store.update(run.id, status=RUNNING, started=run.started, position=None)
            attempt = self._attempts.get(run.id, 0) + 1
            self._attempts[run.id] = attempt
            active = self._running[run.id] = ActiveRun(run, attempt=attempt, seq=self._seqs.pop(run.id, 0))
        self.on_change()
        return active

    def _choose(self, prefer: Preference | None) -> int | None:
        if prefer is None:
            return 0
        top = self._pending[0].priority
        window = []
        for run in self._pending[:PREFERENCE_WINDOW]:
            if run.priority != top:
                break
            window.append(run)
        index = prefer(window)
        return index if index is None or 0 <= index < len(window) else 0

    def requeue(self, active: ActiveRun, seq: int) -> bool:
        """Put a running run back at the front of the queue, to be taken again (its worker was lost
        mid-run). False if it is no longer running (a stop recorded it). It keeps its count of
        attempts (the next `take` gives it `attempt` + 1) and `seq`, the last seq published for it,
        which its next attempt numbers on from."""
        with self._cond:
            if self._running.get(active.record.id) is not active:
                return False
            del self._running[active.record.id]
            self._seqs[active.record.id] = seq
            run = active.record
            run.status, run.started = QUEUED, None
            self.store.update(run.id, status=QUEUED, started=None)
            self._pending.insert(0, self._slim(run))
            self._place(0)
            self._cond.notify_all()
        self.on_change()
        return True

    def done(self, run_id: str, active: ActiveRun | None = None) -> None:
        """The worker is through with a run (its final state is already stored). With `active`, only
        that taking of the run is let go of (a requeued run may be running again elsewhere)."""
        with self._cond:
            current = self._running.get(run_id)
            if current is not None and (active is None or current is active):
                del self._running[run_id]
            if run_id not in self._running and not any(r.id == run_id for r in self._pending):
                self._forget(run_id)
        self.on_change()

    def wake(self) -> None:
        """Let waiting takers look at the queue again (what their preference depends on changed)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting worker; `take` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[RunRecord], list[RunRecord]]:
        """(running, queued in order): copies of the lists, safe to read anywhere."""
        with self._cond:
            return [a.record for a in self._running.values()], list(self._pending)

    def position(self, run_id: str) -> int | None:
        """How many queued runs are ahead of this one, or None if it is not queued."""
        with self._cond:
            return next((i for i, r in enumerate(self._pending) if r.id == run_id), None)

    def count(self, client_id: str | None) -> int:
        """Queued runs of one client (None: those submitted without a client_id)."""
        with self._cond:
            return sum(1 for r in self._pending if r.client_id == client_id)

    def is_running(self, run_id: str) -> bool:
        with self._cond:
            return run_id in self._running

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    # --- positions -------------------------------------------------------------------------------

    def _place(self, index: int) -> None:
        """Give the run at `index` a position between its neighbours' (one row written), or
        renumber everything when floats run out of room between them."""
        run = self._pending[index]
        before = self._pending[index - 1].position if index > 0 else None
        after = self._pending[index + 1].position if index + 1 < len(self._pending) else None
        if before is None and after is None:
            position = 0.0
        elif after is None:
            position = before + 1.0
        elif before is None:
            position = after - 1.0
        else:
            position = (before + after) / 2
            if not before < position < after:
                self._renumber()
                return
        run.position = position
        self.store.set_positions([(run.id, position)])

    def _slim(self, run: RunRecord) -> RunRecord:
        if self.needs_of is not None:
            try:
                self.needs[run.id] = self.needs_of(run.workflow)
            except Exception:  # a hint for placement only: never keep a run out of the queue
                self.needs[run.id] = frozenset()
        return _slim(run)

    def _forget(self, run_id: str) -> None:
        self._attempts.pop(run_id, None)
        self._seqs.pop(run_id, None)
        self.needs.pop(run_id, None)

    def _renumber(self) -> None:
        for index, run in enumerate(self._pending):
            run.position = float(index)
        self.store.set_positions((r.id, r.position) for r in self._pending)


def _slim(run: RunRecord) -> RunRecord:
    """A queued run as the queue keeps it: without its workflow (up to megabytes, read again from
    the store when the run is taken), only the name that queue listings show."""
    name = run.name
    run.workflow = {"meta": {"name": name}} if name is not None else {}
    return run


__all__ = ["ActiveRun", "NotPending", "RunQueue"]
