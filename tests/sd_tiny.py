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


# ---------------------------------------------------------------------------------------------
# SD2.x, SDXL base and SDXL refiner: the same idea for the other families. Heads are 64 channels
# wide everywhere (as in the real models), so every width is a multiple of 64; each text encoder
# has 3 layers, so "penultimate" and "last" differ; OpenCLIP towers use GELU, CLIP-L quick GELU.

TINY_OPENCLIP_H = TextEncoderConfig(hidden_size=64, num_layers=3, intermediate_size=256, vocab_size=49408,
                                    max_positions=77, hidden_act="gelu")
TINY_SD2_UNET = UNetConfig(
    model_channels=64, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2, 1), transformer_depth=1,
    num_head_channels=64, context_dim=64, use_linear_in_transformer=True, upcast_attention=True,
)
TINY_CLIP_L = TextEncoderConfig(hidden_size=64, num_layers=3, intermediate_size=256, vocab_size=49408,
                                max_positions=77, hidden_act="quick_gelu")
TINY_CLIP_G = TextEncoderConfig(hidden_size=128, num_layers=3, intermediate_size=512, vocab_size=49408,
                                max_positions=77, hidden_act="gelu", projection_dim=128)
SIZE_VECTOR = 256  # each SDXL size/crop/score number is embedded in 256 channels
# SDXL's U-Net: no attention at the first level, two transformer blocks below; y = pooled + 6 numbers.
TINY_SDXL_UNET = UNetConfig(
    model_channels=64, channel_mult=(1, 2), num_res_blocks=2, attention_resolutions=(2,), transformer_depth=2,
    num_head_channels=64, context_dim=64 + 128, use_linear_in_transformer=True,
    adm_in_channels=128 + 6 * SIZE_VECTOR,
)
# The refiner: bigG only, y = pooled + 5 numbers (size, crop, aesthetic score).
TINY_REFINER_UNET = UNetConfig(
    model_channels=64, channel_mult=(1, 2), num_res_blocks=2, attention_resolutions=(2,), transformer_depth=2,
    num_head_channels=64, context_dim=128, use_linear_in_transformer=True, adm_in_channels=128 + 5 * SIZE_VECTOR,
)
SD2_V_NORM_KEY = "output_blocks.3.1.transformer_blocks.0.norm1.bias"  # the tiny U-Net's last transformer norm


def write_tiny_sd2_checkpoint(path: str | Path, seed: int = 10, v_prediction: bool = False,
                              dtype: torch.dtype | None = None) -> Path:
    """A tiny SD2.x checkpoint. The weight heuristic for 768-v models reads the last output
    transformer's first norm bias: its spread is set above (v) or below (epsilon) 0.09."""
    from latentgraph.nodes.sd.families import SD2

    unet = randomize_(UNetModel(TINY_SD2_UNET), seed)
    with torch.no_grad():
        bias = unet.get_parameter(SD2_V_NORM_KEY)
        bias.copy_(bias / bias.std(unbiased=False) * (0.15 if v_prediction else 0.05))
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    text_encoder = randomize_(build_text_encoder(TINY_OPENCLIP_H), seed + 2)
    generator = torch.Generator().manual_seed(seed + 3)
    prefix = SD2.text_encoders[0].prefix
    extra = {  # what real SD2 files carry besides the text tower: unused by inference
        prefix + "text_projection": torch.randn(64, 64, generator=generator) / 8,
        prefix + "logit_scale": torch.tensor(4.6052),
    }
    return save_checkpoint(path, unet, vae, text_encoder, family=SD2, extra_tensors=extra, dtype=dtype)


def write_tiny_sdxl_checkpoint(path: str | Path, seed: int = 20, refiner: bool = False,
                               markers: tuple[str, ...] = (), dtype: torch.dtype | None = None) -> Path:
    """A tiny SDXL base (CLIP-L + bigG) or refiner (bigG) checkpoint; `markers` adds top-level keys
    such as "v_pred" and "ztsnr" that v-prediction fine-tunes carry."""
    from latentgraph.nodes.sd.families import SDXL, SDXL_REFINER

    family = SDXL_REFINER if refiner else SDXL
    unet = randomize_(UNetModel(TINY_REFINER_UNET if refiner else TINY_SDXL_UNET), seed)
    vae = randomize_(AutoencoderKL(TINY_VAE), seed + 1)
    encoders = {"clip_g": randomize_(build_text_encoder(TINY_CLIP_G), seed + 3)}
    if not refiner:
        encoders["clip_l"] = randomize_(build_text_encoder(TINY_CLIP_L), seed + 2)
    extra = {family.text_encoders[-1].prefix + "logit_scale": torch.tensor(4.6052)}
    extra.update({marker: torch.tensor([]) for marker in markers})
    return save_checkpoint(path, unet, vae, encoders, family=family, extra_tensors=extra, dtype=dtype)


def text_encoder_shapes(config: TextEncoderConfig, prefix: str, layout: str = "transformers") -> dict[str, tuple[int, ...]]:
    """The key -> shape table a text encoder of `config` has in a checkpoint under `prefix`, in
    transformers' or open_clip's layout (built on the meta device: no memory, any size)."""
    from latentgraph.nodes.sd import open_clip
    from latentgraph.nodes.sd.text_encoder import file_key

    with torch.device("meta"):
        model = build_text_encoder(config)
    if layout == "open_clip":
        return {prefix + key: tuple(t.shape) for key, t in open_clip.to_open_clip(model).items()}
    return {file_key(model, key, prefix): tuple(t.shape) for key, t in model.state_dict().items()}
