"""Area conditioning (ComfyUI's ConditioningSetArea, ...Percentage, ...Strength): the guidance math
against ComfyUI's rule written out here, the nodes on the demo model, and the ComfyUI import."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentgraph.engine import Executor, OutputCache
from latentgraph.nodes.comfyui import import_document
from latentgraph.nodes.library import load_registry
from latentgraph.nodes.sd.denoiser import CFGDenoiser, GuidanceEntry, area_weight, latent_area

REGISTRY = load_registry()


def fake_denoiser(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Depends on the values, their position in the crop it is given, sigma and the prompt."""
    return (torch.tanh(x).cumsum(-1) * 0.3 + x.flip(-2) * 0.2) / (1 + sigma.view(-1, 1, 1, 1)) \
        + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def comfy_side(x, sigma, prompts):
    """ComfyUI's estimate for one side: each prompt (context, strength, area as (h, w, y, x) latent
    pixels or None) on its crop, weighted by strength with an 8-pixel ramp at inner edges, summed,
    divided by the summed weights (which start at 1e-37)."""
    height, width = x.shape[2:]
    out, count = torch.zeros_like(x), torch.ones_like(x) * 1e-37
    for context, strength, area in prompts:
        h, w, top, left = area if area is not None else (height, width, 0, 0)
        h, w = min(height - top, h), min(width - left, w)
        crop = x[:, :, top:top + h, left:left + w]
        mult = torch.ones_like(crop) * strength
        for dim, start, size, full in ((2, top, h, height), (3, left, w, width)):
            rr = min(8, size // 4)
            if area is not None and start != 0:
                for t in range(rr):
                    mult.narrow(dim, t, 1).mul_((1.0 / rr) * (t + 1))
            if area is not None and start + size < full:
                for t in range(rr):
                    mult.narrow(dim, size - 1 - t, 1).mul_((1.0 / rr) * (t + 1))
        out[:, :, top:top + h, left:left + w] += fake_denoiser(crop, sigma, context) * mult
        count[:, :, top:top + h, left:left + w] += mult
    return out / count


def _context(seed: int) -> torch.Tensor:
    return torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed))


def test_area_weights_ramp_at_inner_edges_as_comfyui():
    w = area_weight(4, 0, 16, 40, 40, 40, 2.0)  # top edge inside, bottom edge inside, left/right at the border
    assert w.shape == (16, 40)
    assert torch.allclose(w[:4, 0], torch.tensor([0.5, 1.0, 1.5, 2.0]))  # ramp of 16 // 4 = 4 rows
    assert torch.allclose(w[-4:, 0], torch.tensor([2.0, 1.5, 1.0, 0.5]))
    assert torch.equal(w[4:12], torch.full((8, 40), 2.0))
    assert torch.equal(area_weight(0, 0, 8, 8, 8, 8, 1.5), torch.full((8, 8), 1.5))  # the whole latent: flat
    w = area_weight(0, 24, 64, 40, 64, 64, 1.0)  # wide enough for the full 8-pixel ramp; the right edge is the border
    assert torch.allclose(w[0, :8], torch.arange(1, 9) / 8) and torch.equal(w[0, 8:], torch.ones(32))


def test_latent_area_from_pixels_and_fractions():
    assert latent_area(("pixels", 64, 32, 256, 128), 64, 64) == (4, 8, 16, 32)
    assert latent_area(("pixels", 500, 0, 64, 64), 64, 64) == (0, 62, 8, 2)  # clipped at the right edge
    assert latent_area(("fraction", 0.25, 0.5, 0.5, 0.5), 8, 8) == (4, 2, 4, 4)
    assert latent_area(("fraction", 0.0, 0.0, 0.01, 0.01), 8, 8) == (0, 0, 1, 1)  # at least one latent pixel
    with pytest.raises(ValueError, match=r"area at x=512, y=0 \(64x64\) lies outside the 512x512 image"):
        latent_area(("pixels", 512, 0, 64, 64), 64, 64)


@pytest.mark.parametrize("cfg", [1.0, 4.5])
def test_guidance_with_areas_equals_comfyuis_rule(cfg):
    x = torch.randn(2, 4, 40, 48, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([2.5, 2.5])
    pos = [(_context(1), 1.0, None), (_context(2), 0.7, ("pixels", 80, 64, 200, 160)),
           (_context(3), 1.3, ("fraction", 0.5, 0.0, 0.5, 0.25))]
    neg = [(_context(4), 1.0, None), (_context(5), 2.0, ("pixels", 0, 0, 128, 320))]

    def entries(side):
        return [GuidanceEntry(c, s, area=a) for c, s, a in side]

    def comfy(side):
        latent = []
        for c, s, a in side:
            if a is not None:
                top, left, rows, cols = latent_area(a, 40, 48)
                a = (rows, cols, top, left)
            latent.append((c, s, a))
        return comfy_side(x, sigma, latent)

    ours = CFGDenoiser(fake_denoiser, entries(pos), entries(neg), cfg)(x, sigma)
    cond, uncond = comfy(pos), comfy(neg)
    expected = cond if cfg == 1.0 else uncond + cfg * (cond - uncond)
    assert (ours - expected).abs().max() < 1e-5 * expected.abs().max()


def test_a_whole_image_area_equals_no_area():
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([1.0])
    plain = CFGDenoiser(fake_denoiser, [GuidanceEntry(_context(1)), GuidanceEntry(_context(2), 0.5)],
                        [GuidanceEntry(_context(3))], 3.0)(x, sigma)
    area = CFGDenoiser(fake_denoiser, [GuidanceEntry(_context(1), area=("pixels", 0, 0, 128, 128)),
                                       GuidanceEntry(_context(2), 0.5)], [GuidanceEntry(_context(3))], 3.0)(x, sigma)
    assert (plain - area).abs().max() < 1e-5


def test_uncovered_pixels_get_zero_as_in_comfyui():
    x = torch.randn(1, 4, 16, 16)
    out = CFGDenoiser(fake_denoiser, [GuidanceEntry(_context(1), area=("pixels", 0, 0, 64, 128))], None, 1.0)(x, torch.tensor([1.0]))
    assert torch.equal(out[..., 8:], torch.zeros(1, 4, 16, 8)) and out[..., :8].abs().sum() > 0


def test_an_area_prompt_with_a_controlnet_is_refused():
    entry = GuidanceEntry(_context(1), control=object(), area=("pixels", 0, 0, 64, 64))
    with pytest.raises(ValueError, match="a prompt with an area or a mask cannot carry a ControlNet"):
        CFGDenoiser(fake_denoiser, [entry], None, 1.0)(torch.randn(1, 4, 16, 16), torch.tensor([1.0]))


WORKFLOW = {
    "format": "latentgraph/workflow@1",
    "nodes": {
        "ck": {"type": "checkpoint_loader", "inputs": {"checkpoint": "latentgraph-demo.safetensors"}},
        "bg": {"type": "clip_text_encode", "inputs": {"clip": {"node": "ck", "output": "clip"}, "text": "a blue background"}},
        "obj": {"type": "clip_text_encode", "inputs": {"clip": {"node": "ck", "output": "clip"},
                                                       "text": "a large red circle"}},
        "area": {"type": "conditioning_set_area", "inputs": {"conditioning": {"node": "obj", "output": "conditioning"},
                                                             "width": 32, "height": 64, "x": 32, "y": 0, "strength": 1.5}},
        "both": {"type": "conditioning_combine", "inputs": {"a": {"node": "bg", "output": "conditioning"},
                                                            "b": {"node": "area", "output": "conditioning"}}},
        "neg": {"type": "clip_text_encode", "inputs": {"clip": {"node": "ck", "output": "clip"}, "text": ""}},
        "lat": {"type": "empty_latent", "inputs": {"width": 64, "height": 64}},
        "s": {"type": "ksampler", "inputs": {"model": {"node": "ck", "output": "model"},
                                             "positive": {"node": "both", "output": "conditioning"},
                                             "negative": {"node": "neg", "output": "conditioning"},
                                             "latent": {"node": "lat", "output": "latent"}, "seed": 1, "steps": 6,
                                             "cfg": 3.0, "sampler": "euler", "scheduler": "karras"}},
        "show": {"type": "preview_image", "inputs": {"images": {"node": "d", "output": "image"}}},
        "d": {"type": "vae_decode", "inputs": {"vae": {"node": "ck", "output": "vae"},
                                               "latent": {"node": "s", "output": "latent"}}},
    },
}


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.services import Services

    root = tmp_path_factory.mktemp("area")
    folders = Folders(models=root / "models", inputs=root / "input", outputs=root / "output", temp=root / "temp")
    return Executor(REGISTRY, OutputCache(1 << 30), services=Services(folders=folders))


def _image(executor, workflow) -> np.ndarray:
    from PIL import Image

    result = executor.run(workflow)
    assert result.ok, result.errors
    (saved,) = [i for r in result.results.values() for i in r.get("images", [])]
    return np.asarray(Image.open(executor.services.folders.temp / saved["subfolder"] / saved["filename"]), dtype=np.int16)


def test_an_area_prompt_changes_its_area_most(executor):
    with_area = _image(executor, WORKFLOW)
    without = copy.deepcopy(WORKFLOW)
    without["nodes"]["both"]["inputs"]["b"] = {"node": "bg", "output": "conditioning"}
    plain = _image(executor, without)
    change = np.abs(with_area - plain).mean(axis=(0, 2))  # per column
    assert change[32:].mean() > 2 * change[:24].mean() > 0  # the right half (the area) changed most
    moved = copy.deepcopy(WORKFLOW)
    moved["nodes"]["area"] = {"type": "conditioning_set_area_percentage",
                              "inputs": {"conditioning": {"node": "obj", "output": "conditioning"},
                                         "width": 0.5, "height": 1.0, "x": 0.5, "y": 0.0, "strength": 1.5}}
    assert np.array_equal(_image(executor, moved), with_area)  # the same rectangle as fractions


def test_an_area_outside_the_image_fails_naming_the_sampler(executor):
    outside = copy.deepcopy(WORKFLOW)
    outside["nodes"]["area"]["inputs"]["x"] = 64
    result = executor.run(outside)
    assert not result.ok
    (error,) = result.errors
    assert error.node_id == "s" and "lies outside the 64x64 image" in str(error)


def test_comfyui_area_conditioning_imports_and_equals_ours(executor):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "latentgraph-demo.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue background", "clip": ["4", 1]}},
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "a large red circle", "clip": ["4", 1]}},
        "11": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["10", 0], "width": 32, "height": 64,
                                                               "x": 32, "y": 0, "strength": 1.5}},
        "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["11", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 6, "cfg": 3.0, "sampler_name": "euler",
                                                   "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["12", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    result = import_document(prompt, registry=REGISTRY, services=executor.services)
    assert result.report.ok and not result.report.values and not result.report.problems
    assert result.workflow["nodes"]["11"]["type"] == "conditioning_set_area"
    assert np.array_equal(_image(executor, result.workflow), _image(executor, WORKFLOW))
    strength = import_document({**prompt, "13": {"class_type": "ConditioningSetAreaStrength",
                                                 "inputs": {"conditioning": ["11", 0], "strength": 0.5}}},
                               registry=REGISTRY)
    assert strength.workflow["nodes"]["13"] == {"type": "conditioning_set_area_strength", "inputs": {
        "conditioning": {"node": "11", "output": "conditioning"}, "strength": 0.5}}


def comfy_masked(x, sigma, context, strength, mask, bounds):
    """ComfyUI's estimate of one masked prompt alone: mask resized bilinear to the latent, the
    prompt run on the whole latent or the mask's box, weighed by mask x strength (no ramp)."""
    height, width = x.shape[2:]
    mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear",
                                           align_corners=False).squeeze(1)
    top, left, h, w = 0, 0, height, width
    if bounds:
        ys, xs = torch.nonzero(mask[0] > 0, as_tuple=True)
        top, left, h, w = int(ys.min()), int(xs.min()), int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
    out, count = torch.zeros_like(x), torch.ones_like(x) * 1e-37
    mult = mask[:, top:top + h, left:left + w].unsqueeze(1).repeat(1, x.shape[1], 1, 1) * strength
    out[:, :, top:top + h, left:left + w] += fake_denoiser(x[:, :, top:top + h, left:left + w], sigma, context) * mult
    count[:, :, top:top + h, left:left + w] += mult
    return out / count, count


@pytest.mark.parametrize("bounds", [False, True])
def test_a_masked_prompt_is_weighed_by_its_mask_as_in_comfyui(bounds):
    x = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([3.0])
    mask = torch.zeros(1, 128, 192)
    mask[:, 30:90, 100:180] = 1.0
    mask[:, 60:70, 20:40] = 0.5
    entry = GuidanceEntry(_context(1), mask=mask, mask_strength=0.8, mask_bounds=bounds)
    ours = CFGDenoiser(fake_denoiser, [entry], None, 1.0)(x, sigma)
    expected, count = comfy_masked(x, sigma, _context(1), 0.8, mask, bounds)
    covered = count > 1e-30
    assert torch.allclose(ours[covered], expected[covered], atol=1e-6) and torch.equal(ours[~covered], expected[~covered])


def test_a_prompt_acts_only_in_its_noise_level_range():
    x = torch.randn(1, 4, 8, 8)
    a, b = GuidanceEntry(_context(1)), GuidanceEntry(_context(2), sigma_range=(5.0, 2.0))
    for level, active in ((6.0, False), (5.0, True), (3.0, True), (2.0, True), (1.0, False)):
        sigma = torch.tensor([level])
        both = CFGDenoiser(fake_denoiser, [a, b], None, 1.0)(x, sigma)
        expected = CFGDenoiser(fake_denoiser, [a, b] if active else [a], None, 1.0)(x, sigma)
        assert torch.allclose(both, expected, atol=1e-6), level
    alone = CFGDenoiser(fake_denoiser, [b], None, 1.0)(x, torch.tensor([9.0]))
    assert torch.equal(alone, torch.zeros_like(x))  # nobody acts: zero, as ComfyUI


def _conditioning(*embeddings, pooled=None):
    from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry

    return Conditioning(tuple(ConditioningEntry(e, pooled) for e in embeddings))


def test_concat_and_average_follow_comfyuis_formulas():
    from latentgraph.nodes.conditioning import ConditioningAverage, ConditioningConcat

    to, other = _context(1)[:, :77], torch.cat([_context(2), _context(3)], dim=1)  # 77 and 154 tokens
    pooled_to, pooled_from = torch.randn(1, 64), torch.randn(1, 64)
    out = ConditioningConcat(conditioning_to=_conditioning(to, pooled=pooled_to),
                             conditioning_from=_conditioning(other)).run(None).conditioning.entries[0]
    assert torch.equal(out.embedding, torch.cat([to, other], dim=1)) and torch.equal(out.pooled, pooled_to)
    avg = ConditioningAverage(conditioning_to=_conditioning(to, pooled=pooled_to),
                              conditioning_from=_conditioning(other, pooled=pooled_from),
                              conditioning_to_strength=0.3).run(None).conditioning.entries[0]
    assert torch.allclose(avg.embedding, to * 0.3 + other[:, :77] * 0.7)  # cut to the `to` length
    assert torch.allclose(avg.pooled, pooled_to * 0.3 + pooled_from * 0.7)
    short = ConditioningAverage(conditioning_to=_conditioning(other), conditioning_from=_conditioning(to),
                                conditioning_to_strength=0.5).run(None).conditioning.entries[0]
    assert torch.allclose(short.embedding, other * 0.5 + torch.cat([to, torch.zeros_like(to)], dim=1) * 0.5)


def test_comfyui_mask_range_concat_and_average_import_and_run_as_ours(executor):
    from PIL import Image

    mask = np.zeros((64, 64, 4), dtype=np.uint8)
    mask[..., :3] = 128
    mask[:, :32, 3] = 255  # opaque left half: LoadImage's mask (1 - alpha) is the right half
    executor.services.folders.inputs.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, "RGBA").save(executor.services.folders.inputs / "half.png")
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "latentgraph-demo.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a gray background", "clip": ["4", 1]}},
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "a large red circle", "clip": ["4", 1]}},
        "14": {"class_type": "CLIPTextEncode", "inputs": {"text": "a green square", "clip": ["4", 1]}},
        "15": {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["10", 0], "conditioning_from": ["14", 0]}},
        "16": {"class_type": "ConditioningAverage", "inputs": {"conditioning_to": ["6", 0], "conditioning_from": ["14", 0],
                                                               "conditioning_to_strength": 0.7}},
        "17": {"class_type": "LoadImage", "inputs": {"image": "half.png", "upload": "image"}},
        "11": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["15", 0], "mask": ["17", 1],
                                                               "strength": 1.2, "set_cond_area": "mask bounds"}},
        "18": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["11", 0], "start": 0.0, "end": 0.6}},
        "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["16", 0], "conditioning_2": ["18", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 2, "steps": 6, "cfg": 3.0, "sampler_name": "euler",
                                                   "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["12", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    result = import_document(prompt, registry=REGISTRY, services=executor.services)
    assert result.report.ok and result.report.empty, result.report.to_dict()
    ours = copy.deepcopy(WORKFLOW)
    nodes = ours["nodes"]
    nodes["bg"]["inputs"]["text"] = "a gray background"
    nodes["sq"] = {"type": "clip_text_encode", "inputs": {"clip": {"node": "ck", "output": "clip"}, "text": "a green square"}}
    nodes["cat"] = {"type": "conditioning_concat", "inputs": {"conditioning_to": {"node": "obj", "output": "conditioning"},
                                                              "conditioning_from": {"node": "sq", "output": "conditioning"}}}
    nodes["avg"] = {"type": "conditioning_average", "inputs": {"conditioning_to": {"node": "bg", "output": "conditioning"},
                                                               "conditioning_from": {"node": "sq", "output": "conditioning"},
                                                               "conditioning_to_strength": 0.7}}
    nodes["img"] = {"type": "load_image", "inputs": {"image": "half.png"}}
    nodes["area"] = {"type": "conditioning_set_mask", "inputs": {"conditioning": {"node": "cat", "output": "conditioning"},
                                                                 "mask": {"node": "img", "output": "mask"}, "strength": 1.2,
                                                                 "set_cond_area": "mask bounds"}}
    nodes["range"] = {"type": "conditioning_set_timestep_range",
                      "inputs": {"conditioning": {"node": "area", "output": "conditioning"}, "start": 0.0, "end": 0.6}}
    nodes["both"]["inputs"] = {"a": {"node": "avg", "output": "conditioning"}, "b": {"node": "range", "output": "conditioning"}}
    nodes["s"]["inputs"]["seed"] = 2
    nodes["s"]["inputs"]["cfg"] = 3.0
    mine = _image(executor, ours)
    assert np.array_equal(_image(executor, result.workflow), mine)
    plain = copy.deepcopy(ours)
    plain["nodes"]["both"]["inputs"]["b"] = {"node": "avg", "output": "conditioning"}
    change = np.abs(mine - _image(executor, plain)).mean(axis=(0, 2))
    assert change[32:].mean() > 2 * change[:24].mean() > 0  # the masked (right) half changed most
