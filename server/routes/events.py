"""The websocket (/ws, also at /api/ws): live run events, step previews and queue changes.

The protocol is described in `server/hub.py` and `server/messages.py`, and in the README.
Client → server messages (JSON text):

    {"type": "subscribe", "runs": ["<run id>", ...] | "*", "after": <seq> | {"<run id>": <seq>}}
    {"type": "unsubscribe", "runs": [...] | "*"}
    {"type": "ping"}

A message that is not JSON, is nested deeper than 64 levels, holds a lone surrogate, NaN or an
infinity, or names something that is not a run id (1 to 64 of A-Z a-z 0-9 _ . : -) gets an
`error` message saying where, and the connection stays open. A connection follows at most
MAX_SUBSCRIBE runs by id; an id that names no run is answered `run_not_found` and not kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from latentgraph.engine.jsonsafe import find_deep_nesting, find_json_problems
from latentgraph.server.errors import error_response
from latentgraph.server.hub import Connection, EventHub
from latentgraph.server.messages import dumps
from latentgraph.server.schemas import CLIENT_ID_PATTERN
from latentgraph.server.state import get_state

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
_RUN_ID = re.compile(CLIENT_ID_PATTERN)  # run ids are 32 hex digits; anything longer or odder is not one
MAX_SUBSCRIBE = 1000  # run ids in one message, and runs one connection may follow by id (or "*" for all)


async def refuse_socket(websocket: WebSocket, code: str, detail: str) -> None:
    """Refuse a websocket before accepting it: an HTTP 400 where the server can send one, else a
    close with code 1008 (policy violation) and the reason."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(400, code, detail))
    else:
        await websocket.close(1008, detail)


async def event_socket(websocket: WebSocket) -> None:
    if "clientId" in websocket.query_params and "client_id" not in websocket.query_params:
        from latentgraph.server.routes.comfyui import comfy_socket

        await comfy_socket(websocket)  # ComfyUI's protocol: its clients connect with ?clientId=
        return
    client_id = websocket.query_params.get("client_id")
    if client_id is not None and not _CLIENT_ID.match(client_id):
        await refuse_socket(websocket, "invalid_client_id", "client_id must be 1 to 64 letters, digits or _ . : -")
        return
    hub = get_state(websocket).hub
    await websocket.accept()
    conn = hub.connect(websocket, client_id)

    async def on_text(text: str) -> None:
        try:
            await _handle(hub, conn, text)
        except Exception as exc:  # whatever a message holds, it gets an answer and the connection stays
            log.warning("websocket message not handled: %s: %s", type(exc).__name__, exc)
            conn.send(_error(f"the message could not be handled ({type(exc).__name__})", "internal_error"))

    await serve_connection(websocket, conn, hub.disconnect, on_text)


async def serve_connection(websocket: WebSocket, conn: Any, release: Callable[[Any], None],
                           on_text: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Send `conn`'s messages (its `pump`) while reading the client's until it goes away, then
    `release(conn)`. Text frames go to `on_text`, binary ones get an error; without `on_text`
    whatever the client sends is read and ignored (as ComfyUI's socket does)."""
    sender = asyncio.create_task(_pump(conn))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if on_text is None:
                continue
            text = message.get("text")
            if text is None:
                conn.send(_error("binary frames are not understood; send JSON text"))
                continue
            await on_text(text)
    except WebSocketDisconnect:
        pass
    finally:
        release(conn)
        sender.cancel()


async def _pump(conn: Connection) -> None:
    try:
        await conn.pump()
    except Exception:  # the client went away mid-send: the receive loop notices and cleans up
        pass


async def _handle(hub: EventHub, conn: Connection, text: str) -> None:
    deep = find_deep_nesting(text)  # before json.loads, which recurses (a frame may be 1 MiB of brackets)
    if deep is not None:
        conn.send(_error(deep.message, deep.code))
        return
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        conn.send(_error("not JSON"))
        return
    problems = find_json_problems(message)
    if problems:
        conn.send(_error(problems[0].message, problems[0].code))
        return
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "ping":
        conn.send(dumps({"type": "pong", "data": {}}))
        return
    if kind not in ("subscribe", "unsubscribe"):
        conn.send(_error(f"unknown message type {_short(kind)} (subscribe, unsubscribe, ping)"))
        return
    runs = message.get("runs")
    if runs != "*" and not (isinstance(runs, list) and len(runs) <= MAX_SUBSCRIBE):
        conn.send(_error(f'"runs" must be "*" or a list of at most {MAX_SUBSCRIBE} run ids'))
        return
    if runs != "*":
        for index, run_id in enumerate(runs):
            if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
                conn.send(_error(f"runs[{index}] is not a run id ({_short(run_id)}): run ids are 1 to 64 letters, "
                                 "digits or _ . : -", "invalid_run_id"))
                return
    if kind == "unsubscribe":
        hub.unsubscribe(conn, runs)
        return
    after: Any = message.get("after", 0)
    if not (isinstance(after, int) or (isinstance(after, dict) and all(isinstance(v, int) for v in after.values()))):
        conn.send(_error('"after" must be a seq number or an object of run id → seq'))
        return
    if runs != "*":
        runs = list(dict.fromkeys(runs))
        new = [r for r in runs if r not in conn.runs]
        if len(conn.runs) + len(new) > MAX_SUBSCRIBE:
            conn.send(_error(f"this connection follows {len(conn.runs)} runs; following {len(new)} more would pass "
                             f"the {MAX_SUBSCRIBE} one connection may follow by id: unsubscribe from some, or "
                             'subscribe to "*"', "too_many_runs"))
            return
        # The store is read (and the events encoded) in a worker thread; the loop only sends.
        stored = await run_in_threadpool(hub.read_stored, [r for r in runs if hub.live_state(r) is None], after)
        hub.subscribe(conn, runs, after, stored)
        return
    hub.subscribe(conn, runs, after)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)  # repr escapes what could not be sent (a lone surrogate is shown as \ud800)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(text: str, code: str = "bad_message") -> str:
    return dumps({"type": "error", "data": {"code": code, "message": text}})


router.add_api_websocket_route("/ws", event_socket, name="events")
router.add_api_websocket_route("/api/ws", event_socket, name="events_api")
