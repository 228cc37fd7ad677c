"""Inpainting: masked sampling for any model, and the extra inputs of inpainting U-Nets.

Masks follow ComfyUI's conventions, so shared workflows mean the same thing: 1 means "repaint
this", 0 "keep it"; values in between are soft. A MASK value is [B, H, W]; a latent's noise mask
is kept as [B, 1, H, W] at whatever resolution it was given (usually the image's pixels) and
resized to the latent when sampling starts.

Masked sampling (any model; ComfyUI's KSamplerX0Inpaint). With `m` the noise mask at latent
resolution (bilinear, `latent_mask`), `x0` the input latent and `n` the run's starting noise, each
model call of the sampler becomes

    x_in     = m * x + (1 - m) * (x0 + n * sigma)       the kept part re-noised to this step's level
    denoised = m * model(x_in, sigma) + (1 - m) * x0    and its estimate pinned to the original

Nothing is blended after the last step: samplers that end at sigma 0 return their last denoised
estimate there, which is already x0 outside the mask (soft masks: the blend above). When the
sampler adds no noise (a later stage continuing a leftover-noise latent), n is zero, as in ComfyUI.

Inpainting U-Nets (SD1.x, SD2.x, SDXL "inpainting" checkpoints) read, besides the noisy latent,
what `FamilySpec.inpaint_channels` lists: the mask at latent resolution (1 channel) and the latent
of the image with the area to repaint blanked (grey: 0 in [-1, 1]), concatenated after the
latent in that order, unscaled (the latent alone gets the denoiser's input scaling), as
diffusers' StableDiffusionInpaintPipeline and ComfyUI feed them. `inpaint_concat` builds them:

* from a prompt's `InpaintImage` (inpaint_model_conditioning): its latent and its mask;
* else (ComfyUI's fallback) from the sampled latent itself and its noise mask: after
  vae_encode_for_inpaint the latent IS the blanked image's, and its noise mask the grown mask;
* with no mask at all: everything is repainted (mask 1) from a blank image.

The mask is resized to the latent bilinearly and rounded to 0 or 1 (inpainting models were
trained on hard masks); the image latent is resized (bilinear, centre crop) when its size differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from latentgraph.nodes.sd.spec import FamilySpec

# What a blank (mid-grey, 0 in [-1, 1]) image encodes to with Stable Diffusion's VAE, scaled: the
# masked-image input of an inpainting U-Net when there is no mask at all (ComfyUI's values).
BLANK_IMAGE_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)

# The width of each kind of extra input channel an inpainting U-Net reads (see FamilySpec.inpaint_channels);
# None: as many as the latent has.
_CHANNEL_WIDTHS = {"mask": 1, "masked_image_latent": None}


@dataclass(frozen=True, eq=False)
class InpaintImage:
    """What `inpaint_model_conditioning` attaches to prompts for inpainting U-Nets: `latent` the
    VAE-encoded image with the area to repaint blanked ([B, C, h, w], scaled as the U-Net sees
    latents) and `mask` [B, 1, H, W] in [0, 1] (1: repaint), at the image's resolution."""

    latent: torch.Tensor
    mask: torch.Tensor


def inpaint_channel_widths(spec: FamilySpec) -> list[tuple[str, int]]:
    """(name, channels) of each extra input an inpainting U-Net of this family reads, in order."""
    widths = []
    for name in spec.inpaint_channels:
        if name not in _CHANNEL_WIDTHS:
            raise ValueError(f"{spec.label}: unknown inpainting input {name!r} (known: {', '.join(_CHANNEL_WIDTHS)})")
        widths.append((name, _CHANNEL_WIDTHS[name] or spec.latent.channels))
    return widths


def inpainting_in_channels(spec: FamilySpec) -> int:
    """The input channels of an inpainting U-Net of this family (9 for SD: latent 4, mask 1, image 4)."""
    return spec.latent.channels + sum(width for _, width in inpaint_channel_widths(spec))


def as_mask_batch(mask: Any, what: str = "the mask") -> torch.Tensor:
    """A mask as float32 [B, 1, H, W]: from [H, W], [B, H, W] or [B, 1, H, W] with values in [0, 1]."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] == 0 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise ValueError(f"{what} must be [batch, height, width], got shape {list(mask.shape)}")
    mask = mask.float()
    if not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{what} holds NaN or infinite values")
    return mask.clamp(0, 1)


def _to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """`tensor` ([N, ...]) for a batch of `batch`: N == batch as it is; fewer repeat cyclically
    (one mask for every image), as ComfyUI does; more are refused."""
    count = tensor.shape[0]
    if count == batch:
        return tensor
    if count > batch:
        raise ValueError(f"{what} has a batch of {count} but the latent only {batch}")
    return tensor.repeat(math.ceil(batch / count), *([1] * (tensor.ndim - 1)))[:batch]


def latent_mask(mask: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A noise mask ([B, 1, H, W], any resolution) at the latent's `shape` [B, C, h, w]: resized
    bilinearly (half-pixel centres, no antialiasing: ComfyUI's reshape_mask; a binary mask aligned
    to the 8-pixel grid stays binary), repeated over the channels and to the batch."""
    batch, channels, height, width = shape
    mask = as_mask_batch(mask, "the latent's noise mask")
    if mask.shape[-2:] != (height, width):
        mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
    return _to_batch(mask, batch, "the noise mask").expand(batch, channels, height, width).contiguous()


def fit_to(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, C, H, W] resized to height x width: the centre cut to the new aspect ratio, then
    bilinear (ComfyUI's common_upscale with crop="center"); unchanged when the size already fits."""
    old_height, old_width = tensor.shape[-2:]
    if (old_height, old_width) == (height, width):
        return tensor
    old_aspect, new_aspect = old_width / old_height, width / height
    if old_aspect > new_aspect:
        cut = round((old_width - old_width * new_aspect / old_aspect) / 2)
        tensor = tensor[..., cut:old_width - cut]
    elif old_aspect < new_aspect:
        cut = round((old_height - old_height * old_aspect / new_aspect) / 2)
        tensor = tensor[..., cut:old_height - cut, :]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)


def inpaint_concat(spec: FamilySpec, inpaint: InpaintImage | None, latent: torch.Tensor,
                   noise_mask: torch.Tensor | None) -> torch.Tensor:
    """The extra input channels of an inpainting U-Net for one prompt ([B, extra, h, w], float32):
    from the prompt's `inpaint` (inpaint_model_conditioning), else from the sampled `latent`
    ([B, C, h, w]) and its `noise_mask` (see the module doc)."""
    batch, channels, height, width = latent.shape
    if inpaint is not None:
        mask, image = as_mask_batch(inpaint.mask, "the inpainting mask"), inpaint.latent.float()
        if image.ndim != 4 or image.shape[1] != channels:
            raise ValueError(f"the inpainting image latent has shape {list(image.shape)}; a {channels}-channel "
                             f"latent [batch, {channels}, height, width] was expected (encode it with this model's VAE)")
    else:
        mask, image = noise_mask, latent.float()
    parts = {}
    if mask is None:  # nothing says what to keep: repaint everything, from a blank picture
        parts["mask"] = torch.ones(batch, 1, height, width)
        if channels != len(BLANK_IMAGE_LATENT):
            raise ValueError(f"no mask given, and no blank image is known for {channels}-channel latents")
        parts["masked_image_latent"] = torch.tensor(BLANK_IMAGE_LATENT).reshape(1, -1, 1, 1).expand(batch, -1, height, width)
    else:
        mask = as_mask_batch(mask)
        parts["mask"] = _to_batch(fit_to(mask, height, width).round(), batch, "the inpainting mask")
        parts["masked_image_latent"] = _to_batch(fit_to(image, height, width), batch, "the inpainting image")
    return torch.cat([parts[name] for name, _ in inpaint_channel_widths(spec)], dim=1).contiguous()


class MaskedDenoiser:
    """A sampler model that repaints only where `mask` ([B, C, h, w] at the latent's size) is 1:
    ComfyUI's KSamplerX0Inpaint (formulas in the module doc). `latent` is the input latent and
    `noise` the run's starting noise (zeros when the sampler adds none), both [B, C, h, w] on the
    model's device."""

    def __init__(self, model: Callable[..., torch.Tensor], latent: torch.Tensor, noise: torch.Tensor,
                 mask: torch.Tensor) -> None:
        if not latent.shape == noise.shape == mask.shape:
            raise ValueError(f"latent {list(latent.shape)}, noise {list(noise.shape)} and mask {list(mask.shape)} "
                             "must have the same shape")
        self.model, self.latent, self.noise, self.mask = model, latent, noise, mask
        self.keep = 1 - mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        x = x * self.mask + (self.latent + self.noise * s) * self.keep
        return self.model(x, sigma, **extra_args) * self.mask + self.latent * self.keep


__all__ = ["BLANK_IMAGE_LATENT", "InpaintImage", "MaskedDenoiser", "as_mask_batch", "fit_to", "inpaint_channel_widths",
           "inpaint_concat", "inpainting_in_channels", "latent_mask"]
