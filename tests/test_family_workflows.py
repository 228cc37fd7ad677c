"""The shipped SD2.x and SDXL workflows, run through the executor on tiny checkpoints of their
families (tests/sd_tiny.py) installed under the names the workflows use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import SD2_BASE_NAME
from test_sd_nodes import load as shipped  # a shipped workflow with inputs overridden



def small(document: dict) -> dict:
    """The workflow at 64x64 and few steps, so the tiny models run it in a second."""
    for node in document["nodes"].values():
        inputs = node["inputs"]
        if node["type"] == "empty_latent":
            inputs.update(width=64, height=64)
        if node["type"] == "sdxl_conditioning":
            for name in ("original_width", "original_height", "target_width", "target_height"):
                if inputs.get(name):
                    inputs[name] = 64
    return document


def run(executor, document: dict, outputs: list[str]):
    result = executor.run(document, outputs=outputs)
    assert result.status == "succeeded", result.errors
    return result.values


def test_sd2_workflow_runs_the_768_v_model_as_v_prediction(family_executor):
    document = small(shipped("sd2_txt2img.json", **{"sampler.steps": 3}))
    values = run(family_executor, document, ["checkpoint", "decode"])
    model = values["checkpoint"]["model"]
    assert (model.family, model.prediction_type) == ("sd2", "v_prediction")
    image = values["decode"]["image"]
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_sd2_workflow_with_the_512_base_model_is_epsilon_unless_overridden(family_executor):
    document = small(shipped("sd2_txt2img.json", **{"checkpoint.checkpoint": SD2_BASE_NAME, "sampler.steps": 2}))
    assert run(family_executor, document, ["checkpoint"])["checkpoint"]["model"].prediction_type == "epsilon"
    document["nodes"]["checkpoint"]["inputs"]["prediction"] = "v_prediction"
    assert run(family_executor, document, ["checkpoint"])["checkpoint"]["model"].prediction_type == "v_prediction"


def test_sdxl_workflow_runs_with_its_size_conditioning(family_executor):
    document = small(shipped("sdxl_txt2img.json", **{"sampler.steps": 3}))
    values = run(family_executor, document, ["checkpoint", "size", "sampler", "decode"])
    assert values["checkpoint"]["model"].family == "sdxl"
    entry = values["size"]["conditioning"].entries[0]
    assert entry.embedding.shape == (1, 77, 64 + 128) and entry.pooled.shape == (1, 128)
    assert entry.extra["original_width"] == 64 and entry.extra["crop_left"] == 0
    assert values["decode"]["image"].shape == (1, 64, 64, 3)

    # The size conditioning reaches the U-Net: another original size changes the result.
    other = small(shipped("sdxl_txt2img.json", **{"sampler.steps": 3}))
    other["nodes"]["size"]["inputs"].update(original_width=32, original_height=32)
    changed = run(family_executor, other, ["sampler"])["sampler"]["latent"].samples
    assert (changed - values["sampler"]["latent"].samples).abs().max() > 1e-3


def test_sdxl_base_refiner_workflow_hands_the_noisy_latent_to_the_refiner(family_executor):
    document = small(shipped("sdxl_base_refiner.json", **{"base_sampler.steps": 4, "base_sampler.end_step": 3,
                                                           "refiner_sampler.steps": 4, "refiner_sampler.start_step": 3}))
    values = run(family_executor, document, ["base", "refiner", "base_sampler", "refiner_sampler", "decode"])
    assert values["base"]["model"].family == "sdxl" and values["refiner"]["model"].family == "sdxl_refiner"
    handed = values["base_sampler"]["latent"].samples
    final = values["refiner_sampler"]["latent"].samples
    assert handed.shape == final.shape == (1, 4, 8, 8)
    assert (final - handed).abs().max() > 1e-3
    assert values["decode"]["image"].shape == (1, 64, 64, 3)


@pytest.mark.parametrize("name", ["sd2_txt2img.json", "sdxl_txt2img.json", "sdxl_base_refiner.json"])
def test_shipped_family_workflows_validate(family_executor, name):
    from latentgraph.engine import Workflow, find_issues

    workflow = Workflow.model_validate(shipped(name))
    _, issues = find_issues(workflow, family_executor.registry, services=family_executor.services)
    assert issues == []


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def test_sdxl_in_bf16_on_the_cpu_loads_every_model_in_bf16_once_and_the_cache_counts_it(family_checkpoints, tmp_path):
    import latentgraph.nodes.library  # noqa: F401
    from conftest import SDXL_NAME
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.services import Services

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    os_link(family_checkpoints[SDXL_NAME], models / "checkpoints" / SDXL_NAME)
    folders = Folders(models=models, inputs=tmp_path, outputs=tmp_path / "out", temp=tmp_path / "temp")
    results = {}
    for precision in ("fp32", "bf16"):
        services = Services(folders=folders, device="cpu", precision=precision)
        executor = Executor(registry, OutputCache(1 << 30), services=services, events=EventBus())
        document = small(shipped("sdxl_txt2img.json", **{"sampler.steps": 3, "sampler.sampler": "euler"}))
        values = run(executor, document, ["checkpoint", "sampler"])
        model, clip = values["checkpoint"]["model"], values["checkpoint"]["clip"]
        (loaded,) = [entry for entry, _ in services.models._models.values()]
        assert model.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert {p.dtype for p in loaded.unet.parameters()} == {model.dtype}  # loaded so, not converted after
        assert all(p.dtype == model.dtype for m in clip.encoders.values() for p in m.parameters())
        assert {p.dtype for p in loaded.vae.parameters()} == {model.dtype}  # bf16 everywhere on the CPU
        expected = parameter_bytes(loaded.unet) + parameter_bytes(loaded.vae) + sum(
            parameter_bytes(m) for m in loaded.text_encoders.values())
        assert expected * 0.99 <= services.models.nbytes <= expected * 1.05, (services.models.nbytes, expected)
        results[precision] = (values["sampler"]["latent"].samples, services.models.nbytes)
    (full, full_bytes), (half, half_bytes) = results["fp32"], results["bf16"]
    assert half_bytes * 1.9 < full_bytes < half_bytes * 2.1  # every model's share halves
    relative = ((half - full).abs().max() / full.abs().max()).item()
    assert 0 < relative < 0.1, relative  # bf16's rounding, not another result


def os_link(source: Path, target: Path) -> None:
    import os

    os.link(source, target)


def test_a_checkpoint_that_fits_only_without_the_cached_ones_evicts_them_first(family_checkpoints, sd_folders,
                                                                               tiny_sd15_checkpoint, monkeypatch):
    import os

    import latentgraph.nodes.library  # noqa: F401
    from conftest import SDXL_NAME
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.sd import memory
    from latentgraph.nodes.services import Services

    os.link(family_checkpoints[SDXL_NAME], sd_folders.models / "checkpoints" / SDXL_NAME)
    services = Services(folders=sd_folders, device="cpu")
    # Output cache off, as under memory pressure: no earlier run's outputs keep models alive.
    executor = Executor(registry, OutputCache(0), services=services, events=EventBus())

    def load(name: str):
        document = {"format": "latentgraph/workflow@1",
                    "nodes": {"checkpoint": {"type": "checkpoint_loader", "inputs": {"checkpoint": name}}}}
        return executor.run(document, outputs=["checkpoint"])

    assert load("latentgraph-demo.safetensors").ok
    sd1_bytes = services.models.nbytes
    # The machine: room for the SDXL models alone (a float32 file: its size), not beside what the cache holds.
    room = family_checkpoints[SDXL_NAME].stat().st_size + sd1_bytes // 2
    monkeypatch.setattr(memory, "free_memory", lambda device: room / 0.9 - services.models.nbytes)
    result = load(SDXL_NAME)
    assert result.ok, result.errors
    assert len(services.models) == 1 and services.models.loads == 2
    assert result.values["checkpoint"]["model"].family == "sdxl"


@pytest.mark.parametrize("latent_space, scaling", [("sd1", 0.18215), ("sdxl", 0.13025)])
def test_a_standalone_vae_takes_the_latent_scaling_of_the_family_named(sd_executor, sd_folders, tiny_sd15,
                                                                       latent_space, scaling):
    from safetensors.torch import save_file

    (sd_folders.models / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in tiny_sd15.vae.state_dict().items()},
              str(sd_folders.models / "vae" / "vae.safetensors"))
    document = {"format": "latentgraph/workflow@1", "nodes": {
        "vae": {"type": "vae_loader", "inputs": {"vae_name": "vae.safetensors", "latent_space": latent_space}}}}
    vae = run(sd_executor, document, ["vae"])["vae"]["vae"]
    assert vae.scaling_factor == scaling
    assert torch.equal(vae.model.decoder.conv_out.weight, tiny_sd15.vae.decoder.conv_out.weight)


def test_sdxl_long_weighted_prompts_use_the_same_windows_for_both_encoders(family_checkpoints):
    from conftest import SDXL_NAME
    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.nodes.sd.families import SDXL
    from latentgraph.nodes.sd.prompt import encode_prompt, encode_text, tokenize_prompt
    from latentgraph.nodes.sd.tokenizer import EOS_ID

    loaded = load_checkpoint(family_checkpoints[SDXL_NAME])
    text = ", ".join(["a (red:1.4) house"] * 30) + " BREAK a [blue] sky"
    context, pooled = encode_text(loaded.text_encoders, SDXL, text)
    tokens_l = tokenize_prompt(text, pad_id=EOS_ID)
    tokens_g = tokenize_prompt(text, pad_id=0)
    assert tokens_l.num_chunks == tokens_g.num_chunks == 3 and context.shape == (1, 3 * 77, 64 + 128)
    assert torch.equal(tokens_l.weights, tokens_g.weights)
    assert torch.equal(tokens_l.padded_with(0).ids, tokens_g.ids)  # what encode_text does instead of tokenizing twice
    last_chunk = tokens_g.ids[-1].tolist()
    end = last_chunk.index(EOS_ID)
    assert set(last_chunk[end + 1:]) == {0} and set(tokens_l.ids[-1, end:].tolist()) == {EOS_ID}
    clip_l, _ = encode_prompt(None, loaded.text_encoders["clip_l"], text, clip_skip=2, final_norm=False, pad_id=EOS_ID)
    clip_g, pooled_g = encode_prompt(None, loaded.text_encoders["clip_g"], text, clip_skip=2, final_norm=False, pad_id=0)
    assert torch.equal(context, torch.cat([clip_l, clip_g], dim=-1))
    assert torch.equal(pooled, pooled_g) and pooled.shape == (1, 128)
    # The weights reach both halves.
    plain, _ = encode_text(loaded.text_encoders, SDXL, text.replace(":1.4", ":1.0").replace("[blue]", "blue"))
    for half in (slice(0, 64), slice(64, None)):
        assert (plain[..., half] - context[..., half]).abs().max() > 1e-3
