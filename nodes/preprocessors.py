"""ControlNet preprocessors that need no model: they turn an image into the control map a ControlNet
reads (canny edges, a scribble, a black-and-white threshold, an inversion).

Every node takes and gives IMAGE values (float32 [B, H, W, 3] in [0, 1] on the CPU), processes
each image of the batch, keeps the size, and gives a map whose three channels are equal: white
(1.0) for the lines or the foreground, black (0.0) elsewhere. Each also saves its result as a
temporary PNG and reports it under `previews`, so the editor draws the map on the node (output
nodes report under `images`; previews stay out of a run's images and the gallery).

An image that already is a control map (a depth map, a pose rendering, a canny image from
elsewhere) needs no node here: link it straight into the ControlNet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.services import services_of

log = logging.getLogger(__name__)

CATEGORY = "preprocessors"
PREVIEW_KEY = "previews"  # what the nodes report their temporary PNGs under


def check_image(image: Any) -> None:
    """Refuse anything but a batch of RGB images [B, H, W, 3], naming what came instead."""
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"input 'image' must be a batch of RGB images, shape [batch, height, width, 3]; "
                         f"got {type(image).__name__} of shape {list(shape)}")
    if shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"input 'image' is {shape[2]}x{shape[1]} pixels: there is nothing to process")


def to_uint8(image: Any) -> Any:
    """One image [H, W, 3] in [0, 1] as the 8-bit array [H, W, 3] a PNG of it holds (round to nearest)."""
    import torch

    return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def map_image(mask: Any) -> Any:
    """A [H, W] array of 0/1 (or 0/255) as an IMAGE [H, W, 3] of exact 0.0 and 1.0."""
    import numpy as np
    import torch

    white = torch.from_numpy(np.ascontiguousarray(mask != 0))
    return white[:, :, None].expand(-1, -1, 3).to(torch.float32)


def canny_edges(image: Any, low_threshold: int, high_threshold: int) -> Any:
    """Canny edges of one image [H, W, 3] in [0, 1]: cv2.Canny on its 8-bit RGB pixels, as the
    ControlNet authors' annotator computes the maps their canny models were trained on (OpenCV
    takes, at each pixel, the channel whose gradient is strongest, so an edge between two colours
    of equal brightness is found too). White edges on black, [H, W, 3]."""
    import cv2

    return map_image(cv2.Canny(to_uint8(image), low_threshold, high_threshold))


def scribble_lines(image: Any, threshold: int) -> Any:
    """The lines of a drawing (dark or coloured strokes on a light background) as white on black:
    a pixel is a line where its darkest 8-bit channel is below `threshold`, the ControlNet
    authors' rule for their scribble demo (at 127). [H, W, 3]."""
    return map_image(to_uint8(image).min(axis=2) < threshold)


def luminance(image: Any) -> Any:
    """8-bit luminance [H, W] of one image (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B, rounded, as
    OpenCV's RGB-to-gray conversion computes it)."""
    import cv2

    return cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2GRAY)


def threshold_map(image: Any, threshold: int, invert: bool) -> Any:
    """White where the 8-bit luminance is above `threshold`, black elsewhere; `invert` swaps them
    (white where it is at or below: dark lines become white ones). [H, W, 3]."""
    bright = luminance(image) > threshold
    return map_image(~bright if invert else bright)


def canny_threshold_problems(inputs: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
    low, high = inputs.get("low_threshold"), inputs.get("high_threshold")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        yield "low_threshold", (f"low_threshold ({low}) is above high_threshold ({high}); the low threshold "
                                f"(where an edge may continue) must be at or below the high one (where an edge starts)")


class Preprocessor(Node):
    """Shared by the preprocessor nodes: run `process` on each image of the batch, then save and
    report the result so the editor shows it on the node."""

    preview_prefix: ClassVar[str] = "preprocessed"  # the temporary PNGs' name start

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the control map: white on black, same size")

    def process(self, image: Any) -> Any:  # one image [H, W, 3] -> its map [H, W, 3]
        raise NotImplementedError

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        check_image(self.image)
        maps = []
        for image in self.image:
            ctx.check_cancelled()
            maps.append(self.process(image))
        result = torch.stack(maps) if maps else torch.zeros_like(self.image, dtype=torch.float32)
        show_preview(ctx, result, self.preview_prefix)
        return self.Outputs(image=result.contiguous())


def show_preview(ctx: RunContext, images: Any, prefix: str) -> None:
    """Save `images` as temporary PNGs and report them under `previews` for the editor. A preview
    that cannot be written (the disk is nearly full, the folder is not writable) is logged and
    left out: the node's output does not depend on it."""
    from latentgraph.nodes.images import save_pngs

    if not len(images):
        return
    services = services_of(ctx)
    workflow = ctx.workflow.to_dict() if ctx.workflow is not None else None
    try:
        saved = save_pngs(images, services.folders.temp, prefix, workflow, services.limits.min_free_disk,
                          services.folders.follow_symlinks)
    except OSError as exc:
        log.warning("node %r (%s): its preview was not saved: %s", ctx.node_id, ctx.node_type, exc)
        return
    ctx.report(**{PREVIEW_KEY: [{**s, "type": "temp"} for s in saved]})


@node("canny", category=CATEGORY, title="Canny edges")
class Canny(Preprocessor):
    """Find edges with the Canny detector (OpenCV, on the 8-bit RGB image, as the ControlNet
    authors' annotator does): white edges on black, for canny ControlNets. A gradient above
    high_threshold starts an edge; one above low_threshold continues it. Lower both for more
    detail; 100 and 200 are the authors' defaults."""

    image: Any = Input(port=ports.IMAGE, description="the images to find edges in")
    low_threshold: int = Input(100, ge=0, le=255, description="gradient strength that continues an edge (at most high_threshold)")
    high_threshold: int = Input(200, ge=0, le=255, description="gradient strength that starts an edge")

    preview_prefix: ClassVar[str] = "canny"

    @classmethod
    def check_inputs(cls, inputs: dict[str, Any], services: Any = None) -> Iterator[tuple[str | None, str]]:
        return canny_threshold_problems(inputs)

    def run(self, ctx: RunContext) -> Preprocessor.Outputs:
        for _, message in canny_threshold_problems({"low_threshold": self.low_threshold,
                                                    "high_threshold": self.high_threshold}):
            raise ValueError(message)  # linked values arrive only now
        return super().run(ctx)

    def process(self, image: Any) -> Any:
        return canny_edges(image, self.low_threshold, self.high_threshold)


@node("scribble", category=CATEGORY, title="Scribble from a drawing")
class Scribble(Preprocessor):
    """Turn a drawing (dark or coloured lines on a white or light background) into the white lines
    on black that scribble ControlNets expect: a pixel is a line where its darkest channel is below
    the threshold (0-255), so a yellow or red stroke counts as well as a black one. This is the
    ControlNet authors' rule (threshold 127). A drawing that already has white lines on black
    needs no preprocessor (or use threshold)."""

    image: Any = Input(port=ports.IMAGE, description="the drawing")
    threshold: int = Input(127, ge=0, le=255, description="a pixel whose darkest channel is below this is a line")

    preview_prefix: ClassVar[str] = "scribble"

    def process(self, image: Any) -> Any:
        return scribble_lines(image, self.threshold)


@node("threshold", category=CATEGORY, title="Threshold")
class Threshold(Preprocessor):
    """Make an image black and white by its brightness: white where the luminance (0.299 R +
    0.587 G + 0.114 B, on 0-255) is above the threshold, black elsewhere. invert swaps them, so
    dark lines on a light background become the white lines on black that scribble and line-art
    ControlNets read."""

    image: Any = Input(port=ports.IMAGE, description="the images to binarise")
    threshold: int = Input(127, ge=0, le=255, description="brightness (0-255) above which a pixel is white")
    invert: bool = Input(False, description="white where the image is dark instead (for dark lines on a light background)")

    preview_prefix: ClassVar[str] = "threshold"

    def process(self, image: Any) -> Any:
        return threshold_map(image, self.threshold, self.invert)


@node("invert_image", category=CATEGORY, title="Invert image")
class InvertImage(Preprocessor):
    """Invert an image (1 - value): a black-on-white line drawing becomes the white-on-black map
    line-art and soft-edge ControlNets read, and a depth map whose near parts are dark becomes one
    whose near parts are bright, as depth ControlNets expect. Grey levels are kept."""

    image: Any = Input(port=ports.IMAGE, description="the images to invert")

    preview_prefix: ClassVar[str] = "inverted"

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the inverted images, same size")

    def process(self, image: Any) -> Any:
        return 1.0 - image.float().clamp(0, 1)


__all__ = ["Canny", "InvertImage", "Scribble", "Threshold", "canny_edges", "check_image", "luminance",
           "scribble_lines", "threshold_map", "to_uint8"]
