"""Stable Diffusion XL, base and refiner: every fact about the family, in one place.

The base conditions on two text encoders, OpenAI's CLIP ViT-L (transformers' layout under
`conditioner.embedders.0.transformer.`) and OpenCLIP ViT-bigG (open_clip's layout under
`conditioner.embedders.1.model.`): their penultimate blocks' outputs WITHOUT the final layer norm,
concatenated along channels (768 + 1280 = 2048). CLIP-L pads prompts with the end token, bigG
with token 0. The U-Net also reads a vector `y` through its `label_emb`: bigG's pooled vector (the
final-normed end token through `text_projection`, 1280) followed by six numbers each embedded as
a 256-wide sinusoid like a timestep: original height and width, crop top and left, target height
and width (2816 in all) — the "micro-conditioning" the model was trained with.

The refiner has bigG alone (under `conditioner.embedders.0.model.`, 1280-wide context) and its
`y` holds the pooled vector, the original size, the crop and an aesthetic score (2560): 6.0 for
the prompt and 2.5 for the negative prompt unless set, as it was trained and as diffusers and
ComfyUI default. Both use their own VAE scaling (0.13025) and preview colours, SD1.x's training
schedule and 64-channel heads; unset sizes are the image's own.
"""

from __future__ import annotations

from typing import Any

import torch

from latentgraph.nodes.sd.families.sd1 import SCHEDULE
from latentgraph.nodes.sd.spec import FamilySpec, LatentFormat, Shapes, TextEncoderSpec
from latentgraph.nodes.sd.unet import timestep_embedding

CONDITIONER_PREFIX = "conditioner.embedders."
SIZE_EMBEDDING = 256  # channels of each embedded number in y

LATENT = LatentFormat(
    channels=4,
    scaling_factor=0.13025,
    # Linear fit from SDXL latents to RGB (as in ComfyUI's latent_formats.SDXL).
    rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    rgb_bias=(0.1084, -0.0175, -0.0011),
    taesd="taesdxl",
)

CLIP_L = TextEncoderSpec(name="clip_l", prefix=CONDITIONER_PREFIX + "0.transformer.text_model.", layout="transformers",
                         layer="penultimate", final_norm=False, pad_token="end", hidden_act="quick_gelu")
CLIP_G = TextEncoderSpec(name="clip_g", prefix=CONDITIONER_PREFIX + "1.model.", layout="open_clip",
                         layer="penultimate", final_norm=False, pad_token="zero", hidden_act="gelu", pooled=True)
REFINER_CLIP_G = TextEncoderSpec(name="clip_g", prefix=CONDITIONER_PREFIX + "0.model.", layout="open_clip",
                                 layer="penultimate", final_norm=False, pad_token="zero", hidden_act="gelu", pooled=True)

SIZE_INPUTS = ("original_width", "original_height", "crop_left", "crop_top", "target_width", "target_height")
REFINER_INPUTS = ("original_width", "original_height", "crop_left", "crop_top", "aesthetic_score")
AESTHETIC_SCORE = {"positive": 6.0, "negative": 2.5}


def _is_xl(shapes: Shapes) -> bool:
    # By the conditioner's keys, not the U-Net's label_emb: SD2.1 unCLIP has a label_emb too.
    return any(k.startswith(CONDITIONER_PREFIX) for k in shapes)


def detect_base(shapes: Shapes) -> bool:
    return _is_xl(shapes) and any(key.startswith(CONDITIONER_PREFIX + "1.") for key in shapes)


def detect_refiner(shapes: Shapes) -> bool:
    return _is_xl(shapes) and not detect_base(shapes)


def _embed(values: list[float], pooled: torch.Tensor | None) -> torch.Tensor:
    if pooled is None:
        raise ValueError("an SDXL prompt needs the pooled text vector, and this conditioning has none "
                         "(was it encoded by another family's text encoder?)")
    numbers = torch.tensor(values, dtype=torch.float32)
    embedded = timestep_embedding(numbers, SIZE_EMBEDDING).reshape(1, -1)
    return torch.cat([pooled.float().reshape(1, -1).cpu(), embedded], dim=1)


def _number(entry: Any, name: str, default: float) -> float:
    value = entry.extra.get(name)
    return float(default if value is None else value)


def base_vector(entry: Any, side: str, size: tuple[int, int]) -> torch.Tensor:
    """y for the SDXL base: pooled text, then (original h, w, crop top, left, target h, w) embedded."""
    width, height = size
    values = [_number(entry, "original_height", height), _number(entry, "original_width", width),
              _number(entry, "crop_top", 0), _number(entry, "crop_left", 0),
              _number(entry, "target_height", height), _number(entry, "target_width", width)]
    return _embed(values, entry.pooled)


def refiner_vector(entry: Any, side: str, size: tuple[int, int]) -> torch.Tensor:
    """y for the SDXL refiner: pooled text, then (original h, w, crop top, left, aesthetic score)."""
    width, height = size
    values = [_number(entry, "original_height", height), _number(entry, "original_width", width),
              _number(entry, "crop_top", 0), _number(entry, "crop_left", 0),
              _number(entry, "aesthetic_score", AESTHETIC_SCORE[side])]
    return _embed(values, entry.pooled)


SDXL = FamilySpec(
    name="sdxl",
    label="Stable Diffusion XL",
    detect=detect_base,
    unet_heads={"num_head_channels": 64},
    text_encoders=(CLIP_L, CLIP_G),
    latent=LATENT,
    schedule=SCHEDULE,
    default_size=1024,
    extra_inputs=SIZE_INPUTS,
    vector=base_vector,
    lora_prefixes={"lora_unet_": "unet", "lora_te1_": "clip_l", "lora_te2_": "clip_g"},
)

SDXL_REFINER = FamilySpec(
    name="sdxl_refiner",
    label="Stable Diffusion XL refiner",
    detect=detect_refiner,
    unet_heads={"num_head_channels": 64},
    text_encoders=(REFINER_CLIP_G,),
    latent=LATENT,
    schedule=SCHEDULE,
    default_size=1024,
    extra_inputs=REFINER_INPUTS,
    vector=refiner_vector,
    lora_prefixes={"lora_unet_": "unet", "lora_te_": "clip_g"},
)
