"""The values that travel along Stable Diffusion links, one small class per port type.

MODEL → DiffusionModel, CLIP → TextEncoder, VAE → Vae, CONDITIONING → Conditioning,
LATENT → Latent, NOISE → Noise, SAMPLER → SamplerChoice, GUIDER → Guider, SIGMAS → a 1-D float tensor,
IMAGE → a float32 tensor [B, H, W, 3] in [0, 1] on the CPU, MASK → float32 [B, H, W] in [0, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from latentgraph.nodes.sd.patches import WeightPatch, patched
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
    conditioning...), its training noise schedule and its prediction type, and the patches (LoRAs)
    this handle applies to the shared U-Net: run it inside `patched()`."""

    unet: torch.nn.Module
    spec: FamilySpec
    schedule: NoiseSchedule
    prediction_type: str
    latent_channels: int
    source: str  # the checkpoint's name, for messages
    cfg_rescale: float = 0.0  # CFG rescale's phi (the rescale_cfg node; see denoiser.CFGDenoiser)
    patches: tuple[WeightPatch, ...] = ()  # applied in order over the loaded weights (see nodes.sd.patches)

    def with_patches(self, *patches: WeightPatch) -> "DiffusionModel":
        """The same model with more patches after its own (the U-Net is shared, not copied)."""
        return replace(self, patches=self.patches + patches)

    @contextmanager
    def patched(self) -> Iterator[torch.nn.Module]:
        """The U-Net with this handle's patches applied (and no others) for the block's duration."""
        with patched(self.unet, self.patches) as unet:
            yield unet

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def inpainting(self) -> bool:
        """An inpainting U-Net: besides the latent it reads a mask and the masked image's latent
        (the family's `inpaint_channels`; see nodes.sd.inpaint)."""
        return self.unet.config.in_channels != self.latent_channels

    @property
    def label(self) -> str:
        """What messages call the model: its family, and "inpainting" for inpainting U-Nets."""
        return self.spec.label + (" inpainting" if self.inpainting else "")

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def net(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
            control: Any = None, concat: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net as a noise predictor in its own device and dtype, returning x's dtype (`y`:
        the extra conditioning vector of families that have one; `control`: a
        `denoiser.ControlChunks`, the prompts' ControlNets, whose residuals the U-Net adds;
        `concat`: an inpainting U-Net's extra input channels, appended to x after the ControlNets
        have seen x alone).

        Timesteps stay float32: fractional timesteps would be rounded in half precision (the U-Net
        embeds them in float32 itself)."""
        device, dtype = self.device, self.dtype
        extra = {} if y is None else {"y": y.to(device, dtype)}
        x_in, t_in, context_in = x.to(device, dtype), t.to(device, torch.float32), context.to(device, dtype)
        if control is not None:
            from latentgraph.nodes.sd.controlnet import control_residuals

            residuals = control_residuals(control, x_in, t_in, context_in, extra.get("y"))
            if residuals is not None:
                extra["control"] = residuals
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(device, dtype)], dim=1)
        from latentgraph.nodes.sd.compiled import forward_of

        out = forward_of(self.unet)(x_in, t_in, context_in, **extra)  # compiled inside compiled_models(True)
        return out.to(x.dtype)


@dataclass(eq=False)
class TextEncoder(ModelHandle):
    """The text encoders of a checkpoint, by the names its family spec gives them (the tokenizer
    is shared and ships with the package); the spec says how their outputs become conditioning."""

    encoders: dict[str, torch.nn.Module]
    spec: FamilySpec
    source: str
    patches: tuple[WeightPatch, ...] = ()  # each names the encoder it changes (`target`)
    # The layer prompts are read from, counted from the end (1 the last, 2 the one before it...),
    # for every encoder; None: the family's own (clip_set_last_layer sets it, ComfyUI's
    # CLIPSetLastLayer; an encode node's own clip_skip > 0 wins over it).
    clip_skip: int | None = None

    @property
    def family(self) -> str:
        return self.spec.name

    def with_patches(self, *patches: WeightPatch) -> "TextEncoder":
        return replace(self, patches=self.patches + patches)

    @contextmanager
    def patched(self) -> Iterator[dict[str, torch.nn.Module]]:
        """The encoders, each with this handle's patches for it applied, for the block's duration."""
        with contextlib.ExitStack() as stack:
            for name, encoder in self.encoders.items():
                stack.enter_context(patched(encoder, [p for p in self.patches if p.target == name]))
            yield self.encoders

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
    family builds the U-Net's `y` vector. `control`: the ControlNets applied to it, in order
    (`controlnet.ControlApplication`s; their residuals are summed). `inpaint`: for inpainting
    U-Nets, the masked image's latent and the mask (an `inpaint.InpaintImage`, set by
    inpaint_model_conditioning; other models ignore it). `area`: the part of the image the prompt
    applies to (denoiser.latent_area; None: all of it), set by the area conditioning nodes;
    `timestep_range`, `mask`, `mask_strength`, `mask_bounds`: see conditioning_set_timestep_range
    and conditioning_set_mask."""

    embedding: torch.Tensor
    pooled: torch.Tensor | None = None
    strength: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    control: tuple[Any, ...] = ()
    inpaint: Any = None
    area: tuple[str, float, float, float, float] | None = None  # ("pixels" | "fraction", x, y, width, height)
    timestep_range: tuple[float, float] | None = None  # (start, end) percent of the schedule it acts in
    mask: torch.Tensor | None = None  # [1 or B, H, W]: where it acts (conditioning_set_mask)
    mask_strength: float = 1.0
    mask_bounds: bool = False


@dataclass(frozen=True, eq=False)
class Conditioning:
    """One or more encoded prompts; several are averaged (by strength) in the noise prediction."""

    entries: tuple[ConditioningEntry, ...]


@dataclass(frozen=True, eq=False)
class Latent:
    """Latents [B, C, H/8, W/8] in the U-Net's (scaled) latent space, float32 on the CPU.

    noise_mask: None, or [B or 1, 1, H, W] in [0, 1] at any resolution (usually the image's
    pixels): where the sampler may change the latent (1), keep it (0), or blend (soft values);
    see nodes.sd.inpaint. Set by set_latent_noise_mask and vae_encode_for_inpaint."""

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
class DisabledNoise(Noise):
    """No starting noise (zeros, ComfyUI's DisableNoise): the latent is sampled as it is, taken
    to be at sigmas[0]'s noise level already. `seed` still seeds the step noise of stochastic
    samplers (ancestral, SDE)."""

    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tuple(latent.shape), dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class Guider:
    """A model with the prompts and guidance scale it samples with (cfg_guider; GUIDER links)."""

    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning
    cfg: float


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler by name with its options (eta, s_noise, ...)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
