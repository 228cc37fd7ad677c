"""Where models run and in which precision.

CUDA when present (fp16 weights for the U-Net and text encoder, bf16 for the VAE where the card
supports it, since the SD1.x VAE overflows in fp16), the CPU otherwise in fp32: fp16 matmuls on the
CPU are hundreds of times slower, so fp16 weights are upcast there. `LATENTGRAPH_PRECISION=bf16`
(`--precision bf16`) runs the U-Net, the text encoders and the VAE in bf16 on the CPU (the U-Net
about 1.7x faster there); the sampler's state stays float32 (the U-Net returns its prediction in the
latent's dtype). Measured on the demo model over 100 prompts: images 0.4/255 apart on average from
fp32, the accuracy table within a point (README: the demo model's accuracy in bf16).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: torch.device
    unet_dtype: torch.dtype
    text_dtype: torch.dtype
    vae_dtype: torch.dtype

    def key(self) -> str:
        return f"{self.device}/{self.unet_dtype}/{self.text_dtype}/{self.vae_dtype}"


def default_placement(device: str | None = None, precision: str | None = None) -> Placement:
    """The placement for this machine: `device` ("cuda", "cpu", "cuda:1") and `precision`
    ("fp32", "fp16", "bf16") override the defaults, as do LATENTGRAPH_DEVICE / LATENTGRAPH_PRECISION."""
    device = device or os.environ.get("LATENTGRAPH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = precision or os.environ.get("LATENTGRAPH_PRECISION")
    dev = torch.device(device)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision is not None and precision not in dtypes:
        raise ValueError(f"precision must be one of {', '.join(dtypes)}, got {precision!r}")
    if dev.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        unet = dtypes[precision] if precision else torch.float16
        vae = torch.bfloat16 if bf16_ok else torch.float32
        return Placement(dev, unet, unet, vae if precision != "fp32" else torch.float32)
    if precision == "fp16":
        raise ValueError("fp16 is not offered on the CPU (its matmuls are hundreds of times slower there); use bf16 or fp32")
    unet = dtypes[precision] if precision else torch.float32
    return Placement(dev, unet, unet, unet)
