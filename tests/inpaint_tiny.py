"""Tiny inpainting checkpoints: the tiny SD1.x and SDXL models of tests/sd_tiny.py with 9-channel
U-Nets (the latent, the mask, the masked image's latent), written in the real single-file layout
as the released inpainting checkpoints are (sd-v1-5-inpainting, sd_xl_base_1.0_inpainting): the
same keys as the base models, only `model.diffusion_model.input_blocks.0.0.weight` is
[model_channels, 9, 3, 3]. Seeded random weights (sd_tiny.randomize_: perturbed norms and biases)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from latentgraph.nodes.sd.checkpoint import save_checkpoint
from latentgraph.nodes.sd.text_encoder import build_text_encoder
from latentgraph.nodes.sd.unet import UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL
from sd_tiny import (
    TINY_CLIP_G,
    TINY_CLIP_L,
    TINY_SDXL_UNET,
    TINY_TEXT_ENCODER,
    TINY_UNET,
    TINY_VAE,
    randomize_,
)

INPAINT_CHANNELS = 9
TINY_INPAINT_UNET = replace(TINY_UNET, in_channels=INPAINT_CHANNELS)
TINY_SDXL_INPAINT_UNET = replace(TINY_SDXL_UNET, in_channels=INPAINT_CHANNELS)


def write_tiny_inpaint_checkpoint(path: str | Path, seed: int = 40, dtype: torch.dtype | None = None) -> Path:
    """A tiny SD1.x inpainting checkpoint (CLIP-L layout text encoder, SD1.x VAE scale)."""
    unet = randomize_(UNetModel(TINY_INPAINT_UNET), seed)
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    text_encoder = randomize_(build_text_encoder(TINY_TEXT_ENCODER), seed + 2)
    return save_checkpoint(path, unet, vae, text_encoder, dtype=dtype)


def write_tiny_sdxl_inpaint_checkpoint(path: str | Path, seed: int = 50, dtype: torch.dtype | None = None) -> Path:
    """A tiny SDXL base inpainting checkpoint (CLIP-L + bigG, label_emb for the size vector)."""
    from latentgraph.nodes.sd.families import SDXL

    unet = randomize_(UNetModel(TINY_SDXL_INPAINT_UNET), seed)
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    encoders = {"clip_g": randomize_(build_text_encoder(TINY_CLIP_G), seed + 3),
                "clip_l": randomize_(build_text_encoder(TINY_CLIP_L), seed + 2)}
    extra = {SDXL.text_encoders[-1].prefix + "logit_scale": torch.tensor(4.6052)}
    return save_checkpoint(path, unet, vae, encoders, family=SDXL, extra_tensors=extra, dtype=dtype)


def write_tiny_sd2_inpaint_checkpoint(path: str | Path, seed: int = 60, dtype: torch.dtype | None = None) -> Path:
    """A tiny SD2.x inpainting checkpoint (OpenCLIP-H layout text encoder, as 512-inpainting-ema)."""
    from latentgraph.nodes.sd.families import SD2
    from sd_tiny import TINY_OPENCLIP_H, TINY_SD2_UNET

    unet = randomize_(UNetModel(replace(TINY_SD2_UNET, in_channels=INPAINT_CHANNELS)), seed)
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    text_encoder = randomize_(build_text_encoder(TINY_OPENCLIP_H), seed + 2)
    prefix = SD2.text_encoders[0].prefix
    generator = torch.Generator().manual_seed(seed + 3)
    extra = {prefix + "text_projection": torch.randn(64, 64, generator=generator) / 8,
             prefix + "logit_scale": torch.tensor(4.6052)}
    return save_checkpoint(path, unet, vae, text_encoder, family=SD2, extra_tensors=extra, dtype=dtype)
