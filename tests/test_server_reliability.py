"""The probes that found the server's faults, kept as tests: output that grows without bound, runs
that never end, a full queue, events lost in a crash, a client that waits forever, a shutdown that
leaves a run `running`, a history that only grows."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from latentgraph.engine import link
from latentgraph.client import Client
from latentgraph.server.store import RunRecord, RunStore
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import (DEADLINE, ROOT, blocked, gated, node, open_gate, show, steps, submit, wait_for,
                                 wait_run, workflow)


def formatted(template: str, value: int = 7) -> dict[str, Any]:
    return workflow(a=node("int_constant", value=value),
                    fmt=node("string_format", template=template, a=link("a", "value")),
                    show=node("show_value", value=link("fmt", "value")))


def process_rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


# --- unbounded output -----------------------------------------------------------------------------

def test_a_huge_padding_width_is_refused_before_the_text_is_made(server, api):
    before = process_rss()
    run = wait_run(api, submit(api, formatted("{a:>300000000}"))["id"])
    assert run["status"] == "failed"
    [error] = run["errors"]
    assert error["node"] == "fmt" and error["type"] == "string_format"
    assert "300,000,000 characters, over the limit of 4,194,304" in error["message"]
    assert process_rss() - before < 100 << 20  # the 300 MB string was never made
    assert len(api.get(f"/api/runs/{run['id']}").content) < 100_000


def test_chained_templates_stop_at_the_node_that_passes_the_value_limit(start_server):
    server = start_server(max_value_bytes=1_000_000)
    document = workflow(a=node("int_constant", value=1), f0=node("string_format", template="{a:>300000}", a=link("a", "value")))
    for level in range(1, 4):  # each level repeats the one before four times: 1.2 MB, then 4.8 MB...
        prev = link(f"f{level - 1}", "value")
        document["nodes"][f"f{level}"] = node("string_format", template="{a}{b}{c}{d}", a=prev, b=prev, c=prev, d=prev)
    document["nodes"]["show"] = node("show_value", value=link("f3", "value"))
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        run = wait_run(api, submit(api, document)["id"])
    assert run["status"] == "failed"
    assert [e["node"] for e in run["errors"]] == ["f1"]  # 300,000 x 4 = 1.2 M characters: over 1,000,000
    assert "over the limit of 1,000,000" in run["errors"][0]["message"]
    skipped = [e["data"]["node"] for e in run["events"] if e["type"] == "node_skipped"]
    assert skipped == ["f2", "f3", "show"]


def test_long_results_are_stored_truncated_and_say_so(start_server):
    server = start_server(max_stored_value=1000)
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        run = wait_run(api, submit(api, formatted("{a:x>5000}"))["id"])
        assert run["status"] == "succeeded"
        value = run["results"]["show"]["value"]
        assert value.startswith("x" * 1000) and value.endswith("…[truncated]") and len(value) < 1100
        assert run["truncated"] == [{"path": "results.show.value", "length": 5000, "kept": 1000}]
        finished = next(e for e in run["events"] if e["type"] == "node_finished" and e["data"]["node"] == "show")
        assert len(finished["data"]["results"]["value"]) < 1100  # events are bounded the same way
        assert len(run["events"][-1]["data"]["results"]["show"]["value"]) < 1100
        listed = api.get("/api/runs").json()["runs"][0]
        assert listed["id"] == run["id"] and listed["status"] == "succeeded"


# --- bounded work ---------------------------------------------------------------------------------

def test_a_run_over_its_time_limit_fails_naming_the_node_that_was_running(start_server):
    server = start_server(max_run_seconds=0.5)
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        run = wait_run(api, submit(api, gated("never"))["id"])
        assert run["status"] == "failed"
        [error] = run["errors"]
        assert error["node"] == "gate" and error["error_type"] == "TimeLimitExceeded"
        assert error["message"] == "the run went over its time limit of 0.5 s"
        assert run["error"] == "node 'gate': the run went over its time limit of 0.5 s"
        # the next run gets a fresh allowance
        assert wait_run(api, submit(api, show(3))["id"])["status"] == "succeeded"


def test_the_queue_is_bounded_in_all_and_per_client(start_server):
    server = start_server(max_queued=3, max_queued_per_client=2)
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        submit(api, gated("hold"))
        wait_for(lambda: api.get("/api/queue").json()["running"])
        queued = [submit(api, show(1), client_id="alice")["id"], submit(api, show(2), client_id="alice")["id"]]
        refused = api.post("/api/runs", json={"workflow": show(3), "client_id": "alice"})
        assert refused.status_code == 429 and refused.json()["code"] == "queue_full"
        assert "client 'alice' already have 2 runs queued" in refused.json()["detail"]
        assert "--max-queued-per-client 2" in refused.json()["detail"]
        queued.append(submit(api, show(4), client_id="bob")["id"])
        full = api.post("/api/runs", json={"workflow": show(5), "client_id": "carol"})
        assert full.status_code == 429 and "its limit (--max-queued 3)" in full.json()["detail"]
        # Queued runs do not hold their workflows in memory; they are read back when taken.
        assert all(set(r.workflow) <= {"meta"} for r in server.state.queue.snapshot()[1])
        open_gate("hold")
        assert [wait_run(api, run_id)["results"]["show"]["value"] for run_id in queued] == [1, 2, 4]


def test_history_retention_forgets_the_oldest_finished_runs(start_server):
    first = start_server(history_max_runs=3)
    with httpx.Client(base_url=first.url, timeout=DEADLINE, trust_env=False) as api:
        ids = [wait_run(api, submit(api, show(i))["id"])["id"] for i in range(5)]
    first.stop()
    second = start_server(history_max_runs=3)  # retention runs at start-up (and at most once a minute after)
    with httpx.Client(base_url=second.url, timeout=DEADLINE, trust_env=False) as api:
        listed = api.get("/api/runs").json()
        assert listed["total"] == 3 and [r["id"] for r in listed["runs"]] == ids[:1:-1]
        assert api.get(f"/api/runs/{ids[0]}").status_code == 404


def test_progress_kept_per_run_is_bounded(server, api):
    from latentgraph.server.messages import MAX_PROGRESS_KEPT

    total = MAX_PROGRESS_KEPT + 50
    with Client(server.url) as client:
        run = client.submit(steps(count=total))
        live = list(run.events())  # (a client that cannot keep up may miss progress, never the rest)
        assert live[-1]["type"] == "run_finished" and live[-1]["data"]["results"]["steps"]["steps"] == total
        stored = [e for e in client.get_run(run.id)["events"] if e["type"] == "node_progress"]
        assert len(stored) == MAX_PROGRESS_KEPT and stored[-1]["data"]["step"] == MAX_PROGRESS_KEPT
        assert client.get_run(run.id)["summary"]["progress_events_stored"] == MAX_PROGRESS_KEPT


# --- shutdown, crash, clients ---------------------------------------------------------------------

def test_a_run_that_does_not_stop_at_shutdown_is_recorded_as_interrupted(start_server, tmp_path):
    server = start_server(shutdown_grace=0.5)
    with httpx.Client(base_url=server.url, timeout=DEADLINE, trust_env=False) as api:
        run_id = submit(api, blocked("stuck"))["id"]
        wait_for(lambda: any(e["type"] == "node_started" for e in api.get(f"/api/runs/{run_id}").json()["events"]))
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < DEADLINE
    store = RunStore(tmp_path / "user" / "runs.sqlite")
    try:
        run = store.get(run_id)
        assert run.status == "interrupted" and run.finished is not None
        events = store.events(run_id)
        assert events[-1]["type"] == "run_interrupted" and "did not stop within 0.5 s" in events[-1]["data"]["reason"]
        assert events[-1]["seq"] > max(e["seq"] for e in events[:-1])
    finally:
        store.close()
        open_gate("stuck")


def test_a_reserved_seq_numbers_the_event_that_closes_a_crashed_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    now = time.time()
    store.insert(RunRecord(id="r", status="running", workflow={}), [
        {"run_id": "r", "seq": s, "type": "node_progress", "timestamp": now, "data": {}} for s in range(1, 4)])
    assert store.next_seq("r") == 4
    store.reserve_seq("r", 260)  # events up to 260 may have been sent before they were stored
    store.reserve_seq("r", 100)  # never lowered
    assert store.next_seq("r") == 261
    assert store.next_seq("nobody") == 1
    store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_process(root: Path, port: int) -> subprocess.Popen:
    folders = ["--user-dir", root / "user", "--models-dir", ROOT / "models", "--input-dir", root / "input",
               "--output-dir", root / "output", "--temp-dir", root / "temp", "--web-dir", root / "no-web"]
    env = {k: v for k, v in os.environ.items() if k != "LATENTGRAPH_TOKEN"}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return subprocess.Popen([sys.executable, "-m", "latentgraph", "serve", "--port", str(port), "--log-level", "warning",
                             *map(str, folders)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_up(process: subprocess.Popen, url: str) -> None:
    def up() -> bool:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            return httpx.get(url + "/api/health", timeout=5, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, interval=0.05)


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(DEADLINE)


def follow(client: Client, run_id: str, seen: list[dict[str, Any]], outcome: dict[str, Any], **options: Any) -> threading.Thread:
    def read() -> None:
        try:
            for event in client.events(run_id, **options):
                seen.append(event)
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcome["error"] = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_after_kill_9_a_subscriber_gets_run_interrupted_numbered_after_all_it_saw(tmp_path):
    """The events of a run are stored while it runs; after a crash and a restart, a client that
    follows the run gets a `run_interrupted` with a seq above every seq it was sent; a client that
    waits while the server is gone is told so instead of hanging."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())  # the bundled demo model
    document["nodes"]["latent"]["inputs"].update(width=128, height=128)
    document["nodes"]["sampler"]["inputs"].update(steps=200)
    process = serve_process(tmp_path, port)
    try:
        wait_up(process, url)
        with Client(url) as patient, Client(url) as impatient:
            run_id = patient.submit(document).id
            seen: list[dict[str, Any]] = []
            early: list[dict[str, Any]] = []
            patient_end: dict[str, Any] = {}
            impatient_end: dict[str, Any] = {}
            reader = follow(patient, run_id, seen, patient_end, reconnect_for=120)
            quitter = follow(impatient, run_id, early, impatient_end, reconnect_for=1)
            wait_for(lambda: len([e for e in seen if e["type"] == "node_progress"]) >= 13 and early, timeout=120)
            kill(process)
            highest = max(e["seq"] for e in seen)

            quitter.join(DEADLINE)  # the server stays away for longer than this client waits
            assert not quitter.is_alive()
            assert isinstance(impatient_end.get("error"), ConnectionError)
            assert f"the server at {url} has not answered" in str(impatient_end["error"])

            process = serve_process(tmp_path, port)
            wait_up(process, url)
            reader.join(DEADLINE)
            assert not reader.is_alive() and "error" not in patient_end
            last = seen[-1]
            assert last["type"] == "run_interrupted" and last["seq"] > highest
            assert [e["seq"] for e in seen[:-1]] == list(range(1, len(seen)))

            stored = patient.get_run(run_id)
            assert stored["status"] == "interrupted" and stored["events"][-1]["seq"] == last["seq"]
            kept = [e for e in stored["events"] if e["type"] == "node_progress"]
            assert kept, "progress events are stored while the run goes, not only when it ends"
            assert [e["seq"] for e in stored["events"][:-1]] == list(range(1, len(stored["events"])))
    finally:
        kill(process)


def test_the_client_waits_through_a_long_silent_step_and_then_gets_the_end(server, api):
    with Client(server.url) as client:
        run_id = submit(api, blocked("quiet"))["id"]
        seen: list[dict[str, Any]] = []
        end: dict[str, Any] = {}
        checks = []
        ended_events = client._ended_events
        client._ended_events = lambda *args: checks.append(args) or ended_events(*args)  # type: ignore[method-assign]
        reader = follow(client, run_id, seen, end, idle_timeout=0.2)  # asks the server 5 times a second
        wait_for(lambda: any(e["type"] == "node_started" for e in seen) and len(checks) >= 3)
        assert reader.is_alive()  # the run is still going: silence is not the end
        open_gate("quiet")
        reader.join(DEADLINE)
        assert not reader.is_alive() and "error" not in end
        assert seen[-1]["type"] == "run_finished" and seen[-1]["data"]["status"] == "succeeded"


def test_saving_is_refused_when_the_disk_would_be_left_too_full(start_server, tmp_path):
    from PIL import Image

    (tmp_path / "input").mkdir(exist_ok=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "input" / "red.png")
    document = workflow(load=node("load_image", image="red.png"),
                        save=node("save_image", images=link("load", "image"), filename_prefix="kept"))
    refused = start_server(min_free_disk=1 << 60)  # more than any disk has
    with httpx.Client(base_url=refused.url, timeout=DEADLINE, trust_env=False) as api:
        run = wait_run(api, submit(api, document)["id"])
        assert run["status"] == "failed" and run["errors"][0]["node"] == "save"
        assert "must stay free (--min-free-disk)" in run["errors"][0]["message"]
    assert not list((tmp_path / "output").glob("kept*"))
    refused.stop()
    allowed = start_server()
    with httpx.Client(base_url=allowed.url, timeout=DEADLINE, trust_env=False) as api:
        assert wait_run(api, submit(api, document)["id"])["status"] == "succeeded"
    assert [p.name for p in (tmp_path / "output").glob("kept*")] == ["kept_00001_.png"]
