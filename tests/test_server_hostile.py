"""Hostile input and the smaller faults, each probe over a real server: what a client can send
(lone surrogates, NaN and infinities, deep nesting, made-up subscriptions, decompression bombs,
links out of the image folders) is refused with a JSON answer that says where, and nothing a
client sends or a node produces can make a stored run unreadable."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from latentgraph.engine import Input, Node, NodeOutputs, NodeRegistry, Output, RunContext, Workflow, find_issues, link
from latentgraph.engine.jsonsafe import MAX_DEPTH, find_deep_nesting, find_json_problems, json_safe, scrub_text
from latentgraph.engine.workflow import WorkflowFormatError, parse_workflow
from latentgraph.nodes.folders import Folders, LinkOutside, list_files
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import (GATES, ROOT, make_registry, node, open_gate, open_ws, receive, receive_until,
                                 run_ended, show, submit, wait_for, wait_run, workflow)

BAD = "\\ud800"  # a lone surrogate, as a client writes it in JSON text


def post_json(api: httpx.Client, path: str, text: str, method: str = "POST") -> httpx.Response:
    """Raw JSON text, as any client could send it (httpx's json= would refuse NaN and surrogates itself)."""
    return api.request(method, path, content=text.encode(), headers={"content-type": "application/json"})


def run_body(document_text: str) -> str:
    return '{"workflow": ' + document_text + "}"


def show_text(meta: str = "{}", value: str = "1", node_type: str = "int_constant") -> str:
    """The JSON text of a workflow `v -> show`, with `value` and `meta` spliced in as raw JSON."""
    return ('{"format": "latentgraph/workflow@1", "nodes": {"v": {"type": "' + node_type + '", "inputs": {"value": '
            + value + '}}, "show": {"type": "show_value", "inputs": {"value": {"node": "v", "output": "value"}}}}, '
            '"meta": ' + meta + "}")


def refused(response: httpx.Response, code: str = "invalid_request") -> dict:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


# --- item 5: surrogates, NaN and infinities, deep nesting ------------------------------------------

def test_a_lone_surrogate_anywhere_in_a_run_is_refused_with_where_it_is(api):
    cases = [
        (show_text(value=f'"{BAD}"', node_type="string_constant"), "s", ("v", "value"), "workflow.nodes.v.inputs.value"),
        (show_text(meta=f'{{"name": "x{BAD}"}}'), "m", (None, "workflow.meta.name"), "workflow.meta.name"),
        (show_text(meta=f'{{"{BAD}": 1}}'), "k", (None, 'workflow.meta["\\ud800"]'), 'workflow.meta["\\ud800"]'),
    ]
    for text, _, (node_id, input_name), path in cases:
        body = refused(post_json(api, "/api/runs", run_body(text)))
        error = body["errors"][0]
        assert (error["node"], error["input"], error["path"], error["code"]) == (node_id, input_name, path, "invalid_value")
        assert "lone surrogate" in error["message"] and error["message"].startswith(path)
        assert path in body["detail"]
    # in the other fields of the body too: requested outputs
    body = refused(post_json(api, "/api/runs", f'{{"workflow": {show_text()}, "outputs": ["{BAD}"]}}'))
    assert body["errors"][0]["path"] == "outputs[0]"
    assert api.get("/api/runs").json()["total"] == 0  # nothing was stored


def test_a_lone_surrogate_in_a_saved_workflow_is_refused(api):
    body = refused(post_json(api, "/api/workflows/mine", show_text(meta=f'{{"name": "{BAD}"}}'), method="PUT"))
    assert body["errors"][0]["path"] == "meta.name" and "lone surrogate" in body["errors"][0]["message"]
    names = [w["name"] for w in api.get("/api/workflows").json()["workflows"]]
    assert "mine" not in names
    # a valid one still saves, and reads back
    assert post_json(api, "/api/workflows/mine", show_text(meta='{"name": "caf\\u00e9 \\ud83d\\ude00"}'),
                     method="PUT").status_code == 201
    assert api.get("/api/workflows/mine").json()["meta"]["name"] == "café 😀"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 255, 256, 500, 980, 100_000])
def test_nesting_deeper_than_the_limit_is_refused_before_anything_parses_it(api, depth):
    nested = "[" * depth + "]" * depth
    body = refused(post_json(api, "/api/runs", run_body(show_text(meta='{"x": ' + nested + "}"))))
    error = body["errors"][0]
    assert error["code"] == "too_deep" and error["node"] is None
    assert error["path"].startswith("workflow.meta.x[0][0]") and f"deeper than {MAX_DEPTH} levels" in error["message"]
    saved = refused(post_json(api, "/api/workflows/deep", show_text(meta='{"x": ' + nested + "}"), method="PUT"))
    assert saved["errors"][0]["code"] == "too_deep" and saved["errors"][0]["path"].startswith("meta.x[0]")
    assert api.get("/api/runs").json()["total"] == 0


def test_nesting_up_to_the_limit_is_accepted_and_the_run_reads_back(api):
    # the body is {"workflow": {"meta": {"x": [...]}}}: three levels before x
    inner = MAX_DEPTH - 3
    nested = "[" * inner + "]" * inner
    run = json.loads(post_json(api, "/api/runs", run_body(show_text(meta='{"x": ' + nested + "}"))).text)
    finished = wait_run(api, run["id"])
    assert finished["status"] == "succeeded"
    assert json.dumps(finished["workflow"]["meta"]["x"], separators=(",", ":")) == nested
    assert api.get(f"/api/runs/{run['id']}").status_code == 200


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinities_are_refused_naming_the_node_and_input(api, literal):
    text = show_text(value=literal, node_type="float_constant")
    body = refused(post_json(api, "/api/runs", run_body(text)))
    error = body["errors"][0]
    assert (error["node"], error["input"], error["code"]) == ("v", "value", "invalid_value")
    assert "is not a number JSON allows" in error["message"]
    refused(post_json(api, "/api/runs", run_body(show_text(meta=f'{{"scale": {literal}}}'))))
    refused(post_json(api, "/api/workflows/nan", text, method="PUT"))


def test_a_python_nan_sent_with_the_client_is_refused_by_the_server(server):
    from latentgraph.client import ApiError, Client

    document = workflow(v=node("float_constant", value=0.5), show=node("show_value", value=link("v", "value")))
    with Client(server.url) as client:
        with pytest.raises(ApiError) as error:
            client.submit(document, set={"v.value": float("nan")})
        assert error.value.status == 422
        assert [(e["node"], e["input"], e["code"]) for e in error.value.errors] == [("v", "value", "invalid_value")]
        with pytest.raises(ApiError) as error:
            client.submit(document, set={"v.value": float("-inf")})
        assert error.value.errors[0]["node"] == "v"
        assert client.run(document).results == {"show": {"value": 0.5}}


def test_the_engine_refuses_them_too_for_the_cli_and_python(tmp_path):
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import registry

    # A Workflow built in Python skips the JSON checks: the input check itself refuses NaN and surrogates.
    built = Workflow.model_validate({"nodes": {"f": {"type": "float_constant", "inputs": {"value": float("inf")}},
                                               "s": {"type": "string_constant", "inputs": {"value": "a\ud800"}},
                                               "show": {"type": "show_value", "inputs": {"value": link("f", "value")}}}})
    graph, issues = find_issues(built, registry)
    assert graph is None
    assert [(i.node, i.input, i.code) for i in issues] == [("f", "value", "invalid_value"), ("s", "value", "invalid_value")]
    assert "must be" not in issues[0].message and "inf is not a number JSON allows" in issues[0].message
    assert "lone surrogate" in issues[1].message

    # A document (dict or text) is checked as a whole, iteratively: 100,000 levels cost nothing.
    deep = '{"nodes": {}, "meta": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    with pytest.raises(WorkflowFormatError) as error:
        parse_workflow(deep)
    assert error.value.problems[0][1] == "too_deep" and error.value.problems[0][0].startswith("meta.x[0]")
    _, issues = find_issues(json.loads(show_text(value="NaN", node_type="float_constant")), registry)
    assert [(i.node, i.input, i.code) for i in issues] == [("v", "value", "invalid_value")]

    path = tmp_path / "deep.json"
    path.write_text(deep)
    import subprocess
    import sys

    cli = subprocess.run([sys.executable, "-m", "latentgraph", "validate", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "[too_deep]" in cli.stdout and "Traceback" not in cli.stderr


def test_the_raw_scan_reads_strings_as_json_does():
    tricky = [
        '["[[[[[[[[", "\\\\", "\\"[[[[", {"a\\\\\\"[": [1]}]',
        '{"k": "' + "[" * 500 + '"}',
        '[' * MAX_DEPTH + ']' * MAX_DEPTH,
    ]
    for text in tricky:
        assert find_deep_nesting(text) is None, text
        assert find_json_problems(json.loads(text)) == []
    deep = '{"a\\"[": ["\\\\", ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "]}"
    problem = find_deep_nesting(deep)
    assert problem.path == ('a"[', 1) + (0,) * (MAX_DEPTH - 2)  # the container on level MAX_DEPTH + 1
    assert problem.path == find_json_problems(json.loads(deep))[0].path
    assert scrub_text("a\ud800b\ud83d\ude00") == "a\\ud800b😀"  # kept as its escape; a pair is its character
    assert json_safe({"x": [float("nan"), "\udcff"], "\ud800": 1}) == {"x": ["nan", "\\udcff"], "\\ud800": 1}
    clean = {"x": [1.5, "café"]}
    assert json_safe(clean) is clean


# --- item 5: what a node produces at run time --------------------------------------------------------

hostile_nodes = NodeRegistry()


@hostile_nodes.node("test_bad_text", category="test", output=True, cacheable=False)
class BadText(Node):
    """Reports (or raises with) text holding lone surrogates, a NaN and an infinity; passes `name` on."""

    name: str = Input("gate")
    fail: bool = Input(False)

    class Outputs(NodeOutputs):
        name: str = Output()

    def run(self, ctx: RunContext) -> "BadText.Outputs":
        text = "caf\u00e9 " + chr(0xD800) + " " + chr(0xDCFF)
        if self.fail:
            raise ValueError(f"bad {text}")
        ctx.report(text=text, number=float("nan"), big=float("inf"), **{chr(0xD801): "key"})
        return self.Outputs(name=self.name)


def hostile_registry() -> NodeRegistry:
    registry = make_registry()
    for info in hostile_nodes:
        registry.register(info.cls, info.type, version=info.version, category=info.category, title=info.title,
                          output=info.is_output, cacheable=info.cacheable)
    return registry


ESCAPED = "café \\ud800 \\udcff"  # what is stored and sent of the text above: each lone surrogate as its escape


def test_a_run_whose_node_reports_lone_surrogates_and_nan_stays_readable(start_server):
    server = start_server(registry=hostile_registry())
    GATES["after-bad"] = threading.Event()
    document = workflow(bad=node("test_bad_text", name="after-bad"),
                        gate=node("test_gate", name=link("bad", "name")))  # bad runs first, then the gate waits
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as api, open_ws(server, "watcher") as socket:
        receive(socket)
        run_id = submit(api, document, client_id="watcher")["id"]

        def reported():  # while the run is still running: its events come from the hub
            response = api.get(f"/api/runs/{run_id}")
            assert response.status_code == 200, response.text
            events = [e for e in response.json()["events"] if e["type"] == "node_finished" and e["data"]["node"] == "bad"]
            return events[0] if events else None

        live = wait_for(reported, timeout=30)
        assert live["data"]["results"]["text"] == ESCAPED
        open_gate("after-bad")
        texts = []
        while not texts or '"run_finished"' not in texts[-1]:
            texts.append(socket.recv(timeout=30))
        for text in texts:  # strict JSON: a browser's JSON.parse refuses NaN and Infinity
            json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a websocket message"))
        finished = wait_run(api, run_id, timeout=30)
        assert finished["status"] == "succeeded"
        results = finished["results"]["bad"]
        assert results["text"] == ESCAPED and results["\\ud801"] == "key"
        assert results["number"] == "nan" and results["big"] == "inf"
        assert api.get("/api/runs").status_code == 200

        failing = submit(api, workflow(bad=node("test_bad_text", fail=True)))["id"]
        failed = wait_run(api, failing, timeout=30)
        assert failed["status"] == "failed" and failed["errors"][0]["message"] == f"bad {ESCAPED}"
        assert ESCAPED in failed["error"]
        assert api.get("/api/runs", params={"status": "failed"}).json()["runs"][0]["id"] == failing


# --- item 7: the websocket --------------------------------------------------------------------------

def connection_of(server, client_id: str):
    return wait_for(lambda: next((c for c in server.state.hub.connections if c.client_id == client_id), None))


def errors_until(socket, count: int, timeout: float = 30.0) -> list[dict]:
    errors = []
    deadline = time.monotonic() + timeout
    while len(errors) < count:
        message = receive(socket, max(0.1, deadline - time.monotonic()))
        if message["type"] == "error":
            errors.append(message["data"])
    return errors


def test_made_up_subscriptions_do_not_grow_a_connection(server):
    with open_ws(server, "greedy") as socket:
        receive(socket)
        conn = connection_of(server, "greedy")
        long_ids = json.dumps({"type": "subscribe", "runs": [f"{i:04d}" + "x" * 996 for i in range(1000)]})
        for _ in range(150):
            socket.send(long_ids)
        errors = errors_until(socket, 150)
        assert {e["code"] for e in errors} == {"invalid_run_id"}
        assert "runs[0] is not a run id" in errors[0]["message"] and "1 to 64" in errors[0]["message"]
        made_up = [f"{i:032x}" for i in range(1000)]
        socket.send(json.dumps({"type": "subscribe", "runs": made_up}))
        errors = errors_until(socket, 1000)
        assert {e["code"] for e in errors} == {"run_not_found"} and errors[0]["run_id"] == made_up[0]
        socket.send(json.dumps({"type": "subscribe", "runs": made_up + ["one-more"]}))
        assert errors_until(socket, 1)[0]["message"] == '"runs" must be "*" or a list of at most 1000 run ids'
        socket.send('{"type": "ping"}')
        receive_until(socket, lambda m: m["type"] == "pong")
        assert conn.runs == set()  # ids that name no run are never kept


def test_one_connection_follows_at_most_so_many_runs(server, api, monkeypatch):
    from latentgraph.server.routes import events

    monkeypatch.setattr(events, "MAX_SUBSCRIBE", 3)
    runs = [submit(api, show(i))["id"] for i in range(4)]
    for run_id in runs:
        wait_run(api, run_id)
    with open_ws(server, "follower") as socket:
        receive(socket)
        socket.send(json.dumps({"type": "subscribe", "runs": runs[:3]}))
        socket.send(json.dumps({"type": "subscribe", "runs": runs[3:]}))
        error = errors_until(socket, 1)[0]
        assert error["code"] == "too_many_runs" and "follows 3 runs" in error["message"]
        assert connection_of(server, "follower").runs == set(runs[:3])
        socket.send(json.dumps({"type": "unsubscribe", "runs": runs[:1]}))
        socket.send(json.dumps({"type": "subscribe", "runs": runs[3:]}))
        receive_until(socket, lambda m: m.get("run_id") == runs[3] and m["type"] == "run_finished")
        assert connection_of(server, "follower").runs == set(runs[1:])


def test_a_hostile_frame_gets_an_error_and_the_connection_stays_open(server):
    frames = [
        ("[" * 100_000 + "]" * 100_000, "too_deep", "deeper than 64 levels"),
        ('{"type": "subscribe", "runs": [' + "[" * 70 + "]" * 70 + "]}", "too_deep", "runs[0][0]"),
        (f'{{"type": "subscribe", "runs": ["{BAD}"]}}', "invalid_value", "runs[0]: the text holds a lone surrogate"),
        (f'{{"type": "{BAD}"}}', "invalid_value", "type: the text holds a lone surrogate"),
        ('{"type": "subscribe", "runs": [], "after": NaN}', "invalid_value", "after: nan is not a number"),
        ('{"type": "subscribe", "runs": [7]}', "invalid_run_id", "runs[0] is not a run id (7)"),
        ("{nope", "bad_message", "not JSON"),
    ]
    with open_ws(server) as socket:
        receive(socket)
        for frame, code, text in frames:
            socket.send(frame)
            error = errors_until(socket, 1)[0]
            assert error["code"] == code and text in error["message"], (frame[:40], error)
            socket.send('{"type": "ping"}')
            receive_until(socket, lambda m: m["type"] == "pong")


def test_reading_a_run_happens_off_the_event_loop(server, api):
    """While GET /api/runs/{id} reads (held here at a gate, as a 300 MB run would hold it), the
    event loop still answers websocket pings."""
    run_id = submit(api, show(3))["id"]
    wait_run(api, run_id)
    entered, release = threading.Event(), threading.Event()
    runs = server.state.runs
    real_events = runs.events

    def slow_events(run):
        entered.set()
        assert release.wait(30)
        return real_events(run)

    runs.events = slow_events
    try:
        answer = {}
        reader = threading.Thread(target=lambda: answer.update(response=api.get(f"/api/runs/{run_id}")))
        with open_ws(server) as socket:
            receive(socket)
            reader.start()
            assert entered.wait(30)
            socket.send('{"type": "ping"}')
            receive_until(socket, lambda m: m["type"] == "pong", timeout=15)  # the loop is free
            release.set()
            reader.join(30)
        assert answer["response"].status_code == 200 and answer["response"].json()["results"] == {"show": {"value": 3}}
    finally:
        release.set()
        del runs.events


def test_replaying_a_stored_run_to_a_subscriber_reads_the_store_off_the_event_loop(server, api):
    run_id = submit(api, show(4))["id"]
    wait_run(api, run_id)
    store = server.state.store
    real_events = store.events
    entered, release = threading.Event(), threading.Event()

    def slow_events(wanted, after=0):
        if wanted == run_id:
            entered.set()
            assert release.wait(30)
        return real_events(wanted, after)

    store.events = slow_events
    try:
        with open_ws(server) as subscriber, open_ws(server) as other:
            receive(subscriber), receive(other)
            subscriber.send(json.dumps({"type": "subscribe", "runs": [run_id]}))
            assert entered.wait(30)
            other.send('{"type": "ping"}')
            receive_until(other, lambda m: m["type"] == "pong", timeout=15)
            release.set()
            replayed = receive_until(subscriber, run_ended(run_id), timeout=30)
            assert [m["seq"] for m in replayed if m.get("run_id") == run_id][0] == 1
    finally:
        release.set()
        del store.events


# --- item 7: images ---------------------------------------------------------------------------------

def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares width x height (1-bit grayscale) with a few bytes of pixel data: small on
    disk, a decompression bomb for anything that decodes it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png(path: Path, size=(16, 12), color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 10,000²: Pillow warns, we refuse
@pytest.mark.parametrize("side", [9000, 10_000, 50_000])
def test_a_thumbnail_of_a_decompression_bomb_is_refused_with_422(api, tmp_path, side):
    (tmp_path / "input").mkdir(exist_ok=True)
    (tmp_path / "input" / "bomb.png").write_bytes(header_only_png(side, side))
    response = api.get("/api/thumbnails/input/bomb.png")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "image_too_large" and "bomb.png" in response.json()["detail"]
    assert "67,108,864 pixels" in response.json()["detail"]


def test_an_upload_bomb_gets_413_as_the_readme_says(api):
    for side in (10_000, 50_000):
        response = api.post("/api/images", files={"file": ("bomb.png", header_only_png(side, side), "image/png")})
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "image_too_large" and "8192 pixels a side" in response.json()["detail"]
    readme = (ROOT / "README.md").read_text()
    assert "413" in readme and "image_too_large" in readme


def test_load_image_of_a_decompression_bomb_fails_its_node_clearly(api, tmp_path):
    (tmp_path / "input").mkdir(exist_ok=True)
    (tmp_path / "input" / "bomb.png").write_bytes(header_only_png(50_000, 50_000))
    run_id = submit(api, workflow(load=node("load_image", image="bomb.png"),
                                  save=node("save_image", images=link("load", "image"))))["id"]
    run = wait_run(api, run_id, timeout=60)
    assert run["status"] == "failed"
    error = run["errors"][0]
    assert error["node"] == "load" and error["error_type"] == "ValueError" and "bomb.png is too large" in error["message"]


# --- item 7: symbolic links -------------------------------------------------------------------------

def test_links_out_of_the_image_folders_are_not_followed_unless_asked(start_server, tmp_path):
    outside = tmp_path / "elsewhere"
    png(outside / "secret.png")
    (outside / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    png(tmp_path / "input" / "real.png")
    (tmp_path / "input" / "passwd.png").symlink_to(outside / "passwd")
    (tmp_path / "input" / "secret.png").symlink_to(outside / "secret.png")
    (tmp_path / "input" / "alias.png").symlink_to(tmp_path / "input" / "real.png")  # stays inside: fine
    (tmp_path / "input" / "away").symlink_to(outside, target_is_directory=True)
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "out").symlink_to(outside, target_is_directory=True)
    (tmp_path / "output" / "leak.png").symlink_to(outside / "secret.png")

    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as api:
        for path in ("/api/images/input/passwd.png", "/api/images/input/secret.png", "/api/images/input/away/secret.png",
                     "/api/thumbnails/input/secret.png", "/api/images/output/leak.png", "/api/images/output/out/secret.png"):
            response = api.get(path)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["code"] == "link_outside_folder" and "--follow-symlinks" in response.json()["detail"]
            assert "root:" not in response.text
        assert api.get("/api/images/input/alias.png").status_code == 200
        listed = {i["filename"] for i in api.get("/api/images", params={"type": "input"}).json()["images"]}
        assert listed == {"real.png", "alias.png"}
        loader = next(e for e in api.get("/api/nodes").json() if e["type"] == "load_image")
        assert next(i for i in loader["inputs"] if i["name"] == "image")["choices"] == ["alias.png", "real.png"]

        invalid = api.post("/api/runs", json={"workflow": workflow(load=node("load_image", image="secret.png"),
                                                                   save=node("save_image", images=link("load", "image")))})
        assert invalid.status_code == 422
        assert [(e["node"], e["input"], e["code"]) for e in invalid.json()["errors"]] == [("load", "image", "not_in_choices")]

        # writing through a link out of the output folder fails the node, naming why
        run_id = submit(api, workflow(load=node("load_image", image="real.png"),
                                      save=node("save_image", images=link("load", "image"), filename_prefix="out/x")))["id"]
        failed = wait_run(api, run_id, timeout=60)
        assert failed["status"] == "failed" and failed["errors"][0]["node"] == "save"
        assert failed["errors"][0]["error_type"] == "LinkOutside" and "--follow-symlinks" in failed["errors"][0]["message"]
        assert not list(outside.glob("x_*.png"))
    server.stop()

    # The node itself refuses too (a workflow run from Python or the CLI).
    folders = Folders(inputs=tmp_path / "input")
    with pytest.raises(LinkOutside, match="'secret.png' is a symbolic link"):
        folders.input_path("secret.png")
    assert folders.input_path("alias.png") == tmp_path / "input" / "alias.png"

    server = start_server(follow_symlinks=True)  # the opt-in
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as api:
        assert api.get("/api/images/input/secret.png").status_code == 200
        assert api.get("/api/images/input/away/secret.png").status_code == 200
        listed = {(i["subfolder"], i["filename"]) for i in api.get("/api/images", params={"type": "input"}).json()["images"]}
        assert ("", "secret.png") in listed and ("away", "secret.png") in listed
        run_id = submit(api, workflow(load=node("load_image", image="secret.png"),
                                      save=node("save_image", images=link("load", "image"), filename_prefix="out/x")))["id"]
        assert wait_run(api, run_id, timeout=60)["status"] == "succeeded"
        assert list(outside.glob("x_*.png"))


def test_models_in_linked_sub_folders_are_listed_and_link_loops_end(api, tmp_path):
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "own.safetensors").write_bytes(b"x")
    library = tmp_path / "comfy" / "checkpoints"
    (library / "sd15").mkdir(parents=True)
    (library / "sd15" / "linked.safetensors").write_bytes(b"xy")
    (checkpoints / "comfy").symlink_to(library, target_is_directory=True)
    (checkpoints / "loop").symlink_to(checkpoints, target_is_directory=True)  # a link loop: listed once, ends
    (library / "back").symlink_to(library, target_is_directory=True)

    models = api.get("/api/models/checkpoints").json()["models"]
    listed = {m["name"]: m["size"] for m in models}
    assert listed.pop("latentgraph-demo.safetensors") > 0  # the bundled demo model is always found
    assert listed == {"own.safetensors": 1, "comfy/sd15/linked.safetensors": 2}
    assert "comfy/sd15/linked.safetensors" in api.get("/api/models").json()["kinds"]["checkpoints"]
    assert list_files(checkpoints, (".safetensors",)) == ["comfy/sd15/linked.safetensors", "own.safetensors"]
    assert list_files(checkpoints, (".safetensors",), follow_symlinks=False) == ["own.safetensors"]
    assert os.path.isfile(checkpoints / "comfy" / "sd15" / "linked.safetensors")
