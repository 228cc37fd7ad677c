"""Upscale models (nodes/sd/upscale.py, nodes/upscale.py): files in every key layout people download
load into the right architecture and scale; the forward pass equals a plain reference of each
architecture written here with torch's functional ops (from the papers' / BasicSR's description,
not from our modules); tiled equals untiled; other files are refused with what they look like;
pickles only when allowed; the nodes and workflows/upscale.json through the executor.

The test files are written from BasicSR-named state dicts of seeded random weights (every tensor,
biases and PReLU slopes included, differs, so a mix-up of two keys shows), converted here to the
other layouts by their published naming rules: xinntao/ESRGAN's RRDB_trunk names, and the original
`model.N` positions of one flattened nn.Sequential (conv_first, the trunk as model.1.sub, then per
x2 stage Upsample/conv/LeakyReLU, conv_hr, LeakyReLU, conv_last). Widths are the real models'
(64 features, 32 grow channels) except where a test checks that other widths are read from shapes;
block counts are small (the real 23 would only make the tests slower), except anime_6B's 6.

Observed max |tiled - untiled| with margins covering the receptive field: 0 to 1e-6.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from latentgraph.engine import CancelToken, WorkflowInvalid
from latentgraph.nodes.sd.checkpoint import CheckpointError
from latentgraph.nodes.sd.upscale import (
    DEFAULT_MAX_MARGIN,
    CompactConfig,
    RRDBConfig,
    UpscaleModelError,
    default_margin,
    load_upscale_model,
    tile_for_memory,
    tile_memory,
    upscale,
)

ROOT = Path(__file__).resolve().parents[1]


# --- state dicts in BasicSR's names, and the other layouts ----------------------------------------


def _conv(state: dict, name: str, out_ch: int, in_ch: int, gen: torch.Generator) -> None:
    # Kaiming-scaled, so activations stay of order one through a few blocks; biases perturbed.
    state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * math.sqrt(2 / (9 * in_ch))
    state[f"{name}.bias"] = torch.randn(out_ch, generator=gen) * 0.05


def rrdb_state(blocks: int, upsamples: int = 2, unshuffle: int = 1, features: int = 64, grow: int = 32,
               channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "conv_first", features, channels * unshuffle**2, gen)
    for i in range(blocks):
        for j in (1, 2, 3):
            for k in range(1, 6):
                _conv(state, f"body.{i}.rdb{j}.conv{k}", features if k == 5 else grow, features + (k - 1) * grow, gen)
    _conv(state, "conv_body", features, features, gen)
    for k in range(1, upsamples + 1):
        _conv(state, f"conv_up{k}", features, features, gen)
    _conv(state, "conv_hr", features, features, gen)
    _conv(state, "conv_last", channels, features, gen)
    return state


def to_trunk_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """xinntao/ESRGAN's later names (BSRGAN, RealSR files)."""
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "body":
            key = f"RRDB_trunk.{parts[1]}.RDB{parts[2][3:]}.{parts[3]}.{parts[4]}"
        elif parts[0] == "conv_body":
            key = f"trunk_conv.{parts[1]}"
        elif parts[0].startswith("conv_up"):
            key = f"upconv{parts[0][7:]}.{parts[1]}"
        elif parts[0] == "conv_hr":
            key = f"HRconv.{parts[1]}"
        renamed[key] = tensor
    return renamed


def to_old_layout(state: dict[str, torch.Tensor], blocks: int, upsamples: int) -> dict[str, torch.Tensor]:
    """The original ESRGAN layout: positions in one flattened nn.Sequential."""
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        leaf = parts[-1]
        if parts[0] == "conv_first":
            key = f"model.0.{leaf}"
        elif parts[0] == "body":
            key = f"model.1.sub.{parts[1]}.RDB{parts[2][3:]}.{parts[3]}.0.{leaf}"
        elif parts[0] == "conv_body":
            key = f"model.1.sub.{blocks}.{leaf}"
        elif parts[0].startswith("conv_up"):
            key = f"model.{3 * int(parts[0][7:])}.{leaf}"
        elif parts[0] == "conv_hr":
            key = f"model.{3 * upsamples + 2}.{leaf}"
        elif parts[0] == "conv_last":
            key = f"model.{3 * upsamples + 4}.{leaf}"
        renamed[key] = tensor
    return renamed


def compact_state(convs: int, scale: int = 4, features: int = 64, channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "body.0", features, channels, gen)
    for index in range(1, 2 * convs + 2, 2):
        state[f"body.{index}.weight"] = 0.25 + 0.1 * torch.randn(features, generator=gen)  # PReLU slopes
        if index + 1 <= 2 * convs:
            _conv(state, f"body.{index + 1}", features, features, gen)
    _conv(state, f"body.{2 * convs + 2}", channels * scale * scale, features, gen)
    return state


# --- plain references, written from the architectures' descriptions -------------------------------


def reference_rrdb(state: dict[str, torch.Tensor], x: torch.Tensor, unshuffle: int = 1) -> torch.Tensor:
    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.2)

    blocks = len({key.split(".")[1] for key in state if key.startswith("body.")})
    upsamples = len({key.split(".")[0] for key in state if key.startswith("conv_up")})
    if unshuffle > 1:
        x = F.pixel_unshuffle(x, unshuffle)
    first = conv("conv_first", x)
    h = first
    for i in range(blocks):
        block_input = h
        for j in (1, 2, 3):
            prefix = f"body.{i}.rdb{j}"
            outs = [h]
            for k in (1, 2, 3, 4):
                outs.append(lrelu(conv(f"{prefix}.conv{k}", torch.cat(outs, 1))))
            h = conv(f"{prefix}.conv5", torch.cat(outs, 1)) * 0.2 + h
        h = h * 0.2 + block_input
    feat = first + conv("conv_body", h)
    for k in range(1, upsamples + 1):
        feat = lrelu(conv(f"conv_up{k}", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


def reference_compact(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    last = max(int(key.split(".")[1]) for key in state)
    out = x
    for index in range(last + 1):
        if index % 2 == 0:
            out = F.conv2d(out, state[f"body.{index}.weight"], state[f"body.{index}.bias"], padding=1)
        else:
            out = F.prelu(out, state[f"body.{index}.weight"])
    return F.pixel_shuffle(out, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


# --- the files ------------------------------------------------------------------------------------


def write(path: Path, state: dict[str, torch.Tensor], wrapper: str | None = None) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state} if wrapper else state, path)
    return path


# name: (file name, layout writer, BasicSR-named state, pickle wrapper, expected description)
CASES = {
    "ultrasharp_old_x4": dict(file="4x-UltraSharp.pth", layout="old", blocks=2, upsamples=2, unshuffle=1, scale=4,
                              describe="RRDBNet x4 (2 blocks, 64 features, 32 grow channels; ESRGAN model.N keys)"),
    "old_x2": dict(file="2x-old.safetensors", layout="old", blocks=1, upsamples=1, unshuffle=1, scale=2,
                   describe="RRDBNet x2 (1 blocks, 64 features, 32 grow channels; ESRGAN model.N keys)"),
    "old_x1": dict(file="1x-restore.safetensors", layout="old", blocks=1, upsamples=0, unshuffle=1, scale=1,
                   describe="RRDBNet x1 (1 blocks, 64 features, 32 grow channels; ESRGAN model.N keys)"),
    "old_x8": dict(file="8x-old.safetensors", layout="old", blocks=1, upsamples=3, unshuffle=1, scale=8, features=32,
                   grow=16, describe="RRDBNet x8 (1 blocks, 32 features, 16 grow channels; ESRGAN model.N keys)"),
    "bsrgan_trunk_x4": dict(file="BSRGAN.safetensors", layout="trunk", blocks=2, upsamples=2, unshuffle=1, scale=4,
                            features=48, grow=16,
                            describe="RRDBNet x4 (2 blocks, 48 features, 16 grow channels; ESRGAN RRDB_trunk keys)"),
    "x4plus": dict(file="RealESRGAN_x4plus.pth", layout="basicsr", wrapper="params_ema", blocks=2, upsamples=2,
                   unshuffle=1, scale=4,
                   describe="RRDBNet x4 (2 blocks, 64 features, 32 grow channels; BasicSR keys)"),
    "anime_6b": dict(file="RealESRGAN_x4plus_anime_6B.safetensors", layout="basicsr", blocks=6, upsamples=2,
                     unshuffle=1, scale=4,
                     describe="RRDBNet x4 (6 blocks, 64 features, 32 grow channels; BasicSR keys)"),
    "x2plus": dict(file="RealESRGAN_x2plus.pth", layout="basicsr", wrapper="params", blocks=1, upsamples=2,
                   unshuffle=2, scale=2, describe="RRDBNet x2 (1 blocks, 64 features, 32 grow channels, input "
                                                   "pixel-unshuffled by 2; BasicSR keys)"),
    "x1_unshuffle": dict(file="1x-realesrgan.safetensors", layout="basicsr", blocks=1, upsamples=2, unshuffle=4,
                         scale=1, describe="RRDBNet x1 (1 blocks, 64 features, 32 grow channels, input "
                                           "pixel-unshuffled by 4; BasicSR keys)"),
    "general_x4v3": dict(file="realesr-general-x4v3.pth", layout="compact", wrapper="params", convs=6, scale=4,
                         describe="SRVGGNetCompact x4 (6 convolutions, 64 features)"),
    "compact_x2": dict(file="2x-compact.safetensors", layout="compact", convs=3, scale=2, features=32,
                       describe="SRVGGNetCompact x2 (3 convolutions, 32 features)"),
}


def case_state(case: dict) -> dict[str, torch.Tensor]:
    """The case's weights in BasicSR / Real-ESRGAN names (what the references read)."""
    seed = sorted(CASES).index(next(k for k, v in CASES.items() if v is case))
    if case["layout"] == "compact":
        return compact_state(case["convs"], case["scale"], case.get("features", 64), seed=seed)
    return rrdb_state(case["blocks"], case["upsamples"], case["unshuffle"], case.get("features", 64),
                      case.get("grow", 32), seed=seed)


def write_case(folder: Path, name: str) -> Path:
    case = CASES[name]
    state = case_state(case)
    if case["layout"] == "old":
        state = to_old_layout(state, case["blocks"], case["upsamples"])
    elif case["layout"] == "trunk":
        state = to_trunk_layout(state)
    return write(folder / case["file"], state, case.get("wrapper"))


def reference(name: str, x: torch.Tensor) -> torch.Tensor:
    case = CASES[name]
    state = case_state(case)
    if case["layout"] == "compact":
        return reference_compact(state, x, case["scale"])
    return reference_rrdb(state, x, case["unshuffle"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upscale_models")
    return {name: write_case(folder, name) for name in CASES}


@pytest.fixture(scope="module")
def models(files) -> dict:
    return {name: load_upscale_model(path, allow_pickle=True) for name, path in files.items()}


def picture(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth image with edges (a batch of one, channels first, in [0, 1])."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, height // 6), max(2, width // 6), generator=gen)
    image = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    image[:, :, height // 3 : height // 2] = torch.rand(1, 3, 1, 1, generator=gen)
    return image.clamp(0, 1)


# --- loading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_layout_loads_into_its_architecture_with_the_scale_read_from_the_weights(models, name):
    case, model = CASES[name], models[name]
    assert model.scale == case["scale"]
    assert model.describe() == case["describe"]
    assert model.source == case["file"]
    if case["layout"] == "compact":
        assert model.architecture == "SRVGGNetCompact"
        assert model.config == CompactConfig(3, case.get("features", 64), case["convs"], case["scale"])
    else:
        assert model.architecture == "RRDBNet"
        assert model.config == RRDBConfig(3, 3, case.get("features", 64), case["blocks"], case.get("grow", 32),
                                          case["upsamples"], case["unshuffle"])
        assert model.multiple == case["unshuffle"]
    assert all(not p.requires_grad for p in model.model.parameters())
    assert model.dtype == torch.float32 and model.device.type == "cpu"


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_forward_pass_equals_the_plain_reference(models, name):
    model, scale = models[name], CASES[name]["scale"]
    x = picture(24, 20, seed=1)
    expected = reference(name, x)
    with torch.inference_mode():
        ours = model.model(x)
    assert ours.shape == (1, 3, 24 * scale, 20 * scale)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5), (ours - expected).abs().max()
    # The model does something beyond enlarging: far from a nearest-neighbour enlargement.
    assert (ours - F.interpolate(x, scale_factor=scale)).abs().mean() > 0.05


def test_a_half_precision_file_loads_upcast_to_float32_on_the_cpu(tmp_path):
    state = {k: v.half() for k, v in compact_state(2).items()}
    model = load_upscale_model(write(tmp_path / "half.safetensors", state))
    assert model.dtype == torch.float32
    x = picture(8, 8)
    with torch.inference_mode():
        assert torch.allclose(model.model(x), reference_compact({k: v.float() for k, v in state.items()}, x, 4), atol=1e-5)


def test_a_dataparallel_module_prefix_is_read_through(tmp_path):
    state = {f"module.{k}": v for k, v in rrdb_state(1).items()}
    model = load_upscale_model(write(tmp_path / "wrapped.safetensors", state))
    assert model.config == RRDBConfig(blocks=1)


def test_receptive_fields_of_the_released_models():
    assert RRDBConfig().receptive_field == 351  # RealESRGAN_x4plus, 4x-UltraSharp
    assert RRDBConfig(blocks=6).receptive_field == 96  # anime_6B
    assert RRDBConfig(unshuffle=2).receptive_field == 702  # RealESRGAN_x2plus (counted in input pixels)
    assert CompactConfig(convs=32).receptive_field == 34  # realesr-general-x4v3
    assert CompactConfig(convs=16).receptive_field == 18  # realesr-animevideov3


@pytest.mark.parametrize("name", ["old_x1", "old_x2", "x2plus", "x1_unshuffle", "x4plus", "general_x4v3"])
def test_a_pixel_reaches_no_further_than_the_receptive_field(models, name):
    """Change one input pixel: no output pixel further than the receptive field (in input pixels)
    changes, so a margin of that size makes tiles exact; and pixels almost that far do change (the
    count rounds the upsampling convolutions' reach up to whole trunk pixels)."""
    model = models[name]
    radius, scale = model.receptive_field, model.scale
    side = 2 * radius + 24
    x = picture(side, side, seed=2)
    changed = x.clone()
    changed[:, :, side // 2, side // 2] += 0.5
    with torch.inference_mode():
        difference = (model.model(changed) - model.model(x)).abs().amax(dim=(0, 1))
    ys, xs = torch.nonzero(difference > 0, as_tuple=True)
    assert len(ys) > 0
    # an output pixel at (y, x) comes from input pixel (y // scale, x // scale)
    reach = max((ys // scale - side // 2).abs().max().item(), (xs // scale - side // 2).abs().max().item())
    assert radius - 2 * model.multiple - 1 <= reach <= radius


# --- tiles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ultrasharp_old_x4", "x2plus", "x1_unshuffle", "general_x4v3", "old_x1"])
def test_tiled_equals_untiled_when_the_margin_covers_the_receptive_field(models, name):
    model = models[name]
    x = torch.cat([picture(45, 38, seed=3), picture(45, 38, seed=4)])  # sides not multiples of the tile nor of 4
    whole = upscale(model, x)
    assert whole.shape == (2, 3, 45 * model.scale, 38 * model.scale)
    steps = []
    tiled = upscale(model, x, tile=16, margin=model.receptive_field, progress=lambda d, t: steps.append((d, t)))
    assert (tiled - whole).abs().max() <= 1e-4 * whole.abs().max()
    assert len(steps) > 4 and steps[-1] == (len(steps), len(steps))
    # Without a margin the tiles' edges show: the margin is what makes them agree.
    bare = upscale(model, x, tile=16, margin=0)
    assert (bare - whole).abs().max() > 1e-2


def test_unshuffled_models_pad_odd_sizes_by_reflection_like_real_esrgan(models):
    model = models["x2plus"]
    x = picture(13, 10, seed=5)
    padded = F.pad(x, (0, 0, 0, 1), mode="reflect")  # 14 x 10: a multiple of 2
    expected = reference("x2plus", padded)[:, :, : 13 * 2, : 10 * 2]
    assert torch.allclose(upscale(model, x), expected, atol=1e-5)
    assert torch.allclose(upscale(model, x, tile=6, margin=model.receptive_field), expected, atol=1e-4)


def test_the_default_margin_is_the_receptive_field_up_to_its_cap(models):
    assert default_margin(models["general_x4v3"]) == 8  # 6 + 2 convolutions
    assert default_margin(models["ultrasharp_old_x4"]) == 36  # 2 blocks
    assert default_margin(models["anime_6b"]) == DEFAULT_MAX_MARGIN == 40  # 96, capped
    assert default_margin(models["x1_unshuffle"]) == 40  # on the 4-pixel grid
    model = models["anime_6b"]
    x = picture(40, 40, seed=6)
    whole = upscale(model, x)
    assert (upscale(model, x, tile=16) - whole).abs().max() <= 1e-4 * whole.abs().max()


def test_the_tile_chosen_for_a_memory_budget_fits_it(models):
    model = models["x4plus"]
    margin = default_margin(model)
    small = tile_for_memory(model, 256 << 20, margin, 1024, 1024)
    large = tile_for_memory(model, 1 << 30, margin, 1024, 1024)
    assert 32 <= small < large and small % 8 == 0 and large % 8 == 0
    assert tile_memory(model, small, margin, 1024, 1024) <= 256 << 20 < tile_memory(model, small + 8, margin, 1024, 1024)
    assert tile_for_memory(model, 1 << 40, margin, 100, 60) == 104  # the whole image
    assert tile_for_memory(model, 1, margin, 1024, 1024) == 32  # never below the minimum


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_tiles_give_the_cpu_result_in_fp32_and_near_it_in_fp16(files):
    cpu = load_upscale_model(files["anime_6b"])
    x = torch.cat([picture(40, 36, seed=7), picture(40, 36, seed=8)])
    expected = upscale(cpu, x)
    top = expected.abs().max()
    full = load_upscale_model(files["anime_6b"], "cuda", torch.float32)
    half = load_upscale_model(files["anime_6b"], "cuda")
    assert (full.dtype, half.dtype, half.device.type) == (torch.float32, torch.float16, "cuda")
    tiled = upscale(full, x.cuda(), tile=16, margin=full.receptive_field)
    assert tiled.device.type == "cpu" and tiled.dtype == torch.float32
    assert (tiled - expected).abs().max() <= 5e-3 * top  # cuDNN may run fp32 convolutions in TF32
    assert (upscale(half, x, tile=16) - expected).abs().max() <= 3e-2 * top


# --- refusals ---------------------------------------------------------------------------------------


def keys_file(tmp_path: Path, name: str, keys: list[str]) -> Path:
    return write(tmp_path / name, {key: torch.zeros(2, 2) for key in keys})


FOREIGN = {
    "swinir.safetensors": (["conv_first.weight", "patch_embed.norm.weight", "layers.0.residual_group.blocks.0.norm1.weight",
                            "conv_last.weight"], "looks like a SwinIR or Swin2SR transformer upscaler"),
    "hat.safetensors": (["relative_position_index_SA", "conv_first.weight", "layers.0.residual_group.blocks.0.norm1.weight"],
                        "looks like a HAT or ATD transformer upscaler"),
    "dat.safetensors": (["conv_first.weight", "before_RG.1.weight", "layers.0.blocks.0.norm1.weight"],
                        "looks like a DAT transformer upscaler"),
    "span.safetensors": (["conv_1.sk.weight", "block_1.c1_r.sk.weight"], "looks like a SPAN upscaler"),
    "gfpgan.safetensors": (["toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"],
                           "looks like a GFPGAN face restoration model"),
    "esrgan_plus.safetensors": (["model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"],
                                "looks like an ESRGAN+ model"),
    "lora.safetensors": (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "looks like a LoRA"),
    "vae.safetensors": (["encoder.conv_in.weight", "decoder.conv_in.weight"], "looks like a standalone VAE"),
    "random.safetensors": (["alpha.weight", "beta.bias"], "none of its 2 tensors matches a supported upscaler; first keys: "
                                                          "'alpha.weight', 'beta.bias'"),
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_other_files_are_refused_naming_what_they_look_like(tmp_path, name):
    keys, expected = FOREIGN[name]
    with pytest.raises(UpscaleModelError) as error:
        load_upscale_model(keys_file(tmp_path, name, keys))
    message = str(error.value)
    assert message.startswith(f"{name} is not an upscale model Latentgraph can load: ")
    assert expected in message
    assert message.endswith("Supported: ESRGAN / Real-ESRGAN RRDBNet (model.N, RRDB_trunk or BasicSR body.N keys; x1, x2, "
                            "x4, x8) and Real-ESRGAN's compact SRVGGNet (body.N keys with PReLU).")


def test_a_stable_diffusion_checkpoint_is_refused_as_one(tiny_sd15_checkpoint):
    with pytest.raises(UpscaleModelError, match=r"is a Stable Diffusion checkpoint \(model.diffusion_model.\*\); put it "
                                                r"in models/checkpoints"):
        load_upscale_model(tiny_sd15_checkpoint)


def test_a_compact_model_without_prelu_is_refused_with_the_reason(tmp_path):
    state = {k: v for k, v in compact_state(2).items() if k.endswith(".bias") or v.ndim == 4}
    with pytest.raises(UpscaleModelError, match="ReLU or LeakyReLU activations, which its weights cannot tell apart"):
        load_upscale_model(write(tmp_path / "relu.safetensors", state))


def test_a_damaged_file_names_the_missing_and_misshapen_tensors(tmp_path):
    state = rrdb_state(1)
    del state["body.0.rdb2.conv3.bias"]
    state["conv_hr.weight"] = torch.zeros(64, 32, 3, 3)
    with pytest.raises(CheckpointError) as error:
        load_upscale_model(write(tmp_path / "damaged.safetensors", state))
    message = str(error.value)
    assert "damaged.safetensors does not match the model its shapes describe" in message
    assert "1 tensor missing: body.0.rdb2.conv3.bias" in message
    assert "conv_hr.weight [64, 32, 3, 3] (expected [64, 64, 3, 3])" in message


def test_an_old_layout_with_pixel_shuffle_upsampling_is_refused(tmp_path):
    state = to_old_layout(rrdb_state(1, upsamples=1), 1, 1)
    state["model.3.weight"] = torch.zeros(256, 64, 3, 3)
    with pytest.raises(UpscaleModelError, match="model.3 makes 256 channels, not 64: a pixel-shuffle upsampler"):
        load_upscale_model(write(tmp_path / "ps.safetensors", state))


def test_pickle_files_are_refused_unless_allowed_and_then_read_weights_only(tmp_path, files):
    with pytest.raises(CheckpointError, match="RealESRGAN_x4plus.pth is a pickle checkpoint \\(.pth\\). Pickle files can "
                                              "run arbitrary code"):
        load_upscale_model(files["x4plus"])
    assert load_upscale_model(files["x4plus"], allow_pickle=True).scale == 4

    # BasicSR's training saves both; the averaged weights (params_ema) are the ones to use.
    both = tmp_path / "net_g_latest.pth"
    torch.save({"params": compact_state(1, seed=1), "params_ema": compact_state(1, seed=2)}, both)
    x = picture(8, 8)
    with torch.inference_mode():
        ours = load_upscale_model(both, allow_pickle=True).model(x)
    assert torch.allclose(ours, reference_compact(compact_state(1, seed=2), x, 4), atol=1e-5)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"params_ema": compact_state(1), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="holds Python objects other than tensors"):
        load_upscale_model(path, allow_pickle=True)


# --- the nodes --------------------------------------------------------------------------------------


@pytest.fixture
def upscale_executor(sd_executor, files):
    folder = sd_executor.services.folders.models / "upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copy(path, folder / path.name)
    return sd_executor


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def graph(model_name: str, tile_size: int = 0, overlap: int = -1, image_node: dict | None = None) -> dict:
    return {"format": "latentgraph/workflow@1", "nodes": {
        "image": image_node or {"type": "load_image", "inputs": {"image": "small.png"}},
        "loader": {"type": "upscale_model_loader", "inputs": {"model_name": model_name}},
        "upscale": {"type": "image_upscale_with_model", "inputs": {
            "upscale_model": link("loader", "upscale_model"), "image": link("image", "image"),
            "tile_size": tile_size, "overlap": overlap}},
    }}


def save_input(executor, name: str, pixels: np.ndarray) -> torch.Tensor:
    Image.fromarray(pixels).save(executor.services.folders.inputs / name)
    return torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_the_nodes_upscale_an_image_as_the_reference_does(upscale_executor):
    x = save_input(upscale_executor, "small.png", (picture(21, 30).permute(0, 2, 3, 1)[0].numpy() * 255).astype(np.uint8))
    result = upscale_executor.run(graph("RealESRGAN_x4plus_anime_6B.safetensors"), outputs=["loader", "upscale"])
    assert result.status == "succeeded", result.errors
    image = result.values["upscale"]["image"]
    assert image.shape == (1, 84, 120, 3) and image.dtype == torch.float32
    expected = reference("anime_6b", x).clamp(0, 1).permute(0, 2, 3, 1)
    assert (image - expected).abs().max() <= 1e-4
    assert result.results["loader"]["upscale_model"] == {
        "name": "RealESRGAN_x4plus_anime_6B.safetensors", "architecture": "RRDBNet", "scale": 4,
        "description": "RRDBNet x4 (6 blocks, 64 features, 32 grow channels; BasicSR keys)", "receptive_field": 96}
    assert result.results["upscale"]["upscale"] == {"model": "RealESRGAN_x4plus_anime_6B.safetensors", "scale": 4,
                                                    "tile": 30, "margin": 40}


def test_a_tile_size_input_tiles_reports_progress_per_tile_and_matches(upscale_executor):
    x = save_input(upscale_executor, "small.png", (picture(40, 33).permute(0, 2, 3, 1)[0].numpy() * 255).astype(np.uint8))
    seen = []
    upscale_executor.events.subscribe(lambda e: seen.append(e.data) if e.type == "node_progress" else None)
    result = upscale_executor.run(graph("realesr-general-x4v3.pth", tile_size=16), outputs=["upscale"])
    assert result.status == "failed"  # a pickle, and pickles are not allowed by default
    assert result.errors[0].node_id == "loader" and "Pickle files can run arbitrary code" in str(result.errors[0].error)

    upscale_executor.services.allow_pickle = True
    result = upscale_executor.run(graph("realesr-general-x4v3.pth", tile_size=16), outputs=["upscale"])
    assert result.status == "succeeded", result.errors
    assert [(d["node"], d["step"], d["total"]) for d in seen] == [("upscale", i, 9) for i in range(1, 10)]  # 3 x 3 tiles
    expected = reference("general_x4v3", x).clamp(0, 1).permute(0, 2, 3, 1)
    assert (result.values["upscale"]["image"] - expected).abs().max() <= 1e-4


def test_the_loader_keeps_the_model_between_runs(upscale_executor):
    save_input(upscale_executor, "small.png", np.full((8, 8, 3), 128, np.uint8))
    for tile in (0, 8):
        assert upscale_executor.run(graph("2x-compact.safetensors", tile), outputs=["upscale"]).ok
    assert upscale_executor.services.models.loads == 1


def test_a_cancel_stops_between_tiles(upscale_executor):
    save_input(upscale_executor, "small.png", np.full((64, 64, 3), 90, np.uint8))
    token = CancelToken()
    steps = []

    def on_event(event):
        if event.type == "node_progress":
            steps.append(event.data["step"])
            if event.data["step"] == 2:
                token.cancel()

    upscale_executor.events.subscribe(on_event)
    result = upscale_executor.run(graph("2x-compact.safetensors", tile_size=8), outputs=["upscale"], cancel=token)
    assert result.status == "cancelled"
    assert steps == [1, 2]


def test_errors_name_the_node_and_what_is_wrong(upscale_executor, tmp_path):
    save_input(upscale_executor, "small.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(WorkflowInvalid, match="node 'loader' \\(upscale_model_loader\\) input 'model_name' must be one "
                                              "of '1x-realesrgan.safetensors', "):
        upscale_executor.run(graph("missing.safetensors"), outputs=["upscale"])
    folder = upscale_executor.services.folders.models / "upscale_models"
    shutil.copy(keys_file(tmp_path, "swinir.safetensors", FOREIGN["swinir.safetensors"][0]), folder / "swinir.safetensors")
    result = upscale_executor.run(graph("swinir.safetensors"), outputs=["upscale"])
    assert result.status == "failed"
    assert result.errors[0].node_id == "loader"
    assert "looks like a SwinIR or Swin2SR transformer upscaler" in str(result.errors[0].error)

    upscale_executor.services.limits.max_pixels = 60 * 60
    result = upscale_executor.run(graph("RealESRGAN_x4plus_anime_6B.safetensors"), outputs=["upscale"])
    assert (result.errors[0].node_id, str(result.errors[0].error)) == (
        "upscale", "the upscaled image: 64x64 is 4,096 pixels, over the limit of 3,600 (--max-pixels)")


def test_the_shipped_upscale_workflow_runs(sd_executor, files):
    document = json.loads((ROOT / "workflows" / "upscale.json").read_text())
    name = document["nodes"]["upscale_model"]["inputs"]["model_name"]
    assert name == "RealESRGAN_x4plus.safetensors"
    folder = sd_executor.services.folders.models / "upscale_models"
    folder.mkdir(parents=True)
    write_case(folder, "anime_6b").rename(folder / name)  # a small RRDBNet x4 under the workflow's name
    with Image.open(ROOT / "workflows" / "example.png") as example:
        small = example.convert("RGB").resize((32, 24))
    small.save(sd_executor.services.folders.inputs / "example.png")
    result = sd_executor.run(document)
    assert result.ok, result.errors
    saved = result.results["save"]["images"][0]
    with Image.open(sd_executor.services.folders.outputs / saved["filename"]) as png:
        ours = np.asarray(png.convert("RGB")).astype(np.int16)
    x = torch.from_numpy(np.asarray(small).astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = (reference("anime_6b", x).clamp(0, 1) * 255).round().permute(0, 2, 3, 1)[0].numpy().astype(np.int16)
    assert ours.shape == (96, 128, 3)
    assert np.abs(ours - expected).max() <= 1
