"""Stable Diffusion XL, base and refiner: recognised, not loaded yet (their text encoders are the
missing part). What is known already: the base conditions on CLIP ViT-L and OpenCLIP ViT-bigG
(penultimate layers without the final norm, concatenated to 2048 channels) plus bigG's pooled
vector and the size/crop inputs in the U-Net's `y`; the refiner on bigG alone with an aesthetic
score; both use their own VAE scaling and preview colours, SD1.x's schedule, 64-channel heads."""

from __future__ import annotations

from latentgraph.nodes.sd.families.sd1 import SCHEDULE
from latentgraph.nodes.sd.spec import FamilySpec, LatentFormat, Shapes, TextEncoderSpec

CONDITIONER_PREFIX = "conditioner.embedders."

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
)

CLIP_L = TextEncoderSpec(name="clip_l", prefix=CONDITIONER_PREFIX + "0.transformer.text_model.", layout="transformers",
                         layer="penultimate", final_norm=False, pad_token="end", hidden_act="quick_gelu")
CLIP_G = TextEncoderSpec(name="clip_g", prefix=CONDITIONER_PREFIX + "1.model.", layout="open_clip",
                         layer="penultimate", final_norm=False, pad_token="zero", hidden_act="gelu", pooled=True)
REFINER_CLIP_G = TextEncoderSpec(name="clip_g", prefix=CONDITIONER_PREFIX + "0.model.", layout="open_clip",
                                 layer="penultimate", final_norm=False, pad_token="zero", hidden_act="gelu", pooled=True)


def _is_xl(shapes: Shapes) -> bool:
    # By the conditioner's keys, not the U-Net's label_emb: SD2.1 unCLIP has a label_emb too.
    return any(k.startswith(CONDITIONER_PREFIX) for k in shapes)


def detect_base(shapes: Shapes) -> bool:
    return _is_xl(shapes) and any(key.startswith(CONDITIONER_PREFIX + "1.") for key in shapes)


def detect_refiner(shapes: Shapes) -> bool:
    return _is_xl(shapes) and not detect_base(shapes)


SDXL = FamilySpec(
    name="sdxl",
    label="Stable Diffusion XL",
    detect=detect_base,
    supported=False,
    unet_heads={"num_head_channels": 64},
    text_encoders=(CLIP_L, CLIP_G),
    latent=LATENT,
    schedule=SCHEDULE,
    default_size=1024,
    extra_conditioning="pooled_text+original_size+crop_top_left+target_size",
    lora_prefixes={"lora_unet_": "unet", "lora_te1_": "clip_l", "lora_te2_": "clip_g"},
)

SDXL_REFINER = FamilySpec(
    name="sdxl_refiner",
    label="Stable Diffusion XL refiner",
    detect=detect_refiner,
    supported=False,
    unet_heads={"num_head_channels": 64},
    text_encoders=(REFINER_CLIP_G,),
    latent=LATENT,
    schedule=SCHEDULE,
    default_size=1024,
    extra_conditioning="pooled_text+original_size+crop_top_left+aesthetic_score",
    lora_prefixes={"lora_unet_": "unet", "lora_te_": "clip_g"},
)
