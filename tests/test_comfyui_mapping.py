"""The ComfyUI mapping table against the registry and the README, /object_info's shape, and
subgraph expansion (ComfyUI's new frontend) run on the demo model."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest

from latentgraph.engine import Executor
from latentgraph.nodes.comfyui import MAPPINGS, import_document, object_info
from latentgraph.nodes.comfyui.mapping import Socket
from latentgraph.nodes.library import load_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry()


def test_every_mapping_names_real_inputs_and_outputs_of_registered_nodes():
    for mapping in MAPPINGS:
        info = REGISTRY.get(mapping.ours)
        assert info is not None, f"{mapping.comfy} maps to unknown node type {mapping.ours}"
        if mapping.expand is not None:
            continue  # inputs go to more than one node
        for item in mapping.inputs:
            if item.ours is not None:
                assert item.ours in info.inputs, f"{mapping.comfy}.{item.name} -> {mapping.ours}.{item.ours}"
                if isinstance(item, Socket):
                    assert info.inputs[item.ours].port == item.type, (mapping.comfy, item.name)
        for key in mapping.fixed:
            assert key in info.inputs
        for comfy_type, ours in mapping.outputs:
            assert ours in info.outputs, f"{mapping.comfy} output {ours}"
            assert info.outputs[ours].port == comfy_type, (mapping.comfy, ours)


def test_readme_mapping_table_lists_every_mapped_type():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Mapping table", 1)[1].split("\n\n", 2)[1]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert {m.comfy for m in MAPPINGS} <= rows
    assert len(rows - {"ComfyUI node"}) == len(MAPPINGS)


def test_object_info_describes_ksampler_as_comfyui_does():
    info = object_info(REGISTRY)
    ks = info["KSampler"]
    assert list(ks["input"]["required"]) == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                             "positive", "negative", "latent_image", "denoise"]
    assert ks["input"]["required"]["model"] == ["MODEL"]
    seed = ks["input"]["required"]["seed"]
    assert seed[0] == "INT" and seed[1]["control_after_generate"] is True
    steps = ks["input"]["required"]["steps"]
    assert steps[0] == "INT" and steps[1]["default"] == 20 and steps[1]["min"] == 1
    assert "dpmpp_2m" in ks["input"]["required"]["sampler_name"][0]
    assert "karras" in ks["input"]["required"]["scheduler"][0]
    assert ks["output"] == ["LATENT"] and ks["output_name"] == ["LATENT"] and ks["output_is_list"] == [False]
    assert ks["output_node"] is False and info["SaveImage"]["output_node"] is True
    adv = info["KSamplerAdvanced"]["input"]["required"]
    assert adv["add_noise"] == [["enable", "disable"]]
    assert info["LoadImage"]["input"]["required"]["image"][1]["image_upload"] is True
    assert info["ControlNetApplyAdvanced"]["input"]["optional"] == {"vae": ["VAE"]}
    assert info["SamplerCustom"]["output_name"] == ["output", "denoised_output"]


def _demo_ui() -> dict:
    """The demo txt2img in ComfyUI's UI format (schema 0.4)."""
    def node(id_, type_, inputs=(), outputs=(), widgets=None, pos=(0, 0)):
        return {"id": id_, "type": type_, "pos": list(pos), "size": [300, 100], "mode": 0,
                "inputs": [{"name": n, "type": t, "link": l} for n, t, l in inputs],
                "outputs": [{"name": n, "type": t, "links": ls} for n, t, ls in outputs],
                "widgets_values": widgets if widgets is not None else []}
    return {
        "version": 0.4, "last_node_id": 9, "last_link_id": 9, "groups": [], "config": {}, "extra": {},
        "nodes": [
            node(4, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
                 widgets=["latentgraph-demo.safetensors"]),
            node(6, "CLIPTextEncode", [("clip", "CLIP", 3)], [("CONDITIONING", "CONDITIONING", [4])],
                 ["a yellow star on a purple background, center"], pos=(400, 0)),
            node(7, "CLIPTextEncode", [("clip", "CLIP", 5)], [("CONDITIONING", "CONDITIONING", [6])], [""], pos=(400, 300)),
            node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT", [2])], widgets=[64, 64, 1], pos=(400, 600)),
            node(3, "KSampler", [("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6),
                                 ("latent_image", "LATENT", 2)], [("LATENT", "LATENT", [7])],
                 [7, "randomize", 8, 2.0, "euler", "karras", 1.0], pos=(800, 0)),
            node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE", [9])], pos=(1200, 0)),
            node(9, "PreviewImage", [("images", "IMAGE", 9)], pos=(1500, 0)),
        ],
        "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
                  [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"],
                  [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]],
    }


def _wrap_in_subgraph(document: dict, node_ids: set[int], instance_id: int, subgraph_id: str) -> dict:
    """Move `node_ids` into a subgraph, as ComfyUI's "convert to subgraph" does: links crossing the
    border go through the subgraph's input (-10) and output (-20) slots."""
    doc = copy.deepcopy(document)
    inside = [n for n in doc["nodes"] if n["id"] in node_ids]
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in node_ids]
    inner_links, outer_links, sub_inputs, sub_outputs = [], [], [], []
    instance = {"id": instance_id, "type": subgraph_id, "pos": [500, 100], "size": [200, 100], "mode": 0,
                "inputs": [], "outputs": [], "widgets_values": []}
    next_link = 100
    for link in doc["links"]:
        lid, src, slot, dst, dslot, kind = link
        if src in node_ids and dst in node_ids:
            inner_links.append({"id": lid, "origin_id": src, "origin_slot": slot, "target_id": dst,
                                "target_slot": dslot, "type": kind})
        elif dst in node_ids:  # into the subgraph: outer link to the instance, inner link from -10
            index = len(sub_inputs)
            sub_inputs.append({"name": f"in{index}", "type": kind, "linkIds": [next_link]})
            instance["inputs"].append({"name": f"in{index}", "type": kind, "link": lid})
            inner_links.append({"id": next_link, "origin_id": -10, "origin_slot": index, "target_id": dst,
                                "target_slot": dslot, "type": kind})
            target = next(n for n in inside if n["id"] == dst)
            next(i for i in target["inputs"] if i["link"] == lid)["link"] = next_link  # inner links have inner ids
            outer_links.append([lid, src, slot, instance_id, index, kind])
            next_link += 1
        elif src in node_ids:  # out of the subgraph: inner link to -20, outer link from the instance
            key = (src, slot)
            names = [o["key"] for o in sub_outputs]
            if key not in names:
                sub_outputs.append({"key": key, "name": f"out{len(sub_outputs)}", "type": kind, "linkIds": [next_link]})
                inner_links.append({"id": next_link, "origin_id": src, "origin_slot": slot, "target_id": -20,
                                    "target_slot": len(sub_outputs) - 1, "type": kind})
                instance["outputs"].append({"name": f"out{len(sub_outputs) - 1}", "type": kind, "links": []})
                next_link += 1
            index = [o["key"] for o in sub_outputs].index(key)
            instance["outputs"][index]["links"].append(lid)
            outer_links.append([lid, instance_id, index, dst, dslot, kind])
        else:
            outer_links.append(link)
    doc["nodes"].append(instance)
    doc["links"] = outer_links
    for output in sub_outputs:
        del output["key"]
    doc.setdefault("definitions", {}).setdefault("subgraphs", []).append(
        {"id": subgraph_id, "name": "Sampling", "inputNode": {"id": -10}, "outputNode": {"id": -20},
         "inputs": sub_inputs, "outputs": sub_outputs, "nodes": inside, "links": inner_links})
    return doc


def _run(workflow: dict, executor: Executor) -> np.ndarray:
    result = executor.run(workflow)
    assert result.ok, result.errors
    (images,) = [r["images"] for r in result.results.values() if "images" in r]
    return images


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    from latentgraph.engine import OutputCache
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.services import Services

    root = tmp_path_factory.mktemp("comfy_subgraph")
    folders = Folders(models=root / "models", inputs=root / "input", outputs=root / "output", temp=root / "temp")
    return Executor(REGISTRY, OutputCache(1 << 30), services=Services(folders=folders))


def _pixels(executor: Executor, workflow: dict) -> np.ndarray:
    from PIL import Image

    result = executor.run(workflow)
    assert result.ok, result.errors
    saved = [image for r in result.results.values() for image in r.get("images", [])]
    assert len(saved) == 1
    folder = executor.services.folders.temp if saved[0]["type"] == "temp" else executor.services.folders.outputs
    return np.asarray(Image.open(folder / saved[0]["subfolder"] / saved[0]["filename"]))


def test_subgraphs_expand_to_their_nodes_and_give_the_same_image(executor):
    plain = import_document(_demo_ui(), registry=REGISTRY, services=executor.services)
    assert plain.report.empty and plain.report.ok
    wrapped = _wrap_in_subgraph(_demo_ui(), {6, 3}, 20, "0b6c1b9e-sampling")
    nested = _wrap_in_subgraph(wrapped, {20, 8}, 30, "5d1f00aa-outer")  # a subgraph inside a subgraph
    for doc, ids in ((wrapped, {"20:6", "20:3"}), (nested, {"30:20:6", "30:20:3", "30:8"})):
        result = import_document(doc, registry=REGISTRY, services=executor.services)
        assert result.report.ok and not result.report.problems, result.report.to_dict()
        assert ids <= set(result.workflow["nodes"])
        assert not {"20", "30"} & set(result.workflow["nodes"])  # the instances are gone
        sampler = next(n for i, n in result.workflow["nodes"].items() if i.endswith(":3"))
        assert sampler["inputs"]["seed"] == 7 and sampler["inputs"]["sampler"] == "euler"
        assert np.array_equal(_pixels(executor, result.workflow), _pixels(executor, plain.workflow))


def test_a_bypassed_subgraph_is_reported_not_expanded(executor):
    wrapped = _wrap_in_subgraph(_demo_ui(), {6, 3}, 20, "0b6c1b9e-sampling")
    next(n for n in wrapped["nodes"] if n["id"] == 20)["mode"] = 4
    report = import_document(wrapped, registry=REGISTRY, services=executor.services).report
    assert not report.ok
    assert [(u["id"], u["type"]) for u in report.unmapped] == [("20", "0b6c1b9e-sampling")]
    assert "bypassed subgraph" in report.unmapped[0]["reason"]


def test_promoted_subgraph_widget_values_are_reported(executor):
    wrapped = _wrap_in_subgraph(_demo_ui(), {6, 3}, 20, "0b6c1b9e-sampling")
    next(n for n in wrapped["nodes"] if n["id"] == 20)["widgets_values"] = [123]
    report = import_document(wrapped, registry=REGISTRY, services=executor.services).report
    assert report.ok
    assert any(re.search(r"node 20 \(subgraph 'Sampling'\): values promoted", note) for note in report.notes)


def test_cli_run_takes_a_comfyui_workflow_and_refuses_unmapped_nodes(tmp_path, capsys):
    import json

    from latentgraph.cli import main

    ui = tmp_path / "comfy.json"
    ui.write_text(json.dumps(_demo_ui()))
    out = tmp_path / "out"
    assert main(["run", str(ui), "-q", "--output-dir", str(out), "--models-dir", str(tmp_path / "models")]) == 0
    document = _demo_ui()
    document["nodes"].append({"id": 12, "type": "unCLIPConditioning", "mode": 0, "widgets_values": [1.0, 0.0],
                              "inputs": [{"name": "conditioning", "type": "CONDITIONING", "link": 12}], "outputs": []})
    document["links"].append([12, 6, 0, 12, 0, "CONDITIONING"])
    ui.write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["run", str(ui), "-q", "--output-dir", str(out), "--models-dir", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert "import: unmapped node 12 (unCLIPConditioning): unCLIP models are not supported" in err
    assert "cannot map" in err


@pytest.mark.parametrize("document", [
    {"nodes": [1, "x", {"id": 1}, {"id": 2, "type": "KSampler", "inputs": "bad", "widgets_values": "zz", "pos": "p",
                                    "mode": [1], "outputs": "o", "flags": "x"}], "links": "bad"},
    {"nodes": [{"id": 1, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 5}]}],
     "links": [[5, 2, "x", 1, 0, "LATENT"], {"id": 6}, [7, [2], 0, 1, 0]]},
    {"nodes": [{"id": 1, "type": "sg"}], "links": [],
     "definitions": {"subgraphs": [{"id": "sg", "nodes": "x", "links": [1, [1, 2], {"id": 3, "origin_id": -10}]}]}},
    {"nodes": [], "groups": [1, {"bounding": "x"}, {"bounding": [1, 2, 3]}], "links": [],
     "extra": {"reroutes": "x", "linkExtensions": [1]}},
    {"1": {"class_type": "VAEDecode", "inputs": [1, 2]}},
    {"1": {"class_type": "KSampler", "inputs": {"cfg": float("nan"), "seed": 2 ** 70, "model": ["9", 0]}}},
])
def test_malformed_comfyui_documents_are_reported_not_crashed_on(document):
    import json

    result = import_document(document, registry=REGISTRY)
    json.dumps(result.workflow, allow_nan=True)
    json.dumps(result.report.to_dict(), allow_nan=True)
    assert result.report.lines()  # something is always said about a broken workflow


def test_a_subgraph_nested_in_itself_is_expanded_to_the_depth_limit_and_reported():
    document = {"nodes": [{"id": 1, "type": "sg"}], "links": [],
                "definitions": {"subgraphs": [{"id": "sg", "nodes": [{"id": 2, "type": "sg"}], "links": []}]}}
    report = import_document(document, registry=REGISTRY).report
    assert not report.ok and "nested more than 16 levels deep" in report.unmapped[0]["reason"]
    assert report.unmapped[0]["id"] == "1" + ":2" * 16


def test_split_sigmas_exponential_schedule_and_basic_guider(executor):
    """ComfyUI's SplitSigmas / ExponentialScheduler / BasicGuider: a split schedule walked by two
    samplers equals one sampler walking it whole; the exponential spacing is ComfyUI's formula;
    BasicGuider equals CFGGuider at cfg 1."""
    import math

    import torch

    from latentgraph.nodes.sd.schedules import exponential_between

    expected = torch.cat([torch.linspace(math.log(14.6), math.log(0.03), 7, dtype=torch.float64).exp(),
                          torch.zeros(1, dtype=torch.float64)]).float()
    assert torch.equal(exponential_between(0.03, 14.6, 7), expected)

    def prompt(split: bool, guider: str) -> dict:
        nodes = {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "latentgraph-demo.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a green triangle, bottom", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "20": {"class_type": "ExponentialScheduler", "inputs": {"steps": 6, "sigma_max": 14.6, "sigma_min": 0.03}},
            "21": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "22": {"class_type": "RandomNoise", "inputs": {"noise_seed": 4}},
            "23": ({"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                          "cfg": 1.0}} if guider == "cfg"
                   else {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}),
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["25" if split else "24", 0], "vae": ["4", 2]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        }
        if split:
            nodes["30"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["20", 0], "step": 2}}
            nodes["31"] = {"class_type": "DisableNoise", "inputs": {}}
            nodes["24"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["22", 0], "guider": ["23", 0],
                                                                             "sampler": ["21", 0], "sigmas": ["30", 0],
                                                                             "latent_image": ["5", 0]}}
            nodes["25"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["31", 0], "guider": ["23", 0],
                                                                             "sampler": ["21", 0], "sigmas": ["30", 1],
                                                                             "latent_image": ["24", 0]}}
        else:
            nodes["24"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["22", 0], "guider": ["23", 0],
                                                                             "sampler": ["21", 0], "sigmas": ["20", 0],
                                                                             "latent_image": ["5", 0]}}
        result = import_document(nodes, registry=REGISTRY, services=executor.services)
        assert result.report.ok and result.report.empty, result.report.to_dict()
        return result.workflow

    whole = _pixels(executor, prompt(False, "basic"))
    assert np.array_equal(_pixels(executor, prompt(True, "basic")), whole)
    assert np.array_equal(_pixels(executor, prompt(False, "cfg")), whole)


def test_a_linked_value_that_decides_the_mapping_is_reported():
    prompt = {
        "1": {"class_type": "PrimitiveBoolean", "inputs": {"value": False}},
        "2": {"class_type": "SamplerCustom", "inputs": {"add_noise": ["1", 0], "noise_seed": 3, "cfg": 2.0}},
    }
    result = import_document(prompt, registry=REGISTRY)
    (entry,) = [v for v in result.report.values if v["input"] == "add_noise"]
    assert entry["id"] == "2" and "comes from a link" in entry["message"]
    assert result.workflow["nodes"]["2:noise"]["type"] == "noise"  # the default: add noise
