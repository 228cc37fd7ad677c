"""The Stable Diffusion nodes through the executor, on the tiny checkpoint: the shipped workflows,
seeds, caching across a sweep, previews, cancellation, saved PNGs and the errors users meet."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentgraph.engine import CancelToken, WorkflowInvalid

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # pixels: an 8x8 latent, enough for the tiny U-Net's two levels


def load(name: str, **overrides) -> dict:
    """A shipped workflow with inputs overridden: overrides maps "node.input" to a value."""
    document = json.loads((ROOT / "workflows" / name).read_text())
    for key, value in overrides.items():
        node_id, input_name = key.split(".")
        document["nodes"][node_id]["inputs"][input_name] = value
    return document


def txt2img(**overrides) -> dict:
    settings = {"latent.width": SIZE, "latent.height": SIZE, "sampler.steps": 4}
    settings.update(overrides)
    return load("txt2img.json", **settings)


def image_of(executor, result, node="save") -> np.ndarray:
    info = result.results[node]["images"][0]
    folder = executor.services.folders.outputs if info["type"] == "output" else executor.services.folders.temp
    with Image.open(folder / info["subfolder"] / info["filename"]) as image:
        return np.asarray(image.convert("RGB"))


def test_the_default_txt2img_workflow_runs_every_node_and_saves_a_png_with_its_workflow(sd_executor):
    result = sd_executor.run(txt2img())
    assert result.ok, result.errors
    assert set(result.executed) == {"checkpoint", "latent", "positive", "negative", "sampler", "decode", "save"}
    assert result.executed.index("checkpoint") < result.executed.index("positive") < result.executed.index("sampler")
    assert result.executed[-3:] == ["sampler", "decode", "save"]
    saved = result.results["save"]["images"]
    assert saved == [{"filename": "txt2img_00001_.png", "subfolder": "", "type": "output"}]
    with Image.open(sd_executor.services.folders.outputs / "txt2img_00001_.png") as png:
        assert png.size == (SIZE, SIZE)
        embedded = json.loads(png.text["workflow"])
    assert embedded["nodes"]["sampler"]["inputs"]["steps"] == 4
    assert embedded["format"] == "latentgraph/workflow@1"
    assert "ui" in embedded


def test_a_second_save_counts_on_instead_of_overwriting(sd_executor):
    sd_executor.run(txt2img())
    second = sd_executor.run(txt2img(**{"sampler.seed": 5}))
    assert second.results["save"]["images"][0]["filename"] == "txt2img_00002_.png"


def test_the_same_seed_gives_the_same_image_and_another_seed_a_different_one(sd_executor):
    a = image_of(sd_executor, sd_executor.run(txt2img(**{"sampler.seed": 11})))
    sd_executor.cache.clear()
    b = image_of(sd_executor, sd_executor.run(txt2img(**{"sampler.seed": 11})))
    c = image_of(sd_executor, sd_executor.run(txt2img(**{"sampler.seed": 12})))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_changing_the_seed_reruns_only_sampler_decode_and_save(sd_executor):
    sd_executor.run(txt2img())
    again = sd_executor.run(txt2img(**{"sampler.seed": 99}))
    assert again.executed == ["sampler", "decode", "save"]
    assert set(again.cached) == {"checkpoint", "positive", "negative", "latent"}
    assert sd_executor.services.models.loads == 1


def test_changing_the_prompt_reencodes_only_that_prompt(sd_executor):
    sd_executor.run(txt2img())
    again = sd_executor.run(txt2img(**{"positive.text": "a green square"}))
    assert again.executed == ["positive", "sampler", "decode", "save"]


def test_an_unchanged_rerun_runs_nothing(sd_executor):
    first = sd_executor.run(txt2img())
    again = sd_executor.run(txt2img())
    assert again.executed == [] and again.cached == ["save"]
    assert again.results == first.results


def test_sampler_steps_stream_progress_with_previews(sd_executor):
    seen = []
    sd_executor.events.subscribe(lambda e: seen.append(e) if e.type == "node_progress" else None)
    sd_executor.run(txt2img(**{"sampler.steps": 5}))
    assert [(e.data["node"], e.data["step"], e.data["total"]) for e in seen] == [("sampler", i, 5) for i in range(1, 6)]
    preview = seen[-1].data["preview"]
    assert preview.size == (SIZE // 8, SIZE // 8)
    assert json.loads(seen[-1].to_json())["data"]["preview"] == {"width": 8, "height": 8}


def test_a_cancel_during_sampling_stops_within_one_step(sd_executor):
    token = CancelToken()
    steps = []

    def on_event(event):
        if event.type == "node_progress":
            steps.append(event.data["step"])
            if event.data["step"] == 2:
                token.cancel()

    sd_executor.events.subscribe(on_event)
    result = sd_executor.run(txt2img(**{"sampler.steps": 50}), cancel=token)
    assert result.status == "cancelled"
    assert steps == [1, 2]
    assert "decode" not in result.executed


def test_the_modular_workflow_equals_the_one_node_sampler_for_the_same_settings(sd_executor):
    modular = load("txt2img_modular.json", **{
        "latent.width": SIZE, "latent.height": SIZE, "sigmas.steps": 4, "sigmas.schedule": "karras",
        "noise.seed": 3, "sampler_choice.sampler": "dpmpp_2m", "positive.text": "a cat", "sampler.cfg": 5.0})
    one_node = txt2img(**{"sampler.seed": 3, "sampler.sampler": "dpmpp_2m", "sampler.scheduler": "karras",
                          "positive.text": "a cat", "sampler.cfg": 5.0})
    a = sd_executor.run(modular, outputs=["sampler"]).values["sampler"]["latent"].samples
    b = sd_executor.run(one_node, outputs=["sampler"]).values["sampler"]["latent"].samples
    assert torch.equal(a, b)


def test_img2img_starts_part_way_so_low_denoise_stays_near_the_encoded_image(sd_executor):
    picture = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    picture[:, : SIZE // 2] = (255, 0, 0)
    Image.fromarray(picture).save(sd_executor.services.folders.inputs / "example.png")

    def distance(denoise: float) -> float:
        doc = load("img2img.json", **{"sampler.steps": 4, "sampler.denoise": denoise})
        values = sd_executor.run(doc, outputs=["sampler", "encode", "save"]).values
        encoded, sampled = values["encode"]["latent"].samples, values["sampler"]["latent"].samples
        return float((sampled - encoded).abs().mean() / encoded.abs().mean())

    assert distance(0.0) == 0.0  # denoise 0 hands the encoded latent through untouched
    low, high = distance(0.1), distance(1.0)
    assert 0 < low < 0.5 * high, (low, high)
    saved = sd_executor.services.folders.outputs / "img2img_00001_.png"
    with Image.open(saved) as png:
        assert png.size == (SIZE, SIZE)


def test_load_image_turns_alpha_into_a_mask(sd_executor):
    rgba = np.zeros((16, 24, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:8, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(sd_executor.services.folders.inputs / "cut.png")
    doc = {"format": "latentgraph/workflow@1", "nodes": {"img": {"type": "load_image", "inputs": {"image": "cut.png"}}}}
    values = sd_executor.run(doc, outputs=["img"]).values["img"]
    assert values["image"].shape == (1, 16, 24, 3)
    assert values["mask"][0, :8].eq(1).all() and values["mask"][0, 8:].eq(0).all()


def test_preview_image_writes_to_the_temp_folder_and_always_runs(sd_executor):
    doc = txt2img()
    doc["nodes"]["save"] = {"type": "preview_image", "inputs": {"images": {"node": "decode", "output": "image"}}}
    first = sd_executor.run(doc)
    assert first.results["save"]["images"][0]["type"] == "temp"
    assert (sd_executor.services.folders.temp / first.results["save"]["images"][0]["filename"]).is_file()
    assert sd_executor.run(doc).executed == ["save"]


def test_a_missing_checkpoint_is_a_validation_error_listing_what_is_there(sd_executor):
    with pytest.raises(WorkflowInvalid) as caught:
        sd_executor.run(txt2img(**{"checkpoint.checkpoint": "sd15.safetensors"}))
    issue = caught.value.issues[0]
    assert (issue.node, issue.input, issue.code) == ("checkpoint", "checkpoint", "not_in_choices")
    assert "'latentgraph-demo.safetensors'" in issue.message and "'sd15.safetensors'" in issue.message


@pytest.mark.parametrize("name", ["../secrets.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_checkpoint_names_cannot_leave_the_models_folder(sd_folders, name):
    from latentgraph.nodes.folders import UnsafeName

    with pytest.raises(UnsafeName):
        sd_folders.model_path("checkpoints", name)


def test_save_image_prefixes_cannot_leave_the_output_folder(sd_executor):
    result = sd_executor.run(txt2img(**{"save.filename_prefix": "../escape"}))
    assert result.status == "failed"
    assert result.errors[0].node_id == "save"
    assert "'..' and '.' are not allowed in names" in str(result.errors[0])
    assert not (sd_executor.services.folders.outputs.parent / "escape_00001_.png").exists()


def test_a_foreign_file_in_the_checkpoints_folder_fails_the_loader_with_a_clear_message(sd_executor):
    from safetensors.torch import save_file

    bad = sd_executor.services.folders.models / "checkpoints" / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)}, str(bad))
    result = sd_executor.run(txt2img(**{"checkpoint.checkpoint": "lora.safetensors"}))
    assert result.status == "failed"
    failure = result.errors[0]
    assert failure.node_id == "checkpoint" and failure.node_type == "checkpoint_loader"
    assert "lora" in str(failure.error).lower()
    assert set(result.skipped) == {"positive", "negative", "sampler", "decode", "save"}


def test_an_odd_latent_size_is_refused_by_validation(sd_executor):
    with pytest.raises(WorkflowInvalid) as caught:
        sd_executor.run(txt2img(**{"latent.width": 32}))
    assert caught.value.issues[0].code == "out_of_bounds"


def test_cli_seed_sweep_reloads_nothing_and_reencodes_no_prompt_after_the_first_value(sd_folders, tmp_path):
    from latentgraph.cli import main

    events_file = tmp_path / "e.jsonl"
    code = main(["run", str(ROOT / "workflows" / "txt2img.json"), "-q",
                 "--set", f"latent.width={SIZE}", "--set", f"latent.height={SIZE}", "--set", "sampler.steps=3",
                 "--sweep", "sampler.seed=1,2,3", "--events", str(events_file),
                 "--models-dir", str(sd_folders.models), "--output-dir", str(tmp_path / "out")])
    assert code == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    runs: list[list[str]] = []
    for event in events:
        if event["type"] == "run_started":
            runs.append([])
        elif event["type"] == "node_started":
            runs[-1].append(event["data"]["node"])
    assert len(runs) == 3
    assert {"checkpoint", "positive", "negative"} <= set(runs[0])
    assert runs[1] == runs[2] == ["sampler", "decode", "save"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"txt2img_0000{i}_.png" for i in (1, 2, 3)]


def test_loaded_models_are_not_counted_twice_in_the_output_cache(sd_executor):
    from latentgraph.engine.cache import sizeof

    result = sd_executor.run(txt2img(), outputs=["checkpoint"])
    outputs = result.values["checkpoint"]
    assert sizeof(outputs["model"].unet) > 1_000_000  # the weights themselves are measured...
    assert sizeof(outputs) < 1_000  # ...but the handles the model cache owns count as almost nothing
