"""Shared by the server tests (no tests here): a real server on a free loopback port in a thread,
a registry with the real nodes plus test nodes (a slow stepper, a gate the test opens, a failure),
workflow builders, and websocket helpers.

The test modules import the fixtures from here (`from test_server_support import *`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from latentgraph.engine import Input, Node, NodeOutputs, NodeRegistry, Output, RunContext, link
from latentgraph.engine import registry as global_registry
from latentgraph.nodes.services import RunLimits
from latentgraph.server import ServerConfig
from latentgraph.server.testing import ServerThread

RUN_LIMITS = {f.name for f in fields(RunLimits)}  # start_server(max_steps=...) sets config.limits

ROOT = Path(__file__).resolve().parents[1]
GATES: dict[str, threading.Event] = {}  # name → event a `test_gate` node waits for

test_nodes = NodeRegistry()


@test_nodes.node("test_steps", category="test", output=True, cacheable=False)
class Steps(Node):
    """Reports progress `steps` times, `delay` seconds apart, with a tiny preview if asked."""

    steps: int = Input(3, ge=1, le=100_000)
    delay: float = Input(0.0, ge=0.0)
    preview: bool = Input(False)
    tag: str = Input("")

    def run(self, ctx: RunContext) -> None:
        from PIL import Image

        for step in range(1, self.steps + 1):
            if self.delay:
                time.sleep(self.delay)
            image = Image.new("RGB", (600, 300), (step % 256, 0, 0)) if self.preview else None
            ctx.progress(step, self.steps, preview=image)
        ctx.report(steps=self.steps, tag=self.tag)


@test_nodes.node("test_gate", category="test", output=True, cacheable=False)
class Gate(Node):
    """Waits until the test opens GATES[name], reporting progress (a cancel point) while it waits."""

    name: str = Input("gate")

    def run(self, ctx: RunContext) -> None:
        gate = GATES.setdefault(self.name, threading.Event())
        tick = 0
        while not gate.wait(0.01):
            tick += 1
            ctx.progress(tick, 0)
        ctx.report(opened=self.name)


@test_nodes.node("test_block", category="test", output=True, cacheable=False)
class Block(Node):
    """Waits until the test opens GATES[name] without a single cancel point: a step that will not stop."""

    name: str = Input("block")

    def run(self, ctx: RunContext) -> None:
        GATES.setdefault(self.name, threading.Event()).wait()
        ctx.report(opened=self.name)


@test_nodes.node("test_fail", category="test", output=True)
class Fail(Node):
    """Always raises ValueError(message)."""

    message: str = Input("boom")

    def run(self, ctx: RunContext) -> None:
        raise ValueError(self.message)


@test_nodes.node("test_echo", category="test")
class Echo(Node):
    """Passes an integer through."""

    value: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> "Echo.Outputs":
        return self.Outputs(value=self.value)


def make_registry() -> NodeRegistry:
    """The real node library plus the test nodes above, in a registry of its own."""
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)

    registry = NodeRegistry()
    for info in [*global_registry, *test_nodes]:
        registry.register(info.cls, info.type, version=info.version, category=info.category, title=info.title,
                          output=info.is_output, cacheable=info.cacheable)
    return registry


REGISTRY = make_registry()


# --- workflows -----------------------------------------------------------------------------------

def workflow(**nodes: dict[str, Any]) -> dict[str, Any]:
    return {"format": "latentgraph/workflow@1", "nodes": nodes}


def node(type_name: str, **inputs: Any) -> dict[str, Any]:
    return {"type": type_name, "inputs": inputs}


def arithmetic(seed: int = 42) -> dict[str, Any]:
    """The bundled workflows/arithmetic.json with another seed."""
    document = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())
    document["nodes"]["seed"]["inputs"]["seed"] = seed
    return document


DEMO = "latentgraph-demo.safetensors"  # the checkpoint the shipped workflows load


def txt2img(seed: int = 42, steps: int = 3, checkpoint: str = DEMO, prefix: str = "txt2img") -> dict[str, Any]:
    """The bundled workflows/txt2img.json with another seed, step count, checkpoint and file prefix."""
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    nodes = document["nodes"]
    nodes["checkpoint"]["inputs"]["checkpoint"] = checkpoint
    nodes["sampler"]["inputs"].update(seed=seed, steps=steps)
    nodes["save"]["inputs"]["filename_prefix"] = prefix
    return document


def show(value: int) -> dict[str, Any]:
    return workflow(v=node("int_constant", value=value), show=node("show_value", value=link("v", "value")))


def steps(count: int = 3, delay: float = 0.0, preview: bool = False, tag: str = "") -> dict[str, Any]:
    return workflow(steps=node("test_steps", steps=count, delay=delay, preview=preview, tag=tag))


def gated(name: str) -> dict[str, Any]:
    GATES[name] = threading.Event()
    return workflow(gate=node("test_gate", name=name))


def blocked(name: str) -> dict[str, Any]:
    GATES[name] = threading.Event()
    return workflow(block=node("test_block", name=name))


def open_gate(name: str) -> None:
    GATES.setdefault(name, threading.Event()).set()


# --- servers -------------------------------------------------------------------------------------

def server_config(root: Path, **overrides: Any) -> ServerConfig:
    config = ServerConfig(port=0, user_dir=root / "user", models_dir=root / "models", input_dir=root / "input",
                          output_dir=root / "output", temp_dir=root / "temp", web_dir=root / "no-web")
    for name, value in overrides.items():
        if name in RUN_LIMITS:  # e.g. max_steps=1000: one of the node library's run limits
            config.limits = replace(config.limits, **{name: value})
        else:
            setattr(config, name, value)
    return config


@pytest.fixture
def start_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ServerThread]]:
    """`start_server(**config)`: a started server over folders in tmp_path (the same folders on
    every call, so a second call is a restart). Every server is stopped after the test."""
    started: list[ServerThread] = []

    def start(registry: NodeRegistry = REGISTRY, **overrides: Any) -> ServerThread:
        server = ServerThread(server_config(tmp_path, **overrides), registry=registry).start()
        started.append(server)
        return server

    yield start
    for gate in GATES.values():  # nothing may stay blocked on a gate
        gate.set()
    for server in started:
        if server.thread.is_alive():
            server.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerThread]) -> ServerThread:
    return start_server()


@pytest.fixture
def api(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as client:
        yield client


def submit(api: httpx.Client, document: dict[str, Any], **options: Any) -> dict[str, Any]:
    response = api.post("/api/runs", json={"workflow": document, **options})
    assert response.status_code == 201, response.text
    return response.json()


# Deadlines are generous on purpose: a wait ends as soon as its condition holds, so a long deadline
# costs nothing on a quiet machine and keeps the suite passing on a loaded one.
DEADLINE = 30.0


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def wait_run(api: httpx.Client, run_id: str, timeout: float = DEADLINE) -> dict[str, Any]:
    """The run once it has finished (polling)."""
    finished = {"succeeded", "failed", "cancelled", "interrupted"}

    def done() -> dict[str, Any] | None:
        run = api.get(f"/api/runs/{run_id}").json()
        return run if run["status"] in finished else None

    return wait_for(done, timeout)


# --- websockets ----------------------------------------------------------------------------------

def open_ws(server: ServerThread, client_id: str | None = None, **headers: str) -> Any:
    url = server.ws_url + (f"?client_id={client_id}" if client_id else "")
    return ws_connect(url, additional_headers=headers or None, proxy=None, open_timeout=DEADLINE)


def receive(socket: Any, timeout: float = DEADLINE) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def receive_until(socket: Any, stop: Callable[[dict[str, Any]], bool], timeout: float = DEADLINE) -> list[dict[str, Any]]:
    """Messages up to and including the first for which `stop` is true."""
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; got {[m['type'] for m in messages]}")
        message = receive(socket, remaining)
        messages.append(message)
        if stop(message):
            return messages


def run_ended(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("run_id") == run_id and m["type"] in ("run_finished", "run_cancelled", "run_interrupted")


def events_until_ended(socket: Any, run_ids: set[str], timeout: float = DEADLINE) -> dict[str, list[dict[str, Any]]]:
    """Each run's events as one websocket client received them, until all of them ended."""
    deadline = time.monotonic() + timeout
    events: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
    ended: set[str] = set()
    while ended != run_ids:
        message = receive(socket, max(0.1, deadline - time.monotonic()))
        if message.get("run_id") in run_ids:
            events[message["run_id"]].append(message)
            if run_ended(message["run_id"])(message):
                ended.add(message["run_id"])
    return events


__all__ = [
    "DEADLINE", "GATES", "REGISTRY", "ROOT", "api", "arithmetic", "blocked", "events_until_ended", "gated", "make_registry", "node",
    "open_gate", "open_ws",
    "receive", "receive_until", "run_ended", "server", "server_config", "show", "start_server", "steps", "submit",
    "wait_for", "wait_run", "workflow",
]
