"""The values that travel along Stable Diffusion links, one small class per port type.

MODEL → DiffusionModel, CLIP → TextEncoder, VAE → Vae, CONDITIONING → Conditioning,
LATENT → Latent, NOISE → Noise, SAMPLER → SamplerChoice, SIGMAS → a 1-D float tensor,
IMAGE → a float32 tensor [B, H, W, 3] in [0, 1] on the CPU, MASK → float32 [B, H, W] in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from latentgraph.nodes.sd.schedules import NoiseSchedule
from latentgraph.nodes.sd.spec import FamilySpec


class ModelHandle:
    """A loaded model as a link value. It counts as nothing in the output cache (`cache_nbytes`):
    its weights belong to the model cache, which bounds them with its own budget. Counting them
    twice made an SD1.5 checkpoint (4 GB in fp32) fill the whole default output cache and push
    prompts, latents and images out."""

    def cache_nbytes(self) -> int:
        return 64


@dataclass(eq=False)
class DiffusionModel(ModelHandle):
    """A U-Net with what it needs to denoise: its family's spec (latent format, previews, extra
    conditioning...), its training noise schedule and its prediction type."""

    unet: torch.nn.Module
    spec: FamilySpec
    schedule: NoiseSchedule
    prediction_type: str
    latent_channels: int
    source: str  # the checkpoint's name, for messages
    cfg_rescale: float = 0.0  # CFG rescale's phi (the rescale_cfg node; see denoiser.CFGDenoiser)

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def net(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net as a noise predictor in its own device and dtype, returning x's dtype (`y`:
        the extra conditioning vector of families that have one).

        Timesteps stay float32: fractional timesteps would be rounded in half precision (the U-Net
        embeds them in float32 itself)."""
        device, dtype = self.device, self.dtype
        extra = {} if y is None else {"y": y.to(device, dtype)}
        out = self.unet(x.to(device, dtype), t.to(device, torch.float32), context.to(device, dtype), **extra)
        return out.to(x.dtype)


@dataclass(eq=False)
class TextEncoder(ModelHandle):
    """The text encoders of a checkpoint, by the names its family spec gives them (the tokenizer
    is shared and ships with the package); the spec says how their outputs become conditioning."""

    encoders: dict[str, torch.nn.Module]
    spec: FamilySpec
    source: str

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def model(self) -> torch.nn.Module:
        """The first text encoder (the only one of SD1.x)."""
        return next(iter(self.encoders.values()))


@dataclass(eq=False)
class Vae(ModelHandle):
    """An autoencoder with its latent scaling factor (in `model.config`)."""

    model: torch.nn.Module
    source: str

    @property
    def scaling_factor(self) -> float:
        return float(self.model.config.scaling_factor)


@dataclass(frozen=True, eq=False)
class ConditioningEntry:
    """One encoded prompt: token embeddings [1, tokens, dim], pooled [1, dim], its weight when
    several prompts are combined, and `extra`: the family's other conditioning inputs by name
    (what the spec's `extra_conditioning` lists, such as SDXL's sizes and crop), from which the
    family builds the U-Net's `y` vector."""

    embedding: torch.Tensor
    pooled: torch.Tensor | None = None
    strength: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Conditioning:
    """One or more encoded prompts; several are averaged (by strength) in the noise prediction."""

    entries: tuple[ConditioningEntry, ...]


@dataclass(frozen=True, eq=False)
class Latent:
    """Latents [B, C, H/8, W/8] in the U-Net's (scaled) latent space, float32 on the CPU."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class Noise:
    """Seeded starting noise: the same seed gives the same noise on any device."""

    seed: int

    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        from latentgraph.nodes.sd.samplers import initial_noise

        return initial_noise(latent.shape, self.seed)


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler by name with its options (eta, s_noise, ...)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
