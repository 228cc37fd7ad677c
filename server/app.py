"""The FastAPI application: routers, error handlers, security, the editor's static files, and `serve`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from latentgraph.engine import NodeRegistry
from latentgraph.server.config import ServerConfig
from latentgraph.server.errors import UnexpectedErrors, install_error_handlers
from latentgraph.server.routes import ALL
from latentgraph.server.security import SecurityMiddleware
from latentgraph.server.state import build_state
from latentgraph.server.worker import Worker

log = logging.getLogger("latentgraph.server")

DESCRIPTION = """\
Latentgraph's HTTP API: submit workflows, follow them, fetch their images.

* **Runs** are validated when submitted (422 lists every problem as `{node, input, code, message}`),
  queued by priority then submission order, and executed one at a time on a shared executor, so
  loaded models stay loaded. Queue and history survive restarts.
* **Events** stream on the websocket `/ws` as JSON text messages: `snapshot` on connect, `queue`
  when the queue changes, and each run's events (`run_queued`, `run_started`, `node_started`,
  `node_progress` with a base64 JPEG `preview`, `node_cached`, `node_finished`, `node_failed`,
  `node_skipped`, `run_finished`, `run_cancelled`, `run_interrupted`), numbered by `seq`.
* **Errors** are JSON: `{"detail": "...", "code": "..."}`.
* With a token (required when listening beyond loopback), send `Authorization: Bearer <token>`.
"""

TAGS = [
    {"name": "runs", "description": "Submit workflows; read runs with their results and events; cancel."},
    {"name": "queue", "description": "What runs now and what waits, in order."},
    {"name": "nodes", "description": "The node catalog."},
    {"name": "images", "description": "Output, preview and input images; thumbnails; uploads."},
    {"name": "models", "description": "Model files by kind."},
    {"name": "workflows", "description": "Saved workflows: bundled (read-only) and the user's."},
    {"name": "system", "description": "Versions, device, memory, caches; health."},
]

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Latentgraph</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}
code{background:#f2f2f2;padding:0 .3em;border-radius:3px}</style></head>
<body><h1>Latentgraph</h1>
<p>The server is running. The browser editor is not built yet: run <code>npm run build</code> in
<code>web/</code> and reload this page.</p>
<p>Meanwhile: the <a href="docs">API documentation</a>, the <a href="api/nodes">node catalog</a>,
the <a href="api/queue">queue</a>, <a href="api/runs">recent runs</a>, or the Python client
(<code>latentgraph.client.Client</code>).</p></body></html>
"""


def create_app(config: ServerConfig | None = None, *, registry: NodeRegistry | None = None,
               worker: Worker | None = None) -> FastAPI:
    """The application for `config` (checked: raises ConfigError; a damaged run database raises
    server.backup.DatabaseDamaged, saying what to do). `registry` defaults to the built-in nodes
    plus installed node libraries; `worker` to one executing in this process."""
    config = config or ServerConfig()
    config.check()
    if registry is None:
        from latentgraph.nodes.library import load_registry

        registry = load_registry()
    state = build_state(config, registry, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.hub.attach(asyncio.get_running_loop())
        await run_in_threadpool(state.start)
        try:
            yield
        finally:
            state.hub.close_all()
            await run_in_threadpool(state.stop)

    app = FastAPI(title="Latentgraph", version=state.version, description=DESCRIPTION, openapi_tags=TAGS,
                  lifespan=lifespan)
    app.state.latentgraph = state
    install_error_handlers(app)
    for router in ALL:
        app.include_router(router)
    mount_editor(app, config.web_dir)
    app.add_middleware(UnexpectedErrors)
    if config.allowed_origins:  # a dev server on another origin reads the API with CORS
        app.add_middleware(CORSMiddleware, allow_origins=config.allowed_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(SecurityMiddleware, config=config)  # added last: runs first
    return app


def mount_editor(app: FastAPI, web_dir: Path) -> None:
    """The editor's built files at / when they exist, else a page that says how to build them."""
    if (web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="editor")
        return

    @app.get("/", include_in_schema=False)
    def placeholder() -> HTMLResponse:
        return HTMLResponse(PLACEHOLDER)


def uvicorn_config(app: FastAPI, config: ServerConfig, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level=log_level,
        ws="websockets-sansio", ws_max_size=1 << 20,  # client messages are small subscribe requests
        timeout_graceful_shutdown=5, proxy_headers=False, server_header=False, lifespan="on",
    )


def serve(config: ServerConfig, *, registry: NodeRegistry | None = None, log_level: str = "info") -> None:
    """Run the server until interrupted (Ctrl-C stops it cleanly: a run in progress is marked
    interrupted, queued runs wait for the next start)."""
    # Logging first: building the app checks, and may restore, the run database, and says so.
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
    app = create_app(config, registry=registry)
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"http://{host}:{config.port}/"
    log.info("Latentgraph on %s%s", address, "?token=<your token>" if config.token else "")
    uvicorn.Server(uvicorn_config(app, config, log_level)).run()


__all__ = ["create_app", "mount_editor", "serve", "uvicorn_config"]
