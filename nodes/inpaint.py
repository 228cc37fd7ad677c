"""Inpainting nodes: a noise mask on a latent, encoding for inpainting, and the inpainting-model
conditioning. Masks are ComfyUI's: 1 (white) is the area to repaint, 0 is kept; an image's
transparent pixels (load_image's MASK) are 1. How the sampler uses them: nodes/sd/inpaint.py."""

from __future__ import annotations

from typing import Any

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.latents import DOWNSCALE
from latentgraph.nodes.sd.limits import require_within
from latentgraph.nodes.services import services_of

MAX_GROW = 64


def _image_mask(node: str, image: Any, mask: Any) -> tuple[Any, Any]:
    """The image ([B, H, W, 3+]) cropped to multiples of 8 from the top left, as vae_encode crops it,
    and the mask ([B, 1, H, W]) resized to the image's full size (bilinear, as ComfyUI does) and
    cropped the same way."""
    import torch.nn.functional as F
    from latentgraph.nodes.sd.inpaint import as_mask_batch

    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"{node}: pixels must be an image [batch, height, width, 3], got shape {list(image.shape)}")
    height, width = image.shape[1] // DOWNSCALE * DOWNSCALE, image.shape[2] // DOWNSCALE * DOWNSCALE
    if height == 0 or width == 0:
        raise ValueError(f"{node}: the image is {image.shape[2]}x{image.shape[1]}; at least 8x8 is needed")
    try:
        mask = as_mask_batch(mask)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{node}: {error}") from None
    if mask.shape[-2:] != image.shape[1:3]:
        mask = F.interpolate(mask, size=tuple(image.shape[1:3]), mode="bilinear", align_corners=False)
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"{node}: {mask.shape[0]} masks for {image.shape[0]} images; give one mask, or one per image")
    return image[:, :height, :width, :3], mask[..., :height, :width]


def _encode(ctx: RunContext, vae: Any, image: Any, what: str) -> Any:
    """Pixels [B, H, W, 3] in [0, 1] (sides multiples of 8) -> the VAE's scaled latent, float32 on the
    CPU, within the run's size and memory limits (as vae_encode)."""
    import torch
    from latentgraph.nodes.sd.interrupt import cancel_points
    from latentgraph.nodes.sd.limits import require_memory
    from latentgraph.nodes.sd.memory import encode_memory
    from latentgraph.nodes.sd.vae import encode_to_latent

    model, limits = vae.model, services_of(ctx).limits
    batch, height, width = image.shape[:3]
    require_within(limits, what, size=(width, height), batch=batch)
    require_memory(encode_memory(model.config, batch, height, width, model.dtype.itemsize), model.device, limits,
                   f"encoding {batch} x {width}x{height}")
    with torch.inference_mode(), cancel_points(ctx.check_cancelled):
        return encode_to_latent(model, image.permute(0, 3, 1, 2) * 2 - 1).float().cpu()  # as vae_encode


def blank_masked(pixels: Any, mask: Any) -> Any:
    """The pixels with the area to repaint (mask rounded to 1) set to mid-grey, 0.5: 0 in the VAE's
    [-1, 1] (what inpainting models were trained with; diffusers' `image * (mask < 0.5)`)."""
    keep = 1.0 - mask.round()[:, 0, :, :, None]
    return (pixels - 0.5) * keep + 0.5


def grow_mask(mask: Any, grow_by: int) -> Any:
    """ComfyUI's VAEEncodeForInpaint growth: the rounded mask dilated by a grow_by x grow_by square
    (for even sizes reaching one pixel further up and left), 0 leaves it rounded."""
    import math

    import torch
    import torch.nn.functional as F

    mask = mask.round()
    if grow_by == 0:
        return mask
    kernel = torch.ones(1, 1, grow_by, grow_by)
    grown = F.conv2d(mask, kernel, padding=math.ceil((grow_by - 1) / 2)).clamp(0, 1)
    return grown[..., :mask.shape[-2], :mask.shape[-1]].round()


@node("set_latent_noise_mask", category="latent/inpaint", title="Set latent noise mask")
class SetLatentNoiseMask(Node):
    """Limit sampling to part of a latent: where the mask is 1 the sampler repaints, where it is 0
    the latent is kept (re-noised to each step's level, so the new part blends in); grey values
    blend. Works with every sampler and model (inpainting models also read the mask). Use it after
    vae_encode for inpainting with the original image underneath, and a denoise below 1 to keep
    some of what was under the mask."""

    latent: Any = Input(port=ports.LATENT, description="the latent to repaint part of")
    mask: Any = Input(port=ports.MASK, description="1 where to repaint (any size: resized to the latent)")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the latent with its noise mask")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Latent
        from latentgraph.nodes.sd.inpaint import as_mask_batch

        try:
            mask = as_mask_batch(self.mask)
        except (TypeError, ValueError) as error:
            raise ValueError(f"set_latent_noise_mask: {error}") from None
        batch = self.latent.samples.shape[0]
        if batch % mask.shape[0]:
            raise ValueError(f"set_latent_noise_mask: {mask.shape[0]} masks for a latent batch of {batch}; "
                             "give one mask, or one per latent")
        return self.Outputs(latent=Latent(self.latent.samples, mask))


@node("vae_encode_for_inpaint", category="latent/inpaint", title="VAE encode (for inpainting)")
class VaeEncodeForInpaint(Node):
    """Encode an image for repainting the masked area from scratch (denoise 1): the area is
    blanked to grey before encoding (nothing of what was there shows through) and the mask, grown
    by a few pixels so the seam is repainted too, becomes the latent's noise mask. Made for
    inpainting checkpoints; with a regular model it fills the area from grey, which needs a high
    denoise. To keep what is under the mask, use vae_encode with set_latent_noise_mask instead."""

    vae: Any = Input(port=ports.VAE, description="the autoencoder")
    pixels: Any = Input(port=ports.IMAGE, description="the image")
    mask: Any = Input(port=ports.MASK, description="1 where to repaint")
    grow_mask_by: int = Input(6, ge=0, le=MAX_GROW, description="pixels to grow the mask by (a square this wide)")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the blanked image's latent with the grown mask")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Latent

        pixels, mask = _image_mask("vae_encode_for_inpaint", self.pixels, self.mask)
        latent = _encode(ctx, self.vae, blank_masked(pixels, mask), "the image")
        return self.Outputs(latent=Latent(latent, grow_mask(mask, self.grow_mask_by)))


@node("inpaint_model_conditioning", category="conditioning/inpaint", title="Inpaint model conditioning")
class InpaintModelConditioning(Node):
    """Prepare an inpainting: the image with the masked area blanked is encoded and attached, with
    the mask, to both prompts (what inpainting checkpoints read beside the latent; other models
    ignore it), and the whole image is encoded as the latent to sample, with the mask as its noise
    mask (noise_mask on), so only the masked area changes. Lower denoise keeps more of what was
    under the mask."""

    positive: Any = Input(port=ports.CONDITIONING, description="what the repainted area should show")
    negative: Any = Input(port=ports.CONDITIONING, description="what it should not show")
    vae: Any = Input(port=ports.VAE, description="the autoencoder")
    pixels: Any = Input(port=ports.IMAGE, description="the image")
    mask: Any = Input(port=ports.MASK, description="1 where to repaint")
    noise_mask: bool = Input(True, description="also limit sampling to the mask (off: the model alone decides "
                                               "what changes, as diffusers' inpainting pipelines do)")

    class Outputs(NodeOutputs):
        positive: Any = Output(port=ports.CONDITIONING, description="the prompt with the masked image and mask")
        negative: Any = Output(port=ports.CONDITIONING, description="the negative prompt with them")
        latent: Any = Output(port=ports.LATENT, description="the image's latent (with the noise mask)")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning, Latent
        from latentgraph.nodes.sd.inpaint import InpaintImage

        pixels, mask = _image_mask("inpaint_model_conditioning", self.pixels, self.mask)
        masked = _encode(ctx, self.vae, blank_masked(pixels, mask), "the image")
        original = _encode(ctx, self.vae, pixels, "the image")
        inpaint = InpaintImage(masked, mask)
        sides = [Conditioning(tuple(replace(e, inpaint=inpaint) for e in side.entries))
                 for side in (self.positive, self.negative)]
        latent = Latent(original, mask if self.noise_mask else None)
        return self.Outputs(positive=sides[0], negative=sides[1], latent=latent)
