"""ControlNet preprocessors (nodes/preprocessors.py): canny against OpenCV bit for bit, scribble,
threshold and invert with exact numbers, batches, errors, and the preview each node reports so the
editor draws its map on the node."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
from latentgraph.engine import CancelToken, EventBus, Executor, OutputCache, RunContext, WorkflowInvalid, registry
from latentgraph.nodes.folders import Folders
from latentgraph.nodes.preprocessors import Canny, InvertImage, Scribble, Threshold, check_image, luminance
from latentgraph.nodes.services import RunLimits, Services

FORMAT = "latentgraph/workflow@1"


def as_image(*pixels: np.ndarray) -> torch.Tensor:
    """uint8 arrays [H, W, 3] as an IMAGE batch, exactly as load_image makes one (value / 255)."""
    return torch.from_numpy(np.stack(pixels).astype(np.float32) / 255.0)


def drawing(height: int, width: int, seed: int) -> np.ndarray:
    """A picture with real edges (shapes of several colours on a gradient) plus some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.int32)
    for _ in range(6):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(4, 14)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        top, left = rng.integers(0, height - 6), rng.integers(0, width - 6)
        image[top:top + 6, left:left + rng.integers(3, 20)] = rng.integers(0, 256, 3)
    image += rng.integers(-12, 13, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def run_node(cls, services: Services | None = None, **inputs):
    """One node's run, outside any workflow; returns (its image output, what it reported)."""
    services = services or Services()
    ctx = RunContext("run", "node", cls.node_info.type, services, CancelToken(), lambda *_: None)
    outputs = cls.model_construct(**inputs).run(ctx)
    return outputs.image, ctx.results


@pytest.fixture
def folders(tmp_path) -> Folders:
    (tmp_path / "input").mkdir()
    return Folders(models=tmp_path / "models", inputs=tmp_path / "input", outputs=tmp_path / "output",
                   temp=tmp_path / "temp")


@pytest.fixture
def services(folders) -> Services:
    return Services(folders=folders)


@pytest.fixture
def executor(services) -> Executor:
    return Executor(registry, OutputCache(1 << 28), services=services, events=EventBus())


def control_workflow(**canny_inputs) -> dict:
    """load_image -> canny -> save_image."""
    inputs = {"image": {"node": "load", "output": "image"}, **canny_inputs}
    return {"format": FORMAT, "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "photo.png"}},
        "edges": {"type": "canny", "inputs": inputs},
        "save": {"type": "save_image", "inputs": {"images": {"node": "edges", "output": "image"}, "filename_prefix": "map"}},
    }}


# ---- canny -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("low", "high"), [(100, 200), (20, 60), (0, 255), (150, 150)])
def test_canny_equals_opencv_on_the_same_8bit_pixels_bit_for_bit_for_every_image_of_a_batch(low, high):
    pictures = [drawing(37, 53, seed) for seed in range(3)]  # odd sizes: nothing assumes multiples of 8
    edges, _ = run_node(Canny, image=as_image(*pictures), low_threshold=low, high_threshold=high)
    assert edges.shape == (3, 37, 53, 3) and edges.dtype == torch.float32 and edges.is_contiguous()
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    for picture, got in zip(pictures, edges):
        expected = cv2.Canny(picture, low, high)  # the annotator's call, on the RGB array
        assert np.array_equal((got[..., 0] * 255).numpy().astype(np.uint8), expected)
        assert torch.equal(got[..., 0], got[..., 1]) and torch.equal(got[..., 0], got[..., 2])
    assert 0 < edges.sum() < edges.numel() / 2  # edges, not a blank or a filled map


def test_canny_rounds_in_between_values_to_the_nearest_8bit_level_as_a_saved_png_would():
    rng = np.random.default_rng(7)
    image = torch.from_numpy(rng.random((1, 40, 40, 3), dtype=np.float32))
    image[0, :, 20:] = image[0, :, 20:] * 0.3  # a real edge
    edges, _ = run_node(Canny, image=image, low_threshold=60, high_threshold=120)
    pixels = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal((edges[0, ..., 0] * 255).numpy().astype(np.uint8), cv2.Canny(pixels, 60, 120))


def test_canny_starts_an_edge_only_where_the_gradient_is_above_high_threshold():
    # A vertical step of height v has a Sobel gradient of 4v (|dx| + |dy|, OpenCV's default norm).
    def edge_pixels(step: int, high: int) -> int:
        picture = np.zeros((16, 16, 3), np.uint8)
        picture[:, 8:] = step
        edges, _ = run_node(Canny, image=as_image(picture), low_threshold=10, high_threshold=high)
        return int(edges[0, ..., 0].sum())

    assert edge_pixels(50, 199) == 16  # gradient 200 > 199: one full column of edge
    assert edge_pixels(50, 200) == 0   # 200 is not above 200
    assert edge_pixels(51, 203) == 16 and edge_pixels(51, 204) == 0


def test_canny_low_threshold_decides_how_far_a_started_edge_continues():
    # Top half: a strong step (gradient 240); bottom half: a weak one (120), too weak to start an edge.
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:8, 8:], picture[8:, 8:] = 60, 30
    weak_alone = picture.copy()
    weak_alone[:8, 8:] = 30

    def column_7(image: np.ndarray, low: int) -> list[int]:
        edges, _ = run_node(Canny, image=as_image(image), low_threshold=low, high_threshold=200)
        return [int(v) for v in edges[0, 9:, 7, 0]]  # rows 9-15, the weak part

    assert column_7(weak_alone, 100) == [0] * 7      # 120 never starts an edge
    assert column_7(picture, 100) == [1] * 7         # ...but continues the strong one (120 > 100)
    assert column_7(picture, 130) == [0] * 7         # not when low is above it


def test_canny_finds_the_edge_between_two_colours_of_equal_brightness():
    # Red (200, 30, 30) and green (30, 110, 60) are both luminance 81/80: the gray image is flat.
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[:, :16], picture[:, 16:] = (200, 30, 30), (30, 110, 60)
    assert cv2.Canny(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY), 100, 200).sum() == 0
    edges, _ = run_node(Canny, image=as_image(picture), low_threshold=100, high_threshold=200)
    assert edges[0, :, :, 0].sum(dim=0).nonzero().flatten().tolist() == [15]  # the column at the border
    assert edges[0, :, 15, 0].sum() == 32


def test_canny_low_above_high_is_refused_at_validation_naming_the_node_and_both_inputs(executor, folders):
    Image.fromarray(drawing(24, 24, 0)).save(folders.inputs / "photo.png")
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate(control_workflow(low_threshold=250, high_threshold=100))
    [issue] = caught.value.issues
    assert (issue.node, issue.input, issue.code) == ("edges", "low_threshold", "invalid_value")
    assert issue.message.startswith("node 'edges' (canny) input 'low_threshold': low_threshold (250) is above "
                                    "high_threshold (100)")
    executor.validate(control_workflow(low_threshold=100, high_threshold=100))  # equal is fine
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate(control_workflow(low_threshold=-1, high_threshold=256))
    assert {(i.input, i.code) for i in caught.value.issues} == {("low_threshold", "out_of_bounds"),
                                                               ("high_threshold", "out_of_bounds")}


def test_canny_low_above_high_through_a_link_fails_the_node_when_it_runs(executor, folders):
    Image.fromarray(drawing(24, 24, 0)).save(folders.inputs / "photo.png")
    workflow = control_workflow(low_threshold={"node": "low", "output": "value"}, high_threshold=100)
    workflow["nodes"]["low"] = {"type": "int_constant", "inputs": {"value": 180}}
    result = executor.run(workflow)
    assert not result.ok and result.skipped == ["save"]
    [failure] = result.errors
    assert (failure.node_id, failure.node_type, failure.error_type) == ("edges", "canny", "ValueError")
    assert str(failure.error).startswith("low_threshold (180) is above high_threshold (100)")
    assert not (folders.temp).exists() or not list(folders.temp.iterdir())  # nothing was previewed


# ---- scribble, threshold, invert ---------------------------------------------------------------------

def pixel_row(*colours: tuple[int, int, int]) -> np.ndarray:
    return np.array([colours], dtype=np.uint8)


def test_scribble_makes_dark_and_coloured_strokes_white_and_the_light_background_black():
    row = pixel_row((255, 255, 255), (0, 0, 0), (255, 255, 0), (255, 0, 0), (200, 200, 200),
                    (126, 126, 126), (127, 127, 127), (128, 250, 250), (126, 250, 250))
    lines, _ = run_node(Scribble, image=as_image(row), threshold=127)
    # darkest channel below 127: black, yellow (blue 0), red, 126 grey, and a pale cyan whose red is 126
    assert lines[0, 0, :, 0].tolist() == [0, 1, 1, 1, 0, 1, 0, 0, 1]
    assert lines.shape == (1, 1, 9, 3) and torch.equal(lines[..., 0], lines[..., 2])
    lines, _ = run_node(Scribble, image=as_image(row), threshold=201)  # the light grey 200 becomes a line too
    assert lines[0, 0, :, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1]
    lines, _ = run_node(Scribble, image=as_image(row), threshold=0)  # nothing is below 0
    assert lines.sum() == 0


def test_threshold_compares_the_bt601_luminance_and_invert_swaps_black_and_white():
    row = pixel_row((255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (0, 0, 0), (255, 255, 255))
    assert luminance(as_image(row)[0]).tolist() == [[76, 150, 29, 128, 0, 255]]
    bright, _ = run_node(Threshold, image=as_image(row), threshold=75, invert=False)
    assert bright[0, 0, :, 0].tolist() == [1, 1, 0, 1, 0, 1]
    bright, _ = run_node(Threshold, image=as_image(row), threshold=76, invert=False)  # 76 is not above 76
    assert bright[0, 0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]
    dark, _ = run_node(Threshold, image=as_image(row), threshold=76, invert=True)
    assert dark[0, 0, :, 0].tolist() == [1, 0, 1, 0, 1, 0]
    assert torch.equal(dark, 1 - bright)
    assert run_node(Threshold, image=as_image(row), threshold=255, invert=False)[0].sum() == 0


def test_threshold_luminance_is_the_rounded_weighted_sum_for_any_colour():
    colours = np.random.default_rng(3).integers(0, 256, (1, 500, 3)).astype(np.uint8)
    weighted = colours.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luminance(as_image(colours)[0]).astype(np.float64) - weighted).max() <= 0.5 + 1e-9


def test_threshold_with_invert_turns_a_dark_line_drawing_into_white_lines_on_black():
    picture = np.full((20, 30, 3), 245, np.uint8)  # off-white paper
    picture[10, 3:27] = (20, 20, 30)  # a dark pen line
    picture[2:18, 15] = (60, 60, 60)
    lines, _ = run_node(Threshold, image=as_image(picture), threshold=127, invert=True)
    expected = np.zeros((20, 30), np.float32)
    expected[10, 3:27] = 1
    expected[2:18, 15] = 1
    assert np.array_equal(lines[0, ..., 0].numpy(), expected)


def test_invert_image_keeps_grey_levels_and_every_image_of_the_batch():
    image = torch.tensor([[[[0.0, 0.25, 1.0]]], [[[0.5, 0.75, 0.125]]]])
    inverted, _ = run_node(InvertImage, image=image)
    assert inverted.tolist() == [[[[1.0, 0.75, 0.0]]], [[[0.5, 0.25, 0.875]]]]
    assert inverted.dtype == torch.float32 and inverted.shape == (2, 1, 1, 3)


@pytest.mark.parametrize("cls", [Canny, Scribble, Threshold, InvertImage])
def test_each_preprocessor_processes_each_image_of_a_batch_on_its_own(cls):
    pictures = [drawing(24, 32, seed) for seed in (11, 12, 13)]
    inputs = {"low_threshold": 50, "high_threshold": 150} if cls is Canny else {}
    inputs |= {"threshold": 127} if cls in (Scribble, Threshold) else {}
    inputs |= {"invert": True} if cls is Threshold else {}
    batch, _ = run_node(cls, image=as_image(*pictures), **inputs)
    singles = torch.cat([run_node(cls, image=as_image(p), **inputs)[0] for p in pictures])
    assert batch.shape == (3, 24, 32, 3) and torch.equal(batch, singles)
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize(("shape", "message"), [
    ((24, 24, 3), "input 'image' must be a batch of RGB images, shape [batch, height, width, 3]; got Tensor of shape [24, 24, 3]"),
    ((1, 24, 24, 4), "got Tensor of shape [1, 24, 24, 4]"),
    ((1, 0, 24, 3), "input 'image' is 24x0 pixels: there is nothing to process"),
])
def test_an_image_that_is_not_a_batch_of_rgb_images_is_refused_naming_the_input(shape, message):
    with pytest.raises(ValueError) as caught:
        check_image(torch.zeros(shape))
    assert message in str(caught.value)
    with pytest.raises(ValueError, match="input 'image'"):
        run_node(Threshold, image=torch.zeros(shape), threshold=127, invert=False)


def test_the_catalog_lists_the_preprocessors_with_their_bounds():
    for name in ("canny", "scribble", "threshold", "invert_image"):
        info = registry.get(name)
        assert info.category == "preprocessors" and not info.is_output and info.cacheable, name
        assert info.inputs["image"].port == "IMAGE" and info.outputs["image"].port == "IMAGE"
    canny = registry.get("canny").inputs
    assert (canny["low_threshold"].default, canny["high_threshold"].default) == (100, 200)
    assert (canny["low_threshold"].minimum, canny["low_threshold"].maximum) == (0, 255)
    assert registry.get("threshold").inputs["invert"].default is False
    assert registry.get("scribble").inputs["threshold"].default == 127


# ---- through the executor: the preview the editor draws ------------------------------------------------

def test_a_run_reports_the_preview_png_of_the_map_and_caches_it_with_the_output(executor, folders):
    picture = drawing(40, 48, 5)
    Image.fromarray(picture).save(folders.inputs / "photo.png")
    finished = []
    executor.events.subscribe(lambda e: finished.append(e.data) if e.type == "node_finished" else None)

    result = executor.run(control_workflow(low_threshold=80, high_threshold=160))
    assert result.ok, result.errors
    preview = {"filename": "canny_00001_.png", "subfolder": "", "type": "temp"}
    assert result.results["edges"] == {"previews": [preview]}  # not "images": the gallery keeps to output nodes
    assert next(d for d in finished if d["node"] == "edges")["results"] == {"previews": [preview]}
    with Image.open(folders.temp / "canny_00001_.png") as png:
        shown = np.asarray(png.convert("RGB"))
        assert json.loads(png.text["workflow"])["nodes"]["edges"]["type"] == "canny"
    assert np.array_equal(shown[..., 0], cv2.Canny(picture, 80, 160))
    with Image.open(folders.outputs / "map_00001_.png") as png:  # the map travels on as the node's output
        assert np.array_equal(np.asarray(png.convert("RGB")), shown)

    # Only the save runs again: the map comes from the cache, with the preview it reported.
    workflow = control_workflow(low_threshold=80, high_threshold=160)
    workflow["nodes"]["save"]["inputs"]["filename_prefix"] = "other"
    again = executor.run(workflow)
    assert again.executed == ["save"] and "edges" in again.cached
    assert again.results["edges"] == {"previews": [preview]}
    assert sorted(p.name for p in folders.temp.iterdir()) == ["canny_00001_.png"]  # nothing written again

    changed = executor.run(control_workflow(low_threshold=20, high_threshold=160))
    assert changed.results["edges"] == {"previews": [{**preview, "filename": "canny_00002_.png"}]}


def test_a_batch_gets_one_preview_per_image(executor, folders):
    Image.fromarray(drawing(16, 16, 1)).save(folders.inputs / "photo.png")
    workflow = {"format": FORMAT, "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "photo.png"}},
        "inverted": {"type": "invert_image", "inputs": {"image": {"node": "load", "output": "image"}}},
        "both": {"type": "threshold", "inputs": {"image": {"node": "inverted", "output": "image"}, "threshold": 100}},
    }}
    result = executor.run(workflow, outputs=["both"])
    assert result.ok, result.errors
    assert [p["filename"] for p in result.results["inverted"]["previews"]] == ["inverted_00001_.png"]
    assert [p["filename"] for p in result.results["both"]["previews"]] == ["threshold_00001_.png"]
    batch = torch.cat([result.values["both"]["image"]] * 3)
    _, reported = run_node(Scribble, services=executor.services, image=batch, threshold=127)
    assert [p["filename"] for p in reported["previews"]] == [f"scribble_0000{i}_.png" for i in (1, 2, 3)]


def test_a_preview_that_cannot_be_saved_is_logged_and_the_map_still_comes_out(folders, caplog):
    executor = Executor(registry, OutputCache(1 << 28), events=EventBus(),
                        services=Services(folders=folders, limits=RunLimits(min_free_disk=1 << 62)))
    Image.fromarray(drawing(16, 16, 2)).save(folders.inputs / "photo.png")
    with caplog.at_level(logging.WARNING, logger="latentgraph.nodes.preprocessors"):
        result = executor.run(control_workflow(), outputs=["edges"])
    assert result.ok, result.errors
    assert "edges" not in result.results
    assert result.values["edges"]["image"].shape == (1, 16, 16, 3)
    assert "node 'edges' (canny): its preview was not saved: only" in caplog.text


def test_the_server_keeps_previews_out_of_a_runs_images():
    from latentgraph.server.store import RunRecord

    record = RunRecord("r", "succeeded", {}, results={
        "edges": {"previews": [{"filename": "canny_00001_.png", "subfolder": "", "type": "temp"}]},
        "save": {"images": [{"filename": "out_00001_.png", "subfolder": "", "type": "output"}]},
    })
    assert [i["filename"] for i in record.images] == ["out_00001_.png"]
