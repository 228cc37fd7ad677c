"""The websocket with a real client: who gets which events, in order; previews; queue messages;
reconnecting mid-run; replay after subscribing late; the Python client's event iterator."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus

from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import (arithmetic, gated, open_gate, open_ws, receive, receive_until, run_ended, show, steps,
                                 submit, wait_for, wait_run)


def run_events(messages, run_id):
    return [m for m in messages if m.get("run_id") == run_id]


def without_queue(messages):
    """Queue broadcasts go to every client whenever the queue changes (50 ms after a burst of
    changes), so they can arrive between any two other messages: tests about run events drop them."""
    return [m for m in messages if m["type"] != "queue"]


def queue_is_empty(message):
    return not message["data"]["running"] and not message["data"]["pending"]


def test_the_submitter_gets_its_runs_events_in_order_and_another_client_does_not(server, api):
    with open_ws(server, client_id="alice") as alice, open_ws(server, client_id="bob") as bob:
        hello = receive(alice)
        assert hello["type"] == "snapshot" and hello["data"]["client_id"] == "alice"
        assert hello["data"]["queue"] == {"running": [], "pending": [], "pending_count": 0}
        assert receive(bob)["data"]["client_id"] == "bob"

        run_id = submit(api, arithmetic(), client_id="alice")["id"]
        events = run_events(receive_until(alice, run_ended(run_id)), run_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["type"] for e in events][:2] == ["run_queued", "run_started"]
        assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "succeeded"
        assert events[-1]["data"]["results"]["show"]["value"].startswith("512x768")
        assert all(isinstance(e["timestamp"], float) for e in events)
        assert [e["type"] for e in events] == [e["type"] for e in api.get(f"/api/runs/{run_id}").json()["events"]]

        # Bob hears about the queue, never about Alice's run: everything he gets until the queue is
        # empty again (and a ping's answer after that) is a queue message.
        second = submit(api, show(1), client_id="alice")["id"]
        receive_until(alice, run_ended(second))
        seen = receive_until(bob, lambda m: m["type"] == "queue" and queue_is_empty(m))
        bob.send('{"type": "ping"}')
        seen += receive_until(bob, lambda m: m["type"] == "pong")
        assert {m["type"] for m in seen} <= {"queue", "pong"}
        assert not any("run_id" in m for m in seen)


def test_subscribing_to_a_run_replays_what_came_before_then_streams_the_rest(server, api):
    blocker = submit(api, gated("hold"))["id"]
    wait_for(lambda: api.get("/api/queue").json()["running"])
    with open_ws(server) as watcher:
        receive(watcher)
        watcher.send(f'{{"type": "subscribe", "runs": ["{blocker}"]}}')
        replayed = receive_until(watcher, lambda m: m.get("type") == "node_progress")
        assert [m["seq"] for m in run_events(replayed, blocker)][:3] == [1, 2, 3]
        open_gate("hold")
        rest = run_events(receive_until(watcher, run_ended(blocker)), blocker)
        seqs = [m["seq"] for m in run_events(replayed, blocker) + rest]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat

        # A finished run replays from the store, after a given seq.
        watcher.send(f'{{"type": "subscribe", "runs": ["{blocker}"], "after": 2}}')  # already sent: nothing again
        watcher.send('{"type": "ping"}')
        # (queue messages may come in between at any time: the queue emptied when the run ended)
        assert without_queue(receive_until(watcher, lambda m: m["type"] == "pong")) == [{"type": "pong", "data": {}}]

    with open_ws(server) as late:
        receive(late)
        late.send(f'{{"type": "subscribe", "runs": ["{blocker}"], "after": {seqs[-3]}}}')
        assert [m["seq"] for m in without_queue(receive_until(late, run_ended(blocker)))] == seqs[-2:]
        late.send('{"type": "subscribe", "runs": ["no-such-run"]}')
        error = receive_until(late, lambda m: m["type"] == "error")[-1]
        assert error["type"] == "error" and error["data"]["code"] == "run_not_found"


def test_subscribing_to_every_run_follows_runs_of_all_clients(server, api):
    with open_ws(server) as monitor:
        receive(monitor)
        monitor.send('{"type": "subscribe", "runs": "*"}')
        monitor.send('{"type": "ping"}')
        receive_until(monitor, lambda m: m["type"] == "pong")
        first = submit(api, show(1), client_id="someone")["id"]
        second = submit(api, show(2))["id"]
        messages = receive_until(monitor, run_ended(second))
        assert run_events(messages, first)[-1]["type"] == "run_finished"
        assert run_events(messages, second)[0]["type"] == "run_queued"


def test_step_previews_arrive_as_small_base64_jpegs(server, api):
    with open_ws(server, client_id="viewer") as socket:
        receive(socket)
        run_id = submit(api, steps(count=3, preview=True), client_id="viewer")["id"]
        progress = [m for m in receive_until(socket, run_ended(run_id)) if m["type"] == "node_progress"]
        assert [m["data"]["step"] for m in progress] == [1, 2, 3]
        preview = progress[-1]["data"]["preview"]
        assert preview["mime"] == "image/jpeg" and (preview["width"], preview["height"]) == (256, 128)
        image = Image.open(io.BytesIO(base64.b64decode(preview["data"])))
        assert image.format == "JPEG" and image.size == (256, 128)
        assert image.getpixel((10, 10))[0] in range(0, 8)  # red channel = step 3, give or take JPEG
    stored = [e for e in api.get(f"/api/runs/{run_id}").json()["events"] if e["type"] == "node_progress"]
    assert stored[-1]["data"]["preview"] == {"width": 256, "height": 128}  # history keeps sizes, not pixels


def test_every_client_hears_queue_changes(server, api):
    with open_ws(server) as one, open_ws(server) as two:
        receive(one), receive(two)
        blocker = submit(api, gated("hold"))["id"]
        queued = submit(api, show(5))["id"]
        for socket in (one, two):
            state = receive_until(socket, lambda m: m["type"] == "queue" and m["data"]["pending_count"] == 1)[-1]["data"]
            assert [r["id"] for r in state["running"]] == [blocker]
            assert [r["id"] for r in state["pending"]] == [queued]
        open_gate("hold")
        for socket in (one, two):
            receive_until(socket, lambda m: m["type"] == "queue" and not m["data"]["running"] and not m["data"]["pending"])


def test_a_client_that_reconnects_mid_run_gets_its_state_and_then_the_rest_of_its_events(server, api):
    with open_ws(server, client_id="flaky") as first:
        receive(first)
        run_id = submit(api, steps(count=10_000, delay=0.005, preview=True), client_id="flaky")["id"]
        before = run_events(receive_until(first, lambda m: m.get("type") == "node_progress" and m["data"]["step"] >= 5), run_id)
    last_seen = before[-1]["seq"]
    wait_for(lambda: server.state.hub.live_state(run_id).seq > last_seen + 20)  # events go by while it is away

    with open_ws(server, client_id="flaky") as again:
        snapshot = receive(again)
        assert snapshot["type"] == "snapshot"
        [live] = snapshot["data"]["runs"]
        assert live["run_id"] == run_id and live["status"] == "running" and live["client_id"] == "flaky"
        assert live["node"] == "steps" and live["nodes"]["steps"]["status"] == "running"
        assert live["progress"]["step"] > 5 and live["seq"] > last_seen + 20
        assert live["preview"]["mime"] == "image/jpeg" and base64.b64decode(live["preview"]["data"])[:2] == b"\xff\xd8"
        # Then every event of its run so far, from the first, and the live ones after them.
        again.send(f'{{"type": "subscribe", "runs": ["{run_id}"], "after": {last_seen}}}')  # nothing more to send
        api.post(f"/api/runs/{run_id}/cancel")
        after = run_events(receive_until(again, run_ended(run_id)), run_id)
    assert [m["seq"] for m in after] == list(range(1, len(after) + 1))
    brief = lambda messages: [(m["seq"], m["type"], m["data"].get("step")) for m in messages]  # noqa: E731
    assert brief(after[:len(before)]) == brief(before)  # replayed (old previews as sizes: only the latest has pixels)
    assert after[-1]["type"] == "run_cancelled"


def test_bad_messages_get_an_error_reply_and_the_connection_stays(server):
    with open_ws(server) as socket:
        receive(socket)
        for text in ("not json", '{"type": "dance"}', '{"type": "subscribe", "runs": 5}',
                     '{"type": "subscribe", "runs": ["x"], "after": "soon"}'):
            socket.send(text)
            reply = receive(socket)
            assert reply["type"] == "error" and reply["data"]["code"] == "bad_message" and reply["data"]["message"]
        socket.send(b"\x00\x01")
        assert receive(socket)["type"] == "error"
        socket.send('{"type": "ping"}')
        assert receive(socket)["type"] == "pong"


def test_an_invalid_client_id_is_refused_with_a_json_reason(server):
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, client_id="bad!id")
    assert refused.value.response.status_code == 400
    assert json.loads(refused.value.response.body)["code"] == "invalid_client_id"


def test_the_python_client_submits_follows_and_waits(server):
    from latentgraph.client import ApiError, Client, RunFailed

    with Client(server.url) as client:
        run = client.submit(arithmetic(), set={"seed.seed": 9})
        kinds = [e["type"] for e in run.events()]
        assert kinds[0] == "run_queued" and kinds[-1] == "run_finished"
        assert run.ok and run.results["show"]["value"].endswith("seed 9")

        finished = client.run("workflows/arithmetic.json", set={"seed.seed": 10})
        assert finished.status == "succeeded" and finished.results["show"]["value"].endswith("seed 10")

        failing = client.run({"format": "latentgraph/workflow@1", "nodes": {"f": {"type": "test_fail"}}})
        try:
            failing.raise_for_status()
            raise AssertionError("expected RunFailed")
        except RunFailed as exc:
            assert "boom" in str(exc)

        try:
            client.submit({"nodes": {"x": {"type": "nope"}, "y": {"type": "int_math", "inputs": {"a": "q"}}}})
            raise AssertionError("expected ApiError")
        except ApiError as exc:
            assert exc.status == 422 and len(exc.errors) == 2 and "unknown node type 'nope'" in str(exc)

        slow = client.submit(steps(count=10_000, delay=0.005))
        events = slow.client.events(slow.id)
        seen = [next(events)]
        while seen[-1]["type"] != "node_progress":
            seen.append(next(events))
        slow.cancel()
        seen.extend(events)
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))  # from the first, none lost
        assert seen[-1]["type"] == "run_cancelled"
        assert slow.wait()["status"] == "cancelled"
        assert wait_run(client.http, slow.id)["status"] == "cancelled"
