"""Stable Diffusion 2.x: recognised, not loaded yet (its OpenCLIP ViT-H text encoder is the
missing part). What is known already: it shares SD1.x's VAE latent space and training schedule,
uses 64-channel attention heads and linear projections in its transformers, conditions on the
penultimate OpenCLIP layer (final norm applied), pads prompts with token 0, and its 768-v
checkpoints predict v."""

from __future__ import annotations

from latentgraph.nodes.sd.families.sd1 import LATENT, SCHEDULE
from latentgraph.nodes.sd.spec import FamilySpec, Shapes, TextEncoderSpec

TEXT_ENCODER_PREFIX = "cond_stage_model.model."  # OpenCLIP ViT-H in open_clip's own layout


def detect(shapes: Shapes) -> bool:
    return any(key.startswith(TEXT_ENCODER_PREFIX) for key in shapes)


SD2 = FamilySpec(
    name="sd2",
    label="Stable Diffusion 2.x",
    detect=detect,
    supported=False,
    unet_heads={"num_head_channels": 64},
    text_encoders=(TextEncoderSpec(name="openclip_h", prefix=TEXT_ENCODER_PREFIX, layout="open_clip",
                                   layer="penultimate", final_norm=True, pad_token="zero", hidden_act="gelu"),),
    latent=LATENT,
    schedule=SCHEDULE,
    prediction_type="epsilon",
    default_size=768,
    lora_prefixes={"lora_unet_": "unet", "lora_te_": "openclip_h"},
)
