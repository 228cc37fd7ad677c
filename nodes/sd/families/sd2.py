"""Stable Diffusion 2.x: every fact about the family, in one place.

OpenCLIP ViT-H/14 as the text encoder (stored in open_clip's layout under
`cond_stage_model.model.`), its penultimate block's output with the final layer norm applied as
the cross-attention context (1024 wide), prompts padded with token 0 ("!") after the end token;
a U-Net with 64-channel heads and linear projections in its transformers, whose attention
overflows in float16 (so it is computed in float32 there); SD1.x's VAE latent space and training
schedule. The 512 base models predict noise (epsilon), the 768-v models predict v: the weights
cannot say which for certain, so `prediction_from_weights` uses the heuristic ComfyUI documents
(the spread of one norm bias), and the loader's `prediction` input overrides it.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from latentgraph.nodes.sd.families.sd1 import LATENT, SCHEDULE
from latentgraph.nodes.sd.spec import FamilySpec, Shapes, TextEncoderSpec

TEXT_ENCODER_PREFIX = "cond_stage_model.model."  # OpenCLIP ViT-H in open_clip's own layout
UNET_PREFIX = "model.diffusion_model."

# In the 768-v checkpoints the first norm bias of the last output block's transformer spreads
# wider than in the 512 epsilon ones (population std above 0.09 vs below); ComfyUI's heuristic.
V_PREDICTION_STD = 0.09
_LAST_NORM = re.compile(re.escape(UNET_PREFIX) + r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$")


def detect(shapes: Shapes) -> bool:
    return any(key.startswith(TEXT_ENCODER_PREFIX) for key in shapes)


def prediction_from_weights(shapes: Shapes, read: Callable[[str], torch.Tensor]) -> str | None:
    """v_prediction when the last output block's first transformer norm bias has a population
    standard deviation above 0.09, else epsilon; inpainting models (9 input channels) are epsilon.
    In a full SD2 U-Net that block is output_blocks.11; smaller U-Nets use their last one."""
    stem = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if stem is None or stem[1] != 4:
        return "epsilon"
    blocks = [(int(m.group(1)), key) for key in shapes if (m := _LAST_NORM.match(key))]
    if not blocks:
        return None
    bias = read(max(blocks)[1]).float()
    return "v_prediction" if float(bias.std(unbiased=False)) > V_PREDICTION_STD else "epsilon"


SD2 = FamilySpec(
    name="sd2",
    label="Stable Diffusion 2.x",
    detect=detect,
    unet_heads={"num_head_channels": 64},
    text_encoders=(TextEncoderSpec(name="openclip_h", prefix=TEXT_ENCODER_PREFIX, layout="open_clip",
                                   layer="penultimate", final_norm=True, pad_token="zero", hidden_act="gelu"),),
    latent=LATENT,
    schedule=SCHEDULE,
    prediction_type="epsilon",
    prediction_from_weights=prediction_from_weights,
    upcast_attention=True,
    default_size=768,
    lora_prefixes={"lora_unet_": "unet", "lora_te_": "openclip_h"},
)
