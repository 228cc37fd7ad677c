"""ControlNet: the model against diffusers' ControlNetModel, whole txt2img runs through our graph
against diffusers' ControlNet pipelines (SD1.x and SDXL), and the rules of strength, start/end
percent, stacking, batching, loading and errors.

The tiny ControlNets (tests/controlnet_tiny.py) match the tiny checkpoints (tests/sd_tiny.py):
LDM layout with and without `control_model.` for SD1.x (and SD2.x), diffusers' layout (written from
diffusers' own ControlNetModel) for SDXL. Their zero convolutions are random, not zero.

The reference for the LDM files is diffusers' ControlNetModel loaded strictly with diffusers' own
converter (`convert_controlnet_checkpoint`); for the diffusers files, the file loaded as it is.
Whole runs reuse test_sd_pipeline's / test_sdxl_exact's harness (same weights, noise, sigmas,
tolerances: latents 1e-4 of max |latent|, images 1e-4). diffusers applies the ControlNet to the
prompt and the negative prompt (the hint image repeated over the CFG batch), as apply_controlnet
does; its control_guidance_start / end count steps (step i acts when i / N >= start and
(i + 1) / N <= end), ours count noise levels (ComfyUI's rule), so ranges are compared on schedules
where both pick the same steps, and our rule is checked against its formula on its own.

Observed (one thread, float32), max |ours - diffusers|:

    residuals, every layout and family         0 (bitwise: same operations)
    U-Net with residuals (SD1.x)               0
    SD1.x euler/normal 128x128, strength 1     latents 2.3e-6 x max|latent|, images 3.3e-6
    SD1.x dpmpp_2m/karras (unrounded)          latents 2.7e-6, images 2.9e-6
    strength 0.5                               latents 2.9e-6, images 3.6e-6
    start 0.2 / end 0.7                        latents 2.5e-6, images 3.8e-6
    two stacked ControlNets                    latents 2.0e-6, images 3.0e-6
    SDXL euler/normal 128x96                   latents 2.3e-6, images 5.3e-6

The mutations (no ControlNet: 0.45-0.6 x max|latent|; another hint 0.19; strength 1 instead of
0.5 0.28; control on every step instead of 0.2-0.7 0.40; one of two stacked ControlNets dropped
0.48) are far outside the tolerances.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import test_sdxl_exact as xl
from conftest import SD2_NAME
from controlnet_tiny import (
    build_diffusers_controlnet,
    build_tiny_controlnet,
    controlnet_diffusers_config,
    sdxl_overrides,
    write_tiny_controlnet,
    write_tiny_diffusers_controlnet,
)
from latentgraph.nodes.sd.checkpoint import CheckpointError
from latentgraph.nodes.sd.controlnet import (
    ControlApplication,
    ControlNet,
    ControlNetHandle,
    PreparedControl,
    fit_hint,
    load_controlnet,
    percent_to_sigma,
)
from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry
from latentgraph.nodes.sd.interrupt import cancel_points
from latentgraph.nodes.sd.memory import control_memory, sampling_memory
from latentgraph.nodes.sd.sample import guided_model
from latentgraph.nodes.sd.samplers import initial_noise
from latentgraph.nodes.sd.schedules import scaled_linear_noise_schedule, sigmas_for
from sd_tiny import TINY_SD2_UNET, TINY_SDXL_UNET, TINY_UNET
from test_sd_pipeline import (
    CFG,
    LATENT_RTOL,
    NEGATIVE,
    PROMPT,
    SEED,
    SIZE,
    STEPS,
    Ours,
    Result,
    UnroundedKarrasDPMSolver,
    assert_match,
    assert_mismatch,
    dpmpp_2m_karras,
    euler,
    one_thread,  # noqa: F401  (module-scoped autouse: single-threaded)
    pipeline,  # noqa: F401  (the SD1.x StableDiffusionPipeline on the tiny checkpoint)
    txt2img,
)
from test_sdxl_exact import base_pipe  # noqa: F401  (the SDXL pipeline on the tiny base checkpoint)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
CANNY = "control_v11p_sd15_canny.safetensors"  # bare LDM keys, as that file has them
PREFIXED = "control_sd15_depth.safetensors"  # control_model.* keys, as the original releases
SDXL_CN = "controlnet-canny-sdxl-1.0.safetensors"  # diffusers' layout
SD2_CN = "control_sd21_canny.safetensors"
RESIDUAL_RTOL = 1e-5


# ---------------------------------------------------------------------------------------------
# Files and executors


@pytest.fixture(scope="module")
def controlnet_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("controlnets")
    return {
        CANNY: write_tiny_controlnet(folder / CANNY, TINY_UNET, seed=100, prefix=False),
        PREFIXED: write_tiny_controlnet(folder / PREFIXED, TINY_UNET, seed=101, prefix=True),
        SD2_CN: write_tiny_controlnet(folder / SD2_CN, TINY_SD2_UNET, seed=102, prefix=True),
        SDXL_CN: write_tiny_diffusers_controlnet(folder / SDXL_CN, TINY_SDXL_UNET, seed=200,
                                                 **sdxl_overrides(TINY_SDXL_UNET)),
    }


def install(executor, files: dict[str, Path]) -> None:
    folder = executor.services.folders.models / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        if not (folder / name).exists():
            os.link(path, folder / name)


def edge_map(width: int, height: int, seed: int) -> np.ndarray:
    """A canny-like hint: white outlines of a few rectangles and a circle on black, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    picture = np.zeros((height, width), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        x1, y1 = x0 + rng.integers(8, width // 2), y0 + rng.integers(8, height // 2)
        picture[y0:y1, [x0, x1 - 1]] = 255
        picture[[y0, y1 - 1], x0:x1] = 255
    yy, xx = np.mgrid[:height, :width]
    ring = np.abs(np.hypot(xx - width * 0.6, yy - height * 0.4) - min(width, height) / 5) < 1.0
    picture[ring] = 255
    return np.repeat(picture[:, :, None], 3, axis=2)


def depth_map(width: int, height: int) -> np.ndarray:
    """A depth-like hint: smooth gradients, uint8 [H, W, 3]."""
    yy, xx = np.mgrid[:height, :width]
    value = 127 + 100 * np.sin(xx / width * 5.0) * np.cos(yy / height * 3.0)
    return np.repeat(value.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def save_input(executor, name: str, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(executor.services.folders.inputs / name)


@pytest.fixture
def cn_executor(sd_executor, controlnet_files):
    """The SD1.x executor (tiny checkpoint) with the tiny ControlNets and two hint images installed."""
    install(sd_executor, controlnet_files)
    save_input(sd_executor, "edges.png", edge_map(SIZE, SIZE, seed=1))
    save_input(sd_executor, "depth.png", depth_map(SIZE, SIZE))
    return sd_executor


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def with_controls(document: dict, controls: list[dict], positive: str = "positive", negative: str = "negative") -> dict:
    """The document with apply_controlnet nodes chained between the prompts and the sampler.
    Each control: {"name": file, "image": input file, and apply_controlnet's other inputs}."""
    nodes = document["nodes"]
    pos, neg = link(positive, "conditioning"), link(negative, "conditioning")
    for index, control in enumerate(controls):
        control = dict(control)
        nodes[f"cn{index}"] = {"type": "controlnet_loader", "inputs": {"controlnet_name": control.pop("name")}}
        nodes[f"hint{index}"] = {"type": "load_image", "inputs": {"image": control.pop("image")}}
        nodes[f"apply{index}"] = {"type": "apply_controlnet", "inputs": {
            "positive": pos, "negative": neg, "controlnet": link(f"cn{index}", "controlnet"),
            "image": link(f"hint{index}", "image"), **control}}
        pos, neg = link(f"apply{index}", "positive"), link(f"apply{index}", "negative")
    nodes["sampler"]["inputs"].update(positive=pos, negative=neg)
    return document


def sd1_document(controls: list[dict], sampler: str = "euler", schedule: str = "normal", **overrides) -> dict:
    settings = {"latent.width": SIZE, "latent.height": SIZE, "latent.batch_size": 1, "positive.text": PROMPT,
                "negative.text": NEGATIVE, "sampler.seed": SEED, "sampler.steps": STEPS, "sampler.cfg": CFG,
                "sampler.sampler": sampler, "sampler.scheduler": schedule, "sampler.denoise": 1.0}
    settings.update(overrides)
    return with_controls(txt2img(**settings), controls)


def run(executor, document: dict, outputs: list[str]) -> dict:
    result = executor.run(document, outputs=outputs)
    assert result.status == "succeeded", result.errors
    return result.values


def failure(executor, document: dict, outputs: list[str]) -> tuple[str, str]:
    result = executor.run(document, outputs=outputs)
    assert result.status == "failed", "the run should have failed"
    error = result.errors[0]
    return error.node_id, str(error.error)


def run_ours_sd1(executor, document: dict, schedule: str = "normal", hints: int = 0) -> tuple[Ours, list[torch.Tensor]]:
    values = run(executor, document, ["checkpoint", "sampler", "decode", *[f"hint{i}" for i in range(hints)]])
    sigmas = sigmas_for(schedule, values["checkpoint"]["model"].schedule, STEPS)
    noise = initial_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    ours = Ours(values["sampler"]["latent"].samples, values["decode"]["image"], noise, sigmas[0].item())
    return ours, [values[f"hint{i}"]["image"] for i in range(hints)]


# ---------------------------------------------------------------------------------------------
# diffusers' side


def diffusers_controlnet(path: Path, config) -> ControlNetModel:
    """diffusers' ControlNetModel with an LDM-layout file's weights, converted by diffusers itself
    (strict: every tensor placed)."""
    diffusers_config = controlnet_diffusers_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ControlNetModel(**diffusers_config)
    model.load_state_dict(convert_controlnet_checkpoint(load_file(path), diffusers_config), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def sd1_references(controlnet_files) -> dict[str, ControlNetModel]:
    return {name: diffusers_controlnet(controlnet_files[name], TINY_UNET) for name in (CANNY, PREFIXED)}


def controlnet_pipe(pipeline, controlnet) -> StableDiffusionControlNetPipeline:
    pipe = StableDiffusionControlNetPipeline(
        vae=pipeline.vae, text_encoder=pipeline.text_encoder, tokenizer=pipeline.tokenizer, unet=pipeline.unet,
        controlnet=controlnet, scheduler=euler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def starting_latents(make_scheduler, ours: Ours, vp: bool) -> torch.Tensor:
    """Our starting point x = noise * sigmas[0] as the pipeline's `latents=` (see test_sd_pipeline)."""
    probe = make_scheduler()
    probe.set_timesteps(STEPS)
    sigma_0 = torch.tensor(ours.sigma_0, dtype=torch.float64)
    if vp:
        assert probe.init_noise_sigma == 1.0
        return (ours.noise.double() * sigma_0 / (1 + sigma_0**2).sqrt()).float()
    assert abs(float(probe.init_noise_sigma) / ours.sigma_0 - 1) < 1e-4
    return (ours.noise.double() * sigma_0 / float(probe.init_noise_sigma)).float()


def run_pipe(pipe, make_scheduler, ours: Ours, vp: bool = False, **kwargs) -> Result:
    """The ControlNet pipeline from our starting point: final latents and images."""
    latents = starting_latents(make_scheduler, ours, vp)

    def call(output_type: str):
        pipe.scheduler = make_scheduler()
        with torch.no_grad():
            return pipe(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                        guidance_scale=CFG, latents=latents.clone(), output_type=output_type, **kwargs).images

    return Result(call("latent"), torch.from_numpy(call("np")))


def as_hint(image: torch.Tensor) -> torch.Tensor:
    """An IMAGE [B, H, W, 3] as diffusers' control image tensor [B, 3, H, W] in [0, 1]."""
    return image.movedim(-1, 1).contiguous()


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return ((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max()).item()


# ---------------------------------------------------------------------------------------------
# The model against diffusers' ControlNetModel


def sdxl_inputs(generator: torch.Generator, reference) -> dict:
    pooled = torch.randn(2, 128, generator=generator)
    time_ids = torch.tensor([[96, 128, 0, 0, 96, 128], [80, 96, 8, 16, 144, 160]], dtype=torch.float32)
    with torch.no_grad():
        y = torch.cat([pooled, reference.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=1)
    return {"y": y, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


@pytest.mark.parametrize("layout", ["sd1-bare", "sd1-prefixed", "sd2-prefixed", "sdxl-diffusers", "sd1-diffusers"])
def test_residuals_equal_diffusers_controlnet_model(controlnet_files, tmp_path, layout):
    generator = torch.Generator().manual_seed(3)
    if layout == "sdxl-diffusers":
        ours = load_controlnet(controlnet_files[SDXL_CN])
        theirs = build_diffusers_controlnet(TINY_SDXL_UNET, seed=200, **sdxl_overrides(TINY_SDXL_UNET))
        config, height, width = TINY_SDXL_UNET, 12, 16
    elif layout == "sd1-diffusers":  # SD1.x ControlNets shared in diffusers' layout load too
        path = write_tiny_diffusers_controlnet(tmp_path / "diffusion_pytorch_model.safetensors", TINY_UNET, seed=300)
        ours, theirs = load_controlnet(path), build_diffusers_controlnet(TINY_UNET, seed=300)
        config, height, width = TINY_UNET, 16, 16
    else:
        name = {"sd1-bare": CANNY, "sd1-prefixed": PREFIXED, "sd2-prefixed": SD2_CN}[layout]
        config = TINY_SD2_UNET if layout.startswith("sd2") else TINY_UNET
        ours, theirs = load_controlnet(controlnet_files[name]), diffusers_controlnet(controlnet_files[name], config)
        height, width = 16, 12
    # The config read from the file is the U-Net's (heads from the family: 8 for SD1.x, 64 channels
    # else; SD2.x's attention upcast in float16).
    assert ours.config.unet == config
    x = torch.randn(2, 4, height, width, generator=generator)
    hint = torch.rand(2, 3, height * 8, width * 8, generator=generator)
    timesteps = torch.tensor([999.0, 321.5])
    context = torch.randn(2, 77, config.context_dim, generator=generator)
    extra = sdxl_inputs(generator, theirs) if config.adm_in_channels else {"y": None, "added_cond_kwargs": None}
    with torch.no_grad():
        residuals = ours(x, hint, timesteps, context, extra["y"])
        down, middle = theirs(x, timesteps, context, hint, added_cond_kwargs=extra["added_cond_kwargs"],
                              return_dict=False)
    expected = [*down, middle]
    assert len(residuals) == len(expected) == len(ours.input_blocks) + 1
    errors = [relative(a, b) for a, b in zip(residuals, expected)]
    print(f"{layout}: residuals max error {max(errors):.3g} x max|residual|")
    assert max(errors) <= RESIDUAL_RTOL
    assert min(r.abs().max().item() for r in expected) > 0.1  # the zero convs are not zero
    # The hint reaches the residuals: another hint changes every one of them.
    with torch.no_grad():
        other = ours(x, torch.rand(hint.shape, generator=generator), timesteps, context, extra["y"])
    assert min(relative(a, b) for a, b in zip(other, expected)) > 100 * RESIDUAL_RTOL


def test_unet_with_residuals_equals_diffusers_and_is_unchanged_without(pipeline, tiny_sd15):
    unet = tiny_sd15.unet
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 16, 12, generator=generator)
    t = torch.tensor([999.0, 250.25])
    context = torch.randn(2, 77, 64, generator=generator)
    controlnet = build_tiny_controlnet(TINY_UNET, seed=7)
    with torch.no_grad():
        residuals = controlnet(x, torch.rand(2, 3, 128, 96, generator=generator), t, context)
        ours = unet(x, t, context, control=residuals)
        theirs = pipeline.unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=residuals[:-1],
                               mid_block_additional_residual=residuals[-1]).sample
        plain = unet(x, t, context)
        zeros = unet(x, t, context, control=[torch.zeros_like(r) for r in residuals])
        only_middle = unet(x, t, context, control=[torch.zeros_like(r) for r in residuals[:-1]] + residuals[-1:])
    assert relative(ours, theirs) <= LATENT_RTOL
    assert relative(plain, theirs) > 100 * LATENT_RTOL
    assert torch.equal(zeros, plain)  # adding zero residuals changes nothing, bit for bit
    assert relative(only_middle, plain) > 100 * LATENT_RTOL and relative(only_middle, theirs) > 100 * LATENT_RTOL
    with pytest.raises(ValueError, match="control residuals do not fit this U-Net: it needs 5 tensors"):
        unet(x, t, context, control=residuals[:-1])


# ---------------------------------------------------------------------------------------------
# Loading


def test_the_layouts_load_the_same_model(controlnet_files, tmp_path):
    bare = load_controlnet(controlnet_files[CANNY])
    prefixed = load_controlnet(write_tiny_controlnet(tmp_path / "prefixed.safetensors", TINY_UNET, seed=100))
    assert bare.config == prefixed.config
    assert all(torch.equal(a, b) for a, b in zip(bare.state_dict().values(), prefixed.state_dict().values()))
    # An original ControlNet 1.0 release: the whole SD model beside control_model.*; only the latter is read.
    whole = {**load_file(controlnet_files[PREFIXED]), "model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3),
             "first_stage_model.decoder.conv_out.bias": torch.zeros(3)}
    save_file(whole, str(tmp_path / "control_sd15_whole.safetensors"))
    assert torch.equal(load_controlnet(tmp_path / "control_sd15_whole.safetensors").zero_convs[0][0].weight,
                       load_controlnet(controlnet_files[PREFIXED]).zero_convs[0][0].weight)
    # fp16 files load in float32 on the CPU, equal to the rounded weights.
    half = load_controlnet(write_tiny_controlnet(tmp_path / "half.safetensors", TINY_UNET, seed=100, prefix=False,
                                                 dtype=torch.float16))
    assert half.dtype == torch.float32
    assert all(torch.equal(a, b.half().float()) for a, b in zip(half.state_dict().values(), bare.state_dict().values()))
    assert load_controlnet(controlnet_files[CANNY], dtype=torch.bfloat16).dtype == torch.bfloat16


def test_files_that_do_not_match_their_shapes_are_refused_with_the_keys(controlnet_files, tmp_path):
    state = load_file(controlnet_files[CANNY])
    del state["zero_convs.2.0.bias"]
    state["zero_convs.3.0.weight"] = torch.zeros(64, 64, 3, 3)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_controlnet(tmp_path / "broken.safetensors")
    message = str(error.value)
    assert "broken.safetensors does not match" in message
    assert "1 tensor missing: zero_convs.2.0.bias" in message
    assert "zero_convs.3.0.weight [64, 64, 3, 3] (expected [64, 64, 1, 1])" in message

    diffusers_state = load_file(controlnet_files[SDXL_CN])
    diffusers_state["controlnet_down_blocks.99.weight"] = torch.zeros(1)
    del diffusers_state["down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"]
    save_file(diffusers_state, str(tmp_path / "broken_xl.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_controlnet(tmp_path / "broken_xl.safetensors")
    message = str(error.value)
    assert "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight" in message  # named as in the file
    assert "unexpected: controlnet_down_blocks.99.weight" in message


def test_what_is_not_a_controlnet_is_named(tmp_path, tiny_sd15_checkpoint):
    with pytest.raises(CheckpointError, match="is not a ControlNet: it is a Stable Diffusion checkpoint"):
        load_controlnet(tiny_sd15_checkpoint)
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(CheckpointError, match=r"lora.safetensors is not a ControlNet .* it looks like a LoRA"):
        load_controlnet(tmp_path / "lora.safetensors")
    save_file({"lora_controlnet": torch.zeros(1), "input_blocks.1.0.emb_layers.1.up": torch.zeros(4, 2)},
              str(tmp_path / "control-lora.safetensors"))
    with pytest.raises(CheckpointError, match="is a Control-LoRA"):
        load_controlnet(tmp_path / "control-lora.safetensors")
    save_file({"adapter.body.0.resnets.0.block1.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "t2i.safetensors"))
    with pytest.raises(CheckpointError, match="is a T2I-Adapter, not a ControlNet"):
        load_controlnet(tmp_path / "t2i.safetensors")
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3), "task_embedding": torch.zeros(8, 64)},
              str(tmp_path / "union.safetensors"))
    with pytest.raises(CheckpointError, match="is a ControlNet Union"):
        load_controlnet(tmp_path / "union.safetensors")
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_controlnet(tmp_path / "truncated.safetensors")


def test_pickle_files_are_refused_unless_allowed_then_read_weights_only(controlnet_files, tmp_path, cn_executor):
    state = load_file(controlnet_files[CANNY])
    path = cn_executor.services.folders.models / "controlnet" / "control_sd15_canny.pth"
    torch.save(state, path)
    document = {"nodes": {"cn": {"type": "controlnet_loader", "inputs": {"controlnet_name": path.name}}}}
    node, message = failure(cn_executor, document, ["cn"])
    assert node == "cn" and "control_sd15_canny.pth is a pickle checkpoint (.pth)" in message
    assert "refused by default" in message and "torch.load(weights_only=True)" in message
    cn_executor.services.allow_pickle = True
    loaded = run(cn_executor, document, ["cn"])["cn"]["controlnet"].model
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 load_controlnet(controlnet_files[CANNY]).state_dict().values()))


def test_difference_controlnets_add_the_models_weights(controlnet_files, cn_executor, tiny_sd15):
    full = load_controlnet(controlnet_files[CANNY])
    base = tiny_sd15.unet.state_dict()
    shared = [key for key in full.state_dict() if key in base]
    assert len(shared) > 100 and "zero_convs.0.0.weight" not in shared  # the U-Net's copy, not the ControlNet's own
    deltas = {"control_model." + key: (value - base[key] if key in base else value).contiguous()
              for key, value in full.state_dict().items()}
    folder = cn_executor.services.folders.models / "controlnet"
    save_file({**deltas, "difference": torch.tensor([])}, str(folder / "diff_control_sd15.safetensors"))

    plain = {"nodes": {"cn": {"type": "controlnet_loader", "inputs": {"controlnet_name": "diff_control_sd15.safetensors"}}}}
    node, message = failure(cn_executor, plain, ["cn"])
    assert node == "cn" and "is a difference ControlNet" in message and "diff_controlnet_loader" in message

    document = {"nodes": {
        "checkpoint": {"type": "checkpoint_loader", "inputs": {"checkpoint": "latentgraph-demo.safetensors"}},
        "cn": {"type": "diff_controlnet_loader", "inputs": {"model": link("checkpoint", "model"),
                                                            "controlnet_name": "diff_control_sd15.safetensors"}}}}
    values = run(cn_executor, document, ["checkpoint", "cn"])
    loaded = values["cn"]["controlnet"].model
    for key, value in full.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key], value, rtol=0, atol=1e-6), key
    # The model's U-Net itself is untouched.
    unet = values["checkpoint"]["model"].unet.state_dict()
    assert all(torch.equal(value, unet[key]) for key, value in base.items())
    # An ordinary ControlNet loads through this node too.
    document["nodes"]["cn"]["inputs"]["controlnet_name"] = CANNY
    again = run(cn_executor, document, ["cn"])["cn"]["controlnet"].model
    assert torch.equal(again.zero_convs[0][0].weight, full.zero_convs[0][0].weight)


def test_loaded_controlnets_are_kept_in_the_model_cache(cn_executor):
    document = {"nodes": {"a": {"type": "controlnet_loader", "inputs": {"controlnet_name": CANNY}},
                          "b": {"type": "controlnet_loader", "inputs": {"controlnet_name": CANNY}}}}
    values = run(cn_executor, document, ["a", "b"])
    assert values["a"]["controlnet"].model is values["b"]["controlnet"].model
    assert cn_executor.services.models.loads == 1
    assert CANNY in cn_executor.services.folders.list_models("controlnet")


# ---------------------------------------------------------------------------------------------
# Whole runs against diffusers (SD1.x)


SD1_CASES = {
    "euler-normal": ("euler", "normal", euler, False),
    "dpmpp_2m-karras": ("dpmpp_2m", "karras", lambda: dpmpp_2m_karras(UnroundedKarrasDPMSolver), True),
}


@pytest.mark.parametrize("case", list(SD1_CASES))
def test_sd15_txt2img_with_a_controlnet_matches_the_diffusers_pipeline(cn_executor, pipeline, sd1_references, case):
    sampler, schedule, make_scheduler, vp = SD1_CASES[case]
    document = sd1_document([{"name": CANNY, "image": "edges.png"}], sampler, schedule)
    ours, (hint,) = run_ours_sd1(cn_executor, document, schedule, hints=1)
    assert hint.shape == (1, SIZE, SIZE, 3) and set(hint.unique().tolist()) == {0.0, 1.0}
    pipe = controlnet_pipe(pipeline, sd1_references[CANNY])
    theirs = run_pipe(pipe, make_scheduler, ours, vp, image=as_hint(hint))
    assert_match(ours, theirs, f"{case} with a ControlNet")
    if case != "euler-normal":
        return
    # Not vacuous: without the ControlNet, or with another hint, the result is far off.
    plain = cn_executor.run(sd1_document([]), outputs=["sampler", "decode"]).values
    assert_mismatch(Result(plain["sampler"]["latent"].samples, plain["decode"]["image"]), theirs, "no ControlNet")
    flipped = run_ours_sd1(cn_executor, sd1_document([{"name": CANNY, "image": "depth.png"}]))[0]
    assert_mismatch(flipped, theirs, "another hint")


def test_strength_scales_the_residuals(cn_executor, pipeline, sd1_references):
    document = sd1_document([{"name": CANNY, "image": "edges.png", "strength": 0.5}])
    ours, (hint,) = run_ours_sd1(cn_executor, document, hints=1)
    pipe = controlnet_pipe(pipeline, sd1_references[CANNY])
    theirs = run_pipe(pipe, euler, ours, image=as_hint(hint), controlnet_conditioning_scale=0.5)
    assert_match(ours, theirs, "strength 0.5")
    assert_mismatch(ours, run_pipe(pipe, euler, ours, image=as_hint(hint)), "strength 0.5 vs 1")
    # Strength 0 leaves the prompts as they were: the plain run exactly.
    zero = run(cn_executor, sd1_document([{"name": CANNY, "image": "edges.png", "strength": 0.0}]), ["sampler", "apply0"])
    plain = run(cn_executor, sd1_document([]), ["sampler"])
    assert zero["apply0"]["positive"].entries[0].control == ()
    assert torch.equal(zero["sampler"]["latent"].samples, plain["sampler"]["latent"].samples)


def test_strength_multiplies_every_residual_at_the_network_call(tiny_sd15):
    """The formula itself, one network call: the U-Net gets the ControlNet's residuals x strength."""
    from latentgraph.nodes.sd.denoiser import ControlChunks
    from latentgraph.nodes.sd.controlnet import control_residuals

    generator = torch.Generator().manual_seed(8)
    net = build_tiny_controlnet(TINY_UNET, seed=9)
    hint = torch.rand(1, 3, 64, 64, generator=generator)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, 64, generator=generator)
    prepared = PreparedControl(net, hint, 1.7, math.inf, 0.0)
    with torch.no_grad():
        got = control_residuals(ControlChunks(((prepared,),), torch.ones(2)), x, t, context, None)
        expected = [r * 1.7 for r in net(x, hint, t, context)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def diffusers_range(steps_active: list[int]) -> tuple[float, float]:
    """diffusers' (control_guidance_start, end) that keeps exactly the steps [a, b) (contiguous)."""
    a, b = steps_active[0], steps_active[-1] + 1
    assert steps_active == list(range(a, b))
    return a / STEPS, b / STEPS


def active_steps(schedule_name: str, start: float, end: float) -> list[int]:
    """The steps whose sigma lies in [percent_to_sigma(end), percent_to_sigma(start)] (ComfyUI's rule)."""
    schedule = scaled_linear_noise_schedule(0.00085, 0.012, 1000)
    sigmas = sigmas_for(schedule_name, schedule, STEPS)[:-1]
    high, low = percent_to_sigma(schedule, start), percent_to_sigma(schedule, end)
    return [i for i, sigma in enumerate(sigmas.tolist()) if high >= sigma >= low]


def test_start_and_end_percent_select_the_steps_by_noise_level(cn_executor, pipeline, sd1_references, monkeypatch):
    # On the "normal" schedule (timesteps 999 - 111 i) 20%..70% is timesteps 799.2..299.7: steps 2-6,
    # which diffusers' step fractions 0.2..0.7 also keep.
    assert active_steps("normal", 0.2, 0.7) == [2, 3, 4, 5, 6]
    document = sd1_document([{"name": CANNY, "image": "edges.png", "start_percent": 0.2, "end_percent": 0.7}])
    calls: list[float] = []
    forward = ControlNet.forward

    def counting(self, x, hint, timesteps, *args, **kwargs):
        calls.append(float(torch.as_tensor(timesteps).reshape(-1)[0]))
        return forward(self, x, hint, timesteps, *args, **kwargs)

    monkeypatch.setattr(ControlNet, "forward", counting)
    ours, (hint,) = run_ours_sd1(cn_executor, document, hints=1)
    schedule = scaled_linear_noise_schedule(0.00085, 0.012, 1000)
    timesteps = schedule.sigma_to_t(sigmas_for("normal", schedule, STEPS)[:-1]).tolist()
    assert [round(t, 3) for t in calls] == [round(timesteps[i], 3) for i in (2, 3, 4, 5, 6)]  # one batched call per step
    pipe = controlnet_pipe(pipeline, sd1_references[CANNY])
    start, end = diffusers_range([2, 3, 4, 5, 6])
    theirs = run_pipe(pipe, euler, ours, image=as_hint(hint), control_guidance_start=start, control_guidance_end=end)
    assert_match(ours, theirs, "start 0.2 / end 0.7")
    assert_mismatch(ours, run_pipe(pipe, euler, ours, image=as_hint(hint)), "start 0.2 / end 0.7 vs always")

    # Karras sigmas crowd at low noise: the same percents are other steps than the step fractions.
    calls.clear()
    karras = sd1_document([{"name": CANNY, "image": "edges.png", "start_percent": 0.2, "end_percent": 0.7}],
                          "euler", "karras")
    run(cn_executor, karras, ["sampler"])
    expected = active_steps("karras", 0.2, 0.7)
    assert expected == [3, 4, 5]  # not 2-6, what the step fractions would give
    karras_t = schedule.sigma_to_t(sigmas_for("karras", schedule, STEPS)[:-1]).tolist()
    assert [round(t, 3) for t in calls] == [round(karras_t[i], 3) for i in expected]


def test_percent_to_sigma_is_comfyuis_rule():
    schedule = scaled_linear_noise_schedule(0.00085, 0.012, 1000)
    assert percent_to_sigma(schedule, 0.0) == math.inf and percent_to_sigma(schedule, -1) == math.inf
    assert percent_to_sigma(schedule, 1.0) == 0.0
    # Independently: sigmas of SD's betas; p -> timestep (1 - p) * 999, log-sigma interpolated.
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    log_sigmas = np.log(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
    for p in (0.001, 0.2, 0.5, 0.7, 0.999):
        t = (1 - p) * 999
        low, w = int(np.floor(t)), t - np.floor(t)
        expected = math.exp((1 - w) * log_sigmas[low] + w * log_sigmas[min(low + 1, 999)])
        assert percent_to_sigma(schedule, p) == pytest.approx(expected, rel=1e-9)
    assert percent_to_sigma(schedule, 0.5) == pytest.approx(float(schedule.t_to_sigma(torch.tensor(499.5))))


def test_two_stacked_controlnets_equal_diffusers_multicontrolnet(cn_executor, pipeline, sd1_references):
    controls = [{"name": CANNY, "image": "edges.png", "strength": 0.8},
                {"name": PREFIXED, "image": "depth.png", "strength": 1.3}]
    ours, hints = run_ours_sd1(cn_executor, sd1_document(controls), hints=2)
    pipe = controlnet_pipe(pipeline, [sd1_references[CANNY], sd1_references[PREFIXED]])
    theirs = run_pipe(pipe, euler, ours, image=[as_hint(h) for h in hints], controlnet_conditioning_scale=[0.8, 1.3])
    assert_match(ours, theirs, "two ControlNets stacked")
    # Each counts: the first one alone is far off.
    alone = run_ours_sd1(cn_executor, sd1_document(controls[:1]))[0]
    assert_mismatch(alone, theirs, "the second ControlNet dropped")
    values = run(cn_executor, sd1_document(controls), ["apply1"])
    entry = values["apply1"]["positive"].entries[0]
    assert [a.controlnet.source for a in entry.control] == [CANNY, PREFIXED]
    assert values["apply1"]["negative"].entries[0].control == entry.control  # the same applications on both sides


# ---------------------------------------------------------------------------------------------
# SDXL (diffusers-layout ControlNet) against StableDiffusionXLControlNetPipeline


def test_sdxl_txt2img_with_a_diffusers_layout_controlnet_matches_the_diffusers_pipeline(
        family_executor, controlnet_files, base_pipe):
    install(family_executor, controlnet_files)
    save_input(family_executor, "edges.png", edge_map(xl.WIDTH, xl.HEIGHT, seed=2))
    case = xl.CASES["euler-normal"]
    document = with_controls(xl.txt2img_document(case), [{"name": SDXL_CN, "image": "edges.png"}], positive="size")
    ours, values = xl.run_ours(family_executor, document, case, extra_outputs=("hint0", "cn0"))
    assert values["cn0"]["controlnet"].family.label == "Stable Diffusion XL"
    reference = ControlNetModel(**controlnet_diffusers_config(TINY_SDXL_UNET, **sdxl_overrides(TINY_SDXL_UNET)))
    reference.load_state_dict(load_file(controlnet_files[SDXL_CN]), strict=True)
    pipe = StableDiffusionXLControlNetPipeline(
        vae=base_pipe.vae, text_encoder=base_pipe.text_encoder, text_encoder_2=base_pipe.text_encoder_2,
        tokenizer=base_pipe.tokenizer, tokenizer_2=base_pipe.tokenizer_2, unet=base_pipe.unet,
        controlnet=reference.eval(), scheduler=euler(), force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    hint = as_hint(values["hint0"]["image"])
    theirs, _ = xl.call_pipe(pipe, case.make_scheduler(), image=hint, negative_prompt=xl.NEGATIVE, height=xl.HEIGHT,
                             width=xl.WIDTH, latents=xl.starting_latents(case, ours), **xl.SIZE_KWARGS)
    assert_match(ours, theirs, "SDXL with a ControlNet")
    plain, _ = xl.run_ours(family_executor, xl.txt2img_document(case), case)
    assert_mismatch(plain, theirs, "SDXL without the ControlNet")


# ---------------------------------------------------------------------------------------------
# Batches and prompts: which rows get which control


def conditioning(embedding: torch.Tensor, control: tuple = ()) -> Conditioning:
    return Conditioning((ConditioningEntry(embedding, control=control),))


def handle(model: ControlNet, name: str = "tiny.safetensors") -> ControlNetHandle:
    return ControlNetHandle(model, name)


def model_of(loaded):
    from latentgraph.nodes.sd.handles import DiffusionModel

    family = loaded.family
    return DiffusionModel(loaded.unet, family.spec, family.spec.schedule.build(), family.prediction_type,
                          family.latent_channels, "tiny-sd15.safetensors")


def test_each_prompt_gets_its_own_control_in_the_batched_call(tiny_sd15):
    """Positive with a ControlNet, negative without, in ONE batched U-Net call: each side as if alone."""
    model = model_of(tiny_sd15)
    generator = torch.Generator().manual_seed(11)
    net = build_tiny_controlnet(TINY_UNET, seed=12)
    image = torch.rand(1, 48, 64, 3, generator=generator)
    pos, neg = torch.randn(1, 77, 64, generator=generator), torch.randn(1, 77, 64, generator=generator)
    application = ControlApplication(handle(net), image, 0.9)
    x = torch.randn(1, 4, 6, 8, generator=generator) * 5
    sigma = torch.tensor([3.0])
    with torch.no_grad():
        guided = guided_model(model, conditioning(pos, (application,)), conditioning(neg), 6.0, (64, 48))(x, sigma)
        c_in = 1 / (sigma**2 + 1).sqrt()
        t = model.schedule.sigma_to_t(sigma)
        residuals = [r * 0.9 for r in net(x * c_in, image.movedim(-1, 1), t, pos)]
        eps_pos = model.unet(x * c_in, t, pos, control=residuals)
        eps_neg = model.unet(x * c_in, t, neg)
        expected = (x - sigma * eps_neg) + 6.0 * ((x - sigma * eps_pos) - (x - sigma * eps_neg))
    assert relative(guided, expected) <= 1e-5
    # With the control on both sides the negative changes too.
    with torch.no_grad():
        both = guided_model(model, conditioning(pos, (application,)), conditioning(neg, (application,)), 6.0,
                            (64, 48))(x, sigma)
    assert relative(both, expected) > 1e-3


def test_hint_batches_one_image_for_all_or_one_per_latent(tiny_sd15):
    model = model_of(tiny_sd15)
    generator = torch.Generator().manual_seed(13)
    net = build_tiny_controlnet(TINY_UNET, seed=14)
    images = torch.rand(2, 64, 64, 3, generator=generator)
    pos, neg = torch.randn(1, 77, 64, generator=generator), torch.randn(1, 77, 64, generator=generator)
    x = torch.randn(2, 4, 8, 8, generator=generator) * 5
    sigma = torch.tensor([2.0, 2.0])

    def denoise(hint: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        application = ControlApplication(handle(net), hint)
        with torch.no_grad():
            return guided_model(model, conditioning(pos, (application,)), conditioning(neg, (application,)), 5.0,
                                (64, 64))(latents, sigma[: latents.shape[0]])

    per_image = denoise(images, x)
    for i in range(2):
        assert relative(per_image[i:i + 1], denoise(images[i:i + 1], x[i:i + 1])) <= 1e-5
    shared = denoise(images[:1], x)
    assert relative(shared[1:], denoise(images[:1], x[1:])) <= 1e-5
    assert relative(shared[1:], per_image[1:]) > 1e-3
    with pytest.raises(ValueError, match="hint image batch is 3 but the latent batch is 2"):
        denoise(torch.rand(3, 64, 64, 3), x)


def test_a_hint_of_another_size_is_center_cropped_and_resized_nearest():
    image = torch.arange(6 * 10, dtype=torch.float32).reshape(1, 6, 10, 1).expand(1, 6, 10, 3) / 60
    fitted = fit_hint(image, 6, 6)  # 10 wide -> the middle 6 columns, then as is
    assert fitted.shape == (1, 3, 6, 6)
    assert torch.equal(fitted[0, 0], image[0, :, 2:8, 0])
    doubled = fit_hint(image, 20, 12)  # same aspect: nearest-neighbour 2x
    assert torch.equal(doubled[0, 0], image[0, :, :, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    tall = fit_hint(image, 5, 6)  # 10 x 6 -> crop to 5 x 6, top/bottom kept
    assert torch.equal(tall[0, 0], image[0, :, 2:7, 0])


def test_a_hint_image_of_another_size_runs(cn_executor):
    save_input(cn_executor, "wide.png", edge_map(200, 100, seed=5))
    document = sd1_document([{"name": CANNY, "image": "wide.png"}], **{"sampler.steps": 2, "latent.width": 64,
                                                                        "latent.height": 64})
    assert run(cn_executor, document, ["sampler"])["sampler"]["latent"].samples.shape == (1, 4, 8, 8)


# ---------------------------------------------------------------------------------------------
# Errors


def test_a_controlnet_of_another_family_is_refused_when_applied(cn_executor, controlnet_files):
    node, message = failure(cn_executor, sd1_document([{"name": SDXL_CN, "image": "edges.png"}]), ["sampler"])
    assert node == "apply0"
    assert message == (f"the positive prompt is 64 channels wide but the ControlNet {SDXL_CN} (Stable Diffusion XL) "
                       "reads 192: use a ControlNet made for the checkpoint's family")


def test_a_controlnet_of_another_family_is_refused_at_sampling(family_executor, controlnet_files):
    # The tiny SD1.x and SD2.x models both read 64-wide text, so only the sampler can tell.
    install(family_executor, controlnet_files)
    save_input(family_executor, "edges.png", edge_map(64, 64, seed=1))
    document = json.loads((ROOT / "workflows" / "sd2_txt2img.json").read_text())
    document["nodes"]["latent"]["inputs"].update(width=64, height=64)
    document["nodes"]["sampler"]["inputs"]["steps"] = 2
    node, message = failure(family_executor, with_controls(document, [{"name": CANNY, "image": "edges.png"}]), ["sampler"])
    assert node == "sampler"
    assert message == (
        f"the ControlNet {CANNY} (Stable Diffusion 1.x) does not fit the model {SD2_NAME} (Stable Diffusion 2.x): "
        "its blocks are 32 x [1, 2] channels with 1 per level, the model's 64 x [1, 2] with 1. "
        "Use a ControlNet made for Stable Diffusion 2.x")


def test_bad_apply_inputs_are_named(cn_executor):
    node, message = failure(cn_executor, sd1_document([{"name": CANNY, "image": "edges.png", "start_percent": 0.8,
                                                        "end_percent": 0.3}]), ["sampler"])
    assert (node, message) == ("apply0", "start_percent (0.8) is after end_percent (0.3): the ControlNet would never act")
    # A name that climbs out of the controlnet folder is refused before anything is read.
    with pytest.raises(ValueError, match="'..' and '.' are not allowed"):
        cn_executor.services.folders.model_path("controlnet", "../checkpoints/latentgraph-demo.safetensors")


def test_bf16_on_the_cpu_runs_the_controlnet_in_bf16(sd_folders, controlnet_files):
    import latentgraph.nodes.library  # noqa: F401
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.services import Services

    results = {}
    for precision in ("fp32", "bf16"):
        services = Services(folders=sd_folders, device="cpu", precision=precision)
        executor = Executor(registry, OutputCache(1 << 30), services=services, events=EventBus())
        install(executor, controlnet_files)
        save_input(executor, "edges.png", edge_map(64, 64, seed=1))
        document = sd1_document([{"name": CANNY, "image": "edges.png"}], **{"latent.width": 64, "latent.height": 64,
                                                                           "sampler.steps": 3})
        values = run(executor, document, ["cn0", "sampler"])
        assert values["cn0"]["controlnet"].model.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        results[precision] = values["sampler"]["latent"].samples
    error = relative(results["bf16"], results["fp32"])
    assert 0 < error < 0.1, error  # bf16's rounding, not another result


# ---------------------------------------------------------------------------------------------
# Memory and cancelling


def test_the_memory_estimate_counts_the_controlnet():
    config = build_tiny_controlnet(TINY_UNET).config
    # Residuals of a 16x16 latent: 32 x 256 (stem), 32 x 256 (level 0), 32 x 64 (down), 64 x 64
    # (level 1), 64 x 64 (middle) = 26,624 elements; twice, batch 2, float32. The hint encoder at
    # 128x128: 3 x 16 x 16,384 elements, float32, and its output 32 x 256.
    expected = 2 * 2 * 4 * 26_624 + 3 * 16 * 128 * 128 * 4 + 32 * 256 * 4
    assert control_memory([config], 2, 16, 16, 4) == expected
    without = sampling_memory(TINY_UNET, 1, 4, 16, 16, 4, guided=True)
    assert sampling_memory(TINY_UNET, 1, 4, 16, 16, 4, guided=True, controlnets=[config]) == without + expected


def test_cancel_points_inside_the_controlnet():
    net = build_tiny_controlnet(TINY_UNET, seed=15)
    calls = []

    class Stop(Exception):
        pass

    def check() -> None:
        calls.append(1)
        if len(calls) == 20:
            raise Stop

    with cancel_points(check), pytest.raises(Stop), torch.no_grad():
        net(torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64), torch.tensor([10.0]), torch.randn(1, 77, 64))
    assert len(calls) == 20
    with cancel_points(lambda: calls.append(1)), torch.no_grad():
        calls.clear()
        net.embed_hint(torch.rand(1, 3, 64, 64))
    assert len(calls) == len(net.input_hint_block)  # one before every layer of the hint encoder


# ---------------------------------------------------------------------------------------------
# The shipped workflow


def test_the_controlnet_canny_workflow_runs_with_tiny_models(cn_executor, tiny_sd15_checkpoint):
    from test_sd_nodes import load

    os.link(tiny_sd15_checkpoint, cn_executor.services.folders.models / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[16:48, 16:48] = (200, 40, 40)  # a red square: four edges for canny
    save_input(cn_executor, "example.png", picture)
    document = load("controlnet_canny.json", **{"latent.width": 64, "latent.height": 64, "sampler.steps": 3})
    nodes = document["nodes"]
    assert (nodes["checkpoint"]["inputs"]["checkpoint"], nodes["controlnet"]["inputs"]["controlnet_name"]) == (
        "v1-5-pruned-emaonly.safetensors", CANNY)
    assert nodes["apply"]["inputs"]["image"] == link("canny", "image")
    result = cn_executor.run(document)
    assert result.ok, result.errors
    assert result.results["save"]["images"][0]["filename"] == "controlnet_canny_00001_.png"
    values = run(cn_executor, document, ["canny", "sampler"])
    edges = values["canny"]["image"]
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[0, 32, 14:18, 0].max() == 1.0 and edges[0, 32, 24:40].max() == 0.0  # the square's side, not its inside
    # The ControlNet acts: at strength 0 the sampler's result differs.
    document["nodes"]["apply"]["inputs"]["strength"] = 0.0
    off = run(cn_executor, document, ["sampler"])["sampler"]["latent"].samples
    assert (off - values["sampler"]["latent"].samples).abs().max() > 1e-2


def test_the_controlnet_canny_workflow_validates(cn_executor, tiny_sd15_checkpoint):
    from latentgraph.engine import Workflow, find_issues
    from test_sd_nodes import load

    os.link(tiny_sd15_checkpoint, cn_executor.services.folders.models / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    save_input(cn_executor, "example.png", edge_map(64, 64, seed=3))
    workflow = Workflow.model_validate(load("controlnet_canny.json"))
    _, issues = find_issues(workflow, cn_executor.registry, services=cn_executor.services)
    assert issues == []
