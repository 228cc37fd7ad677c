"""ComfyUI's HTTP and websocket API on our server, against a real server and the bundled demo model:
clients written the way ComfyUI's own examples are (queue a prompt over HTTP, follow /ws until
`executing` with node null, read /history and /view), binary previews in ComfyUI's framing,
node_errors, uploads and masks that LoadImage reads, interrupt, queue and history editing,
/object_info, history across a restart, and the security checks our own API has."""

from __future__ import annotations

import io
import json
import struct
import urllib.parse
import urllib.request
import uuid
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from latentgraph.bundled import demo_checkpoint
from latentgraph.server.testing import ServerThread
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import DEADLINE, REGISTRY, ROOT, server_config, wait_for, wait_run

DEMO = "latentgraph-demo.safetensors"
SIZE = 64
TOKEN = "comfy-client-token-123"

pytestmark = pytest.mark.skipif(not demo_checkpoint().is_file(), reason="the bundled demo checkpoint is absent")


def txt2img_prompt(seed: int = 42, steps: int = 4, prefix: str = "ComfyUI", sampler: str = "euler",
                   text: str = "a red circle on a blue background, top left") -> dict[str, Any]:
    """The demo workflow in ComfyUI's API format, with ComfyUI's own node ids."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 2.0, "sampler_name": sampler,
                                                  "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                                                  "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


def ours(seed: int, steps: int, prefix: str, sampler: str = "euler") -> dict[str, Any]:
    """The same workflow written in our format (the bundled txt2img.json)."""
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    nodes = document["nodes"]
    nodes["latent"]["inputs"].update(width=SIZE, height=SIZE)
    nodes["sampler"]["inputs"].update(seed=seed, steps=steps, cfg=2.0, sampler=sampler, scheduler="karras")
    nodes["save"]["inputs"]["filename_prefix"] = prefix
    return document


def load_and_save(image: str, prefix: str = "loaded", mask: bool = False) -> dict[str, Any]:
    """LoadImage -> SaveImage (with mask: its MASK output, as an image)."""
    prompt: dict[str, Any] = {"1": {"class_type": "LoadImage", "inputs": {"image": image}}}
    if mask:
        prompt["2"] = {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}}
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["2" if mask else "1", 0]}}
    return prompt


class ComfyClient:
    """A client as ComfyUI's script_examples/websockets_api_example.py writes one: urllib for HTTP
    (the prompt posted as bare JSON bytes), a websocket on /ws?clientId=..."""

    def __init__(self, server: ServerThread, token: str | None = None) -> None:
        self.server = server
        self.client_id = str(uuid.uuid4())
        self.token = token
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _url(self, path: str, **query: Any) -> str:
        if self.token:
            query["token"] = self.token
        return f"{self.server.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def queue_prompt(self, prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
        data = json.dumps({"prompt": prompt, "client_id": self.client_id, **extra}).encode("utf-8")
        with self.opener.open(urllib.request.Request(self._url("/prompt"), data=data), timeout=DEADLINE) as response:
            return json.loads(response.read())

    def get(self, path: str, **query: Any) -> bytes:
        with self.opener.open(self._url(path, **query), timeout=DEADLINE) as response:
            return response.read()

    def get_history(self, prompt_id: str) -> dict[str, Any]:
        return json.loads(self.get(f"/history/{prompt_id}"))

    def get_image(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        return self.get("/view", filename=filename, subfolder=subfolder, type=folder_type)

    def websocket(self) -> Any:
        query = {"clientId": self.client_id, **({"token": self.token} if self.token else {})}
        return ws_connect(f"ws://127.0.0.1:{self.server.port}/ws?{urllib.parse.urlencode(query)}", proxy=None,
                          open_timeout=DEADLINE)


def follow(socket: Any, prompt_id: str, timeout: float = 60.0) -> list[Any]:
    """Every frame up to `executing` with node null for this prompt: JSON messages as dicts, binary
    frames as bytes (ComfyUI's example loop, keeping what it sees)."""
    import time

    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while True:
        frame = socket.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            seen.append(frame)
            continue
        message = json.loads(frame)
        seen.append(message)
        data = message["data"]
        if message["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            return seen


def receive_json(socket: Any, kind: str) -> dict[str, Any]:
    """The next JSON message of a type (binary frames and other messages skipped)."""
    while True:
        frame = socket.recv(timeout=DEADLINE)
        if isinstance(frame, str):
            message = json.loads(frame)
            if message["type"] == kind:
                return message


def kinds(frames: list[Any]) -> list[str]:
    return [f["type"] if isinstance(f, dict) else "binary" for f in frames]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def picture(seed: int, size: tuple[int, int] = (48, 32), channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the tests that only need it running (the demo model loads once)."""
    with ServerThread(server_config(tmp_path_factory.mktemp("comfy")), registry=REGISTRY) as server:
        yield server


@pytest.fixture
def http(comfy: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=comfy.url, timeout=DEADLINE, trust_env=False) as client:
        yield client


def idle(http: httpx.Client) -> None:
    wait_for(lambda: http.get("/prompt").json()["exec_info"]["queue_remaining"] == 0)


# --- the websocket example ------------------------------------------------------------------------

def test_a_client_written_like_comfyuis_websocket_example_gets_our_apis_image(comfy, http):
    idle(http)
    own = http.post("/api/runs", json={"workflow": ours(seed=11, steps=3, prefix="ours")}).json()["id"]
    expected = wait_run(http, own, timeout=120)
    assert expected["status"] == "succeeded", expected["error"]
    [reference] = expected["images"]
    comfy.state.executor.cache.clear()  # the prompt is computed anew, not taken from our run's outputs

    client = ComfyClient(comfy)
    with client.websocket() as socket:
        hello = json.loads(socket.recv(timeout=DEADLINE))
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                     "sid": client.client_id}}
        queued = client.queue_prompt(txt2img_prompt(seed=11, steps=3, prefix="comfy"))
        prompt_id = queued["prompt_id"]
        assert queued["node_errors"] == {} and isinstance(queued["number"], int)
        frames = follow(socket, prompt_id)

    messages = [f for f in frames if isinstance(f, dict) and f["data"].get("prompt_id") == prompt_id]
    order = [m["type"] for m in messages]
    assert order[:2] == ["execution_start", "execution_cached"] and order[-2:] == ["execution_success", "executing"]
    assert all(m["data"]["prompt_id"] == prompt_id for m in messages)
    assert messages[1]["data"]["nodes"] == []
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert sorted(executing[:-1]) == sorted(txt2img_prompt()) and executing[-1] is None  # the client's ids
    assert executing.index("4") < executing.index("6") < executing.index("3") < executing.index("8") < executing.index("9")
    [executed] = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed["node"] == executed["display_node"] == "9"
    assert executed["output"] == {"images": [{"filename": "comfy_00001_.png", "subfolder": "", "type": "output"}]}

    history = client.get_history(prompt_id)[prompt_id]
    number, listed_id, prompt, extra_data, outputs_to_execute = history["prompt"]
    assert (number, listed_id, prompt) == (queued["number"], prompt_id, txt2img_prompt(seed=11, steps=3, prefix="comfy"))
    assert extra_data == {"client_id": client.client_id} and outputs_to_execute == ["9"]
    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert [m[0] for m in history["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert list(history["outputs"]) == ["9"]
    images = [client.get_image(i["filename"], i["subfolder"], i["type"]) for i in history["outputs"]["9"]["images"]]
    assert len(images) == 1 and images[0][:8] == b"\x89PNG\r\n\x1a\n"
    ours_png = http.get(f"/api/images/output/{reference['filename']}").content
    assert pixels(images[0]).shape == (SIZE, SIZE, 3)
    assert np.array_equal(pixels(images[0]), pixels(ours_png))  # the same workflow, the same picture

    assert json.loads(client.get("/history", max_items=1)) == {prompt_id: history}
    assert json.loads(client.get("/history/no-such-prompt")) == {}


def test_binary_previews_come_in_comfyuis_framing_after_each_progress_message(comfy, http):
    client = ComfyClient(comfy)
    with client.websocket() as socket:
        socket.recv(timeout=DEADLINE)  # status
        prompt_id = client.queue_prompt(txt2img_prompt(seed=12345, steps=5))["prompt_id"]
        frames = follow(socket, prompt_id)

    progress = [i for i, f in enumerate(frames) if isinstance(f, dict) and f["type"] == "progress"]
    assert [frames[i]["data"] for i in progress] == [
        {"value": step, "max": 5, "prompt_id": prompt_id, "node": "3"} for step in range(1, 6)]
    previews = [frames[i + 1] for i in progress]  # each step's picture right after its progress message
    assert all(isinstance(p, bytes) for p in previews) and kinds(frames).count("binary") == 5
    stored = [e["data"]["preview"] for e in http.get(f"/api/runs/{prompt_id}").json()["events"]
              if e["type"] == "node_progress"]
    for frame, sizes in zip(previews, stored):
        event_type, image_type = struct.unpack(">II", frame[:8])
        assert (event_type, image_type) == (1, 1)  # PREVIEW_IMAGE, JPEG
        image = Image.open(io.BytesIO(frame[8:]))
        image.load()
        assert image.format == "JPEG" and image.size == (sizes["width"], sizes["height"]) == (SIZE // 8, SIZE // 8)


# --- refusals -------------------------------------------------------------------------------------

def test_bad_prompts_are_refused_in_comfyuis_shape_naming_node_and_input(comfy, http):
    before = http.get("/history").json()
    bad = txt2img_prompt()
    bad["3"]["inputs"].update(steps=0, sampler_name="no_such_sampler")
    bad["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    refused = http.post("/prompt", json={"prompt": bad})
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert set(body["node_errors"]) == {"3", "4"}
    sampler = body["node_errors"]["3"]
    assert sampler["class_type"] == "KSampler" and sampler["dependent_outputs"] == ["9"]
    by_input = {e["extra_info"]["input_name"]: e for e in sampler["errors"]}
    assert by_input["steps"]["type"] == "value_smaller_than_min" and by_input["steps"]["extra_info"]["received_value"] == 0
    assert by_input["steps"]["details"].startswith("steps must be >= 1")
    assert by_input["sampler_name"]["type"] == "value_not_in_list"
    assert "'no_such_sampler'" in by_input["sampler_name"]["details"] and "'euler'" in by_input["sampler_name"]["details"]
    [checkpoint] = body["node_errors"]["4"]["errors"]
    assert checkpoint["type"] == "value_not_in_list" and checkpoint["extra_info"]["input_name"] == "ckpt_name"
    assert "missing.safetensors" in checkpoint["details"] and DEMO in checkpoint["details"]
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]
    assert "node 3 (KSampler): steps must be" in body["error"]["details"]

    unknown = txt2img_prompt()
    unknown["10"] = {"class_type": "FancyCustomNode", "inputs": {"image": ["8", 0]}, "_meta": {"title": "Fancy"}}
    unknown["11"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["10", 0]}}
    refused = http.post("/prompt", json={"prompt": unknown})
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"]["type"] == "missing_node_type"
    assert "10 (FancyCustomNode)" in body["error"]["message"]
    assert body["error"]["extra_info"] == {"node_id": "10", "class_type": "FancyCustomNode", "node_title": "Fancy"}
    assert list(body["node_errors"]) == ["10"]
    entry = body["node_errors"]["10"]
    assert entry["class_type"] == "FancyCustomNode" and entry["dependent_outputs"] == ["11"]
    assert entry["errors"][0]["type"] == "missing_node_type"

    no_prompt = http.post("/prompt", json={"client_id": "x"})
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["type"] == "no_prompt"
    untyped = http.post("/prompt", json={"prompt": {"1": {"inputs": {}}}})
    assert untyped.status_code == 400 and untyped.json()["error"]["type"] == "missing_node_type"
    assert "#1" in untyped.json()["error"]["message"]
    not_json = http.post("/prompt", content=b"{not json")
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_prompt"
    taken = http.post("/prompt", json={"prompt": txt2img_prompt(), "prompt_id": "../../etc"})
    assert taken.status_code == 400 and "prompt_id" in taken.json()["error"]["message"]

    assert http.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert http.get("/history").json() == before  # nothing was queued


# --- uploads --------------------------------------------------------------------------------------

def upload(http: httpx.Client, path: str, data: bytes, filename: str, **fields: str) -> httpx.Response:
    return http.post(path, files={"image": (filename, data, "image/png")}, data=fields)


def run_prompt(comfy: ServerThread, prompt: dict[str, Any]) -> dict[str, Any]:
    client = ComfyClient(comfy)
    with client.websocket() as socket:
        socket.recv(timeout=DEADLINE)
        prompt_id = client.queue_prompt(prompt)["prompt_id"]
        frames = follow(socket, prompt_id)
    assert "execution_success" in kinds(frames), frames
    return client.get_history(prompt_id)[prompt_id]


def test_an_uploaded_image_is_what_loadimage_reads_by_the_name_returned(comfy, http):
    first, second = picture(1), picture(2)
    stored = upload(http, "/upload/image", png(first), "photo.png", subfolder="clients")
    assert stored.status_code == 200 and stored.json() == {"name": "photo.png", "subfolder": "clients", "type": "input"}
    again = upload(http, "/upload/image", png(first), "photo.png", subfolder="clients")
    assert again.json()["name"] == "photo.png"  # the same bytes: stored once
    other = upload(http, "/upload/image", png(second), "photo.png", subfolder="clients")
    assert other.json()["name"] == "photo (1).png"  # another picture of that name is kept apart
    assert "clients/photo (1).png" in http.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]

    history = run_prompt(comfy, load_and_save("clients/photo (1).png", prefix="roundtrip"))
    [image] = history["outputs"]["3"]["images"]
    assert np.array_equal(pixels(http.get("/view", params=image).content), second)

    replaced = upload(http, "/upload/image", png(second), "photo.png", subfolder="clients", overwrite="true")
    assert replaced.json()["name"] == "photo.png"
    history = run_prompt(comfy, load_and_save("clients/photo.png", prefix="roundtrip"))
    assert np.array_equal(pixels(http.get("/view", params=history["outputs"]["3"]["images"][0]).content), second)

    assert upload(http, "/upload/image", b"not an image", "x.png").status_code == 415
    escape = upload(http, "/upload/image", png(first), "x.png", subfolder="../../user")
    assert escape.status_code == 400 and escape.json()["code"] == "unsafe_name"
    assert http.get("/view", params={"filename": "photo.png", "subfolder": "../input/clients"}).status_code == 400
    assert http.get("/view", params={"filename": "../user/runs.sqlite"}).status_code == 400
    assert http.get("/view", params={"filename": "nothing.png"}).status_code == 404
    assert http.get("/view", params={"filename": "photo.png", "type": "secrets"}).status_code == 400


def test_an_uploaded_mask_becomes_the_originals_alpha_as_in_comfyui(comfy, http):
    original = picture(3)
    name = upload(http, "/upload/image", png(original), "portrait.png").json()["name"]
    alpha = np.where(np.arange(48)[None, :] < 20, 0, 255).repeat(32, axis=0).astype(np.uint8)  # left part: repaint
    mask = np.dstack([picture(4), alpha])
    stored = upload(http, "/upload/mask", png(mask), "clipspace-mask.png", subfolder="clipspace", type="input",
                    original_ref=json.dumps({"filename": name, "subfolder": "", "type": "input"}))
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    where = {**stored.json(), "filename": stored.json()["name"]}
    merged = pixels(http.get("/view", params=where).content)
    assert merged.shape == (32, 48, 4)
    assert np.array_equal(merged[..., :3], original) and np.array_equal(merged[..., 3], alpha)
    assert np.array_equal(pixels(http.get("/view", params={**where, "channel": "rgb"}).content), original)
    small = http.get("/view", params={**where, "preview": "jpeg;80"})
    assert small.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(small.content)).size == (48, 32)

    history = run_prompt(comfy, load_and_save("clipspace/clipspace-mask.png", prefix="mask", mask=True))
    loaded = pixels(http.get("/view", params=history["outputs"]["3"]["images"][0]).content)
    assert np.array_equal(loaded[..., 0], 255 - alpha)  # LoadImage's MASK: 1 where transparent

    wrong = upload(http, "/upload/mask", png(np.dstack([picture(5, (8, 8)), np.zeros((8, 8), np.uint8)])),
                   "m.png", original_ref=json.dumps({"filename": name, "type": "input"}))
    assert wrong.status_code == 422 and "the mask is 8x8" in wrong.json()["detail"]
    missing = upload(http, "/upload/mask", png(mask), "m.png", original_ref=json.dumps({"filename": "gone.png"}))
    assert missing.status_code == 404


# --- interrupt, queue, history --------------------------------------------------------------------

def test_interrupt_stops_the_running_prompt_at_its_next_step(comfy, http):
    idle(http)
    client = ComfyClient(comfy)
    with client.websocket() as socket:
        socket.recv(timeout=DEADLINE)
        prompt_id = client.queue_prompt(txt2img_prompt(seed=777, steps=200))["prompt_id"]
        first = receive_json(socket, "progress")["data"]
        assert first["max"] == 200 and first["node"] == "3"
        with client.websocket() as again:  # the client comes back mid-run: told the node running now
            assert json.loads(again.recv(timeout=DEADLINE))["type"] == "status"
            assert json.loads(again.recv(timeout=DEADLINE)) == {
                "type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": prompt_id}}
        assert http.post("/interrupt", json={"prompt_id": "not-running"}).status_code == 200  # names another: no-op
        assert http.post("/interrupt").status_code == 200
        frames = follow(socket, prompt_id)

    [stopped] = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "execution_interrupted"]
    assert stopped["prompt_id"] == prompt_id and stopped["node_id"] == "3" and stopped["node_type"] == "KSampler"
    assert {"4", "5", "6", "7"} <= set(stopped["executed"]) and "9" not in stopped["executed"]
    steps = [first["value"]] + [f["data"]["value"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
    assert max(steps) < 200
    assert "execution_success" not in kinds(frames)
    entry = client.get_history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted" and entry["outputs"] == {}


def test_a_prompt_that_fails_when_its_turn_comes_gets_execution_error(comfy, http):
    idle(http)
    name = upload(http, "/upload/image", png(picture(21)), "fleeting.png").json()["name"]
    client = ComfyClient(comfy)
    with client.websocket() as socket:
        socket.recv(timeout=DEADLINE)
        blocker = client.queue_prompt(txt2img_prompt(seed=999, steps=200))["prompt_id"]
        receive_json(socket, "progress")
        failing = client.queue_prompt(load_and_save(name))["prompt_id"]  # valid now, queued behind the blocker
        (comfy.state.folders.inputs / name).unlink()
        http.post("/interrupt", json={"prompt_id": blocker})
        follow(socket, blocker)
        frames = follow(socket, failing)

    [error] = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "execution_error"]
    assert error["prompt_id"] == failing and error["node_id"] == "1" and error["node_type"] == "LoadImage"
    assert "fleeting.png" in error["exception_message"] and error["traceback"] == []
    assert "execution_success" not in kinds(frames)
    entry = client.get_history(failing)[failing]
    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_error"


def test_the_queue_and_the_history_can_be_read_and_edited(comfy, http):
    idle(http)
    client = ComfyClient(comfy)
    with client.websocket() as socket:
        socket.recv(timeout=DEADLINE)
        running = client.queue_prompt(txt2img_prompt(seed=888, steps=200))["prompt_id"]
        receive_json(socket, "progress")
        second = client.queue_prompt(txt2img_prompt(seed=889, steps=2))
        third = client.queue_prompt(txt2img_prompt(seed=890, steps=2), extra_data={"note": "keep"})
        front = client.queue_prompt(txt2img_prompt(seed=891, steps=2), front=True)
        assert front["number"] < 0 < second["number"] < third["number"]

        assert http.get("/prompt").json() == {"exec_info": {"queue_remaining": 4}}
        queue = http.get("/queue").json()
        assert [item[1] for item in queue["queue_running"]] == [running]
        assert [item[1] for item in queue["queue_pending"]] == [front["prompt_id"], second["prompt_id"], third["prompt_id"]]
        number, prompt_id, prompt, extra_data, outputs = queue["queue_pending"][2]
        assert (number, prompt_id, prompt) == (third["number"], third["prompt_id"], txt2img_prompt(seed=890, steps=2))
        assert extra_data == {"note": "keep", "client_id": client.client_id} and outputs == ["9"]

        assert http.post("/queue", json={"delete": [second["prompt_id"], "unknown"]}).status_code == 200
        assert [item[1] for item in http.get("/queue").json()["queue_pending"]] == [front["prompt_id"], third["prompt_id"]]
        while receive_json(socket, "status")["data"]["status"]["exec_info"]["queue_remaining"] != 3:
            pass  # every client hears of each change of the queue, the deletion too
        assert http.post("/queue", json={"clear": True}).status_code == 200
        assert http.get("/queue").json()["queue_pending"] == []
        http.post("/interrupt", json={"prompt_id": running})
        follow(socket, running)

    idle(http)
    history = http.get("/history").json()
    assert running in history
    assert not {second["prompt_id"], third["prompt_id"], front["prompt_id"]} & set(history)  # never ran
    assert http.post("/history", json={"delete": [running]}).status_code == 200
    assert running not in http.get("/history").json()
    assert http.get(f"/api/runs/{running}").status_code == 404
    assert http.get("/history").json()  # the other tests' prompts
    assert http.post("/history", json={"clear": True}).status_code == 200
    assert http.get("/history").json() == {}
    assert http.get("/api/runs").json()["total"] >= 1  # runs from our own API stay


def test_object_info_describes_the_mapped_nodes_as_comfyui_does(http):
    everything = http.get("/object_info").json()
    assert {"KSampler", "CheckpointLoaderSimple", "SaveImage", "LoadImage", "VAEDecode"} <= set(everything)
    [(name, sampler)] = http.get("/object_info/KSampler").json().items()
    assert name == "KSampler" and sampler == everything["KSampler"]
    required = sampler["input"]["required"]
    assert list(required) == sampler["input_order"]["required"] == [
        "model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image", "denoise"]
    assert required["model"] == ["MODEL"] and required["latent_image"] == ["LATENT"]
    assert required["seed"][0] == "INT" and required["seed"][1]["min"] == 0 and required["seed"][1]["control_after_generate"]
    assert required["steps"] == ["INT", {"default": 20, "min": 1, "max": 1000}]
    assert required["denoise"][0] == "FLOAT" and (required["denoise"][1]["min"], required["denoise"][1]["max"]) == (0.0, 1.0)
    assert {"euler", "dpmpp_2m", "ddim"} <= set(required["sampler_name"][0])
    assert {"normal", "karras"} <= set(required["scheduler"][0])
    assert sampler["output"] == sampler["output_name"] == ["LATENT"] and sampler["output_is_list"] == [False]
    assert sampler["output_node"] is False and everything["SaveImage"]["output_node"] is True
    assert DEMO in everything["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert everything["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert http.get("/object_info/NoSuchNode").json() == {}


def test_the_small_routes_clients_call_answer(http):
    stats = http.get("/system_stats").json()
    system = stats["system"]
    assert system["embedded_python"] is False and system["python_version"].startswith("3.")
    assert system["pytorch_version"] and system["ram_total"] > system["ram_free"] > 0
    [device] = stats["devices"]
    assert device["type"] in ("cpu", "cuda") and device["vram_total"] >= device["vram_free"] > 0
    assert set(device) == {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"}
    assert http.get("/extensions").json() == [] and http.get("/embeddings").json() == []
    assert "checkpoints" in http.get("/models").json()
    assert DEMO in http.get("/models/checkpoints").json()
    assert http.get("/models/no-such-folder").status_code == 404


# --- restarts and security ------------------------------------------------------------------------

def test_history_survives_a_restart(start_server):
    first = start_server()
    client = ComfyClient(first)
    upload_data = png(picture(9))
    with httpx.Client(base_url=first.url, trust_env=False, timeout=DEADLINE) as http:
        name = upload(http, "/upload/image", upload_data, "kept.png").json()["name"]
    entry = run_prompt(first, load_and_save(name, prefix="kept"))
    prompt_id = entry["prompt"][1]
    before = client.get_history(prompt_id)
    first.stop()

    second = start_server()
    client = ComfyClient(second)
    assert client.get_history(prompt_id) == before
    assert json.loads(client.get("/history")) == before
    [image] = before[prompt_id]["outputs"]["3"]["images"]
    assert np.array_equal(pixels(client.get_image(image["filename"], image["subfolder"], image["type"])), picture(9))
    later = client.queue_prompt(load_and_save(name, prefix="kept"))
    assert later["number"] > before[prompt_id]["prompt"][0]  # numbers go on from the stored ones


def test_with_a_token_clients_pass_it_as_a_query_parameter_or_the_bearer_header(start_server):
    server = start_server(token=TOKEN)
    with httpx.Client(base_url=server.url, trust_env=False, timeout=DEADLINE) as http:
        for path in ("/prompt", "/queue", "/history", "/object_info/KSampler", "/system_stats", "/view",
                     "/models", "/embeddings"):
            assert http.get(path).status_code == 401, path
        assert http.post("/prompt", json={"prompt": txt2img_prompt()}).status_code == 401
        assert http.post("/interrupt").status_code == 401
        assert upload(http, "/upload/image", png(picture(1)), "a.png").status_code == 401
        assert http.get("/queue", params={"token": TOKEN}).status_code == 200
        assert http.get("/queue", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.get("/queue", params={"token": "wrong-token"}).status_code == 401
        refused = http.post("/prompt", json={"prompt": {}}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "prompt_no_outputs"

    with pytest.raises(InvalidStatus) as denied:
        ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId=abc", proxy=None, open_timeout=DEADLINE)
    assert denied.value.response.status_code == 401
    client = ComfyClient(server, token=TOKEN)
    with client.websocket() as socket:
        assert json.loads(socket.recv(timeout=DEADLINE))["data"]["sid"] == client.client_id
    with ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId=abc", proxy=None, open_timeout=DEADLINE,
                    additional_headers={"Authorization": f"Bearer {TOKEN}"}) as socket:
        assert json.loads(socket.recv(timeout=DEADLINE))["type"] == "status"


def test_pages_of_other_sites_cannot_use_the_comfyui_api(http, comfy):
    evil = {"Origin": "https://evil.example"}
    refused = http.post("/prompt", json={"prompt": txt2img_prompt()}, headers=evil)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden_origin"
    assert http.get("/history", headers=evil).status_code == 403
    assert http.get("/view", params={"filename": "x.png"}, headers=evil).status_code == 403
    assert http.post("/interrupt", headers=evil).status_code == 403
    assert upload(http, "/upload/image", png(picture(1)), "a.png").status_code == 200
    assert http.post("/upload/image", files={"image": ("a.png", png(picture(1)), "image/png")},
                     headers=evil).status_code == 403
    with pytest.raises(InvalidStatus) as denied:
        ws_connect(f"ws://127.0.0.1:{comfy.port}/ws?clientId=abc", proxy=None, open_timeout=DEADLINE,
                   additional_headers=evil)
    assert denied.value.response.status_code == 403
    assert http.get("/queue", headers={"Origin": comfy.url}).status_code == 200  # the server's own pages
