"""Run events written to the store as they happen, in batches, from a thread of their own.

A worker publishes an event to the websocket hub at once and appends it here; this thread writes
what has gathered every `interval` seconds (0.1 by default) in one transaction. So a crash loses
at most the last fraction of a second of events, and a busy run costs one short transaction per
interval, not one per progress step. Before an event is sent whose seq passes the run's
reservation, the dispatcher reserves the next block of seqs in the store (see
`RunStore.reserve_seq`): the event that closes a run after a crash is numbered past all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from latentgraph.server.store import RunStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1  # seconds between batched writes
MAX_BACKLOG = 100_000  # events held while the store refuses writes; older ones are dropped past this


class EventWriter:
    def __init__(self, store: RunStore, interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._appended = 0  # events handed to append() so far
        self._written = 0  # ... of which are stored (or given up on)
        self._urgent = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="latentgraph-event-writer", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(record)
            self._appended += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything appended so far now; wait until it is stored. False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._appended
            self._urgent = True
            self._cond.notify_all()
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._urgent and not self._closed:
                    self._cond.wait(self.interval)
                self._urgent = False
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                self._write(batch)
            if closed:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.store.add_events(batch)
        except Exception:  # the store is failing (disk full, damaged): keep the events and retry
            log.exception("could not store %d run event(s); will retry", len(batch))
            with self._cond:
                self._pending[:0] = batch
                dropped = len(self._pending) - MAX_BACKLOG
                if dropped > 0:
                    del self._pending[:dropped]
                    self._written += dropped
                    log.error("dropped %d run event(s) that could not be stored", dropped)
                self._cond.notify_all()
            time.sleep(self.interval)  # back off before the retry (this thread only)
            return
        with self._cond:
            self._written += len(batch)
            self._cond.notify_all()


__all__ = ["EventWriter", "FLUSH_INTERVAL"]
