"""Latentgraph's server: the HTTP API, the websocket, the persistent queue and its worker.

    from latentgraph.server import ServerConfig, create_app   # an ASGI app, for uvicorn or tests
    from latentgraph.client import Client              # the Python client

Layers: routes (HTTP) → RunService → RunQueue + RunStore (SQLite) ← Dispatcher → Worker → engine;
events flow Worker → Dispatcher → EventHub → websockets.
"""

from latentgraph.server.app import create_app, serve
from latentgraph.server.config import ConfigError, ServerConfig

__all__ = ["ConfigError", "ServerConfig", "create_app", "serve"]
