"""Restarts lose nothing: queued runs wait in SQLite and resume in order, a run cut off is marked
interrupted (after a clean stop or a crash), and the history keeps its results and events."""

from __future__ import annotations

import time

import httpx

from latentgraph.server.store import QUEUED, RUNNING, RunRecord, RunStore
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import arithmetic, gated, show, submit, wait_for, wait_run


def client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, trust_env=False)


def test_queued_runs_resume_after_a_restart_and_the_running_one_is_marked_interrupted(start_server, tmp_path):
    first = start_server()
    with client(first) as api:
        done = submit(api, arithmetic(seed=1))["id"]
        wait_run(api, done)
        cut = submit(api, gated("forever"))["id"]
        wait_for(lambda: api.get("/api/queue").json()["running"])
        later = submit(api, show(2))["id"]
        sooner = submit(api, show(1), priority=3)["id"]
        last = submit(api, show(3))["id"]
        api.put("/api/queue/order", json={"run_ids": [last]})  # a reorder survives the restart too
    first.stop()

    store = RunStore(tmp_path / "user" / "runs.sqlite")
    assert [r.id for r in store.pending()] == [last, sooner, later]
    assert store.get(cut).status == "interrupted"
    store.close()

    second = start_server()
    with client(second) as api:
        runs = [wait_run(api, run_id) for run_id in (last, sooner, later)]
        assert [r["status"] for r in runs] == ["succeeded"] * 3
        assert [r["results"]["show"]["value"] for r in runs] == [3, 1, 2]
        assert runs[0]["started"] < runs[1]["started"] < runs[2]["started"]
        assert [e["type"] for e in runs[0]["events"]][:2] == ["run_queued", "run_started"]
        assert [e["seq"] for e in runs[2]["events"]] == list(range(1, len(runs[2]["events"]) + 1))

        interrupted = api.get(f"/api/runs/{cut}").json()
        assert interrupted["status"] == "interrupted" and "stopped" in interrupted["error"]
        assert interrupted["events"][-1]["type"] == "run_interrupted"

        history = api.get(f"/api/runs/{done}").json()
        assert history["status"] == "succeeded" and history["results"]["show"]["value"].endswith("seed 1")
        assert history["events"][-1]["type"] == "run_finished"
        assert api.get("/api/runs").json()["total"] == 5


def test_a_run_left_running_by_a_crash_is_interrupted_at_start_and_the_queue_goes_on(start_server, tmp_path):
    store = RunStore(tmp_path / "user" / "runs.sqlite")
    crashed = RunRecord(id="crashed", status=RUNNING, workflow=show(1), started=time.time())
    waiting = RunRecord(id="waiting", status=QUEUED, workflow=show(7), position=0.0)
    now = time.time()
    store.insert(crashed, [{"run_id": "crashed", "seq": 1, "type": "run_queued", "timestamp": now, "data": {}},
                           {"run_id": "crashed", "seq": 2, "type": "run_started", "timestamp": now, "data": {}}])
    store.insert(waiting, [{"run_id": "waiting", "seq": 1, "type": "run_queued", "timestamp": now, "data": {}}])
    store.close()

    server = start_server()
    with client(server) as api:
        run = api.get("/api/runs/crashed").json()
        assert run["status"] == "interrupted" and run["finished"] is not None
        assert [e["type"] for e in run["events"]] == ["run_queued", "run_started", "run_interrupted"]
        resumed = wait_run(api, "waiting")
        assert resumed["status"] == "succeeded" and resumed["results"] == {"show": {"value": 7}}
        assert [e["seq"] for e in resumed["events"]] == list(range(1, len(resumed["events"]) + 1))
