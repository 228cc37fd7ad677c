"""Tiny ControlNet files matching the tiny checkpoints of tests/sd_tiny.py, in the layouts people
download: LDM keys with and without the `control_model.` prefix (written from our own module), and
diffusers' layout (written from diffusers' own ControlNetModel, so its key names are diffusers',
not ours). The hint encoder has the real widths (16, 32, 96, 256); every weight is seeded random
with sd_tiny.randomize_ (norm scales 1 + noise, biases non-zero) and the zero convolutions are NOT
zero, as they would be before training, or the residuals would be nothing and nothing tested.
The hint encoder's kernels get a gain of HINT_GAIN: with std 1/sqrt(fan_in) each of its 8 SiLU
layers shrinks the spread, and the hint's share in the result came out ~1e-3 (a test that swaps the
hint image could not see it); with the gain its output spreads about as much as the features it is
added to (std 0.2-1), as in a trained ControlNet, where the hint steers the image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diffusers_tiny import unet_config
from latentgraph.nodes.sd.controlnet import HINT_WIDTHS, ControlNet, ControlNetConfig, LDM_PREFIX
from latentgraph.nodes.sd.unet import UNetConfig
from sd_tiny import SIZE_VECTOR, TINY_UNET, randomize_

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# diffusers' ControlNetModel takes the U-Net's config minus what only the way up has.
HINT_GAIN = 1.6

_NOT_CONTROLNET = {"_class_name", "_diffusers_version", "sample_size", "out_channels", "up_block_types",
                   "center_input_sample", "transformer_layers_per_mid_block"}


def controlnet_diffusers_config(config: UNetConfig, **overrides: Any) -> dict[str, Any]:
    """A diffusers ControlNetModel config for a ControlNet of the U-Net `config` (tests/diffusers_tiny.py's
    U-Net config without the up blocks), with the real hint encoder; `overrides` as for the U-Net
    (SDXL: addition_embed_type="text_time", ...)."""
    result = {k: v for k, v in unet_config(config, **overrides).items() if k not in _NOT_CONTROLNET}
    result.update(conditioning_channels=3, conditioning_embedding_out_channels=list(HINT_WIDTHS),
                  controlnet_conditioning_channel_order="rgb", global_pool_conditions=False)
    return result


def sdxl_overrides(config: UNetConfig) -> dict[str, Any]:
    """What SDXL's U-Net and ControlNet configs add in diffusers: the text_time embedding of y."""
    return {"addition_embed_type": "text_time", "addition_time_embed_dim": SIZE_VECTOR,
            "projection_class_embeddings_input_dim": config.adm_in_channels}


def _hint_gain_(convs) -> None:
    with torch.no_grad():
        for conv in convs:
            conv.weight.mul_(HINT_GAIN)


def build_tiny_controlnet(config: UNetConfig = TINY_UNET, seed: int = 100) -> ControlNet:
    """Our ControlNet for a U-Net of `config`, every weight seeded random (zero convs included)."""
    model = randomize_(ControlNet(ControlNetConfig(config)), seed).eval()
    _hint_gain_(layer for layer in model.input_hint_block if isinstance(layer, torch.nn.Conv2d))
    return model


def write_tiny_controlnet(path: str | Path, config: UNetConfig = TINY_UNET, seed: int = 100, prefix: bool = True,
                          dtype: torch.dtype | None = None, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """An LDM-layout ControlNet file: keys under `control_model.` (prefix=True, as the original
    releases) or bare (as control_v11p_sd15_canny.safetensors); `extra` adds tensors as they are."""
    model = build_tiny_controlnet(config, seed)
    start = LDM_PREFIX if prefix else ""
    tensors = {start + key: (t.to(dtype) if dtype is not None else t).contiguous()
               for key, t in model.state_dict().items()}
    tensors.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def build_diffusers_controlnet(config: UNetConfig, seed: int = 200, **overrides: Any):
    """diffusers' ControlNetModel for a U-Net of `config`, every weight seeded random."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import ControlNetModel

        model = ControlNetModel(**controlnet_diffusers_config(config, **overrides))
    model = randomize_(model, seed).eval()
    _hint_gain_(m for m in model.controlnet_cond_embedding.modules() if isinstance(m, torch.nn.Conv2d))
    return model


def write_tiny_diffusers_controlnet(path: str | Path, config: UNetConfig, seed: int = 200,
                                    **overrides: Any) -> Path:
    """A diffusers-layout ControlNet file (diffusion_pytorch_model.safetensors as most SDXL
    ControlNets are shared), written from diffusers' own module's state dict."""
    model = build_diffusers_controlnet(config, seed, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: t.contiguous() for k, t in model.state_dict().items()}, str(path))
    return path
