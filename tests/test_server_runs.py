"""Runs and the queue over HTTP, on a real server: submit, validate, list, order, cancel, forget."""

from __future__ import annotations

import time

from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import arithmetic, gated, node, open_gate, show, steps, submit, wait_for, wait_run, workflow


def test_a_submitted_workflow_runs_and_its_results_and_events_are_recorded_in_order(api):
    submitted = submit(api, arithmetic(seed=7))
    assert submitted["status"] == "queued" and submitted["position"] == 0 and submitted["name"] == "Arithmetic"

    run = wait_run(api, submitted["id"])
    assert run["status"] == "succeeded", run
    assert run["results"] == {"show": {"value": "512x768 image, 6144 latent cells, seed 7"}}
    assert run["workflow"]["nodes"]["seed"]["inputs"]["seed"] == 7
    assert run["started"] >= run["created"] and run["finished"] >= run["started"]
    events = run["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["run_queued", "run_started"] and kinds[-1] == "run_finished"
    started = [e["data"]["node"] for e in events if e["type"] == "node_started"]
    finished = [e["data"]["node"] for e in events if e["type"] == "node_finished"]
    assert started == finished and set(started) == set(run["workflow"]["nodes"])
    assert started.index("pixels") < started.index("latent_cells") < started.index("caption") < started.index("show")
    assert all(e["run_id"] == run["id"] for e in events)
    assert run["summary"]["executed"] == started


def test_a_workflow_with_problems_is_refused_with_every_problem_and_nothing_is_queued(api):
    document = workflow(
        a=node("int_math", a="five", operation="cube"),          # wrong type, not a choice
        b=node("no_such_node"),                                 # unknown type
        c=node("show_value", value={"node": "ghost", "output": "value"}),  # link to a missing node
        d=node("seed", seed=-1),                                # out of bounds
    )
    response = api.post("/api/runs", json={"workflow": document})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_workflow" and "5 problems" in body["detail"]
    issues = {(e["node"], e["input"], e["code"]) for e in body["errors"]}
    assert issues == {("a", "a", "invalid_value"), ("a", "operation", "not_in_choices"), ("b", None, "unknown_node_type"),
                      ("c", "value", "missing_node"), ("d", "seed", "out_of_bounds")}
    assert all(e["message"] for e in body["errors"])
    assert api.get("/api/runs").json()["total"] == 0


def test_a_malformed_request_is_a_json_422_that_names_the_field(api):
    response = api.post("/api/runs", json={"workflow": show(1), "priority": 1000})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request" and "priority" in response.json()["detail"]
    response = api.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    response = api.post("/api/runs", json={"workflow": {"format": "latentgraph/workflow@99", "nodes": {}}})
    assert response.status_code == 422 and response.json()["errors"][0]["code"] == "unknown_format"


def test_runs_are_listed_newest_first_a_page_at_a_time_and_filtered_by_status(api):
    ids = [submit(api, show(i))["id"] for i in range(5)]
    failed = submit(api, workflow(f=node("test_fail", message="nope")))["id"]
    for run_id in [*ids, failed]:
        wait_run(api, run_id)
    page = api.get("/api/runs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 6 and page["limit"] == 2 and page["offset"] == 1
    assert [r["id"] for r in page["runs"]] == [ids[4], ids[3]]
    assert "workflow" not in page["runs"][0]  # lists stay light
    named = dict(show(9), meta={"name": "Nine"})
    named_id = submit(api, named)["id"]
    wait_run(api, named_id)
    listed = api.get("/api/runs", params={"limit": 1}).json()["runs"][0]
    assert (listed["id"], listed["name"]) == (named_id, "Nine")  # the name still shows in lists
    only_failed = api.get("/api/runs", params={"status": "failed"}).json()
    assert [r["id"] for r in only_failed["runs"]] == [failed]
    assert only_failed["runs"][0]["error"] == "node 'f': nope"
    assert api.get("/api/runs", params={"status": "bogus"}).status_code == 422


def test_queued_runs_go_by_priority_then_first_come_first_served(api):
    blocker = submit(api, gated("hold"))["id"]
    wait_for(lambda: api.get("/api/queue").json()["running"])
    low1 = submit(api, steps(tag="low1"))
    high1 = submit(api, steps(tag="high1"), priority=5)
    low2 = submit(api, steps(tag="low2"))
    high2 = submit(api, steps(tag="high2"), priority=5)
    assert (low1["position"], high1["position"], low2["position"], high2["position"]) == (0, 0, 2, 1)

    queue = api.get("/api/queue").json()
    assert [r["id"] for r in queue["running"]] == [blocker]
    assert [r["id"] for r in queue["pending"]] == [high1["id"], high2["id"], low1["id"], low2["id"]]
    assert [r["position"] for r in queue["pending"]] == [0, 1, 2, 3]

    open_gate("hold")
    order = [wait_run(api, r["id"]) for r in (high1, high2, low1, low2)]
    started = [r["started"] for r in order]
    assert started == sorted(started)


def test_the_queue_can_be_reordered_and_runs_taken_out_of_it(api):
    submit(api, gated("hold"))
    wait_for(lambda: api.get("/api/queue").json()["running"])
    a, b, c, d = (submit(api, steps(tag=t))["id"] for t in "abcd")

    reordered = api.put("/api/queue/order", json={"run_ids": [c, a]})
    assert reordered.status_code == 200
    assert [r["id"] for r in reordered.json()["pending"]] == [c, a, b, d]
    moved = api.put("/api/queue/order", json={"run_ids": [d]}).json()  # move one to the front
    assert [r["id"] for r in moved["pending"]] == [d, c, a, b]

    removed = api.delete(f"/api/queue/{a}")
    assert removed.status_code == 200 and removed.json()["status"] == "cancelled"
    assert [r["id"] for r in api.get("/api/queue").json()["pending"]] == [d, c, b]
    assert api.delete(f"/api/queue/{a}").json()["code"] == "not_queued"

    unknown = api.put("/api/queue/order", json={"run_ids": [b, "nope"]})
    assert unknown.status_code == 409 and "nope" in unknown.json()["detail"]

    cleared = api.delete("/api/queue").json()
    assert sorted(cleared["removed"]) == sorted([b, c, d])
    assert api.get("/api/queue").json()["pending"] == []
    open_gate("hold")
    assert {api.get(f"/api/runs/{i}").json()["status"] for i in (a, b, c, d)} == {"cancelled"}


def test_a_cancelled_queued_run_never_starts(api):
    blocker = submit(api, gated("hold"))["id"]
    queued = submit(api, steps(tag="never"))["id"]
    response = api.post(f"/api/runs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    open_gate("hold")
    wait_run(api, blocker)
    run = api.get(f"/api/runs/{queued}").json()
    assert run["status"] == "cancelled" and run["started"] is None
    assert [e["type"] for e in run["events"]] == ["run_queued", "run_cancelled"]


def test_cancelling_a_running_run_stops_it_within_one_step(api):
    run_id = submit(api, steps(count=10_000, delay=0.01))["id"]

    def progress() -> list[int]:
        return [e["data"]["step"] for e in api.get(f"/api/runs/{run_id}").json()["events"] if e["type"] == "node_progress"]

    wait_for(lambda: len(progress()) >= 3)
    response = api.post(f"/api/runs/{run_id}/cancel")
    asked_at = time.monotonic()
    assert response.status_code == 200
    seen = max(progress())
    run = wait_run(api, run_id)
    assert time.monotonic() - asked_at < 1.0
    assert run["status"] == "cancelled" and run["error"] == "cancelled"
    steps_done = [e["data"]["step"] for e in run["events"] if e["type"] == "node_progress"]
    assert max(steps_done) <= seen + 2  # the step in flight when asked, and none after it
    assert run["events"][-1]["type"] == "run_cancelled"
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 409


def test_a_failing_run_fails_alone_and_the_worker_goes_on(api, server):
    failed = submit(api, workflow(f=node("test_fail", message="the disk is on fire")))["id"]
    after = submit(api, show(3))["id"]
    run = wait_run(api, failed)
    assert run["status"] == "failed"
    assert run["errors"][0]["node"] == "f" and run["errors"][0]["error_type"] == "ValueError"
    assert "the disk is on fire" in run["error"]
    assert wait_run(api, after)["status"] == "succeeded"
    assert api.get("/api/health").json() == {"status": "ok", "worker": True, "queued": 0, "running": 0,
                                             "store": "ok"}


def test_a_run_whose_model_vanished_after_queueing_fails_with_the_validation_problem(api, server, tmp_path):
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "gone.safetensors").write_bytes(b"x")
    submit(api, gated("hold"))
    queued = submit(api, workflow(c=node("checkpoint_loader", checkpoint="gone.safetensors"),
                                  s=node("show_value", value={"node": "c", "output": "model"})))["id"]
    (checkpoints / "gone.safetensors").unlink()
    open_gate("hold")
    run = wait_run(api, queued)
    assert run["status"] == "failed" and run["errors"][0]["code"] == "not_in_choices"
    assert [e["type"] for e in run["events"]] == ["run_queued", "run_finished"]


def test_history_is_cleared_of_finished_runs_only(api):
    done = submit(api, show(1))["id"]
    wait_run(api, done)
    running = submit(api, gated("hold"))["id"]
    wait_for(lambda: api.get("/api/queue").json()["running"])
    assert api.delete(f"/api/runs/{running}").status_code == 409
    assert api.delete("/api/runs").json() == {"deleted": 1}
    assert api.get(f"/api/runs/{done}").status_code == 404
    assert api.get(f"/api/runs/{done}").json()["code"] == "run_not_found"
    open_gate("hold")
    wait_run(api, running)
    assert api.delete(f"/api/runs/{running}").status_code == 204
    assert api.get("/api/runs").json()["total"] == 0
