"""Server overhead: runs per second through HTTP + websocket, the delay from a node's progress
report to a client, and 100 runs submitted at once by 10 clients (all finish, none lost, each
run's events in order).

    .venv/bin/python bench/server.py [--runs 200] [--steps 300]

The server runs in its own process (this file, with --serve), as `latentgraph serve` would, with
the built-in nodes plus one bench node that reports progress; the clients are threads here.
Workflows are trivial (an integer shown, or a node that only reports progress), so what is
measured is the server: validation, SQLite, the queue, the worker hand-off, the websocket.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


import httpx  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from latentgraph.engine import Input, Node, NodeRegistry, RunContext  # noqa: E402

TERMINAL = {"run_finished", "run_cancelled", "run_interrupted"}


def bench_registry() -> NodeRegistry:
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import registry as built_in

    registry = NodeRegistry()
    for info in built_in:
        registry.register(info.cls, info.type, version=info.version, category=info.category, title=info.title,
                          output=info.is_output, cacheable=info.cacheable)

    @registry.node("bench_progress", output=True, cacheable=False)
    class Progress(Node):
        """Reports `steps` progress events `interval` seconds apart, with a preview if asked."""

        steps: int = Input(100, ge=1)
        interval: float = Input(0.002, ge=0)
        preview: int = Input(0, ge=0, le=512)

        def run(self, ctx: RunContext) -> None:
            from PIL import Image

            image = Image.new("RGB", (self.preview, self.preview), (90, 120, 200)) if self.preview else None
            for step in range(1, self.steps + 1):
                time.sleep(self.interval)
                ctx.progress(step, self.steps, preview=image)

    return registry


def serve(port: int, root: Path) -> None:
    from latentgraph.server import ServerConfig
    from latentgraph.server.app import serve as run_server

    config = ServerConfig(port=port, user_dir=root / "user", models_dir=root / "models", input_dir=root / "input",
                          output_dir=root / "output", temp_dir=root / "temp", web_dir=root / "web")
    run_server(config, registry=bench_registry(), log_level="warning")


# --- client side ---------------------------------------------------------------------------------

def show(value: int) -> dict[str, Any]:
    return {"format": "latentgraph/workflow@1", "nodes": {
        "v": {"type": "int_constant", "inputs": {"value": value}},
        "show": {"type": "show_value", "inputs": {"value": {"node": "v", "output": "value"}}}}}


def progress_workflow(steps: int, preview: int) -> dict[str, Any]:
    return {"format": "latentgraph/workflow@1",
            "nodes": {"p": {"type": "bench_progress", "inputs": {"steps": steps, "interval": 0.002, "preview": preview}}}}


class Listener:
    """One websocket as one client id, collecting the events of its runs in a thread."""

    def __init__(self, url: str, client_id: str) -> None:
        self.connection = connect(f"{url.replace('http', 'ws')}/ws?client_id={client_id}", proxy=None, max_size=None)
        self.socket = self.connection.__enter__()
        self.socket.recv()  # snapshot
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.arrival: list[tuple[float, dict[str, Any]]] = []
        self.finished: set[str] = set()
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for text in self.socket:
                now = time.time()
                message = json.loads(text)
                run_id = message.get("run_id")
                if run_id is None:
                    continue
                with self.condition:
                    self.events.setdefault(run_id, []).append(message)
                    if message["type"] == "node_progress":
                        self.arrival.append((now, message))
                    if message["type"] in TERMINAL:
                        self.finished.add(run_id)
                        self.condition.notify_all()
        except Exception:
            pass

    def wait(self, run_ids: set[str], timeout: float = 120) -> None:
        with self.condition:
            if not self.condition.wait_for(lambda: run_ids <= self.finished, timeout):
                raise TimeoutError(f"{len(run_ids - self.finished)} runs did not finish")

    def close(self) -> None:
        self.connection.__exit__(None, None, None)


def submit(http: httpx.Client, workflow: dict[str, Any], client_id: str) -> str:
    response = http.post("/api/runs", json={"workflow": workflow, "client_id": client_id})
    response.raise_for_status()
    return response.json()["id"]


def in_order(events: list[dict[str, Any]]) -> bool:
    return [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["type"] == "run_finished"


def measure_sequential(url: str, runs: int) -> float:
    listener = Listener(url, "sequential")
    with httpx.Client(base_url=url, trust_env=False) as http:
        started = time.perf_counter()
        for value in range(runs):
            listener.wait({submit(http, show(value), "sequential")})
        elapsed = time.perf_counter() - started
    listener.close()
    return runs / elapsed


def measure_pipelined(url: str, runs: int) -> float:
    listener = Listener(url, "pipelined")
    with httpx.Client(base_url=url, trust_env=False) as http:
        started = time.perf_counter()
        ids = {submit(http, show(10_000 + value), "pipelined") for value in range(runs)}
        listener.wait(ids)
        elapsed = time.perf_counter() - started
    listener.close()
    return runs / elapsed


def measure_progress_latency(url: str, steps: int, preview: int) -> list[float]:
    client_id = f"latency-{preview}"
    listener = Listener(url, client_id)
    with httpx.Client(base_url=url, trust_env=False) as http:
        listener.wait({submit(http, progress_workflow(steps, preview), client_id)})
    listener.close()
    return [(arrived - message["timestamp"]) * 1000 for arrived, message in listener.arrival]


def measure_many_clients(url: str, clients: int, per_client: int) -> dict[str, Any]:
    listeners = [Listener(url, f"client-{i}") for i in range(clients)]
    submitted: list[set[str]] = [set() for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(base_url=url, trust_env=False) as http:
            barrier.wait()
            threads = []
            for n in range(per_client):  # each client fires its runs at once too
                thread = threading.Thread(target=lambda n=n: submitted[index].add(
                    submit(http, show(100_000 + index * 1000 + n), f"client-{index}")))
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join()

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for listener, ids in zip(listeners, submitted):
        listener.wait(ids)
    elapsed = time.perf_counter() - started
    total = sum(len(ids) for ids in submitted)
    finished = sum(len(ids & l.finished) for l, ids in zip(listeners, submitted))
    ordered = sum(in_order(l.events[r]) for l, ids in zip(listeners, submitted) for r in ids if r in l.events)
    foreign = sum(len(set(l.events) - ids) for l, ids in zip(listeners, submitted))
    with httpx.Client(base_url=url, trust_env=False) as http:
        statuses = [http.get(f"/api/runs/{r}", params={"events": False}).json()["status"] for ids in submitted for r in ids]
    for listener in listeners:
        listener.close()
    return {"submitted": total, "finished": finished, "succeeded": statuses.count("succeeded"), "in_order": ordered,
            "foreign": foreign, "seconds": elapsed}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs for the runs-per-second rows")
    parser.add_argument("--steps", type=int, default=300, help="progress events for the latency rows")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as root:
        process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), root],
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/api/health", trust_env=False).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the bench server did not start")
                time.sleep(0.1)

            measure_sequential(url, 20)  # warm-up
            sequential = measure_sequential(url, args.runs)
            pipelined = measure_pipelined(url, args.runs)
            plain = measure_progress_latency(url, args.steps, preview=0)
            previews = measure_progress_latency(url, args.steps, preview=64)
            many = measure_many_clients(url, clients=10, per_client=10)
        finally:
            process.terminate()
            process.wait(30)

    cpus = os.cpu_count()
    print(f"Server and clients on one machine ({cpus} CPU cores), Python {sys.version.split()[0]}; "
          "server in its own process, clients in threads.\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| runs/s, one at a time (POST /api/runs → `run_finished` on the websocket), {args.runs} runs "
          f"| {sequential:.0f} runs/s ({1000 / sequential:.1f} ms a run) |")
    print(f"| runs/s, {args.runs} submitted back to back, then all awaited | {pipelined:.0f} runs/s |")
    for label, values in (("no preview", plain), ("64x64 JPEG preview", previews)):
        print(f"| `ctx.progress` → client receives `node_progress`, {label} ({len(values)} events) "
              f"| median {statistics.median(values):.2f} ms, p95 {percentile(values, 0.95):.2f} ms, "
              f"max {max(values):.2f} ms |")
    print(f"| 100 runs submitted at once by 10 clients (10 each, concurrently) | {many['seconds']:.2f} s, "
          f"{many['submitted'] / many['seconds']:.0f} runs/s |")
    print(f"| ... finished / succeeded / lost | {many['finished']} / {many['succeeded']} / "
          f"{many['submitted'] - many['finished']} |")
    print(f"| ... runs whose events arrived complete and in order / events of other clients' runs received "
          f"| {many['in_order']} of {many['submitted']} / {many['foreign']} |")


if __name__ == "__main__":
    main()
