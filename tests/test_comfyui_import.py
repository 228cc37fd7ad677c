"""Importing ComfyUI workflows (latentgraph.nodes.comfyui): the corpus in tests/comfyui/ (UI format
schema 0.4 and 1, API format, and PNGs carrying them), converted and run on the bundled demo model
with tiny add-on files, gives the same images as the same workflows written by hand in our format
(tests/comfyui/ours/); and what cannot be carried over is reported, by node id and type, through
the importer, `latentgraph import` and `POST /api/workflows/import`.

The corpus names the models people download (v1-5-pruned-emaonly.safetensors, a canny ControlNet,
sd_xl_base_1.0.safetensors...); the tests install tiny files under those names in a temporary
models folder: the demo checkpoint, an inpainting variant of it, a VAE and LoRAs and ControlNets
made for its architecture, a compact upscaler, and the tiny SDXL base and refiner of sd_tiny.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
from latentgraph.engine import EventBus, Executor, OutputCache, registry
from latentgraph.nodes.comfyui import MAPPINGS, NOT_SUPPORTED, ComfyImportError, import_document
from latentgraph.nodes.folders import Folders
from latentgraph.nodes.services import Services
from test_server_support import start_server  # noqa: F401  (fixture: a real server on a loopback port)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "comfyui"
DEMO = ROOT / "models" / "checkpoints" / "latentgraph-demo.safetensors"
pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason=f"the demo checkpoint {DEMO.relative_to(ROOT)} is absent")


def _load_generator():
    """tests/comfyui/build_corpus.py, the script that writes the corpus files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_corpus", CORPUS / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_corpus = _load_generator()


def corpus(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / name).read_text(encoding="utf-8"))


def ours(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / "ours" / name).read_text(encoding="utf-8"))


def png_with(pixels: np.ndarray | None = None, **chunks: str) -> bytes:
    """A PNG carrying text chunks, written as ComfyUI's SaveImage writes them (Pillow's PngInfo)."""
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    image = Image.fromarray(pixels if pixels is not None else np.full((8, 8, 3), 128, np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


# --- the models folder ------------------------------------------------------------------------------

def demo_configs():
    """The demo checkpoint's U-Net and text encoder configurations, as its trainer recorded them."""
    from safetensors import safe_open

    from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
    from latentgraph.nodes.sd.unet import UNetConfig

    with safe_open(str(DEMO), "pt") as handle:
        settings = json.loads(handle.metadata()["latentgraph.demo"])["settings"]
    unet = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings["unet"].items()})
    return unet, TextEncoderConfig(**settings["text_encoder"])


def write_demo_inpainting(path: Path) -> Path:
    """The demo model as an inpainting checkpoint: its first convolution takes 9 channels (latent,
    mask, masked image's latent), the first 4 its own weights, as the released inpainting models
    were made from their base models."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(DEMO))
    with safe_open(str(DEMO), "pt") as handle:
        metadata = handle.metadata()
    key = "model.diffusion_model.input_blocks.0.0.weight"
    weight = tensors[key]
    extra = torch.randn((weight.shape[0], 5, *weight.shape[2:]), generator=torch.Generator().manual_seed(9))
    tensors[key] = torch.cat([weight, extra.to(weight.dtype) * weight.float().std().to(weight.dtype)], dim=1)
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_demo_vae(path: Path) -> Path:
    """The demo checkpoint's VAE as a standalone file (keys without `first_stage_model.`), with the
    latent scale it was trained with in its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    prefix = "first_stage_model."
    tensors = {k[len(prefix):]: v for k, v in load_file(str(DEMO)).items() if k.startswith(prefix)}
    with safe_open(str(DEMO), "pt") as handle:
        scale = handle.metadata()["latentgraph.vae_scaling_factor"]
    save_file(tensors, str(path), metadata={"latentgraph.vae_scaling_factor": scale})
    return path


def write_inputs(folder: Path) -> None:
    """photo.png: 80x64 RGBA (a transparent corner, shapes to find edges in); mask.png: a red disc."""
    yy, xx = np.mgrid[0:64, 0:80]
    photo = np.zeros((64, 80, 4), np.uint8)
    photo[..., 0] = (xx * 3).clip(0, 255)
    photo[..., 1] = (yy * 4).clip(0, 255)
    photo[..., 2] = 90
    photo[20:44, 30:54, :3] = (240, 220, 30)
    photo[..., 3] = 255
    photo[:16, :24, 3] = 0
    Image.fromarray(photo, "RGBA").save(folder / "photo.png")
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[(yy[:, :64] - 30) ** 2 + (xx[:, :64] - 34) ** 2 < 15 ** 2] = (255, 40, 0)
    Image.fromarray(mask).save(folder / "mask.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Folders:
    """A models folder with every file the corpus names, and the input images."""
    import torch
    from safetensors.torch import save_file

    from controlnet_tiny import write_tiny_controlnet
    from lora_tiny import diffusers_unet_layers, kohya_names, text_layers, write_kohya_lora
    from sd_tiny import write_tiny_sdxl_checkpoint
    from test_upscale import compact_state

    root = tmp_path_factory.mktemp("comfyui")
    models = root / "models"
    for kind in ("checkpoints", "vae", "loras/sd15", "controlnet", "upscale_models", "embeddings"):
        (models / kind).mkdir(parents=True)
    os.link(DEMO, models / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    write_demo_inpainting(models / "checkpoints" / "sd-v1-5-inpainting.safetensors")
    write_tiny_sdxl_checkpoint(models / "checkpoints" / "sd_xl_base_1.0.safetensors")
    write_tiny_sdxl_checkpoint(models / "checkpoints" / "sd_xl_refiner_1.0.safetensors", refiner=True)
    write_demo_vae(models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors")
    unet, text = demo_configs()
    layers = {**kohya_names(diffusers_unet_layers(unet), "lora_unet_"), **kohya_names(text_layers(text), "lora_te_")}
    write_kohya_lora(models / "loras" / "sd15" / "detail_tweaker.safetensors", layers, seed=31)
    write_kohya_lora(models / "loras" / "sd15" / "style_toon.safetensors", layers, seed=32)
    write_tiny_controlnet(models / "controlnet" / "control_v11p_sd15_canny.safetensors", unet, seed=41, prefix=False)
    write_tiny_controlnet(models / "controlnet" / "control_v11f1p_sd15_depth.safetensors", unet, seed=42)
    save_file(compact_state(3, 2, 32, seed=5), str(models / "upscale_models" / "2x-compact.safetensors"))
    save_file({"emb_params": torch.randn(2, 64, generator=torch.Generator().manual_seed(3))},
              str(models / "embeddings" / "EasyNegative.safetensors"))
    (root / "input").mkdir()
    write_inputs(root / "input")
    return Folders(models=models, inputs=root / "input", outputs=root / "output", temp=root / "temp")


@pytest.fixture(scope="module")
def services(folders: Folders) -> Services:
    return Services(folders=folders)


@pytest.fixture(scope="module")
def executor(services: Services) -> Executor:
    """One executor for the module: loaded models are shared between runs."""
    return Executor(registry, OutputCache(1 << 30), services=services, events=EventBus())


def convert(source: Any, services: Services | None = None):
    return import_document(source, registry=registry, services=services)


def saved_images(executor: Executor, result, node: str) -> list[np.ndarray]:
    folders = executor.services.folders
    out = []
    for info in result.results[node]["images"]:
        folder = folders.outputs if info["type"] == "output" else folders.temp
        with Image.open(folder / info["subfolder"] / info["filename"]) as image:
            out.append(np.asarray(image.convert("RGB")))
    return out


def run_fresh(executor: Executor, workflow: dict[str, Any]):
    """Run with nothing cached from an earlier run (models stay loaded), so both workflows of a
    comparison really compute their images."""
    executor.cache.clear()
    result = executor.run(workflow)
    assert result.ok, result.errors
    return result


# --- converted workflows run like the hand-written ones ------------------------------------------

# corpus file -> (hand-written workflow, {ComfyUI output node: our output node}, notes the report must hold)
PAIRS = {
    "txt2img_lora.ui04.json": ("txt2img_lora.json", {"9": "save"}, []),
    "txt2img_lora.api.json": ("txt2img_lora.json", {"9": "save"}, []),
    "hires.ui1.json": ("hires.json", {"16": "save", "19": "preview"}, []),
    "custom_sampling.api.json": ("custom_sampling.json",
                                 {"11": "save", "15": "denoised_preview", "24": "refine_preview"}, []),
    "controlnet.ui04.json": ("controlnet.json", {"14": "save", "17": "preview_pixels", "20": "preview_upscaled"},
                             ["node 10 (ControlNetApplyAdvanced): input 'vae' is not needed by Latentgraph and was "
                              "dropped"]),
    "inpaint.api.json": ("inpaint.json", {"14": "save", "18": "repaint_preview", "23": "touch_up_preview",
                                          "25": "padded_preview", "27": "pad_mask_preview"}, []),
    "sdxl_refiner.ui1.json": ("sdxl_refiner.json", {"11": "save"}, []),
    "area_prompts.ui04.json": ("area_prompts.json", {"14": "save"}, []),
    "masked_prompts.api.json": ("masked_prompts.json", {"17": "save"}, []),
    "image_ops.ui1.json": ("image_ops.json", {"8": "blend_preview", "10": "batch_preview", "18": "mask_preview",
                                              "30": "save"}, []),
}


@pytest.mark.parametrize("name", PAIRS)
def test_a_converted_workflow_makes_the_images_of_the_hand_written_one(name, executor, services):
    hand_written, sinks, notes = PAIRS[name]
    imported = convert((CORPUS / name).read_bytes(), services)
    report = imported.report.to_dict()
    assert report["ok"] and not report["unmapped"] and not report["values"] and not report["missing_files"] \
        and not report["problems"], report
    assert report["notes"] == notes
    assert imported.source_format == ("comfyui-api" if ".api." in name else "comfyui-ui")

    theirs = run_fresh(executor, imported.workflow)
    mine = run_fresh(executor, ours(hand_written))
    for comfy_id, our_id in sinks.items():
        a, b = saved_images(executor, theirs, comfy_id), saved_images(executor, mine, our_id)
        assert len(a) == len(b) >= 1
        for x, y in zip(a, b):
            assert x.shape == y.shape and np.array_equal(x, y), f"{name}: node {comfy_id} differs from {our_id}"
            assert x.std() > 2, f"{name}: node {comfy_id} saved a flat image (nothing to compare)"
    assert {n for n, r in theirs.results.items() if "images" in r} == set(sinks)


def test_a_bypassed_node_passes_its_input_on_and_a_muted_branch_does_not_run(executor, services):
    """The comparison can see the bypass: with the style LoRA running (ComfyUI mode 0) the image
    changes; the muted VAEDecode and the preview that only it feeds do not run, and unmuted they do."""
    document = corpus("txt2img_lora.ui04.json")
    imported = convert(document, services).workflow
    assert imported["nodes"]["11"]["mode"] == "bypass" and imported["nodes"]["13"]["mode"] == "mute"
    assert "mode" not in imported["nodes"]["14"]
    result = run_fresh(executor, imported)
    assert set(result.disabled) == {"11", "13", "14"}
    assert "14" not in result.results and "11" not in result.executed
    bypassed = saved_images(executor, result, "9")[0]

    for node in document["nodes"]:
        if node["id"] in (11, 13):
            node["mode"] = 0
    running = convert(document, services).workflow
    assert "mode" not in running["nodes"]["11"] and "mode" not in running["nodes"]["13"]
    result = run_fresh(executor, running)
    assert not result.disabled and {"11", "13", "14"} <= set(result.executed)
    styled = saved_images(executor, result, "9")[0]
    assert np.abs(styled.astype(int) - bypassed.astype(int)).mean() > 1  # the LoRA is visible
    assert np.array_equal(saved_images(executor, result, "14")[0], styled)  # the unmuted branch decodes the same


def test_reroutes_primitives_notes_and_groups_of_schema_0_4(services):
    imported = convert(corpus("txt2img_lora.ui04.json"), services).workflow
    nodes, ui, meta = imported["nodes"], imported["ui"], imported["meta"]
    # Reroute, PrimitiveNode, Note and MarkdownNote are not nodes of ours.
    assert set(nodes) == {"3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"}
    # The legacy Reroute node: the link runs from CLIPSetLastLayer to both encoders through its centre.
    for encoder in ("6", "7"):
        assert nodes[encoder]["inputs"]["clip"] == {"node": "12", "output": "clip"}
        assert ui[encoder]["reroutes"] == {"clip": [[730 + 75 / 2, 300 + 26 / 2]]}
    # Native reroutes (extra.reroutes + linkExtensions): points from the checkpoint to the decoder.
    assert nodes["8"]["inputs"]["vae"] == {"node": "4", "output": "vae"}
    assert ui["8"]["reroutes"] == {"vae": [[700.0, 120.0], [1500.0, 120.0]]}
    assert "reroutes" not in ui["13"]
    # The PrimitiveNode's seed reaches the sampler as a value; "randomize" is the editor's business.
    assert nodes["3"]["inputs"]["seed"] == 123 and nodes["3"]["inputs"]["steps"] == 3
    assert nodes["3"]["inputs"]["sampler"] == "euler" and nodes["3"]["inputs"]["scheduler"] == "karras"
    # Titles, colours and sizes as drawn.
    assert nodes["6"]["title"] == "Positive prompt" and "title" not in nodes["3"]
    assert ui["6"] == {"x": 830.0, "y": 190.0, "width": 422.0, "height": 164.0, "color": "#232",
                       "reroutes": {"clip": [[767.5, 313.0]]}}
    assert [n["text"] for n in meta["notes"]] == [
        "The LoRA below is bypassed: the model goes straight from LoraLoader to the sampler.",
        "# Settings\n\n* **64x64**, 3 steps\n* seed from the primitive"]
    assert meta["notes"][1] | {"color": None} == {"id": "note-31", "x": 460.0, "y": 60.0, "width": 320.0,
                                                  "height": 140.0, "text": meta["notes"][1]["text"], "color": None}
    assert meta["groups"] == [
        {"id": "group-1", "title": "Model", "x": 10.0, "y": 400.0, "width": 700.0, "height": 440.0, "color": "#3f789e"},
        {"id": "group-2", "title": "Prompts", "x": 815.0, "y": 116.0, "width": 460.0, "height": 480.0,
         "color": "#b58b2a"}]
    # Groups hold the nodes whose top-left corner lies inside them (ComfyUI's rule, and ours).
    inside = {g["title"]: sorted(n for n, box in ui.items() if g["x"] <= box["x"] <= g["x"] + g["width"]
                                 and g["y"] <= box["y"] <= g["y"] + g["height"]) for g in meta["groups"]}
    assert inside == {"Model": ["10", "11", "12", "4"], "Prompts": ["6", "7"]}
    # The LoRA name written with Windows backslashes is a name in the loras folder.
    assert nodes["10"]["inputs"]["lora_name"] == "sd15/detail_tweaker.safetensors"


def test_reroutes_links_and_widget_inputs_of_schema_1(services):
    imported = convert(corpus("hires.ui1.json"), services).workflow
    nodes, ui = imported["nodes"], imported["ui"]
    assert ui["15"]["reroutes"] == {"vae": [[1200.0, 40.0], [2500.0, 40.0]]}
    assert ui["18"]["reroutes"] == {"vae": [[1200.0, 40.0]]}
    assert nodes["15"]["inputs"]["vae"] == nodes["18"]["inputs"]["vae"] == {"node": "2", "output": "vae"}
    # Widgets listed among the inputs with no link are values, read from widgets_values in order.
    assert nodes["11"]["inputs"] | {"model": None, "positive": None, "negative": None, "latent": None} == {
        "model": None, "positive": None, "negative": None, "latent": None, "add_noise": True, "seed": 7,
        "steps": 4, "cfg": 5.0, "sampler": "euler", "scheduler": "normal", "start_step": 0, "end_step": 2,
        "return_with_leftover_noise": True}
    assert nodes["12"]["inputs"]["add_noise"] is False and nodes["12"]["inputs"]["start_step"] == 2
    assert nodes["14"]["inputs"]["seed"] == 5 and nodes["14"]["inputs"]["denoise"] == 0.5  # after "increment"
    # A widget fed by a link (here the new-style PrimitiveInt, whose value is followed by "fixed").
    assert nodes["14"]["inputs"]["steps"] == {"node": "20", "output": "value"}
    assert nodes["20"] == {"type": "int_constant", "inputs": {"value": 2}, "title": "Hires steps"}
    assert nodes["11"]["title"] == "Base (steps 0-2)"
    assert nodes["2"]["inputs"] == {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors", "latent_space": "sd1"}
    assert nodes["13"]["inputs"] == {"latent": {"node": "12", "output": "latent"}, "method": "nearest-exact",
                                     "scale_by": 1.5, "width": 0, "height": 0}
    assert [g["title"] for g in imported["meta"]["groups"]] == ["Prompts", "Sampling"]
    assert "notes" not in imported["meta"]


def test_the_vae_loader_takes_the_latent_space_of_the_workflows_checkpoint(services):
    """ComfyUI reads an SDXL VAE's scale from the model; ours is told: from the SDXL checkpoint the
    workflow loads, when that file is here; without it, sd1 and a note saying so."""
    document = corpus("sdxl_refiner.ui1.json")
    vae_loader = copy.deepcopy(corpus("hires.ui1.json")["nodes"][1])
    assert vae_loader["type"] == "VAELoader"
    document["nodes"].append({**vae_loader, "id": 30})
    assert convert(document, services).workflow["nodes"]["30"]["inputs"]["latent_space"] == "sdxl"
    report = convert(document, None).report
    assert any("node 30 (VAELoader)" in note and "sdxl" in note for note in report.notes)


def test_the_load_image_upload_slot_and_control_values_are_not_taken_for_widgets(services):
    """LoadImage's widgets_values end with the `upload` button's slot; seed widgets are followed by
    control_after_generate: neither shifts the values after them, and no note calls them extra."""
    controlnet = convert(corpus("controlnet.ui04.json"), services)
    assert controlnet.workflow["nodes"]["2"]["inputs"] == {"image": "photo.png"}
    assert controlnet.workflow["nodes"]["12"]["inputs"]["steps"] == 3
    sdxl = convert(corpus("sdxl_refiner.ui1.json"), services)
    assert sdxl.workflow["nodes"]["5"]["inputs"]["steps"] == 3  # after "randomize"
    assert not controlnet.report.empty and not any("widget value" in n for n in controlnet.report.notes)
    assert sdxl.report.empty


def test_the_canny_thresholds_become_8_bit_values(services):
    nodes = convert(corpus("controlnet.ui04.json"), services).workflow["nodes"]
    assert nodes["4"]["inputs"] | {"image": None} == {"image": None, "low_threshold": 102, "high_threshold": 204}


def test_nodes_that_become_two_keep_the_comfyui_id_on_the_one_with_the_outputs(services):
    nodes = convert(corpus("custom_sampling.api.json"), services).workflow["nodes"]
    assert nodes["13"]["type"] == "guided_sampler" and nodes["13"]["inputs"]["noise"] == {"node": "13:noise",
                                                                                           "output": "noise"}
    assert nodes["13:noise"] == {"type": "noise", "inputs": {"seed": 42}}
    refiner = convert(corpus("sdxl_refiner.ui1.json"), services).workflow["nodes"]
    assert refiner["7"]["type"] == "sdxl_conditioning"
    assert refiner["7"]["inputs"]["conditioning"] == {"node": "7:encode", "output": "conditioning"}
    assert refiner["7:encode"] == {"type": "clip_text_encode",
                                   "inputs": {"clip": {"node": "6", "output": "clip"}, "text": "a photo of a cat"}}


# --- the corpus ------------------------------------------------------------------------------------

CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.json"))


def test_the_corpus_files_are_what_its_generator_writes():
    assert CORPUS_FILES == sorted(build_corpus.CORPUS)
    for name in CORPUS_FILES:
        assert (CORPUS / name).read_text(encoding="utf-8") == build_corpus.render(name), (
            f"{name} is out of date: run python tests/comfyui/build_corpus.py")


def corpus_nodes() -> list[tuple[str, dict[str, Any]]]:
    """(file, node) for every node of the corpus, UI nodes and API nodes alike."""
    found = []
    for name in CORPUS_FILES:
        document = corpus(name)
        if isinstance(document.get("nodes"), list):
            found += [(name, node) for node in document["nodes"]]
        else:
            found += [(name, {"type": node["class_type"], **node}) for node in document.values()]
    return found


def test_the_corpus_covers_every_mapped_node_type_and_the_editors_own_nodes():
    runs = {name for name in PAIRS}
    run_types = {node["type"] for name, node in corpus_nodes() if name in runs}
    missing = {m.comfy for m in MAPPINGS} - run_types
    assert not missing, (f"mapped but in no corpus workflow that is run and compared: {sorted(missing)}; add them "
                         "to a workflow of tests/comfyui/build_corpus.py (and PAIRS) and to its twin in "
                         "tests/comfyui/ours/")
    ui_types = {node["type"] for name, node in corpus_nodes() if ".ui" in name}
    assert {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"} <= ui_types
    ui = [node for name, node in corpus_nodes() if ".ui" in name and name in runs]
    assert {2, 4} <= {node["mode"] for node in ui}
    assert any("randomize" in (node.get("widgets_values") or []) for node in ui)
    assert any(node["type"] == "LoadImage" and node["widgets_values"][-1] == "image" for node in ui)
    assert any("\\" in str(v) for node in ui for v in node.get("widgets_values") or [])
    schema04, schema1 = corpus("txt2img_lora.ui04.json"), corpus("hires.ui1.json")
    assert schema04["version"] == 0.4 and isinstance(schema04["links"][0], list)
    assert schema04["extra"]["reroutes"] and schema04["extra"]["linkExtensions"] and schema04["groups"]
    assert schema1["version"] == 1 and isinstance(schema1["links"][0], dict) and schema1["reroutes"]


# --- PNGs ------------------------------------------------------------------------------------------

def comfy_png(workflow: dict[str, Any] | None, prompt: dict[str, Any] | None) -> bytes:
    """A PNG as ComfyUI's SaveImage writes it: `prompt` and `workflow` tEXt chunks of compact JSON."""
    chunks = {}
    if prompt is not None:
        chunks["prompt"] = json.dumps(prompt)
    if workflow is not None:
        chunks["workflow"] = json.dumps(workflow)
    return png_with(**chunks)


def test_a_comfyui_png_gives_its_workflow_and_one_with_only_a_prompt_gives_that(services):
    ui, api = corpus("txt2img_lora.ui04.json"), corpus("txt2img_lora.api.json")
    both = convert(comfy_png(ui, api), services)
    assert both.source_format == "comfyui-ui"
    assert both.workflow == convert(ui, services).workflow  # the editor's graph, with its layout and modes
    only_prompt = convert(comfy_png(None, api), services)
    assert only_prompt.source_format == "comfyui-api"
    assert only_prompt.workflow == convert(api, services).workflow
    assert only_prompt.report.ok and not only_prompt.report.missing_files


def test_a_png_whose_text_comes_after_the_pixels_is_read(services):
    """Some tools append their chunks after the image data: found by decoding the (small) image."""
    import struct
    import zlib

    plain = png_with()
    end = plain.rindex(b"IEND") - 4
    text = b"prompt\x00" + json.dumps(corpus("custom_sampling.api.json")).encode("latin-1")
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    imported = convert(plain[:end] + chunk + plain[end:], services)
    assert imported.source_format == "comfyui-api" and "13:noise" in imported.workflow["nodes"]


def test_a_png_saved_by_latentgraph_comes_back_as_our_workflow(executor):
    result = run_fresh(executor, ours("custom_sampling.json"))
    info = result.results["save"]["images"][0]
    data = (executor.services.folders.outputs / info["subfolder"] / info["filename"]).read_bytes()
    imported = convert(data, executor.services)
    assert imported.source_format == "latentgraph" and imported.report.empty
    with Image.open(io.BytesIO(data)) as png:
        assert imported.workflow == json.loads(png.text["workflow"])
    assert imported.workflow["nodes"] == ours("custom_sampling.json")["nodes"]


@pytest.mark.parametrize("data, message", [
    (png_with(), "the PNG carries no workflow (no `workflow` or `prompt` text chunk with one)"),
    (png_with(parameters="a cat\nSteps: 20, Sampler: Euler a"),  # an A1111 PNG
     "the PNG carries no workflow (no `workflow` or `prompt` text chunk with one)"),
    (png_with(workflow="{not json"), "the PNG's 'workflow' text is not valid JSON"),
    (png_with()[:20], "the PNG could not be read"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "the PNG could not be read"),
    (b"GIF89a\x01\x00\x01\x00", "the file is not valid JSON"),
    (b"[1, 2, 3]", "a workflow is a JSON object, got list"),
    (b'{"name": "a settings file", "values": {"a": 1}}', "neither a Latentgraph workflow nor a ComfyUI one"),
    (b"{}", "neither a Latentgraph workflow nor a ComfyUI one"),
])
def test_a_file_that_is_no_workflow_is_refused_saying_why(data, message):
    with pytest.raises(ComfyImportError) as caught:
        convert(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- the report ------------------------------------------------------------------------------------

def test_unmapped_nodes_are_reported_by_id_and_type_with_their_links_and_the_rest_converted(services):
    imported = convert(corpus("report.ui04.json"), services)
    report = imported.report.to_dict()
    assert not report["ok"]
    custom = "no Latentgraph node does this (a custom node, or a ComfyUI node not mapped yet)"
    assert report["unmapped"] == [
        {"id": "6", "type": "unCLIPConditioning", "reason": NOT_SUPPORTED["unCLIPConditioning"],
         "links": [{"input": "conditioning", "from": "4", "output": 0}, {"output": 0, "to": "9", "input": "positive"}]},
        {"id": "7", "type": "ImpactWildcardEncode", "reason": custom,
         "links": [{"input": "model", "from": "2", "output": 0}, {"input": "clip", "from": "2", "output": 1},
                   {"output": 2, "to": "9", "input": "negative"}]},
        {"id": "12", "type": "UltimateSDUpscale", "reason": custom,
         "links": [{"input": "image", "from": "11", "output": 0}, {"input": "model", "from": "3", "output": 0},
                   {"output": 0, "to": "13", "input": "images"}]},
    ]
    # The partial workflow keeps every node (the unmapped ones as they were, for the editor to show)
    # and every link, reading the unmapped nodes' outputs by their ComfyUI names.
    nodes = imported.workflow["nodes"]
    assert set(nodes) == {str(i) for i in range(1, 16)}
    assert nodes["7"] == {"type": "ImpactWildcardEncode", "title": "Wildcard negative",
                          "inputs": {"model": {"node": "2", "output": "model"}, "clip": {"node": "2", "output": "clip"}}}
    assert nodes["9"]["inputs"]["negative"] == {"node": "7", "output": "conditioning"}
    assert nodes["9"]["inputs"]["positive"] == {"node": "6", "output": "CONDITIONING"}  # its output's name there
    assert nodes["13"] == {"type": "save_image", "inputs": {"images": {"node": "12", "output": "IMAGE"},
                                                            "filename_prefix": "ComfyUI"}}


def test_values_out_of_range_or_without_an_equivalent_are_reported(services):
    report = convert(corpus("report.ui04.json"), services).report.to_dict()
    assert report["values"] == [
        {"id": "3", "type": "ModelSamplingDiscrete", "input": "sampling", "value": "lcm",
         "message": "sampling 'lcm' has no Latentgraph equivalent (eps and v_prediction are supported)"},
        {"id": "10", "type": "LatentUpscale", "input": "upscale_method", "value": "bislerp",
         "message": "upscale_method 'bislerp' is not supported (nearest-exact, bilinear, bicubic and area are)"},
        {"id": "9", "type": "KSampler", "input": "steps", "value": 20000,
         "message": "node '9' (ksampler) input 'steps' must be >= 1 and <= 1000, got 20000"},
        {"id": "9", "type": "KSampler", "input": "cfg", "value": 150.0,
         "message": "node '9' (ksampler) input 'cfg' must be >= 0.0 and <= 100.0, got 150.0"},
    ]


def test_missing_files_are_reported_with_their_kind_and_windows_names_normalised(services):
    imported = convert(corpus("report.ui04.json"), services)
    assert imported.report.to_dict()["missing_files"] == [
        {"id": "1", "type": "CheckpointLoaderSimple", "input": "ckpt_name", "kind": "checkpoints",
         "name": "SD1.5/realisticVisionV60_v60B1.safetensors"},
        {"id": "2", "type": "LoraLoader", "input": "lora_name", "kind": "loras", "name": "styles/add_detail.safetensors"},
        {"id": "4", "type": "CLIPTextEncode", "input": "text", "kind": "embeddings", "name": "detail_boost"},
        {"id": "14", "type": "LoadImage", "input": "image", "kind": "input", "name": "portrait.png"},
    ]  # EasyNegative (node 5) is installed
    nodes = imported.workflow["nodes"]
    assert nodes["1"]["inputs"]["checkpoint"] == "SD1.5/realisticVisionV60_v60B1.safetensors"
    assert nodes["2"]["inputs"]["lora_name"] == "styles/add_detail.safetensors"
    lines = imported.report.lines()
    assert "missing loras file 'styles/add_detail.safetensors' (node 2 (LoraLoader) lora_name)" in lines
    assert "unmapped node 7 (ImpactWildcardEncode): " + imported.report.unmapped[1]["reason"] in lines


def test_files_found_in_the_folders_are_not_reported_and_a_missing_file_alone_keeps_ok(services):
    api = corpus("txt2img_lora.api.json")
    assert convert(api, services).report.empty
    api["10"]["inputs"]["lora_name"] = "sd15\\not_here.safetensors"
    report = convert(api, services).report
    assert report.ok and [m["name"] for m in report.missing_files] == ["sd15/not_here.safetensors"]


def test_a_muted_custom_node_is_reported_but_keeps_its_mode_so_the_rest_runs(executor, services):
    """ComfyUI runs a workflow around a muted node it does not know; so does the import: the node is
    reported, kept muted, and the preview that only it feeds does not run."""
    document = corpus("txt2img_lora.ui04.json")
    ui = build_corpus.UIWorkflow(0.4)
    ui.by_id = {n["id"]: n for n in document["nodes"]}
    ui.links = [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
                 "type": l[5]} for l in document["links"]]
    sharpen = ui.node(40, "ImageSharpenPlus", (1900, 800), (315, 106), sockets=(("image", "IMAGE"),),
                      outputs=(("IMAGE", "IMAGE"),), widgets=[1, 1.0, 1.0], mode=2)
    preview = ui.node(41, "PreviewImage", (2250, 800), (210, 246), sockets=(("images", "IMAGE"),))
    ui.link(8, 0, 40, "image")
    ui.link(40, 0, 41, "images")
    document["nodes"] += [sharpen, preview]
    document["links"] += [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]
                          for l in ui.links[-2:]]
    imported = convert(document, services)
    assert [(u["id"], u["type"]) for u in imported.report.unmapped] == [("40", "ImageSharpenPlus")]
    assert imported.workflow["nodes"]["40"]["mode"] == "mute"
    assert imported.workflow["nodes"]["41"]["inputs"]["images"] == {"node": "40", "output": "IMAGE"}
    result = run_fresh(executor, imported.workflow)
    assert {"40", "41"} <= set(result.disabled) and "41" not in result.results and "9" in result.results


def test_a_bypassed_node_with_nothing_to_pass_on_is_reported_as_a_problem(services):
    """A bypassed VAEDecode has no IMAGE input to hand its readers: said, naming the output."""
    document = corpus("txt2img_lora.ui04.json")
    next(n for n in document["nodes"] if n["id"] == 8)["mode"] = 4
    report = convert(document, services).report
    assert report.ok and not report.values and not report.missing_files
    assert len(report.problems) == 1 and report.problems[0]["id"] == "8"
    assert "image" in report.problems[0]["message"] and "IMAGE" in report.problems[0]["message"]


def test_a_legacy_group_node_is_reported_as_unmapped_with_a_note(services):
    document = corpus("txt2img_lora.ui04.json")
    node = next(n for n in document["nodes"] if n["id"] == 12)
    node["type"] = "workflow>CLIP skip and prompts"
    document["extra"]["groupNodes"] = {"CLIP skip and prompts": {"nodes": [], "links": [], "external": []}}
    report = convert(document, services).report
    assert [(u["id"], u["type"]) for u in report.unmapped] == [("12", "workflow>CLIP skip and prompts")]
    assert "group node" in report.unmapped[0]["reason"]
    assert any("group nodes" in note for note in report.notes)


# --- `latentgraph import` --------------------------------------------------------------------------

def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from latentgraph.cli import main

    code = main(["import", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def named(workflow: dict[str, Any], path: Path) -> dict[str, Any]:
    """The converted workflow as the command writes it: named after the file."""
    return {**workflow, "meta": {**workflow["meta"], "name": path.stem}}


def folder_options(folders: Folders) -> list[str]:
    return ["--models-dir", str(folders.models), "--input-dir", str(folders.inputs)]


def test_the_command_writes_the_workflow_and_exits_0_when_every_node_mapped(capsys, tmp_path, folders, services):
    out = tmp_path / "imported.json"
    source = CORPUS / "txt2img_lora.ui04.json"
    code, stdout, stderr = cli(capsys, str(source), "-o", str(out), *folder_options(folders))
    assert code == 0 and stderr == ""
    written = json.loads(out.read_text())
    assert written["meta"]["name"] == "txt2img_lora.ui04"
    assert written == named(convert(source.read_bytes(), services).workflow, source)
    assert stdout == f"{source}: comfyui-ui workflow, 12 of 12 nodes converted to {out}\n"


def test_the_command_reads_a_png_and_finds_models_in_an_extra_comfyui_models_folder(capsys, tmp_path, folders,
                                                                                     services):
    """A PNG from ComfyUI, with the models where ComfyUI keeps them (--extra-models-dir): nothing
    missing; without that folder the same import reports the files, and still exits 0."""
    png = tmp_path / "ComfyUI_00001_.png"
    png.write_bytes(comfy_png(corpus("txt2img_lora.ui04.json"), corpus("txt2img_lora.api.json")))
    empty = tmp_path / "models"
    empty.mkdir()
    code, stdout, stderr = cli(capsys, str(png), "--models-dir", str(empty), "--extra-models-dir", str(folders.models))
    assert code == 0
    assert json.loads(stdout) == named(convert(corpus("txt2img_lora.ui04.json"), services).workflow, png)
    assert stderr == f"{png}: comfyui-ui workflow, 12 of 12 nodes converted\n"

    code, stdout, stderr = cli(capsys, str(png), "--models-dir", str(empty), "--json")
    assert code == 0
    report = json.loads(stderr)
    assert report["ok"] and [(m["id"], m["kind"], m["name"]) for m in report["missing_files"]] == [
        ("4", "checkpoints", "v1-5-pruned-emaonly.safetensors"), ("10", "loras", "sd15/detail_tweaker.safetensors")]


def test_the_command_exits_1_with_the_partial_workflow_written_when_nodes_are_unmapped(capsys, tmp_path, folders,
                                                                                        services):
    out = tmp_path / "partial.json"
    source = CORPUS / "report.ui04.json"
    code, stdout, stderr = cli(capsys, str(source), "-o", str(out), *folder_options(folders))
    assert code == 1 and stderr == ""
    expected = convert(source.read_bytes(), services)
    assert json.loads(out.read_text()) == named(expected.workflow, source)
    lines = stdout.splitlines()
    assert lines[0] == f"{source}: comfyui-ui workflow, 12 of 15 nodes converted to {out}; 3 could not be mapped"
    assert lines[1:] == ["  " + line for line in expected.report.lines()]
    assert lines[1] == "  unmapped node 6 (unCLIPConditioning): " + NOT_SUPPORTED["unCLIPConditioning"]
    assert "  node 9 (KSampler) steps: node '9' (ksampler) input 'steps' must be >= 1 and <= 1000, got 20000" in lines

    code, stdout, _ = cli(capsys, str(source), "-o", str(out), "--json", *folder_options(folders))
    assert code == 1 and json.loads(stdout) == expected.report.to_dict()


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01 not a workflow", "the file is not valid JSON"),
    (b'{"hello": "world"}', "neither a Latentgraph workflow nor a ComfyUI one"),
    (png_with(), "the PNG carries no workflow"),
])
def test_the_command_exits_2_for_a_file_that_is_no_workflow(capsys, tmp_path, content, message):
    path = tmp_path / "not_a_workflow.png"
    path.write_bytes(content)
    out = tmp_path / "out.json"
    code, stdout, stderr = cli(capsys, str(path), "-o", str(out))
    assert code == 2 and stdout == "" and not out.exists()
    assert stderr.startswith(f"latentgraph: error: {path}: ") and message in stderr


def test_the_command_exits_2_for_a_file_it_cannot_read(capsys, tmp_path):
    code, _, stderr = cli(capsys, str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in stderr and "missing.json" in stderr


def test_the_installed_command_runs_as_a_program(tmp_path, folders):
    """The same through `python -m latentgraph.cli`, as a shell runs it: exit status and files."""
    out = tmp_path / "partial.json"
    done = subprocess.run([sys.executable, "-P", "-m", "latentgraph.cli", "import", str(CORPUS / "report.ui04.json"),
                           "-o", str(out), *folder_options(folders)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "3 could not be mapped" in done.stdout and json.loads(out.read_text())["nodes"]["7"]["type"] == \
        "ImpactWildcardEncode"


# --- POST /api/workflows/import --------------------------------------------------------------------

@pytest.fixture
def import_api(start_server):
    import httpx

    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        yield client


def test_the_server_converts_json_and_png_bodies(import_api):
    for body, kind in ((json.dumps(corpus("hires.ui1.json")).encode(), "comfyui-ui"),
                       (comfy_png(None, corpus("custom_sampling.api.json")), "comfyui-api")):
        answer = import_api.post("/api/workflows/import", content=body)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["report"]["format"] == kind and data["report"]["ok"]
        # The server's models folder is empty: the checkpoint is reported missing, not fatal.
        assert data["report"]["missing_files"][0] == {"id": "1", "type": "CheckpointLoaderSimple", "input": "ckpt_name",
                                                      "kind": "checkpoints", "name": "v1-5-pruned-emaonly.safetensors"}
        assert data["workflow"]["format"] == "latentgraph/workflow@1"
    assert data["workflow"]["nodes"] == convert(corpus("custom_sampling.api.json")).workflow["nodes"]


def test_the_server_answers_unmapped_nodes_with_the_partial_workflow_and_garbage_with_400(import_api):
    answer = import_api.post("/api/workflows/import", content=(CORPUS / "report.ui04.json").read_bytes())
    assert answer.status_code == 200
    report = answer.json()["report"]
    assert not report["ok"] and [(u["id"], u["type"]) for u in report["unmapped"]] == [
        ("6", "unCLIPConditioning"), ("7", "ImpactWildcardEncode"), ("12", "UltimateSDUpscale")]
    assert answer.json()["workflow"]["nodes"]["12"]["type"] == "UltimateSDUpscale"

    for garbage in (b"\x89PNG\r\n\x1a\n garbage", b"not json at all", b"[]", png_with()):
        answer = import_api.post("/api/workflows/import", content=garbage)
        assert answer.status_code == 400, answer.text
        assert "not_a_workflow" in answer.text
    ours_back = import_api.post("/api/workflows/import", json=ours("txt2img_lora.json"))
    assert ours_back.status_code == 200 and ours_back.json()["report"]["format"] == "latentgraph"
    assert ours_back.json()["workflow"] == ours("txt2img_lora.json")


# --- bf16 on the CPU (issue 17): every model in bf16, the whole node library still works -----------

@pytest.fixture(scope="module")
def bf16_executor(folders: Folders) -> Executor:
    return Executor(registry, OutputCache(1 << 30), services=Services(folders=folders, precision="bf16"),
                    events=EventBus())


@pytest.mark.parametrize("name", sorted({pair[0] for pair in PAIRS.values()}))
def test_every_workflow_runs_with_all_models_in_bf16_and_keeps_its_images(name, executor, bf16_executor):
    # --precision bf16 puts the U-Net, the text encoders, the VAE and the add-ons (LoRA patches,
    # ControlNets, inpainting models) in bf16 on the CPU; the sampler's state stays float32.
    full = run_fresh(executor, ours(name))
    half = run_fresh(bf16_executor, ours(name))
    loaded = [entry for entry, _ in bf16_executor.services.models._models.values() if hasattr(entry, "unet")]
    assert loaded and all(p.dtype == torch.bfloat16 for entry in loaded
                          for m in (entry.unet, entry.vae, *entry.text_encoders.values()) for p in m.parameters())
    assert sorted(n for n, r in full.results.items() if "images" in r) == sorted(
        n for n, r in half.results.items() if "images" in r)
    # The final images: the same picture, bf16's rounding apart. (These corpus workflows take 2-4
    # steps at cfg 5-8, where rounding grows most; the shipped txt2img on the demo model keeps
    # within 2/255, see test_demo_model.py.)
    for a, b in zip(saved_images(executor, full, "save"), saved_images(bf16_executor, half, "save")):
        difference = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
        correlation = np.corrcoef(a.reshape(-1).astype(float), b.reshape(-1).astype(float))[0, 1]
        assert difference <= 8 and correlation >= 0.95, (name, difference, correlation)
