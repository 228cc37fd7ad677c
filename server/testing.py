"""A real server on a free loopback port, in a thread of this process: for tests and benchmarks.

    with ServerThread(config, registry=...) as server:
        httpx.get(server.url + "/api/health")

The socket is bound before uvicorn starts, so the port is known and nothing races for it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from latentgraph.engine import NodeRegistry
from latentgraph.server.app import create_app, uvicorn_config
from latentgraph.server.config import ServerConfig


class ServerThread:
    def __init__(self, config: ServerConfig, *, registry: NodeRegistry | None = None, worker: Any = None,
                 log_level: str = "warning") -> None:
        self.config = config
        self.app = create_app(config, registry=registry, worker=worker)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
        # keep-alive responses wait 40 ms for delayed ACKs.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((config.host, config.port))
        self.port = self.socket.getsockname()[1]
        config.port = self.port
        self.server = uvicorn.Server(uvicorn_config(self.app, config, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="latentgraph-test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def state(self) -> Any:
        return self.app.state.latentgraph

    def start(self, timeout: float = 20.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ServerThread"]
