"""A tiny SD1.x-architecture checkpoint with seeded random weights, in the real LDM key layout.

Same structure as Stable Diffusion 1.5 (U-Net with a transformer level and a plain level, a
4-level VAE that really downsamples 8x, a CLIP text encoder with the full 49408-token vocabulary
and 77 positions), only narrow, so tests run the same load path as a real 2-4 GB file in
milliseconds. It is written with our own modules and `save_checkpoint`; the tests check those
against diffusers/transformers on the same weights, so a key mix-up cannot hide behind symmetry.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from latentgraph.nodes.sd.checkpoint import save_checkpoint
from latentgraph.nodes.sd.families import SD1
from latentgraph.nodes.sd.text_encoder import TextEncoderConfig, build_text_encoder
from latentgraph.nodes.sd.unet import UNetConfig, UNetModel
from latentgraph.nodes.sd.vae import AutoencoderKL, VAEConfig

# Widths are multiples of 32 because every GroupNorm has 32 groups.
TINY_UNET = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),  # transformers at the lower resolution only
    transformer_depth=1,
    num_heads=8,
    context_dim=64,
)
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4,
                     scaling_factor=SD1.latent.scaling_factor)  # an SD1.x VAE, as the loader sees it
TINY_TEXT_ENCODER = TextEncoderConfig(
    hidden_size=64, num_layers=2, intermediate_size=256, vocab_size=49408, max_positions=77
)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter with seeded, non-trivial values.

    Matrices and kernels: normal with std 1/sqrt(fan_in), so activations keep their scale.
    Norm scales: 1 + noise, and all biases non-zero, so swapping a norm's weight and bias, or two
    biases, changes the output.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim >= 2:
                value = torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter[0].numel())
            elif name.endswith("weight"):
                value = 1.0 + 0.2 * torch.randn(parameter.shape, generator=generator)
            else:
                value = 0.1 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(value)
    return module


def build_tiny_models(seed: int = 0) -> tuple[UNetModel, AutoencoderKL, nn.Module]:
    unet = randomize_(UNetModel(TINY_UNET), seed)
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    text_encoder = randomize_(build_text_encoder(TINY_TEXT_ENCODER), seed + 2)
    return unet, vae, text_encoder


def write_tiny_checkpoint(
    path: str | Path, seed: int = 0, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write the tiny SD1.x checkpoint to `path` (about 15 MB, mostly the token embedding)."""
    unet, vae, text_encoder = build_tiny_models(seed)
    return save_checkpoint(path, unet, vae, text_encoder, metadata=metadata, dtype=dtype)
