"""Mask nodes: make masks (from an image channel, a colour, a constant), turn them into images,
and edit them (invert, crop, grow or shrink, feather the edges, blur, threshold, combine two).

A MASK is float32 [B, H, W] in [0, 1] on the CPU; 1 means "change this" (ComfyUI's convention:
`load_image` gives 1 where the picture is transparent). The nodes follow ComfyUI's mask nodes of
the same purpose (ImageToMask, ImageColorToMask, MaskToImage, SolidMask, InvertMask, CropMask,
GrowMask, FeatherMask, ThresholdMask, MaskComposite) and their input names; a node's description
says where it differs. Morphology and blurs are OpenCV's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.image_ops import (MAX_SIDE, batch_size, check_image, check_mask, crop_rectangle, repeat_to,
                                          require_size, size_problems)
from latentgraph.nodes.services import services_of

CATEGORY = "mask"
GROW_CHUNK = 32  # grow_mask steps between checks for a cancel


class MaskOutputs(NodeOutputs):
    mask: Any = Output(port=ports.MASK, description="the resulting masks")


# ---- making masks ------------------------------------------------------------------------------------

@node("image_to_mask", category=CATEGORY, title="Image channel to mask")
class ImageToMask(Node):
    """Use one colour channel of images as a mask: its value (0 to 1) is the mask's. A black and
    white mask saved as a picture comes back with any channel. (The alpha channel of a loaded
    picture is already `load_image`'s mask output.)"""

    image: Any = Input(port=ports.IMAGE, description="the images to take the channel from")
    channel: Literal["red", "green", "blue"] = Input("red", description="which channel becomes the mask")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        image = check_image(self.image)
        index = ("red", "green", "blue").index(self.channel)
        return MaskOutputs(mask=image[..., index].contiguous())


@node("mask_from_color", category=CATEGORY, title="Mask from colour")
class MaskFromColor(Node):
    """Mask the pixels of one colour: 1 where a pixel's 8-bit colour (each channel rounded to
    0-255) equals color, 0 elsewhere; tolerance also takes pixels whose every channel is at most
    that many levels away. color is 0xRRGGBB as a number (red 0xFF0000 = 16711680, white
    16777215), as ComfyUI's ImageColorToMask takes it (whose mask is 0/255 where ours is 0/1)."""

    image: Any = Input(port=ports.IMAGE, description="the images to look in")
    color: int = Input(0, ge=0, le=0xFFFFFF, description="the colour as 0xRRGGBB (red 16711680, green 65280, blue 255)")
    tolerance: int = Input(0, ge=0, le=255, description="how many 8-bit levels each channel may differ by")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        import torch

        image = check_image(self.image)
        levels = (image.clamp(0, 1) * 255).round().to(torch.int32)
        target = torch.tensor([(self.color >> 16) & 0xFF, (self.color >> 8) & 0xFF, self.color & 0xFF], dtype=torch.int32)
        close = ((levels - target).abs() <= self.tolerance).all(dim=-1)
        return MaskOutputs(mask=close.to(torch.float32))


@node("solid_mask", category=CATEGORY, title="Solid mask")
class SolidMask(Node):
    """A mask of one value everywhere (1: change the whole picture), to start from or to combine."""

    value: float = Input(1.0, ge=0.0, le=1.0, step=0.01, description="the mask's value everywhere")
    width: int = Input(512, ge=1, le=MAX_SIDE, description="width in pixels")
    height: int = Input(512, ge=1, le=MAX_SIDE, description="height in pixels")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return size_problems(services_of(services).limits, inputs.get("width"), inputs.get("height"))

    def run(self, ctx: RunContext) -> MaskOutputs:
        import torch

        require_size(ctx, "the mask", self.width, self.height, 1, channels=1)
        return MaskOutputs(mask=torch.full((1, self.height, self.width), self.value, dtype=torch.float32))


@node("mask_to_image", category=CATEGORY, title="Mask to image")
class MaskToImage(Node):
    """Show a mask as a grey image (white where the mask is 1), to preview, save or resize it."""

    mask: Any = Input(port=ports.MASK, description="the masks")

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the masks as grey images, all three channels equal")

    def run(self, ctx: RunContext) -> Outputs:
        mask = check_mask(self.mask)
        return self.Outputs(image=mask[..., None].expand(-1, -1, -1, 3).contiguous())


# ---- editing masks -----------------------------------------------------------------------------------

@node("invert_mask", category=CATEGORY, title="Invert mask")
class InvertMask(Node):
    """Swap what is changed and what is kept: 1 - mask (a mask of what to keep becomes one of what to
    repaint)."""

    mask: Any = Input(port=ports.MASK, description="the masks to invert")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        return MaskOutputs(mask=(1.0 - check_mask(self.mask)).contiguous())


@node("crop_mask", category=CATEGORY, title="Crop mask")
class CropMask(Node):
    """Cut a rectangle out of masks, as image_crop does for images: width x height from the corner
    (x, y); a rectangle past the right or bottom edge is cut there."""

    mask: Any = Input(port=ports.MASK, description="the masks to crop")
    x: int = Input(0, ge=0, le=MAX_SIDE, description="left edge of the rectangle")
    y: int = Input(0, ge=0, le=MAX_SIDE, description="top edge of the rectangle")
    width: int = Input(512, ge=1, le=MAX_SIDE, description="width of the rectangle in pixels")
    height: int = Input(512, ge=1, le=MAX_SIDE, description="height of the rectangle in pixels")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        return MaskOutputs(mask=crop_rectangle(check_mask(self.mask), self.x, self.y, self.width, self.height, "mask"))


@node("grow_mask", category=CATEGORY, title="Grow or shrink mask")
class GrowMask(Node):
    """Grow the masked area by expand pixels on every side (a grey-level dilation, one pixel per
    step), or shrink it with a negative expand (erosion). tapered_corners grows through the four
    side neighbours only, so corners round off (a diamond); without it the diagonal neighbours
    count too (a square). Inpainting grows a mask a few pixels so the new part blends at its edge."""

    mask: Any = Input(port=ports.MASK, description="the masks to grow or shrink")
    expand: int = Input(0, ge=-MAX_SIDE, le=MAX_SIDE, description="pixels to grow by; negative: shrink")
    tapered_corners: bool = Input(True, description="round the corners (side neighbours only) instead of keeping them square")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        import cv2
        import numpy as np
        import torch

        mask = check_mask(self.mask)
        if self.expand == 0:
            return MaskOutputs(mask=mask)
        corner = 0 if self.tapered_corners else 1
        kernel = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]], dtype=np.uint8)
        operation = cv2.dilate if self.expand > 0 else cv2.erode
        grown = []
        for plane in mask.numpy():
            out = np.ascontiguousarray(plane)
            left = abs(self.expand)
            while left:
                ctx.check_cancelled()
                steps = min(left, GROW_CHUNK)
                # pixels beyond the edge are left out (OpenCV's default border for these)
                out = operation(out, kernel, iterations=steps)
                left -= steps
            grown.append(torch.from_numpy(out))
        return MaskOutputs(mask=torch.stack(grown))


@node("feather_mask", category=CATEGORY, title="Feather mask edges")
class FeatherMask(Node):
    """Fade masks out towards the picture's edges: over the first `left` columns the mask is
    multiplied by 1/left at the edge, rising to 1 `left` pixels in; likewise top, right and
    bottom (corners get both factors). (ComfyUI's FeatherMask starts its right and bottom ramps one
    pixel off, at the first column and row; here every side ramps alike.)"""

    mask: Any = Input(port=ports.MASK, description="the masks to feather")
    left: int = Input(0, ge=0, le=MAX_SIDE, description="columns to fade on the left")
    top: int = Input(0, ge=0, le=MAX_SIDE, description="rows to fade at the top")
    right: int = Input(0, ge=0, le=MAX_SIDE, description="columns to fade on the right")
    bottom: int = Input(0, ge=0, le=MAX_SIDE, description="rows to fade at the bottom")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        import torch

        mask = check_mask(self.mask)
        _, height, width = mask.shape

        def ramp(size: int, near: int, far: int) -> Any:
            """Factors along one axis: (i + 1) / near over the first `near`, mirrored at the far end."""
            factor = torch.ones(size, dtype=torch.float32)
            near, far = min(near, size), min(far, size)
            if near:
                factor[:near] *= torch.arange(1, near + 1, dtype=torch.float32) / near
            if far:
                factor[size - far:] *= torch.arange(far, 0, -1, dtype=torch.float32) / far
            return factor

        rows, cols = ramp(height, self.top, self.bottom), ramp(width, self.left, self.right)
        return MaskOutputs(mask=(mask * rows[:, None] * cols[None, :]).contiguous())


@node("blur_mask", category=CATEGORY, title="Blur mask")
class BlurMask(Node):
    """Soften masks with a Gaussian blur, so a painted area fades into the kept one. blur_radius is
    the kernel's half-width in pixels (kernel 2 x radius + 1); sigma its spread in pixels (0: the
    radius's usual one, 0.3 x (radius - 1) + 0.8). Beyond the edges the mask is taken to go on as
    at the edge, so a mask touching the border stays full there."""

    mask: Any = Input(port=ports.MASK, description="the masks to blur")
    blur_radius: int = Input(8, ge=0, le=512, description="kernel half-width in pixels (0: no blur)")
    sigma: float = Input(0.0, ge=0.0, le=256.0, step=0.1, description="spread in pixels (0: from the radius)")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        import cv2
        import numpy as np
        import torch

        mask = check_mask(self.mask)
        if self.blur_radius == 0:
            return MaskOutputs(mask=mask)
        size = 2 * self.blur_radius + 1
        sigma = self.sigma or gaussian_sigma(self.blur_radius)
        blurred = []
        for plane in mask.numpy():
            ctx.check_cancelled()
            out = cv2.GaussianBlur(np.ascontiguousarray(plane), (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
            blurred.append(torch.from_numpy(out))
        return MaskOutputs(mask=torch.stack(blurred).clamp_(0, 1))


def gaussian_sigma(radius: int) -> float:
    """The sigma OpenCV derives from a kernel of half-width `radius` (ksize 2r + 1): 0.3 x ((ksize - 1)
    / 2 - 1) + 0.8."""
    return 0.3 * (radius - 1) + 0.8


@node("threshold_mask", category=CATEGORY, title="Threshold mask")
class ThresholdMask(Node):
    """Make masks hard: 1 where the mask is above value, 0 elsewhere (a blurred or painted mask
    becomes black and white)."""

    mask: Any = Input(port=ports.MASK, description="the masks")
    value: float = Input(0.5, ge=0.0, le=1.0, step=0.01, description="mask values above this become 1, the rest 0")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        import torch

        return MaskOutputs(mask=(check_mask(self.mask) > self.value).to(torch.float32))


MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


@node("mask_composite", category=CATEGORY, title="Combine masks")
class MaskComposite(Node):
    """Combine source into destination with its top left corner at (x, y); outside the source the
    destination stays. multiply (the overlap), add (the union of soft masks), subtract (cut the
    source out), and/or/xor (on masks rounded to 0 or 1 first). The result is clamped to [0, 1].
    Batches of one are used for every mask of the other."""

    destination: Any = Input(port=ports.MASK, description="the masks to change (their size is the result's)")
    source: Any = Input(port=ports.MASK, description="the masks to combine into them")
    x: int = Input(0, ge=0, le=MAX_SIDE, description="left edge of the source on the destination")
    y: int = Input(0, ge=0, le=MAX_SIDE, description="top edge of the source on the destination")
    operation: Literal["multiply", "add", "subtract", "and", "or", "xor"] = Input("multiply", description="how to combine them")

    Outputs: ClassVar[type[NodeOutputs]] = MaskOutputs

    def run(self, ctx: RunContext) -> MaskOutputs:
        destination, source = check_mask(self.destination, "destination"), check_mask(self.source, "source")
        batch = batch_size({"destination": destination.shape[0], "source": source.shape[0]})
        output = repeat_to(destination, batch).clone()
        _, height, width = output.shape
        visible_h, visible_w = min(source.shape[1], height - self.y), min(source.shape[2], width - self.x)
        if visible_h > 0 and visible_w > 0:
            region = output[:, self.y:self.y + visible_h, self.x:self.x + visible_w]
            region.copy_(combine(region, repeat_to(source, batch)[:, :visible_h, :visible_w], self.operation))
        return MaskOutputs(mask=output.clamp_(0, 1))


def combine(destination: Any, source: Any, operation: str) -> Any:
    """One of MASK_OPERATIONS on two masks of one shape (not yet clamped)."""
    if operation == "multiply":
        return destination * source
    if operation == "add":
        return destination + source
    if operation == "subtract":
        return destination - source
    if operation in ("and", "or", "xor"):
        a, b = destination.round().bool(), source.round().bool()
        return {"and": a & b, "or": a | b, "xor": a ^ b}[operation].float()
    raise ValueError(f"unknown operation {operation!r}; one of {', '.join(MASK_OPERATIONS)}")


__all__ = ["BlurMask", "CropMask", "FeatherMask", "GrowMask", "ImageToMask", "InvertMask", "MASK_OPERATIONS", "MaskComposite",
           "MaskFromColor", "MaskToImage", "SolidMask", "ThresholdMask", "combine", "gaussian_sigma"]
