"""What a model family is, as data: one `FamilySpec` per family (SD1.x, SD2.x, SDXL...) holds
every fact about it that code would otherwise hard-wire, and the loader, the prompt encoder, the
sampler and the previews read them from the model's spec.

The specs themselves live in `latentgraph.nodes.sd.families` (one module per family); this module
only says what a spec holds. Adding a family means writing its spec (and any model code it needs,
such as another text encoder layout), not editing conditionals across the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

Shapes = Mapping[str, Sequence[int]]  # a checkpoint's key -> tensor shape table


@dataclass(frozen=True)
class LatentFormat:
    """The VAE's latent space as the U-Net and the previews see it.

    channels: latent channels (4 for SD1.x/2.x/SDXL).
    scaling_factor / shift_factor: the U-Net works on (latent - shift) * scale; a file's metadata
        may override the scale (see `layout.SCALING_FACTOR_METADATA_KEY`).
    rgb_factors: a linear map latent channel -> (R, G, B) in [-1, 1] for cheap step previews
        without the VAE (rows: channels); rgb_bias is added after it.
    taesd: the name of this latent space's tiny autoencoder files (`<taesd>_decoder.safetensors`
        in models/vae_approx, nodes/sd/taesd.py), for full-size previews; "" for none.
    """

    channels: int
    scaling_factor: float
    shift_factor: float = 0.0
    rgb_factors: tuple[tuple[float, float, float], ...] = ()
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    taesd: str = ""


@dataclass(frozen=True)
class ScheduleSpec:
    """The discrete noise schedule the U-Net was trained with: `timesteps` betas, spaced as
    `beta_schedule` says ("scaled_linear": linear in sqrt) from beta_start to beta_end."""

    beta_start: float
    beta_end: float
    beta_schedule: str = "scaled_linear"
    timesteps: int = 1000

    def build(self):  # -> NoiseSchedule (imported here lazily: schedules imports nothing of specs)
        from latentgraph.nodes.sd.schedules import scaled_linear_noise_schedule

        if self.beta_schedule != "scaled_linear":
            raise ValueError(f"unknown beta schedule {self.beta_schedule!r}")
        return scaled_linear_noise_schedule(self.beta_start, self.beta_end, self.timesteps)


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family and how its output becomes conditioning.

    name: what LoRA files and messages call it ("clip_l", "clip_g", "openclip_h").
    prefix: where its weights sit in a single-file checkpoint.
    layout: how the file stores it: "transformers" (CLIPTextModel's own key names), or "open_clip"
        (resblocks with packed attention, converted on load).
    layer: the hidden state the U-Net was trained on: "last" or "penultimate" (CLIP skip 2).
    final_norm: whether the final layer norm is applied to that hidden state.
    pad_token: what pads a prompt to 77 tokens: "end" (end-of-text) or "zero" (token 0, "!").
    hidden_act: the MLP activation ("quick_gelu" for OpenAI's CLIP, "gelu" for OpenCLIP).
    pooled: the pooled vector (final-normed end token, through the projection) is conditioning.
    """

    name: str
    prefix: str
    layout: str = "transformers"
    layer: str = "last"
    final_norm: bool = True
    pad_token: str = "end"
    hidden_act: str = "quick_gelu"
    pooled: bool = False


@dataclass(frozen=True)
class FamilySpec:
    """Everything Latentgraph knows about a model family.

    Detection: `detect(shapes)` says whether a checkpoint's key -> shape table is of this family
        (families are tried in `families.FAMILIES` order, most specific first).
    supported: False for a family that is recognised but not loaded (the loader says so).
    unet_heads: what the weights cannot tell about attention heads: {"num_heads": 8} or
        {"num_head_channels": 64}.
    text_encoders: in the order their outputs are concatenated into the cross-attention context.
    latent: the latent format (channels, scaling, preview colours).
    schedule: the training noise schedule.
    prediction_type: "epsilon" or "v_prediction" when neither the file nor the user says.
    default_size: the image side it was trained at (pixels).
    extra_inputs: the conditioning inputs besides the text that the family's U-Net reads through
        its `y` vector (SDXL: sizes and crop; the refiner: size, crop and aesthetic score).
    vector: builds that `y` vector for one prompt: `vector(entry, side, (width, height))` with
        the ConditioningEntry, "positive" or "negative", and the image size in pixels (what
        unset size inputs default to); None for families without one.
    prediction_from_weights: tells the prediction type from the file where its weights can:
        `fn(shapes, read)` with `read(key) -> tensor` returns "epsilon", "v_prediction" or None
        (no opinion); markers every family honours (`v_pred`, `ztsnr` keys) are read first.
    upcast_attention: compute attention scores in float32 when the model runs in float16 (SD2.x
        overflows there otherwise).
    lora_prefixes: LoRA key prefixes (kohya naming) -> which module they patch ("unet", or a text
        encoder's name).
    inpaint_channels: what an inpainting variant's extra U-Net input channels hold, in order.
    """

    name: str
    label: str
    detect: Callable[[Shapes], bool]
    unet_heads: Mapping[str, int]
    text_encoders: tuple[TextEncoderSpec, ...]
    latent: LatentFormat
    schedule: ScheduleSpec
    supported: bool = True
    prediction_type: str = "epsilon"
    default_size: int = 512
    extra_inputs: tuple[str, ...] = ()
    vector: Callable[[Any, str, tuple[int, int]], torch.Tensor] | None = None
    prediction_from_weights: Callable[[Shapes, Callable[[str], torch.Tensor]], str | None] | None = None
    upcast_attention: bool = False
    lora_prefixes: Mapping[str, str] = field(default_factory=dict)
    inpaint_channels: tuple[str, ...] = ("mask", "masked_image_latent")


def latent_rgb(latent: torch.Tensor, latent_format: LatentFormat) -> torch.Tensor:
    """A latent [C, H, W] as RGB [H, W, 3] in about [-1, 1], by the format's linear preview map."""
    factors = torch.tensor(latent_format.rgb_factors, dtype=torch.float32, device=latent.device)
    bias = torch.tensor(latent_format.rgb_bias, dtype=torch.float32, device=latent.device)
    return torch.einsum("chw,cr->hwr", latent.detach().float(), factors) + bias


__all__ = ["FamilySpec", "LatentFormat", "ScheduleSpec", "Shapes", "TextEncoderSpec", "latent_rgb"]
