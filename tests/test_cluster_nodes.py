"""Scale-out on a multi-node Ray cluster: a Ray head and two worker nodes (separate `ray start`
processes on 127.0.0.2-4, one CPU each, token authentication on), and `latentgraph serve --ray
ADDRESS` as its own process, as a user runs them. The demo model is the checkpoint; a plug-in node
library (tests/cluster_plugin, on the server's and every node's Python path) adds a node that
hangs where no cancel reaches it.

Shown here: a seed sweep loads the model once per worker; runs from several websocket clients
spread over both nodes with their events in order; cancel of a running remote run; a hung worker
replaced; SIGKILL of a worker node mid-run (the run finishes on the other node, 0 runs lost or
duplicated; a node that joins later takes the lost worker's place); the server SIGKILLed and
restarted (the queued runs resume); a server without the cluster's token refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from ray_nodes import RayNodes, free_port
from test_server_support import DEADLINE, DEMO, events_until_ended, receive, txt2img, wait_for, wait_run

pytest.importorskip("ray")

PLUGIN = Path(__file__).with_name("cluster_plugin")
SLOW = 600.0  # deadline for what waits on actors starting or a node being declared dead (ends when done)



def hang(seconds: float = 600.0) -> dict[str, Any]:
    return {"format": "latentgraph/workflow@1", "nodes": {"hang": {"type": "test_hang", "inputs": {"seconds": seconds}}}}


class HeadServer:
    """`latentgraph serve --ray ADDRESS` in a process of its own, over the folders under `root`."""

    def __init__(self, root: Path, address: str, env: dict[str, str]) -> None:
        self.root, self.address, self.env = root, address, env
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self) -> list[str]:
        r = self.root
        return [sys.executable, "-m", "latentgraph", "serve", "--ray", self.address, "--port", str(self.port),
                "--user-dir", str(r / "user"), "--models-dir", str(r / "models"), "--input-dir", str(r / "input"),
                "--output-dir", str(r / "output"), "--temp-dir", str(r / "temp"), "--max-steps", "1000",
                "--ray-hang-grace", "3", "--log-level", "warning"]

    def start(self) -> "HeadServer":
        """Start it and wait for both workers; on another port when its port was taken while it
        connected to the cluster (Ray's processes bind ports of their own)."""
        for attempt in range(5):
            logged = self.log.stat().st_size if self.log.exists() else 0
            with open(self.log, "ab") as out:
                self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)
            with httpx.Client(base_url=self.url, timeout=DEADLINE, trust_env=False) as api:
                def up() -> bool:
                    if self.process.poll() is not None:
                        return True
                    try:
                        workers = api.get("/api/system").json()["workers"]
                    except httpx.HTTPError:
                        return False
                    return len(workers) == 2 and all(w["ready"] for w in workers)

                wait_for(up, timeout=SLOW, interval=0.2)
            if self.process.poll() is None:
                return self
            output = self.log.read_bytes()[logged:].decode(errors="replace")
            assert "address already in use" in output, output[-3000:]
            self.port = free_port()
        raise AssertionError("no free port for the server after 5 attempts")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RayNodes, dict[str, str], Path]]:
    token = secrets.token_hex(32)
    root = Path(f"/tmp/lg-nodes-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    root.mkdir()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])),
           "OMP_WAIT_POLICY": "PASSIVE"}
    nodes = RayNodes(root, token, env)
    try:
        nodes.start_head()
        nodes.add_worker("127.0.0.3")
        nodes.add_worker("127.0.0.4")
        yield nodes, {**nodes.env}, root
    finally:
        nodes.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def head(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HeadServer, httpx.Client]]:
    from latentgraph.bundled import demo_models_dir

    nodes, env, _ = cluster
    root = tmp_path_factory.mktemp("head")
    (root / "models" / "checkpoints").mkdir(parents=True)
    os.link(demo_models_dir() / DEMO, root / "models" / "checkpoints" / DEMO)
    server = HeadServer(root, nodes.address, env).start()
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        yield server, api
    server.stop()


def workers(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {w["worker"]: w for w in api.get("/api/system").json()["workers"]}


def ws(server: HeadServer, client_id: str) -> Any:
    return ws_connect(f"{server.ws_url}?client_id={client_id}", proxy=None, open_timeout=DEADLINE)


def until_ended(socket: Any, run_ids: set[str], timeout: float = SLOW) -> dict[str, list[dict[str, Any]]]:
    return events_until_ended(socket, run_ids, timeout)


def submit(api: httpx.Client, document: dict[str, Any], **options: Any) -> str:
    response = api.post("/api/runs", json={"workflow": document, **options})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_workers_are_on_the_worker_nodes_one_thread_each_at_normal_priority(head: Any) -> None:
    server, api = head
    found = workers(api)
    assert sorted(found) == ["worker-0", "worker-1"]
    inventories = [w["inventory"] for w in found.values()]
    assert sorted(i["node_ip"] for i in inventories) == ["127.0.0.3", "127.0.0.4"]  # the head node has no CPUs
    assert all(i["threads"] == 1 and i["niceness"] == 0 and i["checkpoints"] == [DEMO] for i in inventories)
    assert all(i["model_loads"] == 0 and i["loaded"] == [] for i in inventories)


def test_a_seed_sweep_loads_the_model_once_per_worker(head: Any) -> None:
    server, api = head
    run_ids = [submit(api, txt2img(seed=seed, prefix="sweep")) for seed in range(8)]
    runs = [wait_run(api, run_id, timeout=SLOW) for run_id in run_ids]
    assert [run["status"] for run in runs] == ["succeeded"] * 8
    assert {run["summary"]["worker"] for run in runs} == {"worker-0", "worker-1"}
    found = workers(api)
    assert {name: w["inventory"]["model_loads"] for name, w in found.items()} == {"worker-0": 1, "worker-1": 1}
    assert all(w["loaded"] == [DEMO] for w in found.values())
    names = sorted(run["results"]["save"]["images"][0]["filename"] for run in runs)
    assert names == [f"sweep_{n:05}_.png" for n in range(1, 9)]  # the head's counter: none written twice
    assert sorted(p.name for p in (server.root / "output").glob("sweep_*.png")) == names


def test_runs_from_several_clients_spread_over_both_nodes_with_events_in_order(head: Any) -> None:
    server, api = head
    clients = ["ann", "ben", "cat"]
    with contextlib.ExitStack() as opened:
        sockets = {client: opened.enter_context(ws(server, client)) for client in clients}
        for socket in sockets.values():
            assert receive(socket)["type"] == "snapshot"
        owners = {submit(api, txt2img(seed=100 + i), client_id=clients[i % 3]): clients[i % 3] for i in range(6)}
        received: dict[str, list[dict[str, Any]]] = {}
        for client, socket in sockets.items():
            received.update(until_ended(socket, {r for r, c in owners.items() if c == client}))
    used = set()
    for run_id, events in received.items():
        stored = api.get(f"/api/runs/{run_id}", params={"events": "true"}).json()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [(e["seq"], e["type"]) for e in events] == [(e["seq"], e["type"]) for e in stored["events"]]
        assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "succeeded"
        [worker] = {e["data"]["worker"] for e in events[1:]}
        used.add(worker)
        steps = [e["data"]["step"] for e in events if e["type"] == "node_progress" and e["data"]["node"] == "sampler"]
        assert steps == [1, 2, 3]
    assert used == {"worker-0", "worker-1"}


def test_cancelling_a_running_remote_run_stops_it_within_seconds(head: Any) -> None:
    server, api = head
    with ws(server, "canceller") as socket:
        run_id = submit(api, txt2img(steps=1000), client_id="canceller")
        while True:
            message = receive(socket, SLOW)
            if message.get("run_id") == run_id and message["type"] == "node_progress" and message["data"]["node"] == "sampler":
                break
        asked = time.monotonic()
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        events = until_ended(socket, {run_id})[run_id]
        took = time.monotonic() - asked
    assert events[-1]["type"] == "run_cancelled" and took < 5.0, (events[-1], took)
    assert api.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"


def test_a_hung_worker_is_replaced_and_its_run_cancelled(head: Any) -> None:
    server, api = head
    with ws(server, "hanger") as socket:
        run_id = submit(api, hang(), client_id="hanger")
        while True:
            message = receive(socket, SLOW)
            if message.get("run_id") == run_id and message["type"] == "node_progress":
                break
        worker = message["data"]["worker"]
        old_pid = workers(api)[worker]["inventory"]["pid"]
        asked = time.monotonic()
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        events = until_ended(socket, {run_id})[run_id]
        took = time.monotonic() - asked
    assert events[-1]["type"] == "run_cancelled" and 3.0 <= took < 30.0, took
    assert events[-1]["data"]["reason"] == f"worker {worker} did not stop within 3 s of the cancel; it was replaced by a fresh worker"
    assert api.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"
    wait_for(lambda: workers(api)[worker]["ready"], timeout=SLOW, interval=0.2)
    assert workers(api)[worker]["inventory"]["pid"] != old_pid  # a new process in its place
    after = [submit(api, txt2img(seed=s, prefix="after-hang")) for s in (7, 8)]
    assert [wait_run(api, r, timeout=SLOW)["status"] for r in after] == ["succeeded", "succeeded"]


def test_a_worker_node_killed_mid_run_loses_no_run_and_runs_none_twice(cluster: Any, head: Any) -> None:
    nodes, _, _ = cluster
    server, api = head
    total_before = api.get("/api/runs", params={"limit": 1}).json()["total"]
    with ws(server, "victim") as socket:
        # The first run is long (300 steps): this test reads the stream later than it happens on a
        # busy machine, and the run must still be sampling on its worker when the node goes.
        run_ids = [submit(api, txt2img(seed=seed, steps=300 if seed == 0 else 40, prefix="killed"), client_id="victim")
                   for seed in range(4)]
        first: list[dict[str, Any]] = []
        while True:  # the first run samples on some node: kill that node (raylet, agents, worker processes)
            message = receive(socket, SLOW)
            if message.get("run_id") == run_ids[0]:
                first.append(message)
                if message["type"] == "node_progress" and message["data"]["node"] == "sampler" and message["data"]["step"] >= 2:
                    break
        lost = message["data"]["worker"]
        ip = workers(api)[lost]["inventory"]["node_ip"]
        victim = next(node for node in nodes.nodes if node.ip == ip and node.alive)
        nodes.kill(victim)
        received = until_ended(socket, set(run_ids))
        received[run_ids[0]][:0] = first
    runs = [api.get(f"/api/runs/{run_id}", params={"events": "true"}).json() for run_id in run_ids]
    assert [run["status"] for run in runs] == ["succeeded"] * 4
    events = runs[0]["events"]
    kinds = [e["type"] for e in events]
    assert kinds.count("run_requeued") == 1 and kinds.count("run_started") == 2 and kinds.count("run_finished") == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["seq"] for e in received[run_ids[0]]] == [e["seq"] for e in events]
    requeued = events[kinds.index("run_requeued")]["data"]
    assert requeued["worker"] == lost and "was lost mid-run" in requeued["reason"]
    other = ({"worker-0", "worker-1"} - {lost}).pop()
    assert runs[0]["summary"]["worker"] == other  # finished on the node that is left
    # 0 lost, 0 duplicated: four more runs in the history, four images, one per run.
    assert api.get("/api/runs", params={"limit": 1}).json()["total"] == total_before + 4
    images = sorted(p.name for p in (server.root / "output").glob("killed_*.png"))
    assert images == sorted(run["results"]["save"]["images"][0]["filename"] for run in runs)
    assert len(images) == 4
    # A node that joins takes the lost worker's place (Ray restarts the actor there; until then no
    # node has a CPU for it).
    nodes.add_worker("127.0.0.5")
    wait_for(lambda: workers(api)[lost]["ready"], timeout=SLOW, interval=0.2)
    assert workers(api)[lost]["inventory"]["node_ip"] == "127.0.0.5"


def test_the_server_killed_and_restarted_resumes_its_queued_runs(head: Any) -> None:
    server, api = head
    run_ids = [submit(api, txt2img(seed=seed, steps=30, prefix="restart")) for seed in range(6)]
    wait_for(lambda: api.get(f"/api/runs/{run_ids[0]}").json()["status"] == "running", timeout=SLOW)
    server.kill()
    server.start()
    runs = [wait_run(api, run_id, timeout=SLOW) for run_id in run_ids]
    statuses = [run["status"] for run in runs]
    # What was running when the server died is interrupted (as without Ray); every queued run ran once.
    assert set(statuses) <= {"succeeded", "interrupted"} and statuses.count("succeeded") >= 4, statuses
    for run in runs:
        if run["status"] == "interrupted":
            assert run["error"] == "the server stopped while this run was running"
    succeeded = [run for run in runs if run["status"] == "succeeded"]
    images = sorted(p.name for p in (server.root / "output").glob("restart_*.png"))
    assert images == sorted(run["results"]["save"]["images"][0]["filename"] for run in succeeded)


def test_a_server_without_the_clusters_token_is_refused(cluster: Any, tmp_path: Path) -> None:
    nodes, env, _ = cluster
    stranger = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    stranger["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    server = HeadServer(tmp_path, nodes.address, stranger)
    done = subprocess.run(server.command(), env=stranger, capture_output=True, text=True, timeout=SLOW)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"could not connect to the Ray cluster at {nodes.address!r}" in done.stderr
    assert "the same token (RAY_AUTH_TOKEN" in done.stderr
