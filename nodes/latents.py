"""Latent nodes: empty latents to start from, and resizing."""

from __future__ import annotations

from typing import Any, Iterator, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.sd.limits import batch_over, pixels_over, require_within
from latentgraph.nodes.services import services_of

LATENT_CHANNELS = 4  # SD1.x, SD2.x and SDXL all use 4-channel latents
DOWNSCALE = 8  # and 8x down-sampling VAEs
MAX_SIDE = 8192


@node("empty_latent", category="latent", title="Empty latent")
class EmptyLatent(Node):
    """A blank latent of the image size to generate (text-to-image starts from it)."""

    width: int = Input(512, ge=64, le=MAX_SIDE, step=8, description="image width in pixels (a multiple of 8)")
    height: int = Input(512, ge=64, le=MAX_SIDE, step=8, description="image height in pixels (a multiple of 8)")
    batch_size: int = Input(1, ge=1, le=64, description="images per run")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="zeros of shape [batch, 4, height/8, width/8]")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        limits = services_of(services).limits
        if "width" in inputs and "height" in inputs:
            too_large = pixels_over(inputs["width"], inputs["height"], limits)
            if too_large:
                yield "width" if inputs["width"] >= inputs["height"] else "height", too_large
        if "batch_size" in inputs and (too_many := batch_over(inputs["batch_size"], limits)):
            yield "batch_size", too_many

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        from latentgraph.nodes.sd.handles import Latent

        for name, value in (("width", self.width), ("height", self.height)):
            if value % DOWNSCALE:
                raise ValueError(f"{name} must be a multiple of {DOWNSCALE}, got {value}")
        require_within(services_of(ctx).limits, "the latent", size=(self.width, self.height), batch=self.batch_size)
        samples = torch.zeros(self.batch_size, LATENT_CHANNELS, self.height // DOWNSCALE, self.width // DOWNSCALE)
        return self.Outputs(latent=Latent(samples))


@node("latent_upscale", category="latent", title="Upscale latent")
class LatentUpscale(Node):
    """Resize a latent (for a hires-fix second pass: upscale, then sample again with denoise < 1).
    Give a width and height in pixels, or leave them 0 and give scale_by. crop center first cuts
    the latent to the new aspect ratio around its centre (and its noise mask the same way), so a
    new aspect ratio does not stretch the picture."""

    latent: Any = Input(port=ports.LATENT, description="the latent to resize")
    method: Literal["nearest-exact", "bilinear", "bicubic", "area"] = Input("nearest-exact", description="interpolation")
    width: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="target width in pixels; 0 keeps the aspect ratio")
    height: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="target height in pixels; 0 keeps the aspect ratio")
    scale_by: float = Input(1.5, gt=0.0, le=8.0, step=0.05, description="used when width and height are both 0")
    crop: Literal["disabled", "center"] = Input("disabled", description="center: cut to the new aspect ratio around "
                                                                         "the centre instead of stretching")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the resized latent")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        width, height = inputs.get("width"), inputs.get("height")
        if width and height and (too_large := pixels_over(width, height, services_of(services).limits)):
            yield "width" if width >= height else "height", too_large

    def run(self, ctx: RunContext) -> Outputs:
        import torch.nn.functional as F

        from latentgraph.nodes.sd.handles import Latent

        samples = self.latent.samples
        h, w = samples.shape[-2:]
        if self.width == 0 and self.height == 0:
            size = (max(1, round(h * self.scale_by)), max(1, round(w * self.scale_by)))
        elif self.height == 0:
            size = (max(1, round(h * self.width / DOWNSCALE / w)), self.width // DOWNSCALE)
        elif self.width == 0:
            size = (self.height // DOWNSCALE, max(1, round(w * self.height / DOWNSCALE / h)))
        else:
            size = (self.height // DOWNSCALE, self.width // DOWNSCALE)
        if size[0] * DOWNSCALE > MAX_SIDE or size[1] * DOWNSCALE > MAX_SIDE:
            raise ValueError(f"the result would be {size[1] * DOWNSCALE}x{size[0] * DOWNSCALE} pixels; at most {MAX_SIDE} a side")
        require_within(services_of(ctx).limits, "the resized latent", size=(size[1] * DOWNSCALE, size[0] * DOWNSCALE))
        noise_mask = self.latent.noise_mask
        if self.crop == "center":
            from latentgraph.nodes.image_ops import center_crop_box

            x, y, width, height = center_crop_box(w, h, size[1], size[0])
            samples = samples[..., y:y + height, x:x + width]
            if noise_mask is not None:  # the same part of the picture, at the mask's own resolution
                mask_h, mask_w = noise_mask.shape[-2:]
                top, bottom = round(y * mask_h / h), round((y + height) * mask_h / h)
                left, right = round(x * mask_w / w), round((x + width) * mask_w / w)
                noise_mask = noise_mask[..., top:bottom, left:right].contiguous()
        antialias = {"antialias": True} if self.method in ("bilinear", "bicubic") else {}
        resized = F.interpolate(samples, size=size, mode=self.method, **antialias)
        return self.Outputs(latent=Latent(resized, noise_mask))  # the mask is resized when sampling
