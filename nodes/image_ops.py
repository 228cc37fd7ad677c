"""Image operations: resize (to a size, by a factor, to a pixel count), crop, flip, rotate,
composite with a mask, blend, batch, and pad for outpainting.

IMAGE values are float32 [B, H, W, 3] in [0, 1] on the CPU; MASK values float32 [B, H, W] in
[0, 1], 1 meaning "change this" (ComfyUI's convention). The nodes follow the semantics and input
names of ComfyUI's nodes of the same purpose (ImageScale, ImageScaleBy, ImageScaleToTotalPixels,
ImageCrop, ImageFlip, ImageRotate, ImageCompositeMasked, ImageBlend, ImageBatch,
ImagePadForOutpaint), so a workflow moved between the two means the same thing; where they differ
the node's description says how.

Resampling is done by torch (`nearest-exact`, `bilinear`, `bicubic`, `area`) and Pillow
(`lanczos`, on the float values, so nothing is rounded to 8 bits). `bilinear` and `bicubic` filter
the way Pillow does (antialiased when shrinking), so a shrunk image does not alias; enlarging with
`bilinear` gives exactly what plain bilinear interpolation gives. Every node that makes a larger
image checks the result's size against the run limits (--max-pixels, --max-batch, the memory a run
may use) before it allocates anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.images import MAX_IMAGE_PIXELS
from latentgraph.nodes.sd.limits import OverLimit, batch_over, pixels_over, require_memory, require_within
from latentgraph.nodes.services import services_of

CATEGORY = "image"
MAX_SIDE = 8192  # the widest or tallest image a node here makes (also the bound of its size inputs)
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
UpscaleMethod = Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
# Image-sized float32 tensors an operation holds at once: the input, the result and a temporary.
WORKING_COPIES = 3


# ---- checking values ---------------------------------------------------------------------------------

def check_image(value: Any, name: str = "image") -> Any:
    """`value` as an IMAGE batch [B, H, W, 3] of float32, or a ValueError naming input `name`."""
    import torch

    shape = tuple(getattr(value, "shape", ()))
    if not isinstance(value, torch.Tensor) or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"input {name!r} must be a batch of RGB images, shape [batch, height, width, 3]; "
                         f"got {type(value).__name__} of shape {list(shape)}")
    if 0 in shape:
        raise ValueError(f"input {name!r} is empty (shape {list(shape)}): there is no image to work on")
    return value.float() if value.dtype != torch.float32 else value


def check_mask(value: Any, name: str = "mask") -> Any:
    """`value` as a MASK batch [B, H, W] of float32 (a single [H, W] mask becomes a batch of one),
    or a ValueError naming input `name`."""
    import torch

    shape = tuple(getattr(value, "shape", ()))
    if not isinstance(value, torch.Tensor) or len(shape) not in (2, 3):
        raise ValueError(f"input {name!r} must be a batch of masks, shape [batch, height, width]; "
                         f"got {type(value).__name__} of shape {list(shape)}")
    if 0 in shape:
        raise ValueError(f"input {name!r} is empty (shape {list(shape)}): there is no mask to work on")
    mask = value[None] if len(shape) == 2 else value
    return mask.float() if mask.dtype != torch.float32 else mask


def batch_size(sizes: dict[str, int]) -> int:
    """The batch several inputs make together: each has one item (used for every item of the
    others) or the same number as the largest; anything else is refused, naming the inputs."""
    largest = max(sizes.values())
    odd = {name: size for name, size in sizes.items() if size not in (1, largest)}
    if odd:
        listed = ", ".join(f"{name!r} has {size}" for name, size in sizes.items())
        raise ValueError(f"the batches do not fit together ({listed}): each must hold 1 item or {largest}")
    return largest


def repeat_to(tensor: Any, size: int) -> Any:
    """A batch of one repeated to `size` items (a batch of `size` as it is)."""
    return tensor if tensor.shape[0] == size else tensor.expand(size, *tensor.shape[1:])


def require_size(ctx: RunContext, what: str, width: int, height: int, batch: int, channels: int = 3) -> None:
    """Refuse (OverLimit) a result of `batch` x `width` x `height` before it is made: over
    MAX_SIDE a side or MAX_IMAGE_PIXELS pixels whatever the run limits, then over the run's
    --max-pixels and --max-batch, then more memory than a run may use."""
    import torch

    if width < 1 or height < 1:
        raise ValueError(f"{what} would be {width}x{height} pixels: at least 1x1 is needed")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise OverLimit(f"{what} would be {width}x{height} pixels; at most {MAX_SIDE} a side and "
                        f"{MAX_IMAGE_PIXELS:,} pixels")
    limits = services_of(ctx).limits
    require_within(limits, what, size=(width, height), batch=batch)
    estimate = WORKING_COPIES * batch * height * width * channels * 4
    require_memory(estimate, torch.device("cpu"), limits, f"{what} ({batch} x {width}x{height})")


def size_problems(limits: Any, width: Any, height: Any, batch: Any = None) -> Iterator[tuple[str | None, str]]:
    """For a node's check_limits: literal width and height (both known and non-zero) over the run
    limits, reported on the larger of the two; a literal batch over --max-batch."""
    if isinstance(width, int) and isinstance(height, int) and width and height:
        if too_large := pixels_over(width, height, limits):
            yield "width" if width >= height else "height", too_large
    if isinstance(batch, int) and (too_many := batch_over(batch, limits)):
        yield "batch_size", too_many


# ---- resampling --------------------------------------------------------------------------------------

def center_crop_box(width: int, height: int, to_width: int, to_height: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the centred part of a width x height picture that has the aspect
    ratio of to_width x to_height (ComfyUI's `crop: center` rule: the margins are rounded)."""
    old_aspect, new_aspect = width / height, to_width / to_height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((width - width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((height - height * (old_aspect / new_aspect)) / 2)
    return x, y, width - 2 * x, height - 2 * y


def resize(samples: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """Resample `samples` [B, C, H, W] (float32) to height x width.

    crop "center" first cuts the input to the target's aspect ratio around its centre (else the
    picture is stretched). nearest-exact, area: torch's modes of those names; bilinear, bicubic:
    torch with antialias, which filters as Pillow does (Pillow's bicubic, a = -0.5); lanczos:
    Pillow's LANCZOS on each channel's float values. bicubic and lanczos overshoot at hard
    edges; their results are clamped to [0, 1].
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if method not in UPSCALE_METHODS:
        raise ValueError(f"unknown resampling method {method!r}; one of {', '.join(UPSCALE_METHODS)}")
    if crop == "center":
        x, y, w, h = center_crop_box(samples.shape[-1], samples.shape[-2], width, height)
        samples = samples[..., y:y + h, x:x + w]
    elif crop != "disabled":
        raise ValueError(f"unknown crop {crop!r}; one of 'disabled', 'center'")
    if samples.shape[-2:] == (height, width):
        return samples.contiguous()
    if method == "lanczos":
        planes = samples.detach().cpu().reshape(-1, *samples.shape[-2:]).numpy()
        resized = [np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize((width, height), Image.Resampling.LANCZOS))
                   for plane in planes]
        out = torch.from_numpy(np.stack(resized)).reshape(*samples.shape[:-2], height, width)
        return out.clamp_(0, 1)
    if method in ("bilinear", "bicubic"):
        out = F.interpolate(samples, size=(height, width), mode=method, antialias=True)
        return out.clamp_(0, 1) if method == "bicubic" else out
    return F.interpolate(samples, size=(height, width), mode=method)


def resize_images(images: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """IMAGE [B, H, W, C] -> IMAGE [B, height, width, C] (see `resize`)."""
    return resize(images.movedim(-1, 1), width, height, method, crop).movedim(1, -1).contiguous()


def resize_masks(masks: Any, width: int, height: int, method: str = "bilinear", crop: str = "disabled") -> Any:
    """MASK [B, H, W] -> MASK [B, height, width] (see `resize`)."""
    return resize(masks[:, None], width, height, method, crop)[:, 0].contiguous()


# ---- resizing nodes ----------------------------------------------------------------------------------

class ImageOutputs(NodeOutputs):
    image: Any = Output(port=ports.IMAGE, description="the resulting images")


def _method_input(default: str = "nearest-exact") -> Any:
    return Input(default, description="resampling: nearest-exact (blocky, exact pixels), bilinear, area "
                                      "(averages: good for shrinking), bicubic, lanczos (sharpest)")


@node("image_scale", category=CATEGORY, title="Scale image")
class ImageScale(Node):
    """Resize images to a width and height in pixels. Leave one of them 0 to keep the aspect ratio
    (it is computed from the other); both 0 leaves the images as they are. crop "center" cuts the
    picture to the new aspect ratio around its centre before resizing, instead of stretching it.
    Methods: nearest-exact, bilinear, area, bicubic, lanczos (bilinear and bicubic are antialiased
    when shrinking, like Pillow; lanczos works on the full float values)."""

    image: Any = Input(port=ports.IMAGE, description="the images to resize")
    upscale_method: UpscaleMethod = _method_input()
    width: int = Input(512, ge=0, le=MAX_SIDE, step=1, description="new width in pixels; 0: from the height, keeping the aspect ratio")
    height: int = Input(512, ge=0, le=MAX_SIDE, step=1, description="new height in pixels; 0: from the width, keeping the aspect ratio")
    crop: Literal["disabled", "center"] = Input("disabled", description="center: cut to the new aspect ratio around the centre instead of stretching")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return size_problems(services_of(services).limits, inputs.get("width"), inputs.get("height"))

    def run(self, ctx: RunContext) -> ImageOutputs:
        image = check_image(self.image)
        _, height, width, _ = image.shape
        if self.width == 0 and self.height == 0:
            return ImageOutputs(image=image)
        new_width = self.width or max(1, round(width * self.height / height))
        new_height = self.height or max(1, round(height * self.width / width))
        require_size(ctx, "the scaled image", new_width, new_height, image.shape[0])
        return ImageOutputs(image=resize_images(image, new_width, new_height, self.upscale_method, self.crop))


@node("image_scale_by", category=CATEGORY, title="Scale image by")
class ImageScaleBy(Node):
    """Resize images by a factor (2.0 doubles the width and the height; 0.5 halves them). The new
    sides are rounded to whole pixels."""

    image: Any = Input(port=ports.IMAGE, description="the images to resize")
    upscale_method: UpscaleMethod = _method_input()
    scale_by: float = Input(1.0, ge=0.01, le=8.0, step=0.01, description="factor for both sides")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        image = check_image(self.image)
        _, height, width, _ = image.shape
        new_width, new_height = round(width * self.scale_by), round(height * self.scale_by)
        if new_width < 1 or new_height < 1:
            raise ValueError(f"input 'scale_by': {self.scale_by} makes the {width}x{height} image "
                             f"{new_width}x{new_height} pixels; at least 1x1 is needed")
        require_size(ctx, "the scaled image", new_width, new_height, image.shape[0])
        return ImageOutputs(image=resize_images(image, new_width, new_height, self.upscale_method))


@node("image_scale_to_total_pixels", category=CATEGORY, title="Scale image to total pixels")
class ImageScaleToTotalPixels(Node):
    """Resize images to about a number of megapixels (1 megapixel = 1024 x 1024 pixels), keeping
    the aspect ratio: 1.0 turns a 3:2 photo into 1254x836. resolution_steps rounds both sides to
    a multiple (8 for a size a VAE takes whole, 64 for SDXL-friendly sizes)."""

    image: Any = Input(port=ports.IMAGE, description="the images to resize")
    upscale_method: UpscaleMethod = _method_input()
    megapixels: float = Input(1.0, ge=0.01, le=16.0, step=0.01, description="target size in megapixels (of 1024 x 1024 pixels)")
    resolution_steps: int = Input(1, ge=1, le=256, description="round both sides to a multiple of this")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        import math

        image = check_image(self.image)
        _, height, width, _ = image.shape
        total = int(self.megapixels * 1024 * 1024)
        scale = math.sqrt(total / (width * height))
        step = self.resolution_steps
        new_width = max(step, round(width * scale / step) * step)
        new_height = max(step, round(height * scale / step) * step)
        require_size(ctx, "the scaled image", new_width, new_height, image.shape[0])
        return ImageOutputs(image=resize_images(image, new_width, new_height, self.upscale_method))


# ---- geometry ----------------------------------------------------------------------------------------

@node("image_crop", category=CATEGORY, title="Crop image")
class ImageCrop(Node):
    """Cut a rectangle out of images: width x height pixels from the corner (x, y), counted from the
    top left. A rectangle that runs past the right or bottom edge is cut there, so the result is
    smaller than asked; a corner outside the image is refused."""

    image: Any = Input(port=ports.IMAGE, description="the images to crop")
    width: int = Input(512, ge=1, le=MAX_SIDE, description="width of the rectangle in pixels")
    height: int = Input(512, ge=1, le=MAX_SIDE, description="height of the rectangle in pixels")
    x: int = Input(0, ge=0, le=MAX_SIDE, description="left edge of the rectangle (0: the image's left edge)")
    y: int = Input(0, ge=0, le=MAX_SIDE, description="top edge of the rectangle (0: the image's top edge)")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        return ImageOutputs(image=crop_rectangle(check_image(self.image), self.x, self.y, self.width, self.height,
                                                 "image"))


def crop_rectangle(batch: Any, x: int, y: int, width: int, height: int, what: str) -> Any:
    """width x height from the corner (x, y) of every item of a [B, H, W, ...] batch, cut at the
    right and bottom edges; a corner outside refused, naming the input."""
    _, rows, columns = batch.shape[:3]
    for name, value, side in (("x", x, columns), ("y", y, rows)):
        if value >= side:
            raise ValueError(f"input {name!r} is {value}, outside the {columns}x{rows} {what} (at most {side - 1})")
    return batch[:, y:y + height, x:x + width].contiguous()


@node("image_flip", category=CATEGORY, title="Flip image")
class ImageFlip(Node):
    """Mirror images: "x-axis: vertically" turns them upside down (top row to the bottom),
    "y-axis: horizontally" mirrors left and right."""

    image: Any = Input(port=ports.IMAGE, description="the images to flip")
    flip_method: Literal["x-axis: vertically", "y-axis: horizontally"] = Input(
        "x-axis: vertically", description="vertically: upside down; horizontally: left to right")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        image = check_image(self.image)
        dim = 1 if self.flip_method.startswith("x") else 2
        return ImageOutputs(image=image.flip(dim).contiguous())


@node("image_rotate", category=CATEGORY, title="Rotate image")
class ImageRotate(Node):
    """Rotate images clockwise by a quarter, half or three quarters of a turn (a 90 or 270 degree
    turn swaps width and height). Pixels are moved, not resampled."""

    image: Any = Input(port=ports.IMAGE, description="the images to rotate")
    rotation: Literal["none", "90 degrees", "180 degrees", "270 degrees"] = Input(
        "none", description="clockwise turn")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        image = check_image(self.image)
        quarters = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}[self.rotation]
        # rot90 from the width axis towards the height axis: clockwise as the picture is seen
        return ImageOutputs(image=image.rot90(quarters, dims=(2, 1)).contiguous())


@node("image_pad", category=CATEGORY, title="Pad image for outpainting")
class ImagePad(Node):
    """Enlarge the canvas for outpainting: add left/top/right/bottom pixels of mid grey (0.5) around
    the images, and give the mask of what to paint: 1 on the new area, 0 on the picture. feathering
    lets the mask fade into the picture along the padded sides, over that many pixels (the mask is
    ((feathering - d) / feathering)^2 at d pixels from a padded edge), so the painted area blends
    in; it applies only where the picture is more than twice as wide and as high as the feathering.
    As ComfyUI's ImagePadForOutpaint (whose mask has no batch dimension; this one has the image's).
    Sides that are multiples of 8 keep the picture on the latent grid."""

    image: Any = Input(port=ports.IMAGE, description="the images to extend")
    left: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="pixels to add on the left")
    top: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="pixels to add at the top")
    right: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="pixels to add on the right")
    bottom: int = Input(0, ge=0, le=MAX_SIDE, step=8, description="pixels to add at the bottom")
    feathering: int = Input(40, ge=0, le=MAX_SIDE, description="pixels over which the mask fades into the picture (0: a hard edge)")

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the images on the larger canvas, new area mid grey")
        mask: Any = Output(port=ports.MASK, description="1 on the new area (to paint), fading to 0 into the picture")

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        image = check_image(self.image)
        batch, height, width, channels = image.shape
        new_width, new_height = width + self.left + self.right, height + self.top + self.bottom
        require_size(ctx, "the padded image", new_width, new_height, batch, channels + 1)
        canvas = torch.full((batch, new_height, new_width, channels), 0.5, dtype=torch.float32)
        canvas[:, self.top:self.top + height, self.left:self.left + width] = image
        mask = torch.ones((new_height, new_width), dtype=torch.float32)
        mask[self.top:self.top + height, self.left:self.left + width] = self.inner_mask(height, width)
        return self.Outputs(image=canvas, mask=mask.expand(batch, -1, -1).contiguous())

    def inner_mask(self, height: int, width: int) -> Any:
        """The mask over the original picture: 0, rising towards the padded sides when feathered."""
        import torch

        feather = self.feathering
        if not (feather > 0 and feather * 2 < height and feather * 2 < width):
            return torch.zeros((height, width), dtype=torch.float32)
        rows = torch.arange(height, dtype=torch.float64)[:, None]
        cols = torch.arange(width, dtype=torch.float64)[None, :]
        # distance to each padded side (a side without padding never counts: the full size)
        far_rows, far_cols = torch.full_like(rows, height), torch.full_like(cols, width)
        distance = torch.minimum(
            torch.minimum(rows if self.top else far_rows, (height - rows) if self.bottom else far_rows),
            torch.minimum(cols if self.left else far_cols, (width - cols) if self.right else far_cols))
        fade = ((feather - distance) / feather).clamp(min=0) ** 2
        return fade.to(torch.float32)


# ---- combining images --------------------------------------------------------------------------------

@node("image_composite_masked", category=CATEGORY, title="Composite images with a mask")
class ImageCompositeMasked(Node):
    """Paste source onto destination with its top left corner at (x, y). With a mask, only where
    the mask is 1 does the source replace the destination (grey values mix the two), so this puts
    an inpainted picture back over the original outside the mask. The mask is resized bilinearly
    to the source's size when it differs; resize_source first resizes the source to the
    destination's size. Parts of the source beyond the destination's edges are left out. Batches
    of one are used for every image of the others."""

    destination: Any = Input(port=ports.IMAGE, description="the images to paste onto (their size is the result's)")
    source: Any = Input(port=ports.IMAGE, description="the images to paste")
    x: int = Input(0, ge=0, le=MAX_SIDE, description="left edge of the source on the destination")
    y: int = Input(0, ge=0, le=MAX_SIDE, description="top edge of the source on the destination")
    resize_source: bool = Input(False, description="resize the source to the destination's size first (bilinear)")
    mask: Any = Input(None, port=ports.MASK, description="where the source shows (1) and where the destination stays (0); "
                                                         "none: the whole source")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        destination, source = check_image(self.destination, "destination"), check_image(self.source, "source")
        _, height, width, _ = destination.shape
        sizes = {"destination": destination.shape[0], "source": source.shape[0]}
        mask = None
        if self.mask is not None:
            mask = check_mask(self.mask)
            sizes["mask"] = mask.shape[0]
        batch = batch_size(sizes)
        require_size(ctx, "the composite", width, height, batch)
        if self.resize_source:
            source = resize_images(source, width, height, "bilinear")
        return ImageOutputs(image=composite(destination, source, self.x, self.y, mask, batch))


def composite(destination: Any, source: Any, x: int, y: int, mask: Any, batch: int) -> Any:
    """destination [B, H, W, C] with source [b, h, w, C] over it at (x, y), weighted by mask
    [b, h', w'] (resized to h x w; None: 1 everywhere); batches of 1 repeated to `batch`."""
    output = repeat_to(destination, batch).clone()
    _, height, width, _ = output.shape
    visible_h, visible_w = min(source.shape[1], height - y), min(source.shape[2], width - x)
    if visible_h <= 0 or visible_w <= 0:
        return output
    part = repeat_to(source, batch)[:, :visible_h, :visible_w]
    region = output[:, y:y + visible_h, x:x + visible_w]
    if mask is None:
        region.copy_(part)
        return output
    if mask.shape[-2:] != source.shape[1:3]:
        mask = resize_masks(mask, source.shape[2], source.shape[1], "bilinear")
    weight = repeat_to(mask, batch)[:, :visible_h, :visible_w, None].clamp(0, 1)
    region.copy_(part * weight + region * (1 - weight))
    return output


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def blend(base: Any, layer: Any, mode: str) -> Any:
    """The blend mode's result of `layer` over `base` (both in [0, 1]), before mixing by the factor."""
    import torch

    if mode == "normal":
        return layer
    if mode == "multiply":
        return base * layer
    if mode == "screen":
        return 1 - (1 - base) * (1 - layer)
    if mode == "overlay":
        return torch.where(base <= 0.5, 2 * base * layer, 1 - 2 * (1 - base) * (1 - layer))
    if mode == "soft_light":  # the W3C compositing formula
        d = torch.where(base <= 0.25, ((16 * base - 12) * base + 4) * base, torch.sqrt(base))
        return torch.where(layer <= 0.5, base - (1 - 2 * layer) * base * (1 - base), base + (2 * layer - 1) * (d - base))
    if mode == "difference":
        return (base - layer).abs()
    raise ValueError(f"unknown blend mode {mode!r}; one of {', '.join(BLEND_MODES)}")


@node("image_blend", category=CATEGORY, title="Blend images")
class ImageBlend(Node):
    """Blend image2 over image1 with a blend mode, then mix: image1 x (1 - blend_factor) + blended x
    blend_factor, clamped to [0, 1]. Modes: normal (image2 itself), multiply, screen, overlay,
    soft_light (the W3C formula), difference (|image1 - image2|; ComfyUI's ImageBlend takes
    image1 - image2 and clips negatives to 0). image2 is resized to image1's size (bicubic, centre
    crop) when the sizes differ."""

    image1: Any = Input(port=ports.IMAGE, description="the base images (their size is the result's)")
    image2: Any = Input(port=ports.IMAGE, description="the images blended over them")
    blend_factor: float = Input(0.5, ge=0.0, le=1.0, step=0.01, description="0: image1 alone; 1: the full blend")
    blend_mode: Literal["normal", "multiply", "screen", "overlay", "soft_light", "difference"] = Input(
        "normal", description="how image2 combines with image1")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        image1, image2 = check_image(self.image1, "image1"), check_image(self.image2, "image2")
        batch = batch_size({"image1": image1.shape[0], "image2": image2.shape[0]})
        _, height, width, _ = image1.shape
        require_size(ctx, "the blend", width, height, batch)
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize_images(image2, width, height, "bicubic", "center")
        image1, image2 = repeat_to(image1, batch), repeat_to(image2, batch)
        blended = blend(image1, image2, self.blend_mode)
        mixed = image1 * (1 - self.blend_factor) + blended * self.blend_factor
        return ImageOutputs(image=mixed.clamp(0, 1).contiguous())


@node("image_batch", category=CATEGORY, title="Batch images")
class ImageBatch(Node):
    """Join two image batches into one (image1's images first). image2 is resized to image1's size
    (bilinear, centre crop) when the sizes differ, as a batch holds images of one size."""

    image1: Any = Input(port=ports.IMAGE, description="the first images (their size is the batch's)")
    image2: Any = Input(port=ports.IMAGE, description="the images to add after them")

    Outputs: ClassVar[type[NodeOutputs]] = ImageOutputs

    def run(self, ctx: RunContext) -> ImageOutputs:
        import torch

        image1, image2 = check_image(self.image1, "image1"), check_image(self.image2, "image2")
        _, height, width, _ = image1.shape
        require_size(ctx, "the batch", width, height, image1.shape[0] + image2.shape[0])
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize_images(image2, width, height, "bilinear", "center")
        return ImageOutputs(image=torch.cat((image1, image2)).contiguous())


__all__ = ["ImageBatch", "ImageBlend", "ImageCompositeMasked", "ImageCrop", "ImageFlip", "ImagePad", "ImageRotate",
           "ImageScale", "ImageScaleBy", "ImageScaleToTotalPixels", "UPSCALE_METHODS", "blend", "center_crop_box",
           "check_image", "check_mask", "composite", "require_size", "resize", "resize_images", "resize_masks"]
