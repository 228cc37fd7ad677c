"""Errors as JSON, never tracebacks: `{"detail": message, "code": machine_code}` (+ `errors`).

`detail` is a sentence the user can act on; `code` is stable for programs; a workflow that fails
validation adds `errors`, every issue as `{node, input, code, message}`.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentgraph.engine import WorkflowInvalid
from latentgraph.engine.jsonsafe import json_safe
from latentgraph.server.backup import is_damage

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="what went wrong, for people")
    code: str = Field(description="what went wrong, for programs (e.g. run_not_found, invalid_workflow)")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation problems, each {node, input, code, message}")


class ApiError(StarletteHTTPException):
    """Raise it anywhere in a request to answer with `status` and an ErrorBody."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)
        self.code = code
        self.errors = errors


def error_response(status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "code": code}
    if errors is not None:
        body["errors"] = errors
    # A message may quote what a client sent or a node raised: never let that make the error itself fail.
    return JSONResponse(json_safe(body), status_code=status, headers=headers)


_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                  422: "invalid_request", 429: "too_many_requests"}


def workflow_invalid(exc: WorkflowInvalid) -> ApiError:
    count = len(exc.issues)
    return ApiError(422, "invalid_workflow", f"the workflow is invalid ({count} problem{'s' if count != 1 else ''})",
                    [i.to_dict() for i in exc.issues])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return error_response(exc.status_code, exc.code, exc.detail, exc.errors, exc.headers)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.method} {request.url.path}"
        return error_response(exc.status_code, _DEFAULT_CODES.get(exc.status_code, "error"), detail,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            errors.append({"node": None, "input": where or None, "code": err.get("type", "invalid"),
                           "message": f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid")})
        summary = "; ".join(e["message"] for e in errors[:3]) + (" ..." if len(errors) > 3 else "")
        return error_response(422, "invalid_request", f"the request is invalid: {summary}", errors)

    @app.exception_handler(WorkflowInvalid)
    async def invalid_workflow(request: Request, exc: WorkflowInvalid) -> JSONResponse:
        error = workflow_invalid(exc)
        return error_response(error.status_code, error.code, error.detail, error.errors)

    @app.exception_handler(sqlite3.DatabaseError)
    async def store_failed(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        return store_error_response(request, exc)


STORE_DAMAGED_DETAIL = (
    "the run database (runs.sqlite) is damaged: {damage}. Stop the server and start it again with "
    "`latentgraph serve --restore-backup` to move the damaged file aside and restore the newest backup, "
    "or with --reset-database to start with an empty run history (see docs/backups.md)")


def store_error_response(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
    """SQLite failed under a request: 503 when the database is damaged, busy, full or unreadable
    (what to do is in `detail`); anything else (a constraint, a statement's mistake) is a 500."""
    where = f"{request.method} {request.url.path}"
    name = getattr(exc, "sqlite_errorname", None) or ""
    if is_damage(exc):
        store = getattr(getattr(request.app.state, "latentgraph", None), "store", None)
        if store is not None and hasattr(store, "mark_damaged"):
            store.mark_damaged(str(exc))
        log.error("%s: the run database is damaged: %s", where, exc)
        return error_response(503, "store_damaged", STORE_DAMAGED_DETAIL.format(damage=exc))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        log.warning("%s: the run database is busy: %s", where, exc)
        return error_response(503, "store_busy", f"the run database is busy ({exc}); try again in a moment",
                              headers={"Retry-After": "1"})
    if name.startswith("SQLITE_FULL"):
        log.error("%s: the run database cannot grow: %s", where, exc)
        return error_response(503, "store_full", f"the run database cannot grow: {exc}; free some disk space")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY")):
        log.error("%s: the run database cannot be used: %s", where, exc)
        return error_response(503, "store_unavailable", f"the run database cannot be used: {exc} "
                                                        "(details are in the server's log)")
    log.error("%s failed", where, exc_info=exc)
    return error_response(500, "internal_error", f"the server failed on {where}: {type(exc).__name__} "
                                                 "(details are in the server's log)")



class UnexpectedErrors:
    """ASGI middleware: an exception no handler took becomes a JSON 500 (the traceback goes to the
    log, once), and the connection stays usable; Starlette's own last resort would re-raise it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if started:
                raise
            response = error_response(500, "internal_error", f"the server failed on {scope['method']} {scope['path']}: "
                                                             f"{type(exc).__name__} (details are in the server's log)")
            await response(scope, receive, send)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "Bad request"), (404, "Not found"), (409, "Conflict"), (422, "Invalid request or workflow"))
}
"""Error responses most routes share, for the OpenAPI description."""


__all__ = ["ApiError", "ERROR_RESPONSES", "ErrorBody", "UnexpectedErrors", "error_response", "install_error_handlers",
           "store_error_response", "workflow_invalid"]
