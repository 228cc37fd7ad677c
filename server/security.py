"""Who may talk to the server, checked before any route runs, for HTTP and the websocket alike.

1. Host (when listening on loopback): the request must name this machine (localhost, 127.0.0.1,
   ::1, or a name given with --allow-host). A web page whose DNS name was rebound to 127.0.0.1
   cannot talk to the server under its own name.
2. Origin: a browser request from another site is refused (403), whatever its method, and so is
   a websocket opened by another site's page. Same-origin requests, requests without an Origin
   (scripts, curl) and origins given with --allow-origin (the editor's dev server) pass.
3. Token (when one is set): every /api request but /api/health, ComfyUI's API at its own paths
   (/prompt, /history, /view, /upload/..., /object_info, /queue, /interrupt, ...) and the websocket
   must carry it,
   as `Authorization: Bearer <token>`, a `token` query parameter, or the `latentgraph_token`
   cookie that opening any page with `?token=<token>` sets (HttpOnly, SameSite=Strict).
4. Bodies: at most `max_body_bytes` (an upload: `max_upload_bytes`); larger ones get 413 before
   they are read, or as soon as a streamed body passes the bound.
5. JSON bodies are read here in full and checked before any route parses them (engine.jsonsafe):
   nesting deeper than MAX_DEPTH (64) levels is refused before anything recursive reads it, and so
   are lone surrogates in strings or keys and NaN or infinities, which could be stored but never
   sent back. 422 `invalid_request`, each place in `errors` as {node, input, path, code, message}
   (`node` and `input` where it lies in a node's inputs; `input` is the path otherwise).

Refusals are JSON ErrorBody responses (a websocket refused at its handshake gets the same body).
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentgraph.engine.jsonsafe import find_deep_nesting, find_json_problems, format_path, node_input
from latentgraph.server.config import ServerConfig, is_loopback
from latentgraph.server.errors import ApiError

TOKEN_COOKIE = "latentgraph_token"
UPLOAD_PATHS = ("/api/images", "/api/images/mask", "/api/workflows/import", "/upload/image", "/upload/mask")
OPEN_PATHS = ("/api/health",)
# ComfyUI's API (server/routes/comfyui.py), at ComfyUI's own paths: protected as ours is.
COMFY_PATHS = ("/prompt", "/history", "/view", "/upload/image", "/upload/mask", "/object_info", "/queue",
               "/interrupt", "/system_stats", "/embeddings", "/extensions", "/models")
MULTIPART_SLACK = 64 << 10  # form boundaries and headers around an uploaded file
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CHECK_ON_LOOP_BYTES = 64 << 10  # a JSON body larger than this is checked in a worker thread
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # another site cannot frame the editor and click for the user
    (b"referrer-policy", b"no-referrer"),  # a ?token= URL never leaks through a Referer header
]


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.status, self.code, self.detail, self.errors = status, code, detail, errors


def _protected(path: str) -> bool:
    if path in COMFY_PATHS or path.startswith(tuple(f"{p}/" for p in COMFY_PATHS)):
        return True
    return (path.startswith("/api/") or path in ("/api", "/ws")) and path not in OPEN_PATHS


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.check_host = is_loopback(config.host)
        self.allowed_hosts = {"localhost", "127.0.0.1", "::1", *(h.lower() for h in config.allowed_hosts)}
        self.allowed_origins = {o.rstrip("/").lower() for o in config.allowed_origins}
        self.token = config.token.encode() if config.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self._check_host(headers)
            self._check_origin(scope, headers)
            token_from_query = self._check_token(scope, headers)
        except Refused as refusal:
            await _refuse(scope, receive, send, refusal)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        limit = self.config.max_body_bytes
        upload = scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        if upload:
            limit = self.config.max_upload_bytes + MULTIPART_SLACK
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, _too_large(limit))
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = _too_large(limit)
                    raise ApiError(refusal.status, refusal.code, refusal.detail)
            return message

        app_receive = bounded_receive
        if scope["method"] in BODY_METHODS and not upload and _is_json(headers):
            try:
                body = await _read_body(bounded_receive)
            except ApiError as exc:
                await _refuse(scope, receive, send, Refused(exc.status_code, exc.code, exc.detail))
                return
            if body is None:  # the client went away
                return
            refusal = check_json_body(body) if len(body) <= CHECK_ON_LOOP_BYTES else \
                await anyio.to_thread.run_sync(check_json_body, body)
            if refusal is not None:
                await _refuse(scope, receive, send, refusal)
                return
            app_receive = _replay(body, receive)

        cookie = None
        if token_from_query and headers.get("cookie", "").find(f"{TOKEN_COOKIE}=") < 0:
            cookie = f"{TOKEN_COOKIE}={self.config.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if cookie is not None:
                    extra.append((b"set-cookie", cookie))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, app_receive, send_with_headers)

    def _check_host(self, headers: Headers) -> None:
        if not self.check_host:
            return
        host = headers.get("host", "")
        name = urlsplit("//" + host).hostname or ""
        if name.lower() not in self.allowed_hosts:
            raise Refused(403, "forbidden_host",
                          f"this server only answers requests addressed to localhost or 127.0.0.1, not {host!r} "
                          "(a guard against DNS rebinding; start it with --allow-host NAME to accept that name)")

    def _check_origin(self, scope: Scope, headers: Headers) -> None:
        origin = headers.get("origin")
        if origin is None:
            state_changing = scope["type"] == "websocket" or scope["method"] not in ("GET", "HEAD", "OPTIONS")
            if state_changing and headers.get("sec-fetch-site") == "cross-site":
                raise Refused(403, "forbidden_origin", "cross-site request refused")
            return
        normal = origin.rstrip("/").lower()
        if normal in self.allowed_origins:
            return
        parts = urlsplit(normal)
        if parts.scheme in ("http", "https") and parts.netloc == headers.get("host", "").lower():
            return
        allowed = ", ".join(sorted(self.allowed_origins)) or "none"
        raise Refused(403, "forbidden_origin",
                      f"cross-origin request refused: a page from {origin!r} may not use this server "
                      f"(allowed: this server's own pages and --allow-origin origins: {allowed})")

    def _check_token(self, scope: Scope, headers: Headers) -> bool:
        """Raises Refused when a token is needed and missing or wrong; True when it came in the query."""
        if self.token is None:
            return False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = (query.get("token") or [None])[0]
        if not _protected(scope["path"]):
            return from_query is not None and hmac.compare_digest(from_query.encode(), self.token)
        authorization = headers.get("authorization", "")
        via_query = False
        if authorization.lower().startswith("bearer "):
            offered = authorization[7:].strip()
        elif from_query is not None:
            offered, via_query = from_query, True
        else:
            offered = _cookie(headers.get("cookie", ""), TOKEN_COOKIE)
        if offered is None:
            raise Refused(401, "missing_token", "this server needs its API token: send 'Authorization: Bearer <token>', "
                                                "or add ?token=<token> to the URL")
        if not hmac.compare_digest(offered.encode(), self.token):
            raise Refused(401, "invalid_token", "the API token is wrong")
        return via_query


def _cookie(header: str, name: str) -> str | None:
    for item in header.split(";"):
        key, _, value = item.strip().partition("=")
        if key == name:
            return value
    return None


def _is_json(headers: Headers) -> bool:
    """A body FastAPI would parse as JSON: application/json or application/*+json (or none given)."""
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the real channel (a disconnect, say)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def check_json_body(body: bytes) -> Refused | None:
    """The refusal for a JSON body nested too deep, or holding a lone surrogate, NaN or an
    infinity (see engine.jsonsafe); None when it is fine or not JSON at all (the route says so)."""
    if not body.strip():
        return None
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads reads bytes
    except (UnicodeDecodeError, LookupError):
        return None
    deep = find_deep_nesting(text)  # before json.loads, which recurses
    if deep is not None:
        problems = [deep]
    else:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return None
        problems = find_json_problems(document)
        if not problems:
            return None
    errors = []
    for problem in problems:
        node, input_name = node_input(problem.path)  # in a node's inputs: that node and input, else the path
        path = format_path(problem.path) or None
        errors.append({"node": node, "input": input_name if node is not None else path, "path": path,
                       "code": problem.code, "message": problem.message})
    summary = "; ".join(e["message"] for e in errors[:3]) + (" ..." if len(errors) > 3 else "")
    return Refused(422, "invalid_request", f"the request body cannot be accepted: {summary}", errors)


def _too_large(limit: int) -> Refused:
    return Refused(413, "body_too_large", f"the request body is larger than the {limit:,} bytes this server accepts")


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refused) -> None:
    content: dict[str, Any] = {"detail": refusal.detail, "code": refusal.code}
    if refusal.errors is not None:
        content["errors"] = refusal.errors
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.detail[:120]})


__all__ = ["SecurityMiddleware", "TOKEN_COOKIE", "check_json_body"]
