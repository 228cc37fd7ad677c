"""Scale-out on Ray (server/cluster.py): the queue's runs on a pool of worker actors.

Without Ray: the queue's preference and re-queueing, a dispatcher whose worker is lost (re-queued,
then interrupted after MAX_ATTEMPTS), the pool's choice of runs (model affinity), the files the
head writes. On an in-process Ray cluster (4 CPUs) with a server of 2 worker actors and the demo
model: runs from two websocket clients spread over both workers, events in order with a `worker`
field and previews; images written into the head's output folder under the head's names (its
counter), with their workflow; an input image uploaded on the head used by a remote run; a sweep
over two checkpoints loads each once, on one worker each; cancel of a running remote run; an actor
killed mid-run: its run re-queued and finished once. The multi-node cluster (separate Ray nodes,
the server as its own process, node and server SIGKILLs, a hung worker) is in test_cluster_nodes.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from latentgraph.client import Client
from latentgraph.engine import Event
from latentgraph.server.cluster import HeadFiles, RayWorkerPool, WorkerSettings, checkpoints_of, image_refs, input_images_of, rewrite_refs
from latentgraph.server.run_queue import RunQueue
from latentgraph.server.store import QUEUED, RunRecord, RunStore
from latentgraph.server.testing import ServerThread
from latentgraph.server.worker import MAX_ATTEMPTS, LocalWorker, WorkerLost
from latentgraph.nodes.folders import Folders, UnsafeName
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import (DEADLINE, DEMO, REGISTRY, ROOT, arithmetic, events_until_ended, open_ws, receive, server_config, steps, submit,
                                 txt2img, wait_for, wait_run)




def record(run_id: str, priority: int = 0, workflow: dict[str, Any] | None = None) -> RunRecord:
    return RunRecord(id=run_id, status=QUEUED, workflow=workflow or {"nodes": {}}, priority=priority)


# --- the queue: preference, re-queueing --------------------------------------------------------------

@pytest.fixture
def queue(tmp_path: Path) -> RunQueue:
    store = RunStore(tmp_path / "runs.sqlite")
    queue = RunQueue(store)
    yield queue
    store.close()


def put(queue: RunQueue, run: RunRecord) -> None:
    queue.store.insert(run)
    queue.submit(run)


def test_take_with_a_preference_picks_among_the_leading_runs_of_the_top_priority(queue: RunQueue) -> None:
    for run_id, priority in [("a", 5), ("b", 5), ("c", 5), ("d", 0)]:
        put(queue, record(run_id, priority))
    seen: list[list[str]] = []

    def prefer(runs):
        seen.append([r.id for r in runs])
        return 2

    assert queue.take(timeout=0, prefer=prefer).record.id == "c"
    assert seen == [["a", "b", "c"]]  # d waits behind the higher priority: not offered
    assert queue.take(timeout=0, prefer=lambda runs: None) is None  # none suits it: it waits (here: times out)
    assert queue.take(timeout=0, prefer=lambda runs: 7).record.id == "a"  # out of range: the first
    assert [r.id for r in queue.snapshot()[1]] == ["b", "d"]


def test_take_with_a_preference_waits_until_the_queue_changes(queue: RunQueue) -> None:
    put(queue, record("a"))
    taken: list[Any] = []
    wanted = {"b"}
    thread = threading.Thread(target=lambda: taken.append(queue.take(timeout=DEADLINE, prefer=lambda runs: next(
        (i for i, r in enumerate(runs) if r.id in wanted), None))))
    thread.start()
    put(queue, record("b"))  # wakes it: now there is one it prefers
    thread.join(DEADLINE)
    assert taken[0].record.id == "b" and [r.id for r in queue.snapshot()[1]] == ["a"]


def test_requeue_puts_a_run_back_in_front_with_its_attempts_and_seq(queue: RunQueue) -> None:
    put(queue, record("a"))
    put(queue, record("b"))
    first = queue.take(timeout=0)
    assert first.record.id == "a" and first.attempt == 1 and first.seq == 0
    assert queue.requeue(first, seq=17)
    assert [r.id for r in queue.snapshot()[1]] == ["a", "b"] and queue.store.get("a").status == QUEUED
    queue.done("a", first)  # the old taking lets go: nothing of the queued run is lost
    second = queue.take(timeout=0)
    assert second.record.id == "a" and second.attempt == 2 and second.seq == 17
    queue.done("a", first)  # a stale done never lets go of the new taking
    assert queue.is_running("a")
    assert not queue.requeue(first, seq=20)  # not the running taking: refused
    queue.done("a", second)
    assert not queue.is_running("a")
    put(queue, record("a2"))
    assert queue.take(timeout=0).record.id == "b"


def test_needs_are_read_off_the_whole_workflow_before_the_queue_slims_it(queue: RunQueue) -> None:
    queue.needs_of = lambda workflow: checkpoints_of(workflow, REGISTRY)
    put(queue, record("a", workflow=txt2img(checkpoint="a.safetensors")))
    assert queue.needs == {"a": frozenset({"a.safetensors"})}
    assert queue.snapshot()[1][0].workflow == {"meta": {"name": "Text to image"}}  # slimmed: only its name
    queue.remove("a")
    assert queue.needs == {}


def test_what_a_workflow_needs() -> None:
    img2img = json.loads((ROOT / "workflows" / "img2img.json").read_text())
    assert checkpoints_of(txt2img(), REGISTRY) == {DEMO}
    assert input_images_of(img2img, REGISTRY) == ["example.png"]
    assert input_images_of(txt2img(), REGISTRY) == [] and checkpoints_of(arithmetic(), REGISTRY) == frozenset()
    linked = txt2img()
    linked["nodes"]["checkpoint"]["inputs"]["checkpoint"] = {"node": "name", "output": "value"}
    assert checkpoints_of(linked, REGISTRY) == frozenset()  # known only when it runs


# --- a dispatcher whose worker is lost ---------------------------------------------------------------

class LosingWorker:
    """Loses the first `losses` runs it is given after their first events, then runs them locally."""

    def __init__(self, executor: Any, losses: int) -> None:
        self.local = LocalWorker(executor)
        self.losses = losses
        self.calls = 0

    def execute(self, job, cancel, publish):
        self.calls += 1
        if self.calls <= self.losses:
            publish(Event("run_started", job.run_id, {"nodes": [], "to_run": [], "cached": [], "outputs": []}))
            raise WorkerLost(f"machine {self.calls} went away", f"worker-{self.calls}")
        return self.local.execute(job, cancel, publish)


def start_with_worker(tmp_path: Path, make_worker) -> ServerThread:
    server = ServerThread(server_config(tmp_path), registry=REGISTRY)
    worker = make_worker(server.state.executor)
    server.state.dispatcher.worker = worker
    return server.start()


def test_a_run_whose_worker_is_lost_is_requeued_and_finishes_with_its_events_numbered_on(tmp_path: Path) -> None:
    server = start_with_worker(tmp_path, lambda executor: LosingWorker(executor, losses=1))
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
            run_id = submit(api, steps(2))["id"]
            run = wait_run(api, run_id)
            events = api.get(f"/api/runs/{run_id}", params={"events": "true"}).json()["events"]
    finally:
        server.stop()
    assert run["status"] == "succeeded" and run["results"] == {"steps": {"steps": 2, "tag": ""}}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["run_queued", "run_started", "run_requeued", "run_started"] and kinds[-1] == "run_finished"
    requeued = events[2]["data"]
    assert requeued == {"reason": "machine 1 went away", "worker": "worker-1", "attempt": 1, "max_attempts": MAX_ATTEMPTS}


def test_a_run_whose_worker_is_lost_too_often_is_interrupted_with_the_reason(tmp_path: Path) -> None:
    server = start_with_worker(tmp_path, lambda executor: LosingWorker(executor, losses=MAX_ATTEMPTS))
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
            run_id = submit(api, steps(2))["id"]
            run = wait_run(api, run_id)
            events = api.get(f"/api/runs/{run_id}", params={"events": "true"}).json()["events"]
            after = submit(api, steps(1))["id"]  # the dispatcher goes on
            assert wait_run(api, after)["status"] == "succeeded"
    finally:
        server.stop()
    reason = f"the worker running it was lost {MAX_ATTEMPTS} times; the last time: machine 3 went away (worker-3)"
    assert run["status"] == "interrupted" and run["error"] == reason
    assert [e["type"] for e in events].count("run_requeued") == MAX_ATTEMPTS - 1
    assert events[-1]["type"] == "run_interrupted" and events[-1]["data"] == {"reason": reason}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_cancelled_run_whose_worker_is_lost_is_cancelled_not_requeued(tmp_path: Path) -> None:
    class LostAfterCancel:
        def execute(self, job, cancel, publish):
            cancel.cancel()  # as if the user cancelled just before the machine went away
            raise WorkerLost("machine went away", "worker-0")

    server = start_with_worker(tmp_path, lambda executor: LostAfterCancel())
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
            run = wait_run(api, submit(api, steps(2))["id"])
    finally:
        server.stop()
    assert run["status"] == "cancelled"


# --- the pool's choice: model affinity ---------------------------------------------------------------

def fake_pool(queue: RunQueue, workers: dict[str, tuple[set[str], set[str] | None]]) -> tuple[RayWorkerPool, dict[str, Any]]:
    """A pool (never started) with workers holding `loaded` checkpoints and `files`."""
    from latentgraph.server.cluster import RayWorker

    pool = RayWorkerPool(queue, queue.store, None, REGISTRY, Folders(), WorkerSettings(models_dir=Path("/nowhere")))
    made = {}
    for name, (loaded, files) in workers.items():
        worker = RayWorker(pool, name, actor=None)
        worker.loaded, worker.files = frozenset(loaded), None if files is None else frozenset(files)
        pool.workers.append(worker)
        made[name] = worker
    return pool, made


def test_the_pool_prefers_runs_whose_checkpoint_a_worker_has_loaded(queue: RunQueue) -> None:
    pool, w = fake_pool(queue, {"w0": ({"a.safetensors"}, {"a.safetensors", "b.safetensors"}),
                                "w1": (set(), {"a.safetensors", "b.safetensors"}),
                                "w2": (set(), {"a.safetensors"})})
    for run_id, checkpoint in [("r1", "b.safetensors"), ("r2", "a.safetensors"), ("r3", "b.safetensors"), ("r4", "c.safetensors")]:
        put(queue, record(run_id, workflow=txt2img(checkpoint=checkpoint)))
    runs = queue.snapshot()[1]
    assert pool.choose(w["w0"], runs) == 1  # r2: its checkpoint is loaded there
    assert w["w0"].loading == {"a.safetensors"}
    assert pool.choose(w["w1"], runs) == 0  # r1: b is loaded (or loading) nowhere else
    assert w["w1"].loading == {"b.safetensors"}
    # w2 has only a's file; w0 has a loaded and one run waits for a: w2 leaves it to w0 ...
    assert pool.choose(w["w2"], runs) is None and w["w2"].loading == frozenset()
    # ... but with more runs waiting for a than workers holding it, w2 loads it too (a sweep spreads)
    put(queue, record("r5", workflow=txt2img(checkpoint="a.safetensors")))
    assert pool.choose(w["w2"], queue.snapshot()[1]) == 1
    # a run that needs no checkpoint suits anyone
    put(queue, record("r6", workflow=arithmetic()))
    assert pool.choose(w["w2"], [r for r in queue.snapshot()[1] if r.id in ("r3", "r6")]) == 1
    assert pool.choose(w["w1"], runs[3:]) == 0  # nobody has c: taken, to fail with a clear error
    w["w1"].files = frozenset({"c.safetensors"})
    assert pool.choose(w["w2"], runs[3:]) is None  # w1 has c: w2 leaves it


def test_the_head_names_the_workers_when_no_worker_has_a_checkpoint(queue: RunQueue) -> None:
    pool, w = fake_pool(queue, {"worker-0": (set(), {"a.safetensors"}), "worker-1": (set(), set())})
    pool.refresh = lambda timeout=0: None  # no actors to ask again here
    from latentgraph.server.worker import Job

    node, message = pool.unservable(Job("r", txt2img(checkpoint="gone.safetensors")))
    assert node == "checkpoint"
    assert message.startswith("no worker has the checkpoint 'gone.safetensors' in its checkpoints folders (checkpoints "
                              "on each worker: worker-0: a.safetensors; worker-1: none)")
    assert pool.unservable(Job("r", txt2img(checkpoint="a.safetensors"))) is None


# --- the files the head writes ------------------------------------------------------------------------

def test_workers_take_a_gpu_each_or_share_them() -> None:
    from latentgraph.server.cluster import worker_gpus

    assert worker_gpus(0, 4, None) == 0 and worker_gpus(8, 4, "cpu") == 0  # CPU cluster, or told to use the CPU
    assert worker_gpus(8, 4, None) == 1 and worker_gpus(4, 4, "cuda:0") == 1
    assert worker_gpus(1, 2, None) == 0.5 and worker_gpus(2, 3, "cuda") == 2 / 3  # never waiting for a GPU of its own


def test_head_files_take_the_heads_counter_and_keep_the_bytes(tmp_path: Path) -> None:
    folders = Folders(outputs=tmp_path / "output", temp=tmp_path / "temp")
    (tmp_path / "output" / "portraits").mkdir(parents=True)
    (tmp_path / "output" / "portraits" / "me_00007_.png").write_bytes(b"old")
    files = HeadFiles(folders)
    ref = files.write("output", "portraits", "me_00001_.png", b"png bytes")
    assert ref == {"filename": "me_00008_.png", "subfolder": "portraits", "type": "output"}
    assert (tmp_path / "output" / "portraits" / "me_00008_.png").read_bytes() == b"png bytes"
    assert files.write("temp", "", "preview_00003_.png", b"x") == {"filename": "preview_00001_.png", "subfolder": "", "type": "temp"}
    with pytest.raises(UnsafeName):
        files.write("output", "../escape", "me_00001_.png", b"x")
    with pytest.raises(ValueError, match="only output and temp files come back"):
        files.write("input", "", "me_00001_.png", b"x")

    entry = {"type": "output", "subfolder": "", "filename": "a_00001_.png", "sha256": "f" * 64, "data": b"A"}
    first = files.receive(entry, fresh=True)
    assert files.receive(entry, fresh=True) != first  # saved again by a run: a new file, as save_image does
    assert files.receive({**entry, "data": None}, fresh=False) == files.receive(entry, fresh=False)  # a cached result: its name
    assert files.receive({**entry, "sha256": "0" * 64, "data": None}, fresh=False) is None


def test_refs_are_rewritten_wherever_they_are_in_results() -> None:
    results = {"save": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}], "n": 1},
               "show": {"value": "x_00001_.png"}}
    names = {("output", "", "x_00001_.png"): {"filename": "x_00009_.png", "subfolder": "", "type": "output"}}
    rewritten = rewrite_refs(results, names)
    assert rewritten["save"]["images"][0]["filename"] == "x_00009_.png" and rewritten["save"]["n"] == 1
    assert rewritten["show"] == {"value": "x_00001_.png"} and results["save"]["images"][0]["filename"] == "x_00001_.png"
    assert [r["filename"] for r in image_refs(rewritten)] == ["x_00009_.png"]


# --- on an in-process Ray cluster -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    pytest.importorskip("ray")
    import ray

    from latentgraph.server.cluster import init_ray

    temp = Path(f"/tmp/lg-ray-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    init_ray(None, cpus=4, temp_dir=temp, object_store_memory=128 << 20)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)  # the session's logs and sockets


@pytest.fixture(scope="module")
def cluster(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with a pool of 2 worker actors; checkpoints a.safetensors and b.safetensors are the
    demo model under other names (other files for the model cache)."""
    from latentgraph.bundled import demo_models_dir
    from latentgraph.nodes.library import load_registry

    root = tmp_path_factory.mktemp("cluster")
    checkpoints = root / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("a.safetensors", "b.safetensors"):
        os.link(demo_models_dir() / DEMO, checkpoints / name)
    (root / "output").mkdir()
    (root / "output" / "txt2img_00041_.png").write_bytes(b"not from a worker")  # the head's counter goes on from it
    server = ServerThread(server_config(root, ray_workers=2, max_steps=1000), registry=load_registry()).start(timeout=600)
    pool = server.state.dispatcher
    wait_for(lambda: all(w["ready"] for w in pool.status()), timeout=600)
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        yield server, api, root, pool
    server.stop()


def ws_until_ended(socket: Any, run_ids: set[str], timeout: float = 600.0) -> dict[str, list[dict[str, Any]]]:
    return events_until_ended(socket, run_ids, timeout)  # deadline sized for actors starting on a loaded machine


def test_runs_from_two_clients_spread_over_both_workers_with_events_in_order(cluster: Any) -> None:
    server, api, root, pool = cluster
    with open_ws(server, "alice") as alice, open_ws(server, "bob") as bob:
        assert receive(alice)["type"] == "snapshot" and receive(bob)["type"] == "snapshot"
        owners = {}
        for seed, client in [(1, "alice"), (2, "bob"), (3, "alice"), (4, "bob")]:
            owners[submit(api, txt2img(seed=seed), client_id=client)["id"]] = client
        mine = {client: {r for r, c in owners.items() if c == client} for client in ("alice", "bob")}
        received = {**ws_until_ended(alice, mine["alice"]), **ws_until_ended(bob, mine["bob"])}

    workers, names = set(), []
    for run_id, events in received.items():
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "run_queued" and kinds[1] == "run_started" and kinds[-1] == "run_finished"
        assert events[-1]["data"]["status"] == "succeeded", events[-1]["data"]
        [worker] = {e["data"]["worker"] for e in events[1:]}  # every event from the worker names it; one worker
        workers.add(worker)
        previews = [e["data"]["preview"] for e in events if e["type"] == "node_progress" and e["data"]["node"] == "sampler"]
        assert [e["data"]["step"] for e in events if e["type"] == "node_progress" and e["data"]["node"] == "sampler"] == [1, 2, 3]
        assert all(p["mime"] == "image/jpeg" and Image.open(io.BytesIO(base64.b64decode(p["data"]))).size == (8, 8) for p in previews)
        [saved] = [e for e in events if e["type"] == "node_finished" and e["data"]["node"] == "save"]
        [ref] = saved["data"]["results"]["images"]
        assert events[-1]["data"]["results"] == {"save": {"images": [ref]}}
        run = api.get(f"/api/runs/{run_id}").json()
        assert run["results"] == {"save": {"images": [ref]}} and run["summary"]["worker"] == worker
        with Image.open(root / "output" / ref["filename"]) as image:
            assert image.size == (64, 64) and json.loads(image.info["workflow"])["nodes"] == run["workflow"]["nodes"]
        names.append(ref["filename"])
    assert workers == {"worker-0", "worker-1"}
    # The head's names: its counter went on from the file that was there, none was written twice.
    assert sorted(names) == [f"txt2img_{n:05}_.png" for n in range(42, 46)]
    assert sorted(p.name for p in (root / "output").glob("txt2img_*.png")) == [f"txt2img_{n:05}_.png" for n in range(41, 46)]


def test_an_input_image_uploaded_on_the_head_is_used_by_a_remote_run(cluster: Any) -> None:
    server, api, root, pool = cluster
    pixels = np.random.default_rng(3).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    with Client(server.url) as client:
        name = client.upload_image(Image.fromarray(pixels), filename="photo.png")
        document = workflow(load=node("load_image", image=name),
                            save=node("save_image", images={"node": "load", "output": "image"}, filename_prefix="copies/photo"))
        run = client.run(document)
        assert run.ok, run.details
        [ref] = run.image_refs()
        assert ref["subfolder"] == "copies" and ref["filename"] == "photo_00001_.png"
        [image] = run.images()
    assert np.array_equal(np.asarray(image.convert("RGB")), pixels)  # the very pixels, there and back
    assert (root / "output" / "copies" / "photo_00001_.png").is_file()


def test_a_sweep_over_two_checkpoints_loads_each_once_on_one_worker(cluster: Any) -> None:
    server, api, root, pool = cluster
    before = {w["worker"]: w["inventory"]["model_loads"] for w in pool.status()}
    plan = [("a.safetensors", seed) if seed % 2 == 0 else ("b.safetensors", seed) for seed in range(6)]
    run_ids = {submit(api, txt2img(seed=seed, checkpoint=checkpoint, prefix="sweep"))["id"]: checkpoint
               for checkpoint, seed in plan}
    runs = {run_id: wait_run(api, run_id, timeout=600) for run_id in run_ids}
    assert all(run["status"] == "succeeded" for run in runs.values())
    where = {checkpoint: {runs[r]["summary"]["worker"] for r, c in run_ids.items() if c == checkpoint}
             for checkpoint in ("a.safetensors", "b.safetensors")}
    assert len(where["a.safetensors"]) == 1 and len(where["b.safetensors"]) == 1 and where["a.safetensors"] != where["b.safetensors"]
    after = {w["worker"]: w["inventory"] for w in pool.status()}
    assert {name: after[name]["model_loads"] - before[name] for name in after} == {"worker-0": 1, "worker-1": 1}
    for checkpoint, [worker] in where.items():
        assert checkpoint in after[worker]["loaded"]
    assert len(list((root / "output").glob("sweep_*.png"))) == 6


def test_a_file_the_head_cannot_write_fails_the_run_and_the_worker_goes_on(cluster: Any) -> None:
    server, api, root, pool = cluster
    pool.files.min_free_disk = 1 << 60  # the head's disk is "full"; the workers' are not
    try:
        run = wait_run(api, submit(api, txt2img(seed=99, prefix="full"))["id"])
    finally:
        pool.files.min_free_disk = 0
    assert run["status"] == "failed"
    assert run["error"].startswith("the worker failed: only ") and "must stay free (--min-free-disk)" in run["error"]
    assert not list((root / "output").glob("full_*.png"))
    assert wait_run(api, submit(api, txt2img(seed=99, prefix="full"))["id"])["status"] == "succeeded"


def test_cancelling_a_running_remote_run_stops_it_within_seconds(cluster: Any) -> None:
    server, api, root, pool = cluster
    with open_ws(server, "canceller") as socket:
        run_id = submit(api, txt2img(steps=1000), client_id="canceller")["id"]
        while True:
            message = receive(socket)
            if message.get("run_id") == run_id and message["type"] == "node_progress" and message["data"]["node"] == "sampler":
                break
        asked = time.monotonic()
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        events = ws_until_ended(socket, {run_id})[run_id]
        took = time.monotonic() - asked
    assert events[-1]["type"] == "run_cancelled" and events[-1]["data"]["worker"] == message["data"]["worker"]
    assert took < 5.0, took
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "cancelled"
    assert run["summary"]["worker"] == message["data"]["worker"]


def test_an_actor_killed_mid_run_has_its_run_requeued_and_finished_once(cluster: Any, ray_cluster: Any) -> None:
    server, api, root, pool = cluster
    count_before = api.get("/api/runs", params={"limit": 1}).json()["total"]
    files_before = set((root / "output").glob("killed_*.png"))
    with open_ws(server, "victim") as socket:
        run_ids = [submit(api, txt2img(seed=seed, steps=60, prefix="killed"), client_id="victim")["id"] for seed in range(3)]
        first: list[dict[str, Any]] = []
        while True:  # the first run is sampling on some worker: kill that worker's actor
            message = receive(socket)
            if message.get("run_id") == run_ids[0]:
                first.append(message)
                if message["type"] == "node_progress" and message["data"]["step"] >= 3:
                    break
        victim = next(w for w in pool.workers if w.name == message["data"]["worker"])
        old_pid = victim.inventory["pid"]
        ray_cluster.kill(victim.actor, no_restart=False)
        received = ws_until_ended(socket, set(run_ids), timeout=600)
        received[run_ids[0]][:0] = first
    runs = [api.get(f"/api/runs/{run_id}", params={"events": "true"}).json() for run_id in run_ids]
    assert [run["status"] for run in runs] == ["succeeded"] * 3
    events = runs[0]["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["seq"] for e in received[run_ids[0]]] == [e["seq"] for e in events]  # live as stored
    kinds = [e["type"] for e in events]
    assert kinds.count("run_started") == 2 and kinds.count("run_requeued") == 1 and kinds.count("run_finished") == 1
    requeued = events[kinds.index("run_requeued")]["data"]
    assert requeued["worker"] == victim.name and requeued["attempt"] == 1 and "was lost mid-run" in requeued["reason"]
    # 0 lost, 0 duplicated: three more runs in the store, three images, one per run.
    assert api.get("/api/runs", params={"limit": 1}).json()["total"] == count_before + 3
    new_files = set((root / "output").glob("killed_*.png")) - files_before
    assert len(new_files) == 3
    assert sorted(run["results"]["save"]["images"][0]["filename"] for run in runs) == sorted(p.name for p in new_files)
    # Ray restarted the actor (a new process, nothing loaded); it is back in the pool.
    wait_for(lambda: all(w["ready"] for w in pool.status()), timeout=600)
    assert victim.inventory["pid"] != old_pid


# --- the command line ----------------------------------------------------------------------------------

def test_serve_refuses_bad_ray_options_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from latentgraph.cli import EXIT_USAGE, main

    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--ray-workers", "0"]) == EXIT_USAGE
    assert "--ray-workers must be 1 or more, not 0" in capsys.readouterr().err
    assert main(["serve", "--ray", " "]) == EXIT_USAGE
    assert "--ray needs `auto` or the address of a Ray cluster's head" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *more: None if name == "ray" else real(name, *more))
    assert main(["serve", "--ray", "auto"]) == EXIT_USAGE
    assert "--ray and --ray-workers need Ray: pip install 'latentgraph[ray]'" in capsys.readouterr().err
