"""The websocket (/ws, also at /api/ws): live run events, step previews and queue changes.

The protocol is described in `server/hub.py` and `server/messages.py`, and in the README.
Client → server messages (JSON text):

    {"type": "subscribe", "runs": ["<run id>", ...] | "*", "after": <seq> | {"<run id>": <seq>}}
    {"type": "unsubscribe", "runs": [...] | "*"}
    {"type": "ping"}
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server.errors import error_response
from server.hub import Connection, EventHub
from server.messages import dumps
from server.schemas import CLIENT_ID_PATTERN
from server.state import get_state

router = APIRouter(tags=["events"])
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
MAX_SUBSCRIBE = 1000


async def event_socket(websocket: WebSocket) -> None:
    client_id = websocket.query_params.get("client_id")
    if client_id is not None and not _CLIENT_ID.match(client_id):
        detail = "client_id must be 1 to 64 letters, digits or _ . : -"
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(400, "invalid_client_id", detail))
        else:
            await websocket.close(1008, detail)
        return
    hub = get_state(websocket).hub
    await websocket.accept()
    conn = hub.connect(websocket, client_id)
    sender = asyncio.create_task(_pump(conn))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                conn.send(_error("binary frames are not understood; send JSON text"))
                continue
            _handle(hub, conn, text)
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(conn)
        sender.cancel()


async def _pump(conn: Connection) -> None:
    try:
        await conn.pump()
    except Exception:  # the client went away mid-send: the receive loop notices and cleans up
        pass


def _handle(hub: EventHub, conn: Connection, text: str) -> None:
    try:
        message = json.loads(text)
    except ValueError:
        conn.send(_error("not JSON"))
        return
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "ping":
        conn.send(dumps({"type": "pong", "data": {}}))
        return
    if kind not in ("subscribe", "unsubscribe"):
        conn.send(_error(f"unknown message type {kind!r} (subscribe, unsubscribe, ping)"))
        return
    runs = message.get("runs")
    if runs != "*" and not (isinstance(runs, list) and all(isinstance(r, str) for r in runs) and len(runs) <= MAX_SUBSCRIBE):
        conn.send(_error(f'"runs" must be "*" or a list of at most {MAX_SUBSCRIBE} run ids'))
        return
    if kind == "unsubscribe":
        hub.unsubscribe(conn, runs)
        return
    after: Any = message.get("after", 0)
    if not (isinstance(after, int) or (isinstance(after, dict) and all(isinstance(v, int) for v in after.values()))):
        conn.send(_error('"after" must be a seq number or an object of run id → seq'))
        return
    hub.subscribe(conn, runs, after)


def _error(text: str) -> str:
    return dumps({"type": "error", "data": {"code": "bad_message", "message": text}})


router.add_api_websocket_route("/ws", event_socket, name="events")
router.add_api_websocket_route("/api/ws", event_socket, name="events_api")
