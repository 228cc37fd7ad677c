"""Writes the ComfyUI workflows of this folder (run it after changing one; the test module checks
the files are what it writes): `python tests/comfyui/build_corpus.py`.

They are written the way ComfyUI writes them, from what its editor saves and its nodes declare
(read for facts only):

* UI format, schema 0.4 (`"version": 0.4`): `links` as arrays [id, origin, origin slot, target,
  target slot, type]; native reroutes in `extra.reroutes` with `extra.linkExtensions` giving a
  link's last reroute (`parentId`); legacy `Reroute` nodes; `PrimitiveNode`s whose output feeds a
  widget turned into an input (the target keeps the value in its `widgets_values` too); `Note` and
  `MarkdownNote`; `groups` with `bounding` [x, y, w, h]; `mode` 2 (muted) and 4 (bypassed).
* UI format, schema 1 (`"version": 1`): `state`, links as objects, top-level `reroutes`, and the
  newer editor's habit of listing every widget among `inputs` (with `widget` and `link` null).
* API format (`{id: {class_type, inputs, _meta}}`, links as [node id, output index]): what
  "Export (API)" writes and what ComfyUI puts in a PNG's `prompt` chunk (muted and bypassed
  nodes, notes, reroutes and primitives already resolved away).

`widgets_values` follow each node type's widget order, with the `control_after_generate` value
after seed-like integers and LoadImage's `upload` slot after its file name. The models they name
are the ones people download; the tests install tiny files under those names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class UIWorkflow:
    """A ComfyUI UI-format workflow being written (schema 0.4 or 1)."""

    def __init__(self, version: float | int) -> None:
        self.version = version
        self.nodes: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.reroutes: dict[int, dict[str, Any]] = {}
        self.groups: list[dict[str, Any]] = []
        self.by_id: dict[int, dict[str, Any]] = {}

    def node(self, node_id: int, kind: str, pos: tuple[float, float], size: tuple[float, float], *,
             sockets: tuple[tuple[str, str], ...] = (), outputs: tuple[tuple[str, str], ...] = (),
             widgets: list[Any] | None = None, widget_names: tuple[tuple[str, str], ...] = (), mode: int = 0,
             title: str | None = None, properties: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """`sockets`: link inputs (name, type) in declaration order; `widget_names`: the widget
        inputs (name, type), listed among `inputs` in schema 1 (as its editor does) and in 0.4 only
        once converted to an input (see `convert`)."""
        node: dict[str, Any] = {"id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                                "order": len(self.nodes), "mode": mode}
        inputs = [{"name": name, "type": type_, "link": None} for name, type_ in sockets]
        if self.version == 1:
            for entry in inputs:
                entry["localized_name"] = entry["name"]
            inputs += [{"localized_name": name, "name": name, "type": type_, "widget": {"name": name}, "link": None}
                       for name, type_ in widget_names]
        if inputs:
            node["inputs"] = inputs
        node["outputs"] = [{"name": name, "type": type_, "links": None} for name, type_ in outputs]
        if self.version == 1:
            for entry in node["outputs"]:
                entry["localized_name"] = entry["name"]
        if title is not None:
            node["title"] = title
        node["properties"] = properties if properties is not None else {"Node name for S&R": kind}
        if widgets is not None:
            node["widgets_values"] = widgets
        node.update(extra)
        self.nodes.append(node)
        self.by_id[node_id] = node
        return node

    def convert(self, node_id: int, name: str, type_: str) -> None:
        """Schema 0.4: a widget turned into an input (so a PrimitiveNode or a link can feed it)."""
        node = self.by_id[node_id]
        if not any(i["name"] == name for i in node.get("inputs", [])):
            node.setdefault("inputs", []).append({"name": name, "type": type_, "widget": {"name": name}, "link": None})

    def reroute(self, reroute_id: int, pos: tuple[float, float], parent: int | None = None) -> int:
        entry: dict[str, Any] = {"id": reroute_id, "pos": list(pos), "linkIds": []}
        if parent is not None:
            entry["parentId"] = parent
        self.reroutes[reroute_id] = entry
        return reroute_id

    def link(self, origin: int, slot: int, target: int, name: str, via: int | None = None) -> int:
        """Link output `slot` of `origin` to input `name` of `target`; `via`: the native reroute
        nearest the target (its parents lead back towards the origin)."""
        link_id = len(self.links) + 1
        source, sink = self.by_id[origin], self.by_id[target]
        output = source["outputs"][slot]
        output["links"] = (output["links"] or []) + [link_id]
        output["slot_index"] = slot
        index = next(i for i, entry in enumerate(sink["inputs"]) if entry["name"] == name)
        sink["inputs"][index]["link"] = link_id
        entry = {"id": link_id, "origin_id": origin, "origin_slot": slot, "target_id": target,
                 "target_slot": index, "type": output["type"]}
        if via is not None:
            entry["parentId"] = via
            reroute: int | None = via
            while reroute is not None:
                self.reroutes[reroute]["linkIds"].append(link_id)
                reroute = self.reroutes[reroute].get("parentId")
        self.links.append(entry)
        return link_id

    def group(self, group_id: int, title: str, bounding: tuple[float, float, float, float], color: str) -> None:
        self.groups.append({"id": group_id, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def document(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"ds": {"scale": 0.9, "offset": [12.5, -40.0]}, "frontendVersion": "1.18.9"}
        if self.version == 1:
            links = [dict(link) for link in self.links]
            return {"id": "7d5e1c62-8a93-4f0e-9b1c-2f6a4d8e3b10", "revision": 0, "version": 1,
                    "state": {"lastGroupId": len(self.groups), "lastNodeId": max(self.by_id),
                              "lastLinkId": len(self.links), "lastRerouteId": max(self.reroutes, default=0)},
                    "config": {}, "groups": self.groups, "nodes": self.nodes, "links": links,
                    "reroutes": list(self.reroutes.values()), "extra": extra}
        links = [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]
                 for l in self.links]
        if self.reroutes:
            extra["reroutes"] = list(self.reroutes.values())
            extra["linkExtensions"] = [{"id": l["id"], "parentId": l["parentId"]} for l in self.links
                                       if "parentId" in l]
        return {"id": "3b0f6a2e-1c4d-4e8f-a7b9-5d2c8e1f0a64", "revision": 0, "last_node_id": max(self.by_id),
                "last_link_id": len(self.links), "nodes": self.nodes, "links": links, "groups": self.groups,
                "config": {}, "extra": extra, "version": 0.4}


# Sockets and outputs of the ComfyUI node types used here, in their declaration order.
MODEL, CLIP, VAE, COND, LATENT, IMAGE, MASK = "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK"
CHECKPOINT_OUT = (("MODEL", MODEL), ("CLIP", CLIP), ("VAE", VAE))
KSAMPLER_IN = (("model", MODEL), ("positive", COND), ("negative", COND), ("latent_image", LATENT))
KSAMPLER_WIDGETS = (("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                    ("scheduler", "COMBO"), ("denoise", "FLOAT"))
KSAMPLER_ADVANCED_WIDGETS = (("add_noise", "COMBO"), ("noise_seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"),
                             ("sampler_name", "COMBO"), ("scheduler", "COMBO"), ("start_at_step", "INT"),
                             ("end_at_step", "INT"), ("return_with_leftover_noise", "COMBO"))


def txt2img_lora_ui() -> dict[str, Any]:
    """SD1.5 txt2img with two LoRAs (one bypassed), CLIP skip, a seed from a PrimitiveNode, legacy
    and native reroutes, a muted preview branch, groups and notes: schema 0.4."""
    ui = UIWorkflow(0.4)
    ui.node(4, "CheckpointLoaderSimple", (26, 474), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["v1-5-pruned-emaonly.safetensors"])
    ui.node(10, "LoraLoader", (380, 474), (315, 126), sockets=(("model", MODEL), ("clip", CLIP)),
            outputs=(("MODEL", MODEL), ("CLIP", CLIP)), widgets=["sd15\\detail_tweaker.safetensors", 0.8, 0.6])
    ui.node(11, "LoraLoaderModelOnly", (380, 640), (315, 82), sockets=(("model", MODEL),),
            outputs=(("MODEL", MODEL),), widgets=["sd15\\style_toon.safetensors", 1.0], mode=4)
    ui.node(12, "CLIPSetLastLayer", (380, 760), (315, 58), sockets=(("clip", CLIP),), outputs=(("CLIP", CLIP),),
            widgets=[-2])
    ui.node(20, "Reroute", (730, 300), (75, 26), sockets=(("", "*"),), outputs=(("", CLIP),),
            properties={"showOutputText": False, "horizontal": False})
    ui.node(6, "CLIPTextEncode", (830, 190), (422, 164), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["a red circle on the left, blue background"], color="#232", bgcolor="#353",
            title="Positive prompt")
    ui.node(7, "CLIPTextEncode", (830, 400), (425, 180), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["blurry, green"], color="#322", bgcolor="#533", title="Negative prompt")
    ui.node(5, "EmptyLatentImage", (830, 620), (315, 106), outputs=(("LATENT", LATENT),), widgets=[64, 64, 1])
    ui.node(21, "PrimitiveNode", (830, 770), (315, 82), outputs=(("INT", "INT"),), title="seed",
            properties={"Run widget replace on values": False}, widgets=[123, "randomize"])
    ui.node(3, "KSampler", (1300, 190), (315, 262), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=[123, "randomize", 3, 6.5, "euler", "karras", 1.0])
    ui.convert(3, "seed", "INT")
    ui.by_id[21]["outputs"][0]["widget"] = {"name": "seed"}
    ui.node(8, "VAEDecode", (1660, 190), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(9, "SaveImage", (1900, 190), (210, 270), sockets=(("images", IMAGE),), widgets=["ComfyUI"])
    ui.node(13, "VAEDecode", (1660, 520), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),), mode=2)
    ui.node(14, "PreviewImage", (1900, 520), (210, 246), sockets=(("images", IMAGE),))
    ui.node(30, "Note", (26, 60), (400, 120), properties={"text": ""},
            widgets=["The LoRA below is bypassed: the model goes straight from LoraLoader to the sampler."],
            color="#432", bgcolor="#653")
    ui.node(31, "MarkdownNote", (460, 60), (320, 140), properties={},
            widgets=["# Settings\n\n* **64x64**, 3 steps\n* seed from the primitive"], color="#432", bgcolor="#653")

    ui.link(4, 0, 10, "model")
    ui.link(4, 1, 10, "clip")
    ui.link(10, 0, 11, "model")
    ui.link(10, 1, 12, "clip")
    ui.link(12, 0, 20, "")
    ui.link(20, 0, 6, "clip")
    ui.link(20, 0, 7, "clip")
    ui.link(11, 0, 3, "model")
    ui.link(6, 0, 3, "positive")
    ui.link(7, 0, 3, "negative")
    ui.link(5, 0, 3, "latent_image")
    ui.link(21, 0, 3, "seed")
    ui.link(3, 0, 8, "samples")
    first = ui.reroute(1, (700, 120))
    second = ui.reroute(2, (1500, 120), parent=first)
    ui.link(4, 2, 8, "vae", via=second)
    ui.link(8, 0, 9, "images")
    ui.link(3, 0, 13, "samples")
    ui.link(4, 2, 13, "vae")
    ui.link(13, 0, 14, "images")
    ui.group(1, "Model", (10, 400, 700, 440), "#3f789e")
    ui.group(2, "Prompts", (815, 116, 460, 480), "#b58b2a")
    return ui.document()


def txt2img_lora_api() -> dict[str, Any]:
    """What ComfyUI queues for txt2img_lora_ui (its PNG's `prompt`): the bypassed LoRA and the muted
    branch gone, reroutes and the primitive resolved, the seed as the editor last sent it."""
    return {
        "3": {"inputs": {"seed": 123, "steps": 3, "cfg": 6.5, "sampler_name": "euler", "scheduler": "karras",
                         "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["5", 0]},
              "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "4": {"inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}, "class_type": "CheckpointLoaderSimple",
              "_meta": {"title": "Load Checkpoint"}},
        "5": {"inputs": {"width": 64, "height": 64, "batch_size": 1}, "class_type": "EmptyLatentImage",
              "_meta": {"title": "Empty Latent Image"}},
        "6": {"inputs": {"text": "a red circle on the left, blue background", "clip": ["12", 0]},
              "class_type": "CLIPTextEncode", "_meta": {"title": "Positive prompt"}},
        "7": {"inputs": {"text": "blurry, green", "clip": ["12", 0]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "Negative prompt"}},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
              "_meta": {"title": "VAE Decode"}},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage",
              "_meta": {"title": "Save Image"}},
        "10": {"inputs": {"lora_name": "sd15\\detail_tweaker.safetensors", "strength_model": 0.8, "strength_clip": 0.6,
                          "model": ["4", 0], "clip": ["4", 1]},
               "class_type": "LoraLoader", "_meta": {"title": "Load LoRA"}},
        "12": {"inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}, "class_type": "CLIPSetLastLayer",
               "_meta": {"title": "CLIP Set Last Layer"}},
    }


def hires_ui() -> dict[str, Any]:
    """Two-stage KSamplerAdvanced with a separate VAE, model patches, combined and zeroed prompts,
    a latent upscale pass: schema 1 (links as objects, top-level reroutes, widgets among inputs)."""
    ui = UIWorkflow(1)
    ui.node(1, "CheckpointLoaderSimple", (20, 200), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["v1-5-pruned-emaonly.safetensors"], widget_names=(("ckpt_name", "COMBO"),))
    ui.node(2, "VAELoader", (20, 380), (315, 58), outputs=(("VAE", VAE),),
            widgets=["vae-ft-mse-840000-ema-pruned.safetensors"], widget_names=(("vae_name", "COMBO"),))
    ui.node(3, "ModelSamplingDiscrete", (380, 100), (315, 82), sockets=(("model", MODEL),),
            outputs=(("MODEL", MODEL),), widgets=["eps", False],
            widget_names=(("sampling", "COMBO"), ("zsnr", "BOOLEAN")))
    ui.node(4, "RescaleCFG", (380, 230), (315, 58), sockets=(("model", MODEL),), outputs=(("MODEL", MODEL),),
            widgets=[0.7], widget_names=(("multiplier", "FLOAT"),))
    for node_id, y, text in ((5, 330, "a blue square"), (6, 470, "a yellow triangle at the top"), (8, 610, "")):
        ui.node(node_id, "CLIPTextEncode", (380, y), (400, 120), sockets=(("clip", CLIP),),
                outputs=(("CONDITIONING", COND),), widgets=[text], widget_names=(("text", "STRING"),))
    ui.node(7, "ConditioningCombine", (820, 400), (228, 46),
            sockets=(("conditioning_1", COND), ("conditioning_2", COND)), outputs=(("CONDITIONING", COND),))
    ui.node(9, "ConditioningZeroOut", (820, 610), (211, 26), sockets=(("conditioning", COND),),
            outputs=(("CONDITIONING", COND),))
    ui.node(10, "EmptyLatentImage", (820, 720), (315, 106), outputs=(("LATENT", LATENT),), widgets=[64, 64, 1],
            widget_names=(("width", "INT"), ("height", "INT"), ("batch_size", "INT")))
    ui.node(11, "KSamplerAdvanced", (1180, 100), (315, 334), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=["enable", 7, "fixed", 4, 5.0, "euler", "normal", 0, 2, "enable"],
            widget_names=KSAMPLER_ADVANCED_WIDGETS, title="Base (steps 0-2)")
    ui.node(12, "KSamplerAdvanced", (1540, 100), (315, 334), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=["disable", 0, "fixed", 4, 5.0, "euler", "normal", 2, 10000, "disable"],
            widget_names=KSAMPLER_ADVANCED_WIDGETS, title="Finish (steps 2-4)")
    ui.node(13, "LatentUpscaleBy", (1900, 100), (315, 82), sockets=(("samples", LATENT),),
            outputs=(("LATENT", LATENT),), widgets=["nearest-exact", 1.5],
            widget_names=(("upscale_method", "COMBO"), ("scale_by", "FLOAT")))
    ui.node(14, "KSampler", (2250, 100), (315, 262), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=[5, "increment", 2, 5.0, "euler", "normal", 0.5], widget_names=KSAMPLER_WIDGETS, title="Hires fix")
    ui.node(20, "PrimitiveInt", (1900, 250), (315, 82), outputs=(("INT", "INT"),), widgets=[2, "fixed"],
            widget_names=(("value", "INT"),), title="Hires steps")
    ui.node(15, "VAEDecode", (2600, 100), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(16, "SaveImage", (2850, 100), (315, 270), sockets=(("images", IMAGE),), widgets=["hires/ComfyUI"],
            widget_names=(("filename_prefix", "STRING"),))
    ui.node(17, "LatentUpscale", (1900, 450), (315, 130), sockets=(("samples", LATENT),),
            outputs=(("LATENT", LATENT),), widgets=["bilinear", 96, 64, "center"],
            widget_names=(("upscale_method", "COMBO"), ("width", "INT"), ("height", "INT"), ("crop", "COMBO")))
    ui.node(18, "VAEDecode", (2250, 450), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(19, "PreviewImage", (2600, 450), (210, 246), sockets=(("images", IMAGE),))

    ui.link(1, 0, 3, "model")
    ui.link(3, 0, 4, "model")
    for node_id in (5, 6, 8):
        ui.link(1, 1, node_id, "clip")
    ui.link(5, 0, 7, "conditioning_1")
    ui.link(6, 0, 7, "conditioning_2")
    ui.link(8, 0, 9, "conditioning")
    for sampler, latent in ((11, (10, 0)), (12, (11, 0)), (14, (13, 0))):
        ui.link(4, 0, sampler, "model")
        ui.link(7, 0, sampler, "positive")
        ui.link(9, 0, sampler, "negative")
        ui.link(latent[0], latent[1], sampler, "latent_image")
    ui.link(12, 0, 13, "samples")
    ui.link(20, 0, 14, "steps")
    ui.link(14, 0, 15, "samples")
    near = ui.reroute(1, (1200, 40))
    ui.link(2, 0, 15, "vae", via=ui.reroute(2, (2500, 40), parent=near))
    ui.link(15, 0, 16, "images")
    ui.link(12, 0, 17, "samples")
    ui.link(17, 0, 18, "samples")
    ui.link(2, 0, 18, "vae", via=near)
    ui.link(18, 0, 19, "images")
    ui.group(1, "Prompts", (370, 260, 700, 500), "#a1309b")
    ui.group(2, "Sampling", (1170, 30, 1040, 420), "#3f789e")
    return ui.document()


def custom_sampling_api() -> dict[str, Any]:
    """The custom-sampling nodes and the primitive value nodes, in the API format."""
    def link(node_id: str, slot: int = 0) -> list[Any]:
        return [node_id, slot]

    def node(kind: str, title: str, **inputs: Any) -> dict[str, Any]:
        return {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}

    return {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="v1-5-pruned-emaonly.safetensors"),
        "25": node("PrimitiveStringMultiline", "Prompt", value="a red circle\non the left"),
        "2": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text=link("25"), clip=link("1", 1)),
        "3": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="blurry", clip=link("1", 1)),
        "4": node("EmptyLatentImage", "Empty Latent Image", width=64, height=64, batch_size=1),
        "20": node("PrimitiveInt", "Seed", value=42),
        "5": node("RandomNoise", "RandomNoise", noise_seed=link("20")),
        "6": node("KSamplerSelect", "KSamplerSelect", sampler_name="dpmpp_2m"),
        "7": node("BasicScheduler", "BasicScheduler", scheduler="karras", steps=3, denoise=1.0, model=link("1")),
        "21": node("PrimitiveFloat", "CFG", value=5.5),
        "8": node("CFGGuider", "CFGGuider", cfg=link("21"), model=link("1"), positive=link("2"), negative=link("3")),
        "9": node("SamplerCustomAdvanced", "SamplerCustomAdvanced", noise=link("5"), guider=link("8"),
                  sampler=link("6"), sigmas=link("7"), latent_image=link("4")),
        "10": node("VAEDecode", "VAE Decode", samples=link("9"), vae=link("1", 2)),
        "22": node("PrimitiveString", "File prefix", value="custom"),
        "11": node("SaveImage", "Save Image", filename_prefix=link("22"), images=link("10")),
        "12": node("KarrasScheduler", "KarrasScheduler", steps=3, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0),
        "13": node("SamplerCustom", "SamplerCustom", add_noise=True, noise_seed=42, cfg=link("21"),
                   model=link("1"), positive=link("2"), negative=link("3"), sampler=link("6"), sigmas=link("12"),
                   latent_image=link("4")),
        "14": node("VAEDecode", "VAE Decode", samples=link("13", 1), vae=link("1", 2)),
        "15": node("PreviewImage", "Preview Image", images=link("14")),
        "16": node("DisableNoise", "DisableNoise"),
        "18": node("BasicScheduler", "BasicScheduler", scheduler="normal", steps=2, denoise=0.5, model=link("1")),
        "17": node("SamplerCustomAdvanced", "SamplerCustomAdvanced", noise=link("16"), guider=link("8"),
                   sampler=link("6"), sigmas=link("18"), latent_image=link("9")),
        "19": node("VAEDecode", "VAE Decode", samples=link("17"), vae=link("1", 2)),
        "24": node("PreviewImage", "Preview Image", images=link("19")),
    }


def controlnet_ui() -> dict[str, Any]:
    """img2img from an uploaded photo under two ControlNets (Canny edges), image scaling and a model
    upscale: schema 0.4."""
    ui = UIWorkflow(0.4)
    ui.node(1, "CheckpointLoaderSimple", (20, 100), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["v1-5-pruned-emaonly.safetensors"])
    ui.node(2, "LoadImage", (20, 300), (315, 314), outputs=(("IMAGE", IMAGE), ("MASK", MASK)),
            widgets=["photo.png", "image"])
    ui.node(3, "ImageScale", (380, 300), (315, 130), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=["bilinear", 64, 64, "center"])
    ui.node(4, "Canny", (740, 300), (315, 82), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=[0.4, 0.8])
    ui.node(5, "ControlNetLoader", (740, 440), (315, 58), outputs=(("CONTROL_NET", "CONTROL_NET"),),
            widgets=["control_v11p_sd15_canny.safetensors"])
    ui.node(6, "DiffControlNetLoader", (740, 540), (315, 58), sockets=(("model", MODEL),),
            outputs=(("CONTROL_NET", "CONTROL_NET"),), widgets=["control_v11f1p_sd15_depth.safetensors"])
    ui.node(7, "CLIPTextEncode", (380, 20), (400, 120), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["a yellow square in the middle"])
    ui.node(8, "CLIPTextEncode", (380, 170), (400, 100), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["red"])
    ui.node(9, "ControlNetApply", (1100, 20), (317, 98),
            sockets=(("conditioning", COND), ("control_net", "CONTROL_NET"), ("image", IMAGE)),
            outputs=(("CONDITIONING", COND),), widgets=[0.8])
    ui.node(10, "ControlNetApplyAdvanced", (1100, 180), (315, 186),
            sockets=(("positive", COND), ("negative", COND), ("control_net", "CONTROL_NET"), ("image", IMAGE),
                     ("vae", VAE)),
            outputs=(("positive", COND), ("negative", COND)), widgets=[0.6, 0.0, 0.8])
    ui.node(11, "VAEEncode", (1100, 420), (210, 46), sockets=(("pixels", IMAGE), ("vae", VAE)),
            outputs=(("LATENT", LATENT),))
    ui.node(12, "KSampler", (1460, 20), (315, 262), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=[99, "fixed", 3, 6.0, "euler", "normal", 0.7])
    ui.node(13, "VAEDecode", (1800, 20), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(14, "SaveImage", (2050, 20), (315, 270), sockets=(("images", IMAGE),), widgets=["controlnet"])
    ui.node(15, "ImageScaleBy", (1800, 360), (315, 82), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=["area", 0.5])
    ui.node(16, "ImageScaleToTotalPixels", (2150, 360), (315, 106), sockets=(("image", IMAGE),),
            outputs=(("IMAGE", IMAGE),), widgets=["bicubic", 0.01, 1])
    ui.node(17, "PreviewImage", (2500, 360), (210, 246), sockets=(("images", IMAGE),))
    ui.node(18, "UpscaleModelLoader", (1800, 520), (315, 58), outputs=(("UPSCALE_MODEL", "UPSCALE_MODEL"),),
            widgets=["2x-compact.safetensors"])
    ui.node(19, "ImageUpscaleWithModel", (2150, 520), (241, 46),
            sockets=(("upscale_model", "UPSCALE_MODEL"), ("image", IMAGE)), outputs=(("IMAGE", IMAGE),))
    ui.node(20, "PreviewImage", (2500, 620), (210, 246), sockets=(("images", IMAGE),))

    ui.link(2, 0, 3, "image")
    ui.link(3, 0, 4, "image")
    ui.link(1, 0, 6, "model")
    ui.link(1, 1, 7, "clip")
    ui.link(1, 1, 8, "clip")
    ui.link(7, 0, 9, "conditioning")
    ui.link(5, 0, 9, "control_net")
    ui.link(4, 0, 9, "image")
    ui.link(9, 0, 10, "positive")
    ui.link(8, 0, 10, "negative")
    ui.link(6, 0, 10, "control_net")
    ui.link(3, 0, 10, "image")
    ui.link(1, 2, 10, "vae")
    ui.link(3, 0, 11, "pixels")
    ui.link(1, 2, 11, "vae")
    ui.link(1, 0, 12, "model")
    ui.link(10, 0, 12, "positive")
    ui.link(10, 1, 12, "negative")
    ui.link(11, 0, 12, "latent_image")
    ui.link(12, 0, 13, "samples")
    ui.link(1, 2, 13, "vae")
    ui.link(13, 0, 14, "images")
    ui.link(13, 0, 15, "image")
    ui.link(15, 0, 16, "image")
    ui.link(16, 0, 17, "images")
    ui.link(18, 0, 19, "upscale_model")
    ui.link(15, 0, 19, "image")
    ui.link(19, 0, 20, "images")
    ui.group(1, "ControlNets", (730, 230, 700, 400), "#8A8")
    return ui.document()


def inpaint_api() -> dict[str, Any]:
    """Inpainting three ways (VAEEncodeForInpaint, InpaintModelConditioning on an inpainting
    checkpoint, SetLatentNoiseMask), the mask nodes, compositing and outpaint padding: API format."""
    def link(node_id: str, slot: int = 0) -> list[Any]:
        return [node_id, slot]

    def node(kind: str, title: str, **inputs: Any) -> dict[str, Any]:
        return {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}

    def ksampler(seed: int, denoise: float, model: list[Any], positive: list[Any], negative: list[Any],
                 latent: list[Any]) -> dict[str, Any]:
        return node("KSampler", "KSampler", seed=seed, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                    denoise=denoise, model=model, positive=positive, negative=negative, latent_image=latent)

    return {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="v1-5-pruned-emaonly.safetensors"),
        "2": node("LoadImage", "Load Image", image="photo.png", upload="image"),
        "3": node("LoadImageMask", "Load Image (as Mask)", image="mask.png", channel="red", upload="image"),
        "4": node("GrowMask", "GrowMask", expand=2, tapered_corners=True, mask=link("3")),
        "5": node("InvertMask", "InvertMask", mask=link("4")),
        "6": node("MaskToImage", "Convert Mask to Image", mask=link("5")),
        "7": node("ImageToMask", "Convert Image to Mask", channel="green", image=link("6")),
        "9": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="a green circle", clip=link("1", 1)),
        "10": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="", clip=link("1", 1)),
        "30": node("ImageScale", "Upscale Image", upscale_method="nearest-exact", width=64, height=64,
                   crop="center", image=link("2")),
        "8": node("VAEEncodeForInpaint", "VAE Encode (for Inpainting)", grow_mask_by=4, pixels=link("30"),
                  vae=link("1", 2), mask=link("4")),
        "11": ksampler(1, 1.0, link("1"), link("9"), link("10"), link("8")),
        "12": node("VAEDecode", "VAE Decode", samples=link("11"), vae=link("1", 2)),
        "28": node("PrimitiveBoolean", "Resize source", value=False),
        "13": node("ImageCompositeMasked", "ImageCompositeMasked", x=0, y=0, resize_source=link("28"),
                   destination=link("30"), source=link("12"), mask=link("7")),
        "14": node("SaveImage", "Save Image", filename_prefix="inpaint", images=link("13")),
        "31": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="sd-v1-5-inpainting.safetensors"),
        "32": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="a green circle", clip=link("31", 1)),
        "33": node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text="", clip=link("31", 1)),
        "15": node("InpaintModelConditioning", "InpaintModelConditioning", noise_mask=True, positive=link("32"),
                   negative=link("33"), vae=link("31", 2), pixels=link("30"), mask=link("5")),
        "16": ksampler(2, 0.8, link("31"), link("15", 0), link("15", 1), link("15", 2)),
        "17": node("VAEDecode", "VAE Decode", samples=link("16"), vae=link("31", 2)),
        "18": node("PreviewImage", "Preview Image", images=link("17")),
        "19": node("VAEEncode", "VAE Encode", pixels=link("30"), vae=link("1", 2)),
        "20": node("SetLatentNoiseMask", "Set Latent Noise Mask", samples=link("19"), mask=link("4")),
        "21": ksampler(3, 0.6, link("1"), link("9"), link("10"), link("20")),
        "22": node("VAEDecode", "VAE Decode", samples=link("21"), vae=link("1", 2)),
        "23": node("PreviewImage", "Preview Image", images=link("22")),
        "24": node("ImagePadForOutpaint", "Pad Image for Outpainting", left=16, top=0, right=8, bottom=8,
                   feathering=6, image=link("30")),
        "25": node("PreviewImage", "Preview Image", images=link("24")),
        "26": node("MaskToImage", "Convert Mask to Image", mask=link("24", 1)),
        "27": node("PreviewImage", "Preview Image", images=link("26")),
    }


def sdxl_ui() -> dict[str, Any]:
    """SDXL base then refiner with the SDXL text encoders: schema 1."""
    ui = UIWorkflow(1)
    encode_sdxl = (("width", "INT"), ("height", "INT"), ("crop_w", "INT"), ("crop_h", "INT"),
                   ("target_width", "INT"), ("target_height", "INT"), ("text_g", "STRING"), ("text_l", "STRING"))
    encode_refiner = (("ascore", "FLOAT"), ("width", "INT"), ("height", "INT"), ("text", "STRING"))
    ui.node(1, "CheckpointLoaderSimple", (20, 100), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["sd_xl_base_1.0.safetensors"], widget_names=(("ckpt_name", "COMBO"),))
    ui.node(2, "CLIPTextEncodeSDXL", (380, 20), (400, 270), sockets=(("clip", CLIP),),
            outputs=(("CONDITIONING", COND),), widget_names=encode_sdxl,
            widgets=[64, 64, 0, 0, 64, 64, "a photo of a cat", "a cat, sharp focus"])
    ui.node(3, "CLIPTextEncodeSDXL", (380, 320), (400, 270), sockets=(("clip", CLIP),),
            outputs=(("CONDITIONING", COND),), widget_names=encode_sdxl,
            widgets=[64, 64, 8, 4, 64, 64, "blurry", "blurry"])
    ui.node(4, "EmptyLatentImage", (380, 620), (315, 106), outputs=(("LATENT", LATENT),), widgets=[64, 64, 1],
            widget_names=(("width", "INT"), ("height", "INT"), ("batch_size", "INT")))
    ui.node(5, "KSamplerAdvanced", (820, 20), (315, 334), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=["enable", 11, "randomize", 3, 6.0, "euler", "normal", 0, 2, "enable"],
            widget_names=KSAMPLER_ADVANCED_WIDGETS)
    ui.node(6, "CheckpointLoaderSimple", (20, 420), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["sd_xl_refiner_1.0.safetensors"], widget_names=(("ckpt_name", "COMBO"),))
    ui.node(7, "CLIPTextEncodeSDXLRefiner", (820, 400), (400, 200), sockets=(("clip", CLIP),),
            outputs=(("CONDITIONING", COND),), widget_names=encode_refiner, widgets=[6.0, 64, 64, "a photo of a cat"])
    ui.node(8, "CLIPTextEncodeSDXLRefiner", (820, 640), (400, 200), sockets=(("clip", CLIP),),
            outputs=(("CONDITIONING", COND),), widget_names=encode_refiner, widgets=[2.5, 64, 64, "blurry"])
    ui.node(9, "KSamplerAdvanced", (1260, 20), (315, 334), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=["disable", 0, "fixed", 3, 6.0, "euler", "normal", 2, 10000, "disable"],
            widget_names=KSAMPLER_ADVANCED_WIDGETS)
    ui.node(10, "VAEDecode", (1620, 20), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(11, "SaveImage", (1860, 20), (315, 270), sockets=(("images", IMAGE),), widgets=["sdxl"],
            widget_names=(("filename_prefix", "STRING"),))
    ui.link(1, 1, 2, "clip")
    ui.link(1, 1, 3, "clip")
    ui.link(1, 0, 5, "model")
    ui.link(2, 0, 5, "positive")
    ui.link(3, 0, 5, "negative")
    ui.link(4, 0, 5, "latent_image")
    ui.link(6, 1, 7, "clip")
    ui.link(6, 1, 8, "clip")
    ui.link(6, 0, 9, "model")
    ui.link(7, 0, 9, "positive")
    ui.link(8, 0, 9, "negative")
    ui.link(5, 0, 9, "latent_image")
    ui.link(9, 0, 10, "samples")
    ui.link(1, 2, 10, "vae")
    ui.link(10, 0, 11, "images")
    ui.group(1, "Base", (10, 0, 1140, 740), "#3f789e")
    ui.group(2, "Refiner", (10, 380, 1600, 480), "#a1309b")
    return ui.document()


def area_prompts_ui() -> dict[str, Any]:
    """Regional prompts: one prompt for a rectangle in pixels, one for a rectangle in fractions of
    the image, a background prompt weighted down, combined: schema 0.4."""
    ui = UIWorkflow(0.4)
    ui.node(1, "CheckpointLoaderSimple", (20, 200), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["v1-5-pruned-emaonly.safetensors"])
    for node_id, y, text in ((2, 20, "a red circle"), (3, 220, "a yellow square"), (4, 420, "a blue background"),
                             (5, 620, "blurry")):
        ui.node(node_id, "CLIPTextEncode", (380, y), (400, 150), sockets=(("clip", CLIP),),
                outputs=(("CONDITIONING", COND),), widgets=[text])
    ui.node(6, "ConditioningSetArea", (820, 20), (317, 154), sockets=(("conditioning", COND),),
            outputs=(("CONDITIONING", COND),), widgets=[32, 32, 0, 16, 1.0])
    ui.node(7, "ConditioningSetAreaPercentage", (820, 220), (317, 154), sockets=(("conditioning", COND),),
            outputs=(("CONDITIONING", COND),), widgets=[0.5, 0.5, 0.5, 0.25, 1.2])
    ui.node(8, "ConditioningSetAreaStrength", (820, 420), (317, 58), sockets=(("conditioning", COND),),
            outputs=(("CONDITIONING", COND),), widgets=[0.7])
    ui.node(9, "ConditioningCombine", (1180, 100), (228, 46),
            sockets=(("conditioning_1", COND), ("conditioning_2", COND)), outputs=(("CONDITIONING", COND),))
    ui.node(10, "ConditioningCombine", (1180, 300), (228, 46),
            sockets=(("conditioning_1", COND), ("conditioning_2", COND)), outputs=(("CONDITIONING", COND),))
    ui.node(11, "EmptyLatentImage", (820, 620), (315, 106), outputs=(("LATENT", LATENT),), widgets=[64, 64, 1])
    ui.node(12, "KSampler", (1460, 100), (315, 262), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=[8, "randomize", 3, 6.0, "euler", "normal", 1.0])
    ui.node(13, "VAEDecode", (1800, 100), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(14, "SaveImage", (2050, 100), (315, 270), sockets=(("images", IMAGE),), widgets=["areas"])
    for node_id in (2, 3, 4, 5):
        ui.link(1, 1, node_id, "clip")
    ui.link(2, 0, 6, "conditioning")
    ui.link(3, 0, 7, "conditioning")
    ui.link(4, 0, 8, "conditioning")
    ui.link(6, 0, 9, "conditioning_1")
    ui.link(7, 0, 9, "conditioning_2")
    ui.link(9, 0, 10, "conditioning_1")
    ui.link(8, 0, 10, "conditioning_2")
    ui.link(1, 0, 12, "model")
    ui.link(10, 0, 12, "positive")
    ui.link(5, 0, 12, "negative")
    ui.link(11, 0, 12, "latent_image")
    ui.link(12, 0, 13, "samples")
    ui.link(1, 2, 13, "vae")
    ui.link(13, 0, 14, "images")
    ui.group(1, "Regions", (810, -50, 620, 560), "#88A")
    return ui.document()


def masked_prompts_api() -> dict[str, Any]:
    """A prompt limited to a mask (within the mask's bounds), one limited to the first steps, one
    averaged into another, a negative prompt of two concatenated encodings: API format."""
    def link(node_id: str, slot: int = 0) -> list[Any]:
        return [node_id, slot]

    def node(kind: str, title: str, **inputs: Any) -> dict[str, Any]:
        return {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}

    def encode(text: str) -> dict[str, Any]:
        return node("CLIPTextEncode", "CLIP Text Encode (Prompt)", text=text, clip=link("1", 1))

    return {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="v1-5-pruned-emaonly.safetensors"),
        "2": encode("a green circle"),
        "3": node("LoadImageMask", "Load Image (as Mask)", image="mask.png", channel="red", upload="image"),
        "4": node("ConditioningSetMask", "Conditioning (Set Mask)", strength=1.0, set_cond_area="mask bounds",
                  conditioning=link("2"), mask=link("3")),
        "5": encode("a blue background"),
        "6": node("ConditioningSetTimestepRange", "ConditioningSetTimestepRange", start=0.0, end=0.6,
                  conditioning=link("5")),
        "9": encode("a yellow square"),
        "10": node("ConditioningAverage", "ConditioningAverage", conditioning_to_strength=0.7,
                   conditioning_to=link("9"), conditioning_from=link("5")),
        "11": node("ConditioningCombine", "Conditioning (Combine)", conditioning_1=link("4"), conditioning_2=link("6")),
        "12": node("ConditioningCombine", "Conditioning (Combine)", conditioning_1=link("11"),
                   conditioning_2=link("10")),
        "13": encode("blurry"),
        "7": encode("noisy, dark"),
        "8": node("ConditioningConcat", "Conditioning (Concat)", conditioning_to=link("13"),
                  conditioning_from=link("7")),
        "14": node("EmptyLatentImage", "Empty Latent Image", width=64, height=64, batch_size=1),
        "15": node("KSampler", "KSampler", seed=21, steps=3, cfg=6.0, sampler_name="euler", scheduler="normal",
                   denoise=1.0, model=link("1"), positive=link("12"), negative=link("8"), latent_image=link("14")),
        "16": node("VAEDecode", "VAE Decode", samples=link("15"), vae=link("1", 2)),
        "17": node("SaveImage", "Save Image", filename_prefix="masked", images=link("16")),
    }


def image_ops_ui() -> dict[str, Any]:
    """Image and mask operations, tiled VAE nodes, and sampling over split exponential sigmas with
    a basic guider: schema 1."""
    ui = UIWorkflow(1)
    ui.node(1, "CheckpointLoaderSimple", (20, 600), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["v1-5-pruned-emaonly.safetensors"], widget_names=(("ckpt_name", "COMBO"),))
    ui.node(2, "LoadImage", (20, 20), (315, 314), outputs=(("IMAGE", IMAGE), ("MASK", MASK)),
            widgets=["photo.png", "image"], widget_names=(("image", "COMBO"),))
    ui.node(3, "ImageCrop", (380, 20), (315, 130), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=[64, 64, 8, 0], widget_names=(("width", "INT"), ("height", "INT"), ("x", "INT"), ("y", "INT")))
    ui.node(4, "ImageFlip", (740, 20), (315, 58), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=["y-axis: horizontally"], widget_names=(("flip_method", "COMBO"),))
    ui.node(5, "ImageRotate", (740, 120), (315, 58), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),),
            widgets=["90 degrees"], widget_names=(("rotation", "COMBO"),))
    ui.node(6, "ImageInvert", (1100, 120), (140, 26), sockets=(("image", IMAGE),), outputs=(("IMAGE", IMAGE),))
    ui.node(7, "ImageBlend", (1300, 20), (315, 102), sockets=(("image1", IMAGE), ("image2", IMAGE)),
            outputs=(("IMAGE", IMAGE),), widgets=[0.4, "screen"],
            widget_names=(("blend_factor", "FLOAT"), ("blend_mode", "COMBO")))
    ui.node(8, "PreviewImage", (1650, 20), (210, 246), sockets=(("images", IMAGE),))
    ui.node(9, "ImageBatch", (1100, 220), (210, 46), sockets=(("image1", IMAGE), ("image2", IMAGE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(10, "PreviewImage", (1650, 300), (210, 246), sockets=(("images", IMAGE),))
    ui.node(11, "SolidMask", (380, 300), (315, 106), outputs=(("MASK", MASK),), widgets=[0.5, 64, 64],
            widget_names=(("value", "FLOAT"), ("width", "INT"), ("height", "INT")))
    ui.node(12, "ImageColorToMask", (740, 300), (315, 58), sockets=(("image", IMAGE),), outputs=(("MASK", MASK),),
            widgets=[15784990], widget_names=(("color", "INT"),))
    ui.node(13, "ThresholdMask", (740, 400), (315, 58), sockets=(("mask", MASK),), outputs=(("MASK", MASK),),
            widgets=[0.5], widget_names=(("value", "FLOAT"),))
    ui.node(14, "FeatherMask", (740, 500), (315, 130), sockets=(("mask", MASK),), outputs=(("MASK", MASK),),
            widgets=[4, 4, 0, 0], widget_names=(("left", "INT"), ("top", "INT"), ("right", "INT"), ("bottom", "INT")))
    ui.node(15, "CropMask", (1100, 400), (315, 130), sockets=(("mask", MASK),), outputs=(("MASK", MASK),),
            widgets=[8, 8, 32, 32], widget_names=(("x", "INT"), ("y", "INT"), ("width", "INT"), ("height", "INT")))
    ui.node(16, "MaskComposite", (1300, 400), (315, 130), sockets=(("destination", MASK), ("source", MASK)),
            outputs=(("MASK", MASK),), widgets=[16, 16, "add"],
            widget_names=(("x", "INT"), ("y", "INT"), ("operation", "COMBO")))
    ui.node(17, "MaskToImage", (1650, 560), (264, 26), sockets=(("mask", MASK),), outputs=(("IMAGE", IMAGE),))
    ui.node(18, "PreviewImage", (1950, 560), (210, 246), sockets=(("images", IMAGE),))
    ui.node(19, "CLIPTextEncode", (380, 700), (400, 120), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["a yellow square"], widget_names=(("text", "STRING"),))
    ui.node(20, "VAEEncodeTiled", (380, 880), (315, 150), sockets=(("pixels", IMAGE), ("vae", VAE)),
            outputs=(("LATENT", LATENT),), widgets=[512, 64, 64, 8],
            widget_names=(("tile_size", "INT"), ("overlap", "INT"), ("temporal_size", "INT"),
                          ("temporal_overlap", "INT")))
    ui.node(21, "ExponentialScheduler", (820, 700), (315, 106), outputs=(("SIGMAS", "SIGMAS"),),
            widgets=[4, 14.614642, 0.0291675],
            widget_names=(("steps", "INT"), ("sigma_max", "FLOAT"), ("sigma_min", "FLOAT")))
    ui.node(22, "SplitSigmas", (1160, 700), (315, 78), sockets=(("sigmas", "SIGMAS"),),
            outputs=(("high_sigmas", "SIGMAS"), ("low_sigmas", "SIGMAS")), widgets=[2],
            widget_names=(("step", "INT"),))
    ui.node(23, "BasicGuider", (820, 850), (222, 46), sockets=(("model", MODEL), ("conditioning", COND)),
            outputs=(("GUIDER", "GUIDER"),))
    ui.node(24, "RandomNoise", (820, 950), (315, 82), outputs=(("NOISE", "NOISE"),), widgets=[5, "fixed"],
            widget_names=(("noise_seed", "INT"),))
    ui.node(25, "KSamplerSelect", (820, 1070), (315, 58), outputs=(("SAMPLER", "SAMPLER"),), widgets=["euler"],
            widget_names=(("sampler_name", "COMBO"),))
    ui.node(26, "SamplerCustomAdvanced", (1500, 700), (355, 106),
            sockets=(("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                     ("latent_image", LATENT)),
            outputs=(("output", LATENT), ("denoised_output", LATENT)))
    ui.node(27, "DisableNoise", (1160, 950), (210, 26), outputs=(("NOISE", "NOISE"),))
    ui.node(28, "SamplerCustomAdvanced", (1900, 700), (355, 106),
            sockets=(("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                     ("latent_image", LATENT)),
            outputs=(("output", LATENT), ("denoised_output", LATENT)))
    ui.node(29, "VAEDecodeTiled", (2300, 700), (315, 150), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),), widgets=[512, 64, 64, 8],
            widget_names=(("tile_size", "INT"), ("overlap", "INT"), ("temporal_size", "INT"),
                          ("temporal_overlap", "INT")))
    ui.node(30, "SaveImage", (2650, 700), (315, 270), sockets=(("images", IMAGE),), widgets=["image_ops"],
            widget_names=(("filename_prefix", "STRING"),))
    ui.link(2, 0, 3, "image")
    ui.link(3, 0, 4, "image")
    ui.link(3, 0, 5, "image")
    ui.link(5, 0, 6, "image")
    ui.link(4, 0, 7, "image1")
    ui.link(6, 0, 7, "image2")
    ui.link(7, 0, 8, "images")
    ui.link(3, 0, 9, "image1")
    ui.link(5, 0, 9, "image2")
    ui.link(9, 0, 10, "images")
    ui.link(3, 0, 12, "image")
    ui.link(12, 0, 13, "mask")
    ui.link(13, 0, 14, "mask")
    ui.link(14, 0, 15, "mask")
    ui.link(11, 0, 16, "destination")
    ui.link(15, 0, 16, "source")
    ui.link(16, 0, 17, "mask")
    ui.link(17, 0, 18, "images")
    ui.link(1, 1, 19, "clip")
    ui.link(3, 0, 20, "pixels")
    ui.link(1, 2, 20, "vae")
    ui.link(21, 0, 22, "sigmas")
    ui.link(1, 0, 23, "model")
    ui.link(19, 0, 23, "conditioning")
    for sampler, noise, sigmas, latent in ((26, 24, 0, (20, 0)), (28, 27, 1, (26, 0))):
        ui.link(noise, 0, sampler, "noise")
        ui.link(23, 0, sampler, "guider")
        ui.link(25, 0, sampler, "sampler")
        ui.link(22, sigmas, sampler, "sigmas")
        ui.link(latent[0], latent[1], sampler, "latent_image")
    ui.link(28, 0, 29, "samples")
    ui.link(1, 2, 29, "vae")
    ui.link(29, 0, 30, "images")
    ui.group(1, "Masks", (370, 260, 1280, 400), "#8A8")
    return ui.document()


def report_ui() -> dict[str, Any]:
    """A workflow that cannot all be carried over: custom nodes (one feeding the sampler, one fed
    by it), area conditioning, values out of range or spelled in ways Latentgraph lacks, files
    that are not installed (Windows paths, an embedding in a prompt, an image): schema 0.4."""
    ui = UIWorkflow(0.4)
    ui.node(1, "CheckpointLoaderSimple", (20, 100), (315, 98), outputs=CHECKPOINT_OUT,
            widgets=["SD1.5\\realisticVisionV60_v60B1.safetensors"])
    ui.node(2, "LoraLoader", (380, 100), (315, 126), sockets=(("model", MODEL), ("clip", CLIP)),
            outputs=(("MODEL", MODEL), ("CLIP", CLIP)), widgets=["styles\\add_detail.safetensors", 1.0, 1.0])
    ui.node(3, "ModelSamplingDiscrete", (740, 100), (315, 82), sockets=(("model", MODEL),),
            outputs=(("MODEL", MODEL),), widgets=["lcm", False])
    ui.node(4, "CLIPTextEncode", (380, 280), (400, 120), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["a portrait, embedding:detail_boost, (sharp:1.2)"])
    ui.node(5, "CLIPTextEncode", (380, 440), (400, 120), sockets=(("clip", CLIP),), outputs=(("CONDITIONING", COND),),
            widgets=["embedding:EasyNegative, lowres"])
    ui.node(6, "unCLIPConditioning", (820, 280), (317, 102),
            sockets=(("conditioning", COND), ("clip_vision_output", "CLIP_VISION_OUTPUT")),
            outputs=(("CONDITIONING", COND),), widgets=[1.0, 0.0])
    ui.node(7, "ImpactWildcardEncode", (820, 480), (400, 200), sockets=(("model", MODEL), ("clip", CLIP)),
            outputs=(("model", MODEL), ("clip", CLIP), ("conditioning", COND), ("populated_text", "STRING")),
            widgets=["__colors__ flowers", "", "populate", "Select to add LoRA", "Select to add Wildcard", 0,
                     "randomize"], title="Wildcard negative")
    ui.node(8, "EmptyLatentImage", (820, 700), (315, 106), outputs=(("LATENT", LATENT),), widgets=[64, 64, 1])
    ui.node(9, "KSampler", (1240, 100), (315, 262), sockets=KSAMPLER_IN, outputs=(("LATENT", LATENT),),
            widgets=[1, "randomize", 20000, 150.0, "euler", "normal", 1.0])
    ui.node(10, "LatentUpscale", (1600, 100), (315, 130), sockets=(("samples", LATENT),),
            outputs=(("LATENT", LATENT),), widgets=["bislerp", 96, 96, "disabled"])
    ui.node(11, "VAEDecode", (1950, 100), (210, 46), sockets=(("samples", LATENT), ("vae", VAE)),
            outputs=(("IMAGE", IMAGE),))
    ui.node(12, "UltimateSDUpscale", (2200, 100), (315, 600), sockets=(("image", IMAGE), ("model", MODEL)),
            outputs=(("IMAGE", IMAGE),), widgets=[2, 0, "fixed", 20, 8, "euler", "normal", 0.2])
    ui.node(13, "SaveImage", (2550, 100), (315, 270), sockets=(("images", IMAGE),), widgets=["ComfyUI"])
    ui.node(14, "LoadImage", (20, 700), (315, 314), outputs=(("IMAGE", IMAGE), ("MASK", MASK)),
            widgets=["portrait.png", "image"])
    ui.node(15, "PreviewImage", (380, 700), (210, 246), sockets=(("images", IMAGE),))
    ui.link(1, 0, 2, "model")
    ui.link(1, 1, 2, "clip")
    ui.link(2, 0, 3, "model")
    ui.link(2, 1, 4, "clip")
    ui.link(2, 1, 5, "clip")
    ui.link(4, 0, 6, "conditioning")
    ui.link(3, 0, 9, "model")
    ui.link(6, 0, 9, "positive")
    ui.link(2, 0, 7, "model")
    ui.link(2, 1, 7, "clip")
    ui.link(7, 2, 9, "negative")
    ui.link(8, 0, 9, "latent_image")
    ui.link(9, 0, 10, "samples")
    ui.link(10, 0, 11, "samples")
    ui.link(1, 2, 11, "vae")
    ui.link(11, 0, 12, "image")
    ui.link(3, 0, 12, "model")
    ui.link(12, 0, 13, "images")
    ui.link(14, 0, 15, "images")
    return ui.document()


CORPUS = {
    "txt2img_lora.ui04.json": txt2img_lora_ui,
    "txt2img_lora.api.json": txt2img_lora_api,
    "hires.ui1.json": hires_ui,
    "custom_sampling.api.json": custom_sampling_api,
    "controlnet.ui04.json": controlnet_ui,
    "inpaint.api.json": inpaint_api,
    "sdxl_refiner.ui1.json": sdxl_ui,
    "area_prompts.ui04.json": area_prompts_ui,
    "masked_prompts.api.json": masked_prompts_api,
    "image_ops.ui1.json": image_ops_ui,
    "report.ui04.json": report_ui,
}


def render(name: str) -> str:
    """The file's text as ComfyUI saves it (two-space indentation)."""
    return json.dumps(CORPUS[name](), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name in CORPUS:
        (HERE / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
