"""Stable Diffusion 1.x: every fact about the family, in one place.

OpenAI's CLIP ViT-L/14 text encoder (stored in transformers' own layout), its last hidden state
after the final layer norm as the cross-attention context, prompts padded with the end token; a
U-Net with 8 attention heads; the KL-f8 VAE with 4 latent channels scaled by 0.18215; the
1000-step scaled-linear schedule from beta 0.00085 to 0.012; epsilon prediction at 512x512.
"""

from __future__ import annotations

from latentgraph.nodes.sd.spec import FamilySpec, LatentFormat, ScheduleSpec, Shapes, TextEncoderSpec

TEXT_ENCODER_PREFIX = "cond_stage_model.transformer.text_model."

LATENT = LatentFormat(
    channels=4,
    scaling_factor=0.18215,
    # Least-squares fit from the latent channels to RGB in [-1, 1] (ComfyUI's latent_formats.SD15
    # uses the same; rows: latent channel, columns: R, G, B). No published bias.
    rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
    taesd="taesd",  # SD1.x and SD2.x share the VAE and its latent space
)

SCHEDULE = ScheduleSpec(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timesteps=1000)


def detect(shapes: Shapes) -> bool:
    return any(key.startswith(TEXT_ENCODER_PREFIX) for key in shapes)


SD1 = FamilySpec(
    name="sd1",
    label="Stable Diffusion 1.x",
    detect=detect,
    unet_heads={"num_heads": 8},
    text_encoders=(TextEncoderSpec(name="clip_l", prefix=TEXT_ENCODER_PREFIX, layout="transformers", layer="last",
                                   final_norm=True, pad_token="end", hidden_act="quick_gelu"),),
    latent=LATENT,
    schedule=SCHEDULE,
    prediction_type="epsilon",
    default_size=512,
    lora_prefixes={"lora_unet_": "unet", "lora_te_": "clip_l"},
)
