"""Who may talk to the server, checked before any route runs, for HTTP and the websocket alike.

1. Host (when listening on loopback): the request must name this machine (localhost, 127.0.0.1,
   ::1, or a name given with --allow-host). A web page whose DNS name was rebound to 127.0.0.1
   cannot talk to the server under its own name.
2. Origin: a browser request from another site is refused (403), whatever its method, and so is
   a websocket opened by another site's page. Same-origin requests, requests without an Origin
   (scripts, curl) and origins given with --allow-origin (the editor's dev server) pass.
3. Token (when one is set): every /api request but /api/health, and the websocket, must carry it,
   as `Authorization: Bearer <token>`, a `token` query parameter, or the `latentgraph_token`
   cookie that opening any page with `?token=<token>` sets (HttpOnly, SameSite=Strict).
4. Bodies: at most `max_body_bytes` (an upload: `max_upload_bytes`); larger ones get 413 before
   they are read, or as soon as a streamed body passes the bound.

Refusals are JSON ErrorBody responses (a websocket refused at its handshake gets the same body).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import ServerConfig, is_loopback
from server.errors import ApiError

TOKEN_COOKIE = "latentgraph_token"
UPLOAD_PATHS = ("/api/images",)
OPEN_PATHS = ("/api/health",)
MULTIPART_SLACK = 64 << 10  # form boundaries and headers around an uploaded file
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # another site cannot frame the editor and click for the user
    (b"referrer-policy", b"no-referrer"),  # a ?token= URL never leaks through a Referer header
]


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail


def _protected(path: str) -> bool:
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
        if scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
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

        await self.app(scope, bounded_receive, send_with_headers)

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


def _too_large(limit: int) -> Refused:
    return Refused(413, "body_too_large", f"the request body is larger than the {limit:,} bytes this server accepts")


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refused) -> None:
    body = json.dumps({"detail": refusal.detail, "code": refusal.code}).encode()
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


__all__ = ["SecurityMiddleware", "TOKEN_COOKIE"]
