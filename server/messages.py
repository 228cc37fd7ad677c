"""The websocket's wire format: run events as JSON, step previews as small base64 JPEGs inside them.

Every message is one JSON text frame `{"type", "data", ...}`. Run events also carry `run_id`,
`seq` (1, 2, 3... per run, in order, so a client can spot gaps and drop repeats after a replay)
and `timestamp` (seconds since the epoch). A `node_progress` event with a preview carries

    "preview": {"mime": "image/jpeg", "width": 64, "height": 64, "data": "<base64 JPEG>"}

in its data. Previews are encoded here, in the worker's thread, never on the event loop.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from latentgraph.engine import Event
from latentgraph.engine.jsonsafe import json_safe

TERMINAL_EVENTS = frozenset({"run_finished", "run_cancelled", "run_interrupted"})
MAX_PROGRESS_KEPT = 10_000  # progress events of one run kept for replay and history (all are sent live)
PREVIEW_QUALITY = 80


def dumps(message: Any) -> str:
    try:
        return json.dumps(message, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # NaN or an infinity a node reported: not JSON, a browser would refuse the message
        return json.dumps(json_safe(message), separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunMessage:
    """One run event, ready to send (`text`, preview included) and to store (`record`, without it)."""

    run_id: str
    seq: int
    type: str
    record: dict[str, Any]  # {type, run_id, seq, timestamp, data}; a preview only as {width, height}
    text: str
    preview: dict[str, Any] | None = None  # the encoded preview that `text` carries

    @property
    def has_preview(self) -> bool:
        return self.preview is not None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


def encode_preview(image: Any, max_side: int) -> dict[str, Any] | None:
    """A PIL image as the wire's preview object; one a remote worker encoded already passes as it is."""
    if isinstance(image, dict) and image.get("mime") == "image/jpeg":  # from preview_object, on a Ray worker
        return image
    return preview_object(image, max_side)


def preview_object(image: Any, max_side: int) -> dict[str, Any] | None:
    """{mime, width, height, data (base64 JPEG)} of a PIL image; None for anything else."""
    jpeg = preview_jpeg(image, max_side)
    if jpeg is None:
        return None
    data, width, height = jpeg
    return {"mime": "image/jpeg", "width": width, "height": height, "data": base64.b64encode(data).decode()}


def preview_jpeg(image: Any, max_side: int) -> tuple[bytes, int, int] | None:
    """A PIL image scaled down to `max_side` and encoded as JPEG: (bytes, width, height); None for
    anything that is not an image."""
    if not hasattr(image, "save") or not hasattr(image, "size"):
        return None
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    width, height = image.size
    return buffer.getvalue(), width, height


def run_message(event: Event, seq: int, preview_max_side: int = 256) -> RunMessage:
    """Turn an executor event into its wire and stored forms."""
    data = event.data
    preview = data.get("preview")
    record = {"type": event.type, "run_id": event.run_id, "seq": seq, "timestamp": event.timestamp, "data": data}
    if preview is None:
        text = dumps(record)
        if "\\ud" in text:  # maybe a lone surrogate a node produced: the record must stay sendable as UTF-8
            record = {**record, "data": json_safe(data)}
            text = dumps(record)
        return RunMessage(event.run_id, seq, event.type, record, text)
    encoded = encode_preview(preview, preview_max_side)
    wire_data = {**data, "preview": encoded}
    text = dumps({**record, "data": wire_data})
    stored_data = {**data, "preview": {"width": encoded["width"], "height": encoded["height"]} if encoded else None}
    if "\\ud" in text:
        stored_data = json_safe(stored_data)
    return RunMessage(event.run_id, seq, event.type, {**record, "data": stored_data}, text, encoded)


def server_event(run_id: str, seq: int, kind: str, data: dict[str, Any]) -> RunMessage:
    """An event the server itself emits for a run (run_queued, run_cancelled of a queued run,
    run_interrupted, run_finished of a run that failed validation when it was taken)."""
    return run_message(Event(kind, run_id, data), seq)


__all__ = ["MAX_PROGRESS_KEPT", "RunMessage", "TERMINAL_EVENTS", "dumps", "encode_preview", "preview_jpeg", "preview_object", "run_message", "server_event"]
