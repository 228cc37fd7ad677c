"""Stable Diffusion through the server, on the tiny checkpoint: the Python client submits, follows
the sampler's steps with previews, downloads the PNG with its workflow; cancelling stops within a
step; a server killed mid-run marks the run interrupted and resumes its queue on restart."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from latentgraph.client import ApiError, Client, preview_image
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import ROOT, submit, wait_for, wait_run

DEMO_NAME = "latentgraph-demo.safetensors"  # the checkpoint name the bundled workflows use
SIZE = 64


def txt2img(steps: int = 4, seed: int = 42) -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    inputs = document["nodes"]
    inputs["latent"]["inputs"].update(width=SIZE, height=SIZE)
    inputs["sampler"]["inputs"].update(steps=steps, seed=seed)
    return document


@pytest.fixture
def sd_root(tmp_path: Path, tiny_sd15_checkpoint: Path) -> Path:
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.link(tiny_sd15_checkpoint, checkpoints / DEMO_NAME)
    return tmp_path


def test_txt2img_streams_previews_and_its_png_carries_the_workflow(sd_root, start_server):
    server = start_server()
    with Client(server.url) as client:
        run = client.submit(txt2img(steps=4))
        events = list(run.events())
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        started = [e["data"]["node"] for e in events if e["type"] == "node_started"]
        assert started.index("checkpoint") < started.index("positive") < started.index("sampler") < started.index("save")
        progress = [e for e in events if e["type"] == "node_progress" and e["data"]["node"] == "sampler"]
        assert [e["data"]["step"] for e in progress] == [1, 2, 3, 4]
        preview = preview_image(progress[-1])
        assert preview.format == "JPEG" and preview.size == (SIZE // 8, SIZE // 8)
        assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "succeeded"

        assert run.ok and run.image_refs() == [{"filename": "txt2img_00001_.png", "subfolder": "", "type": "output"}]
        [image] = run.images()
        assert image.size == (SIZE, SIZE) and image.format == "PNG"
        embedded = json.loads(image.info["workflow"])
        assert embedded["nodes"] == txt2img(steps=4)["nodes"]  # drop it on the editor: the same graph

        thumbnail = client.request("GET", "/api/thumbnails/output/txt2img_00001_.png", params={"size": 32})
        assert Image.open(io.BytesIO(thumbnail.content)).size == (32, 32)
        saved = run.save_images(sd_root / "downloads")
        assert saved[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        again = client.run(txt2img(steps=4, seed=7))
        assert again.ok and again.details["summary"]["executed"] == ["sampler", "decode", "save"]
        assert server.state.executor.services.models.loads == 1  # the model stayed loaded between runs
        assert again.image_refs()[0]["filename"] == "txt2img_00002_.png"
        assert client.get_run(again.id)["summary"]["cached"] == ["checkpoint", "latent", "positive", "negative"]


def test_cancelling_sampling_stops_within_one_step(sd_root, start_server):
    server = start_server(max_steps=1000)  # a run that would go on long after the cancel
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as api:
        run_id = submit(api, txt2img(steps=1000))["id"]

        def steps_seen() -> list[int]:
            events = api.get(f"/api/runs/{run_id}").json()["events"]
            return [e["data"]["step"] for e in events if e["type"] == "node_progress"]

        wait_for(lambda: len(steps_seen()) >= 2, timeout=30)
        api.post(f"/api/runs/{run_id}/cancel")
        seen = max(steps_seen())
        run = wait_run(api, run_id)
        assert run["status"] == "cancelled" and run["events"][-1]["data"]["node"] == "sampler"
        assert max(e["data"]["step"] for e in run["events"] if e["type"] == "node_progress") <= seen + 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_killed_mid_run_marks_it_interrupted_and_resumes_the_queue(sd_root, start_server):
    port = free_port()
    folders = ["--user-dir", sd_root / "user", "--models-dir", sd_root / "models", "--input-dir", sd_root / "input",
               "--output-dir", sd_root / "output", "--temp-dir", sd_root / "temp", "--web-dir", sd_root / "no-web"]
    env = {k: v for k, v in os.environ.items() if k != "LATENTGRAPH_TOKEN"}
    process = subprocess.Popen([sys.executable, "-m", "latentgraph", "serve", "--port", str(port), "--log-level", "warning",
                                "--max-steps", "1000", *map(str, folders)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as api:
            def up() -> bool:
                try:
                    return api.get("/api/health").status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, process.stderr.read().decode()
                    return False

            wait_for(up, timeout=30, interval=0.05)
            running = submit(api, txt2img(steps=1000))["id"]
            waiting = submit(api, txt2img(steps=2, seed=3))["id"]
            wait_for(lambda: any(e["type"] == "node_progress" for e in api.get(f"/api/runs/{running}").json()["events"]),
                     timeout=30)
            os.kill(process.pid, signal.SIGKILL)  # no clean shutdown: a crash
            process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as api:
        cut = api.get(f"/api/runs/{running}").json()
        assert cut["status"] == "interrupted" and cut["events"][-1]["type"] == "run_interrupted"
        resumed = wait_run(api, waiting, timeout=30)
        assert resumed["status"] == "succeeded" and resumed["images"][0]["filename"] == "txt2img_00001_.png"
        assert api.get(f"/api/images/output/{resumed['images'][0]['filename']}").status_code == 200


def test_client_imports_a_comfyui_workflow_and_runs_it(sd_root, start_server):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_NAME}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                                                   "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "comfy", "images": ["8", 0]}},
        "10": {"class_type": "FancyCustomNode", "inputs": {"image": ["8", 0]}},
    }
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    server = start_server()
    with Client(server.url) as client:
        workflow, report = client.import_workflow(buffer.getvalue())
        assert report["format"] == "comfyui-api" and not report["ok"]
        assert [(u["id"], u["type"]) for u in report["unmapped"]] == [("10", "FancyCustomNode")]
        del prompt["10"]
        workflow, report = client.import_workflow(prompt)
        assert report["ok"] and not report["missing_files"] and workflow["nodes"]["3"]["type"] == "ksampler"
        run = client.run(workflow)
        assert run.ok and run.image_refs() == [{"filename": "comfy_00001_.png", "subfolder": "", "type": "output"}]
        with pytest.raises(ApiError) as refused:
            client.import_workflow(b"not a workflow")
        assert refused.value.status == 400 and "not valid JSON" in str(refused.value)
