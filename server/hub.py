"""The websocket hub: routes run events to the clients that want them, keeps live state for
clients that connect mid-run, and tells every client when the queue changes.

Everything here runs on the event loop. Workers hand messages over with `publish` (thread-safe,
through `loop.call_soon_threadsafe`), so the loop never waits for a worker and a worker never
waits for a slow client: each connection has its own bounded outbox and sender task.

Who gets a run's events: the client that submitted it (same `client_id`, on any connection; a
connection that comes back with that client_id gets the events of its runs in progress replayed
from the first), and connections that subscribed to it (replayed from `after`) or to every run
("*", live only). Each connection gets each event once, in `seq` order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any, Callable, Iterable

from latentgraph.server.messages import MAX_PROGRESS_KEPT, RunMessage, dumps
from latentgraph.server.store import RunStore

log = logging.getLogger(__name__)

PROTOCOL = 1
OUTBOX_SIZE = 2048  # messages waiting for one client; progress is dropped past half, the client past full
QUEUE_BROADCAST_DELAY = 0.05  # seconds: queue changes in a burst go out as one message
CLOSE_GOING_AWAY, CLOSE_TOO_SLOW = 1001, 1013


class RunState:
    """A live run as a reconnecting client needs it: node states, latest progress and preview,
    and the events so far (previews dropped, except the latest) for replay."""

    def __init__(self, run_id: str, client_id: str | None) -> None:
        self.run_id = run_id
        self.client_id = client_id
        self.status = "queued"
        self.seq = 0
        self.node: str | None = None
        self.nodes: dict[str, dict[str, Any]] = {}
        self.disabled: dict[str, str] = {}  # nodes their mode keeps from running → why (bypassed, muted...)
        self.progress: dict[str, Any] | None = None
        self.preview: dict[str, Any] | None = None
        self.log: list[RunMessage] = []
        self._preview_index: int | None = None
        self._progress_logged = 0

    def apply(self, message: RunMessage) -> None:
        data = message.record["data"]
        kind = message.type
        node = data.get("node")
        self.seq = message.seq
        if kind == "run_started":
            self.status = "running"
            self.nodes = {n: {"status": "waiting"} for n in data.get("to_run", [])}
            self.nodes.update({n: {"status": "cached"} for n in data.get("cached", [])})
            self.disabled = dict(data.get("disabled") or {})
        elif kind == "node_started":
            self.nodes[node] = {"status": "running"}
            self.node = node
        elif kind == "node_progress":
            self.nodes.setdefault(node, {"status": "running"}).update(step=data.get("step"), total=data.get("total"))
            self.progress = {"node": node, "step": data.get("step"), "total": data.get("total")}
        elif kind in ("node_cached", "node_finished", "node_failed", "node_skipped"):
            self.nodes[node] = {"status": kind.removeprefix("node_")}
            if self.node == node:
                self.node = None
        elif kind == "run_finished":
            self.status = data.get("status", "finished")
        elif kind == "run_cancelled":
            self.status = "cancelled"
        elif kind == "run_requeued":  # its worker was lost: it waits in the queue to start again
            self.status = "queued"
            self.node = None
        elif kind == "run_interrupted":
            self.status = "interrupted"

        if kind == "node_progress":
            self._progress_logged += 1
            if self._progress_logged > MAX_PROGRESS_KEPT:  # as in the history: bounded per run
                if message.has_preview:
                    self.preview = message.preview
                return
        if message.has_preview:
            if self._preview_index is not None:  # keep only the latest preview's pixels in memory
                old = self.log[self._preview_index]
                self.log[self._preview_index] = RunMessage(old.run_id, old.seq, old.type, old.record, dumps(old.record))
            self._preview_index = len(self.log)
            self.preview = message.preview
        self.log.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "client_id": self.client_id, "seq": self.seq,
                "node": self.node, "nodes": self.nodes, "disabled": self.disabled, "progress": self.progress, "preview": self.preview}


class Connection:
    """One websocket client: what it follows, what it was sent, and its outbox."""

    def __init__(self, websocket: Any, client_id: str) -> None:
        self.websocket = websocket
        self.client_id = client_id
        self.follow_all = False
        self.runs: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.outbox: asyncio.Queue[tuple[str | None, int]] = asyncio.Queue(OUTBOX_SIZE)
        self.closing = False

    def wants(self, run_id: str, owner: str | None) -> bool:
        return self.follow_all or run_id in self.runs or (owner is not None and owner == self.client_id)

    def send(self, text: str) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait((text, 0))
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW)

    def send_run(self, message: RunMessage, text: str | None = None) -> None:
        """Send a run event once per connection, in seq order; progress is the first thing dropped
        for a client that cannot keep up (the snapshot after a reconnect has the latest)."""
        if message.seq <= self.last_seq.get(message.run_id, 0):
            return
        if message.type == "node_progress" and self.outbox.qsize() > OUTBOX_SIZE // 2:
            return
        self.last_seq[message.run_id] = message.seq
        self.send(text if text is not None else message.text)

    def close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        while not self.outbox.empty():  # the close goes out now, not after the backlog
            self.outbox.get_nowait()
        self.outbox.put_nowait((None, code))

    async def pump(self) -> None:
        """Send the outbox until closed (runs as its own task)."""
        while True:
            text, code = await self.outbox.get()
            if text is None:
                await self.websocket.close(code)
                return
            await self.websocket.send_text(text)


class EventHub:
    def __init__(self, store: RunStore, queue_state: Callable[[], dict[str, Any]], version: str = "") -> None:
        self.store = store
        self.queue_state = queue_state
        self.version = version
        self.states: dict[str, RunState] = {}
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue_dirty = threading.Event()
        # Other protocols served from the same events (server/comfyui.py): each tap's
        # run_event(message, owner client_id) and queue_changed() are called on the loop.
        self.taps: list[Any] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # --- from any thread -------------------------------------------------------------------------

    def publish(self, message: RunMessage, client_id: str | None) -> None:
        """A run event, from a worker thread or the loop itself; delivered in call order."""
        self._on_loop(self._deliver, message, client_id)

    def run_stored(self, run_id: str) -> None:
        """The run's final state and events are in the store: its live state can go."""
        self._on_loop(self.states.pop, run_id, None)

    def queue_changed(self) -> None:
        """Coalesced: one `queue` message per burst of changes, QUEUE_BROADCAST_DELAY after the first."""
        if self.loop is not None and not self._queue_dirty.is_set():
            self._queue_dirty.set()
            self._on_loop(self.loop.call_later, QUEUE_BROADCAST_DELAY, self._broadcast_queue)

    def _on_loop(self, function: Callable[..., Any] | None, *args: Any) -> None:
        if self.loop is None or function is None:
            return
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop has closed: the server is gone, nobody is listening
            pass

    # --- on the loop -----------------------------------------------------------------------------

    def connect(self, websocket: Any, client_id: str | None) -> Connection:
        """Register a client: its snapshot goes first, then (a returning client_id) every event so
        far of its runs in progress, in order, then their live events: a reconnect loses nothing."""
        conn = Connection(websocket, client_id or uuid.uuid4().hex)
        self.connections.add(conn)
        conn.send(dumps({"type": "snapshot", "data": self.snapshot(conn)}))
        if client_id is not None:
            for state in self.states.values():
                if state.client_id == client_id:
                    self._replay(conn, state.run_id, 0)
        return conn

    def disconnect(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def snapshot(self, conn: Connection) -> dict[str, Any]:
        """The queue and the runs in progress, each with its node states, latest progress, latest
        preview and `seq` (the last event: subscribe with `after` to get only what came since)."""
        runs = [s.to_dict() for s in self.states.values() if s.status == "running"]
        return {"client_id": conn.client_id, "protocol": PROTOCOL, "version": self.version,
                "queue": self.queue_state(), "runs": runs}

    def subscribe(self, conn: Connection, runs: Iterable[str] | str, after: dict[str, int] | int | None = None,
                  stored: dict[str, list[tuple[dict[str, Any], str]] | None] | None = None) -> None:
        """Follow runs ("*": every run from now on). Each named run's events so far, after `after`
        (a seq, or run id → seq), are replayed first, so nothing between submit and subscribe is lost.
        `stored`: what `read_stored` read for runs the hub does not hold (else the store is read here)."""
        if runs == "*":
            conn.follow_all = True
            return
        for run_id in runs:
            since = after.get(run_id, 0) if isinstance(after, dict) else int(after or 0)
            if run_id not in self.states and stored is not None and run_id in stored:
                found = self._send_stored(conn, run_id, stored[run_id])
            else:
                found = self._replay(conn, run_id, since)
            if found:  # an id that names no run is not kept: a client cannot grow the set at will
                conn.runs.add(run_id)

    def read_stored(self, run_ids: Iterable[str], after: dict[str, int] | int | None = None
                    ) -> dict[str, list[tuple[dict[str, Any], str]] | None]:
        """For `subscribe(..., stored=)`, from a worker thread (it reads only the store): each run's
        stored events after `after`, with their JSON text, or None for an id that names no run. The
        event loop then only sends them; reading and encoding a long history never stalls it."""
        stored: dict[str, list[tuple[dict[str, Any], str]] | None] = {}
        for run_id in run_ids:
            since = after.get(run_id, 0) if isinstance(after, dict) else int(after or 0)
            records = self.store.events(run_id, after=since)
            if not records and self.store.get(run_id) is None:
                stored[run_id] = None
            else:
                stored[run_id] = [(record, dumps(record)) for record in records]
        return stored

    def _send_stored(self, conn: Connection, run_id: str, records: list[tuple[dict[str, Any], str]] | None) -> bool:
        if records is None:
            conn.send(dumps({"type": "error", "data": {"code": "run_not_found", "run_id": run_id,
                                                       "message": f"there is no run {run_id!r}"}}))
            return False
        for record, text in records:
            conn.send_run(RunMessage(run_id, record["seq"], record["type"], record, ""), text)
        return True

    def unsubscribe(self, conn: Connection, runs: Iterable[str] | str) -> None:
        if runs == "*":
            conn.follow_all = False
            conn.runs.clear()
        else:
            conn.runs.difference_update(runs)

    def live_events(self, run_id: str) -> list[dict[str, Any]] | None:
        """The events of a run in progress (previews as sizes), or None if the hub does not hold it."""
        state = self.states.get(run_id)
        return None if state is None else [m.record for m in state.log]

    def live_state(self, run_id: str) -> RunState | None:
        return self.states.get(run_id)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY)
        for tap in self.taps:
            tap.close_all()

    def _replay(self, conn: Connection, run_id: str, since: int) -> bool:
        """Send a run's events after `since`; False (and an error message) if there is no such run."""
        state = self.states.get(run_id)
        if state is not None:
            for message in state.log:
                if message.seq > since:
                    conn.send_run(message)
            return True
        return self._send_stored(conn, run_id, self.read_stored([run_id], since)[run_id])

    def _deliver(self, message: RunMessage, client_id: str | None) -> None:
        state = self.states.get(message.run_id)
        if state is None:
            state = self.states[message.run_id] = RunState(message.run_id, client_id)
        state.apply(message)
        for conn in self.connections:
            if conn.wants(message.run_id, state.client_id):
                conn.send_run(message)
        for tap in self.taps:
            try:
                tap.run_event(message, state.client_id)
            except Exception:  # a tap's fault never stops the hub
                log.exception("event tap %r failed on %s", tap, message.type)

    def _broadcast_queue(self) -> None:
        self._queue_dirty.clear()
        text = dumps({"type": "queue", "data": self.queue_state()})
        for conn in self.connections:
            conn.send(text)
        for tap in self.taps:
            try:
                tap.queue_changed()
            except Exception:
                log.exception("event tap %r failed on a queue change", tap)


__all__ = ["Connection", "EventHub", "PROTOCOL", "RunState"]
