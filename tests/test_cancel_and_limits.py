"""Cancelling inside a sampler step and a VAE decode, big operations in pieces, and the run limits.

A cancel is honoured between U-Net blocks, VAE blocks and tiles, and between the pieces large
attention, convolutions and feed-forwards are split into (nodes.sd.chunked); the measured tests
cancel a step that takes many seconds and time how long the run takes to end, through the executor
and over a real server. The limits (image size, batch, steps, memory) refuse at validation what
literal inputs ask for and, when the node runs, what came through links.
"""

from __future__ import annotations

import re

import json
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from latentgraph.engine import CancelToken, find_issues, link
from latentgraph.engine.errors import Cancelled
from latentgraph.nodes.sd import chunked, memory
from latentgraph.nodes.sd.interrupt import cancel_point, cancel_points
from latentgraph.nodes.sd.limits import OverLimit, require_memory
from latentgraph.nodes.sd.unet import UNetConfig, UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL, VAEConfig, decode_tiled
from latentgraph.nodes.services import RunLimits, Services
from sd_tiny import TINY_UNET, TINY_VAE, randomize_
from test_server_support import open_ws, receive_until, start_server, submit  # noqa: F401  (start_server: a fixture)

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "models" / "checkpoints" / "latentgraph-demo.safetensors"
CANCEL_DEADLINE = 10.0  # seconds from the cancel to the run's end: generous; measured ~0.1-0.6 s


class CancelAfter:
    """A cancel check that raises Cancelled on its `calls`-th call (as a cancelled run's token would)."""

    def __init__(self, calls: int | None = None):
        self.calls = calls
        self.seen = 0

    def __call__(self) -> None:
        self.seen += 1
        if self.calls is not None and self.seen >= self.calls:
            raise Cancelled()


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of at most 2**16 multiply-adds on the CPU, so tiny models split everything."""
    monkeypatch.setattr(chunked, "CPU_WORK_PER_PIECE", 2**16)


def tiny_unet_inputs(size: int = 16, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, size, size, generator=generator)
    context = torch.randn(batch, 77, TINY_UNET.context_dim, generator=generator)
    return x, torch.tensor([500.0] * batch), context


def limited_executor(sd_folders, **limits):
    """An executor over the real nodes with the tiny checkpoint (see sd_folders), on the CPU, with
    these run limits (the others at their defaults)."""
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry

    services = Services(folders=sd_folders, device="cpu", limits=RunLimits(**limits))
    return Executor(registry, OutputCache(1 << 30), services=services, events=EventBus())


# --- cancel points in model code ------------------------------------------------------------------

def test_cancel_point_does_nothing_outside_a_cancel_points_block():
    cancel_point()
    check = CancelAfter()
    with cancel_points(check):
        cancel_point()
    cancel_point()
    assert check.seen == 1


def test_a_cancel_check_stops_a_unet_forward_between_its_blocks():
    unet = randomize_(UNetModel(TINY_UNET), 0)
    inputs = tiny_unet_inputs()
    counting = CancelAfter()
    with torch.inference_mode(), cancel_points(counting):
        unet(*inputs)
    assert counting.seen >= 20  # blocks down, middle and up, and parts of each

    stop = CancelAfter(calls=counting.seen // 2)
    with torch.inference_mode(), cancel_points(stop), pytest.raises(Cancelled):
        unet(*inputs)
    assert stop.seen == counting.seen // 2  # it stopped right there, half-way through


def test_the_unet_traces_as_one_graph_for_torch_compile_with_cancel_points_active():
    # A cancel point reads a context variable, which torch.compile cannot trace: were it kept in a
    # compiled forward, the graph would break at every block and recompile per block shape (seen on
    # an H100: dynamo's recompile limit hit, the compiled U-Net slower than eager). Compiled, the
    # U-Net has none; the sampler's steps stay cancel points.
    unet = randomize_(UNetModel(TINY_UNET), 0)
    inputs = tiny_unet_inputs()
    counting = CancelAfter()
    with torch.inference_mode(), cancel_points(counting):
        explained = torch._dynamo.explain(unet)(*inputs)
        eager = unet(*inputs)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    assert counting.seen >= 20  # the eager forward still checked between its blocks
    torch._dynamo.reset()
    with torch.inference_mode():
        assert torch.equal(unet(*inputs), eager)


def test_cancel_points_leave_the_unet_and_vae_outputs_bit_identical():
    unet = randomize_(UNetModel(TINY_UNET), 0)
    vae = randomize_(AutoencoderKL(TINY_VAE), 1)
    inputs = tiny_unet_inputs()
    latent = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain_unet, plain_vae = unet(*inputs), vae.decode(latent)
        with cancel_points(CancelAfter()):
            checked_unet, checked_vae = unet(*inputs), vae.decode(latent)
    assert torch.equal(plain_unet, checked_unet) and torch.equal(plain_vae, checked_vae)


def test_a_cancel_check_stops_a_tiled_vae_decode_between_tiles():
    vae = randomize_(AutoencoderKL(TINY_VAE), 1)
    latent = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(2))
    decoded_tiles = []
    original_decode = vae.decode
    vae.decode = lambda tile: decoded_tiles.append(tile.shape) or original_decode(tile)  # type: ignore[method-assign]

    counting = CancelAfter()
    with torch.inference_mode(), cancel_points(counting):
        decode_tiled(vae, latent, tile_size=12, tile_overlap=4)
    tiles = len(decoded_tiles)
    assert tiles == 9 and counting.seen > tiles  # a point before every tile, and inside each decode

    decoded_tiles.clear()
    stop = CancelAfter(calls=counting.seen // 2)
    with torch.inference_mode(), cancel_points(stop), pytest.raises(Cancelled):
        decode_tiled(vae, latent, tile_size=12, tile_overlap=4)
    assert 1 <= len(decoded_tiles) < tiles


# --- big operations in pieces ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 8, 300, 77, 4), (2, 8, 256, 256, 8), (1, 1, 1024, 1024, 32)])
def test_attention_in_pieces_of_queries_equals_one_call(shape, small_pieces):
    batch, heads, queries, keys, channels = shape
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(batch, heads, queries, channels, generator=generator)
    k, v = (torch.randn(batch, heads, keys, channels, generator=generator) for _ in range(2))
    check = CancelAfter()
    with cancel_points(check):
        pieces = chunked.attention(q, k, v)
    whole = F.scaled_dot_product_attention(q, k, v)
    assert check.seen > 1  # it did go in pieces, checking before each
    torch.testing.assert_close(pieces, whole, rtol=1e-6, atol=1e-6 * whole.abs().max().item())


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (3, 2, 0), (1, 1, 0), (3, 1, 0)])
def test_a_convolution_in_pieces_equals_one_call(kernel, stride, padding, small_pieces):
    conv = randomize_(chunked.Conv2d(16, 24, kernel, stride=stride, padding=padding), 4)
    x = torch.randn(3, 16, 23, 19, generator=torch.Generator().manual_seed(5))
    check = CancelAfter()
    with torch.inference_mode(), cancel_points(check):
        pieces = conv(x)
    whole = torch.nn.Conv2d.forward(conv, x)
    assert check.seen > 3  # images apart, then bands of rows
    torch.testing.assert_close(pieces, whole, rtol=1e-6, atol=1e-6 * whole.abs().max().item())


def test_the_unet_and_vae_in_small_pieces_equal_them_whole(monkeypatch):
    unet = randomize_(UNetModel(TINY_UNET), 0)
    vae = randomize_(AutoencoderKL(TINY_VAE), 1)
    inputs = tiny_unet_inputs()
    latent = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole_unet, whole_vae = unet(*inputs), vae.decode(latent)
        monkeypatch.setattr(chunked, "CPU_WORK_PER_PIECE", 2**16)
        counting = CancelAfter()
        with cancel_points(counting):
            unet_pieces, vae_pieces = unet(*inputs), vae.decode(latent)
    assert counting.seen > 200
    for pieces, whole in ((unet_pieces, whole_unet), (vae_pieces, whole_vae)):
        torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())


@pytest.mark.parametrize("total, most", [(256, 218), (256, 256), (256, 300), (1000, 7), (5, 1), (7, 0)])
def test_pieces_are_as_few_as_the_budget_allows_and_of_even_size(total, most):
    size = chunked.balanced(total, most)
    pieces = -(-total // size)
    assert size <= max(1, most) and pieces == -(-total // max(1, most))  # no more pieces than needed
    assert total - (pieces - 1) * size >= size - pieces  # the last piece is not a small leftover
    if (total, most) == (256, 218):  # SDXL's 16x16 level at 512x512: 2 x 128 tokens, not 218 + 38
        assert size == 128


def test_the_vae_attention_over_all_pixels_goes_in_pieces_at_large_sizes():
    # At a 2048x2048 image's 256x256 latent the mid-block attention is 65536 tokens, 512 channels:
    # one call would be a 17 GB score matrix and ~1 TFLOP; its pieces are each within the budget.
    tokens, channels = 256 * 256, 512
    per_query = tokens * (2 * channels + chunked.SOFTMAX_WORK_PER_SCORE)
    rows = chunked.CPU_WORK_PER_PIECE // per_query
    assert 1 <= rows < tokens and rows * tokens <= chunked.MAX_SCORES_PER_PIECE


# --- a cancel inside one large sampler step, measured ---------------------------------------------

def big_txt2img(size: int, steps: int = 2) -> dict:
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    document["nodes"]["latent"]["inputs"].update(width=size, height=size)
    document["nodes"]["sampler"]["inputs"].update(steps=steps)
    return document


def test_a_cancel_inside_one_large_sampler_step_ends_the_run_within_seconds(sd_folders):
    # The tiny checkpoint at 2048x2048 on the CPU: its attention level is 128x128 = 16384 tokens, so
    # one step (cond and uncond together) takes ~25 s on 2 CPU cores, all of it in one U-Net call.
    sd_executor = limited_executor(sd_folders)
    token = CancelToken()
    sampler_started = threading.Event()
    seen: list[str] = []

    def on_event(event) -> None:
        seen.append(event.type)
        if event.type == "node_started" and event.data["node"] == "sampler":
            sampler_started.set()

    sd_executor.events.subscribe(on_event)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=sd_executor.run(big_txt2img(2048), cancel=token)))
    runner.start()
    assert sampler_started.wait(60), seen
    # Cancelled at once: the first sampler step (minutes long at this size) has begun or is about to,
    # and its first progress event would only come at its end.
    cancelled_at = time.perf_counter()
    token.cancel()
    runner.join(CANCEL_DEADLINE)
    latency = time.perf_counter() - cancelled_at
    assert not runner.is_alive(), f"the run did not end within {CANCEL_DEADLINE} s of the cancel"
    result = outcome["result"]
    assert result.status == "cancelled" and "decode" not in result.executed
    assert "node_progress" not in seen  # stopped inside the first step
    print(f"cancel inside a 2048x2048 step of the tiny model: the run ended {latency:.2f} s after the cancel")


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    if not DEMO_CHECKPOINT.is_file():
        pytest.skip(f"the demo checkpoint {DEMO_CHECKPOINT.relative_to(ROOT)} is absent")
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(DEMO_CHECKPOINT, checkpoints / DEMO_CHECKPOINT.name)
    return tmp_path


def test_a_cancel_over_the_server_stops_a_large_demo_model_step_within_seconds(demo_root, start_server):
    # The demo model at 2048x2048: its first level attends over 65536 tokens, minutes a step on a CPU.
    server = start_server(device="cpu")
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as api, open_ws(server, "watcher") as socket:
        run_id = submit(api, big_txt2img(2048), client_id="watcher")["id"]
        receive_until(socket, lambda m: m.get("run_id") == run_id and m["type"] == "node_started"
                      and m["data"]["node"] == "sampler", timeout=60)
        # Cancelled at once: the first sampler step (minutes long at this size) has begun or is about to,
    # and its first progress event would only come at its end.
        cancelled_at = time.perf_counter()
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        after = receive_until(socket, lambda m: m.get("run_id") == run_id and m["type"] in
                              ("run_cancelled", "run_finished"), timeout=CANCEL_DEADLINE)
        latency = time.perf_counter() - cancelled_at
    assert after[-1]["type"] == "run_cancelled" and after[-1]["data"]["node"] == "sampler"
    assert not any(m["type"] == "node_progress" and m.get("run_id") == run_id for m in after)
    print(f"cancel over the server inside a 2048x2048 demo-model step: run_cancelled {latency:.2f} s after the POST")


# --- limits at validation -------------------------------------------------------------------------

def issues_of(document: dict, limits: RunLimits, folders) -> list:
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import registry

    _, issues = find_issues(document, registry, services=Services(folders=folders, limits=limits))
    return issues


def test_literal_sizes_batches_and_steps_over_the_limits_are_validation_issues(sd_folders):
    document = big_txt2img(64)
    document["nodes"]["latent"]["inputs"].update(width=4096, height=2048, batch_size=32)
    document["nodes"]["sampler"]["inputs"].update(steps=500)
    issues = [i for i in issues_of(document, RunLimits(), sd_folders) if i.code == "over_limit"]
    by_input = {(i.node, i.input): i.message for i in issues}
    assert set(by_input) == {("latent", "width"), ("latent", "batch_size"), ("sampler", "steps")}
    assert by_input["latent", "width"] == ("node 'latent' (empty_latent) input 'width': 4096x2048 is 8,388,608 pixels, "
                                           "over the limit of 4,194,304 (--max-pixels)")
    assert "a batch of 32 is over the limit of 16 (--max-batch)" in by_input["latent", "batch_size"]
    assert "'sampler' (ksampler) input 'steps': 500 steps is over the limit of 200 (--max-steps)" in by_input["sampler", "steps"]

    assert not [i for i in issues_of(document, RunLimits(max_pixels=0, max_batch=0, max_steps=0), sd_folders) if i.code == "over_limit"]  # 0: off


def test_the_modular_workflow_schedule_and_an_upscale_to_a_size_are_checked_too(sd_folders):
    document = json.loads((ROOT / "workflows" / "txt2img_modular.json").read_text())
    document["nodes"]["sigmas"]["inputs"]["steps"] = 300
    document["nodes"]["upscale"] = {"type": "latent_upscale", "inputs": {
        "latent": link("latent", "latent"), "width": 1024, "height": 8192, "scale_by": 1.0}}
    issues = {(i.node, i.input): i.message for i in issues_of(document, RunLimits(), sd_folders) if i.code == "over_limit"}
    assert set(issues) == {("sigmas", "steps"), ("upscale", "height")}
    assert "1024x8192 is 8,388,608 pixels" in issues["upscale", "height"]


def test_the_shipped_workflows_pass_the_default_limits(sd_folders):
    for path in sorted((ROOT / "workflows").glob("*.json")):
        document = json.loads(path.read_text())
        assert not [i for i in issues_of(document, RunLimits(), sd_folders) if i.code == "over_limit"], path.name


# --- limits when the node runs --------------------------------------------------------------------

def only_error(result) -> tuple[str, str]:
    assert result.status == "failed" and len(result.errors) == 1, result.errors
    return result.errors[0].node_id, str(result.errors[0].error)


def test_a_size_that_comes_through_a_link_is_refused_when_the_node_runs(sd_folders):
    executor = limited_executor(sd_folders, max_pixels=128 * 128)
    document = big_txt2img(64)
    document["nodes"]["width"] = {"type": "int_constant", "inputs": {"value": 512}}
    document["nodes"]["latent"]["inputs"]["width"] = link("width", "value")
    assert not [i for i in issues_of(document, RunLimits(max_pixels=128 * 128), sd_folders) if i.code == "over_limit"]
    node, message = only_error(executor.run(document))
    assert (node, message) == ("latent", "the latent: 512x64 is 32,768 pixels, over the limit of 16,384 (--max-pixels)")


def test_an_upscale_by_a_factor_over_the_size_limit_is_refused_when_it_runs(sd_folders):
    executor = limited_executor(sd_folders, max_pixels=128 * 128)
    document = big_txt2img(64)
    document["nodes"]["upscale"] = {"type": "latent_upscale", "inputs": {"latent": link("latent", "latent"), "scale_by": 4.0}}
    document["nodes"]["sampler"]["inputs"]["latent"] = link("upscale", "latent")
    node, message = only_error(executor.run(document))
    assert node == "upscale"
    assert message == "the resized latent: 256x256 is 65,536 pixels, over the limit of 16,384 (--max-pixels)"


def test_linked_steps_and_a_linked_batch_are_refused_by_the_nodes_that_use_them(sd_folders):
    executor = limited_executor(sd_folders, max_steps=10, max_batch=2)
    document = big_txt2img(64)
    document["nodes"]["steps"] = {"type": "int_constant", "inputs": {"value": 11}}
    document["nodes"]["sampler"]["inputs"]["steps"] = link("steps", "value")
    node, message = only_error(executor.run(document))
    assert (node, message) == ("sampler", "the sampler: 11 steps is over the limit of 10 (--max-steps)")

    document = big_txt2img(64)
    document["nodes"]["batch"] = {"type": "int_constant", "inputs": {"value": 3}}
    document["nodes"]["latent"]["inputs"]["batch_size"] = link("batch", "value")
    node, message = only_error(executor.run(document))
    assert (node, message) == ("latent", "the latent: a batch of 3 is over the limit of 2 (--max-batch)")


def test_an_input_image_over_the_size_limit_is_refused_from_its_header(sd_folders):
    Image.fromarray(np.zeros((100, 300, 3), dtype=np.uint8)).save(sd_folders.inputs / "wide.png")
    executor = limited_executor(sd_folders, max_pixels=200 * 100)
    document = {"format": "latentgraph/workflow@1", "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "wide.png"}},
        "show": {"type": "show_value", "inputs": {"value": link("load", "image")}}}}
    node, message = only_error(executor.run(document))
    assert (node, message) == ("load", "wide.png: 300x100 is 30,000 pixels, over the limit of 20,000 (--max-pixels)")


# --- memory ---------------------------------------------------------------------------------------

def test_sampling_that_needs_more_memory_than_is_free_is_refused_before_it_starts(sd_folders, monkeypatch):
    executor = limited_executor(sd_folders)
    assert executor.run(big_txt2img(512), outputs=["checkpoint"]).ok  # loaded while memory was free
    monkeypatch.setattr(memory, "free_memory", lambda device: 1 << 20)  # 1 MiB free
    result = executor.run(big_txt2img(512))
    node, message = only_error(result)
    assert node == "sampler" and "decode" not in result.executed
    assert message.startswith("sampling 1 x 512x512 needs about ") and "GiB of memory, but 0.00 GiB is free on cpu" in message
    assert "a run may use 90% of it" in message


def test_a_checkpoint_larger_than_free_memory_is_refused_before_its_weights_are_read(sd_folders, monkeypatch):
    from latentgraph.nodes.sd import checkpoint

    monkeypatch.setattr(memory, "free_memory", lambda device: 8 << 20)  # 8 MiB free: the tiny model needs 20
    read = []
    monkeypatch.setattr(checkpoint, "_fill", lambda *args: read.append(args))
    node, message = only_error(limited_executor(sd_folders).run(big_txt2img(64)))
    assert node == "checkpoint" and read == []
    assert re.fullmatch(r"latentgraph-demo\.safetensors needs \d\d MiB of memory in float32, but only 8 MiB is "
                        r"free \(90% of it may be used\); with --precision bf16 the U-Net takes half as much; close "
                        r"other programs or unload models first", message), message


def test_a_tiny_memory_fraction_refuses_decoding_too(sd_folders):
    document = big_txt2img(64)
    del document["nodes"]["sampler"]
    document["nodes"]["decode"]["inputs"]["latent"] = link("latent", "latent")
    executor = limited_executor(sd_folders, memory_fraction=1e-9)
    executor.services.limits.memory_fraction = 0.9
    assert executor.run(document, outputs=["checkpoint"]).ok  # the checkpoint loads under a normal fraction
    executor.services.limits.memory_fraction = 1e-9
    node, message = only_error(executor.run(document))
    assert node == "decode" and message.startswith("decoding 1 x 64x64 needs about 0.00 GiB of memory, but ")

    with pytest.raises(OverLimit, match=r"^decoding 2 x 512x512 needs about 1\.\d\d GiB of memory"):
        estimate = memory.decode_memory(VAEConfig(), 2, 64, 64, 4)
        require_memory(estimate, torch.device("cpu"), RunLimits(memory_fraction=1e-9), "decoding 2 x 512x512")


def test_free_memory_reads_what_the_machine_has():
    free = memory.free_memory(torch.device("cpu"))
    if Path("/proc/meminfo").is_file():
        assert free is not None and free > 0
    assert memory.free_memory(torch.device("meta")) is None


def test_memory_estimates_are_near_the_measured_peaks():
    # Peak resident memory measured on the CPU in float32 (see nodes/sd/memory.py): SD1.5's U-Net on
    # a 512x512 latent batch of 2 (one guided image) 392-425 MiB; SD's VAE decoding 512x512 928-984 MiB.
    mib = 2**20
    unet = memory.unet_memory(UNetConfig(), 2, 64, 64, 4) / mib
    assert 392 / 1.5 < unet < 425 * 1.5
    decode = memory.decode_memory(VAEConfig(), 1, 64, 64, 4) / mib
    assert 928 / 1.5 < decode < 984 * 1.5
    sampling = memory.sampling_memory(UNetConfig(), 1, 4, 64, 64, 4, guided=True) / mib
    assert unet < sampling < unet + 10
    assert memory.unet_memory(UNetConfig(), 2, 128, 128, 4) > 2 * memory.unet_memory(UNetConfig(), 2, 64, 64, 4)
    assert memory.decode_memory(VAEConfig(), 1, 256, 256, 4, tiled=True) < 4 * memory.decode_memory(VAEConfig(), 1, 64, 64, 4)
