"""Run events: what the executor tells its consumers (CLI progress, websockets, Python iterators).

Every event has a type, a run id, a wall-clock timestamp (seconds since the epoch) and a data dict.

| type           | data                                                                    |
|----------------|-------------------------------------------------------------------------|
| run_started    | nodes: all nodes of the plan; to_run; cached; outputs (requested sinks)  |
|                | disabled, only when a node's mode keeps it from running: node → why,    |
|                | "bypassed", "muted" or "needs muted node 'x'"                           |
| node_started   | node, node_type                                                         |
| node_progress  | node, step, total, preview (optional, an object with a `to_jpeg()`...)  |
| node_cached    | node, node_type                                                         |
| node_finished  | node, node_type, seconds, outputs (short descriptions), results (sinks)|
| node_failed    | node, node_type, error_type, message, inputs                            |
| node_skipped   | node, node_type, reason, failed (the upstream node that failed)         |
| run_finished   | status ("succeeded" or "failed"), seconds, results, errors              |
| run_cancelled  | seconds, node (the node that was running, if any)                       |
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "run_started", "node_started", "node_progress", "node_cached", "node_finished",
    "node_failed", "node_skipped", "run_finished", "run_cancelled",
)


@dataclass(frozen=True)
class Event:
    type: str
    run_id: str
    data: dict[str, Any]
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form. A preview image is replaced by its size; consumers that show previews
        (the server) read `data["preview"]` from the event object itself."""
        data = self.data
        preview = data.get("preview")
        if preview is not None:
            data = dict(data)
            data["preview"] = {"width": getattr(preview, "width", None), "height": getattr(preview, "height", None)}
        return {"type": self.type, "run_id": self.run_id, "timestamp": self.timestamp, "data": data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers. A subscriber that raises is logged, never breaks a run."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    @property
    def listened(self) -> bool:
        """Whether anyone subscribes (a node may skip making what nobody would receive, e.g. previews)."""
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:  # copy-on-write list: safe against (un)subscribe
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, event.type)
