"""Image nodes: VAE decode and encode, load an input image, save or preview PNGs.

IMAGE values are float32 tensors [B, H, W, 3] in [0, 1] on the CPU; MASK values [B, H, W] in [0, 1].
Saved PNGs carry the workflow that made them (text chunk "workflow"), so dropping one on the editor
restores the graph.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.folders import check_within, file_identity, resolve_inside
from latentgraph.nodes.sd.limits import require_within
from latentgraph.nodes.services import running_models, services_of

MAX_IMAGE_PIXELS = 8192 * 8192
WORKFLOW_PNG_KEY = "workflow"  # PNG text chunk holding the workflow JSON


def _input_choices(services: Any) -> list[str]:
    folders = services_of(services).folders
    return folders.list_images(folders.inputs)


@node("vae_decode", category="latent", title="VAE decode")
class VaeDecode(Node):
    """Turn a latent into pixels with the VAE. Large images are decoded in overlapping tiles so
    memory stays bounded (tiling: auto switches above 1024x1024)."""

    vae: Any = Input(port=ports.VAE, description="the autoencoder")
    latent: Any = Input(port=ports.LATENT, description="the latent to decode")
    tiling: Literal["auto", "always", "never"] = Input("auto", description="decode in tiles")

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the decoded images")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.limits import require_memory
        from latentgraph.nodes.sd.memory import decode_memory
        from latentgraph.nodes.sd.vae import decode_from_latent

        tiled = {"auto": None, "always": True, "never": False}[self.tiling]
        vae, limits = self.vae.model, services_of(ctx).limits
        batch, _, height, width = self.latent.samples.shape
        size = (width * vae.config.downscale, height * vae.config.downscale)
        require_within(limits, "the decoded image", size=size, batch=batch)
        estimate = decode_memory(vae.config, batch, height, width, vae.dtype.itemsize, tiled)
        require_memory(estimate, vae.device, limits, f"decoding {batch} x {size[0]}x{size[1]}")
        from latentgraph.nodes.cpu_load import fit_threads_for

        fit_threads_for(vae.device)  # as many torch threads as other processes leave cores free
        with running_models(ctx):  # the decoder compiled with --compile
            pixels = decode_from_latent(vae, self.latent.samples, tiled=tiled)
        image = ((pixels + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().contiguous()
        return self.Outputs(image=image)


@node("vae_encode", category="latent", title="VAE encode")
class VaeEncode(Node):
    """Turn pixels into a latent with the VAE (image-to-image starts from it). Width and height are
    cropped down to multiples of 8."""

    vae: Any = Input(port=ports.VAE, description="the autoencoder")
    image: Any = Input(port=ports.IMAGE, description="the images to encode")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the encoded latent")

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        from latentgraph.nodes.sd.handles import Latent
        from latentgraph.nodes.sd.interrupt import cancel_points
        from latentgraph.nodes.sd.limits import require_memory
        from latentgraph.nodes.sd.memory import encode_memory
        from latentgraph.nodes.sd.vae import encode_to_latent

        image, vae, limits = self.image, self.vae.model, services_of(ctx).limits
        height, width = image.shape[1] // 8 * 8, image.shape[2] // 8 * 8
        if height == 0 or width == 0:
            raise ValueError(f"the image is {image.shape[2]}x{image.shape[1]}; at least 8x8 is needed")
        require_within(limits, "the image", size=(width, height), batch=image.shape[0])
        estimate = encode_memory(vae.config, image.shape[0], height, width, vae.dtype.itemsize)
        require_memory(estimate, vae.device, limits, f"encoding {image.shape[0]} x {width}x{height}")
        pixels = image[:, :height, :width, :3].permute(0, 3, 1, 2) * 2 - 1
        with torch.inference_mode(), cancel_points(ctx.check_cancelled):
            latent = encode_to_latent(vae, pixels)
        return self.Outputs(latent=Latent(latent.float().cpu()))


@node("load_image", category="image", title="Load image")
class LoadImage(Node):
    """Load an image from the input folder (uploads land there). Its alpha channel, if any, becomes
    the mask (1 where the image is transparent, the part to repaint)."""

    image: str = Input(choices=_input_choices, description="file in the input folder")

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the image, RGB")
        mask: Any = Output(port=ports.MASK, description="1 where the image was transparent")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.input_path(literal_inputs["image"]))

    def run(self, ctx: RunContext) -> Outputs:
        rgba = read_rgba(ctx, self.image)
        return self.Outputs(image=rgba[None, :, :, :3].contiguous(), mask=(1.0 - rgba[None, :, :, 3]).contiguous())


def read_rgba(ctx: RunContext, name: str) -> Any:
    """The input-folder image `name` as float32 RGBA [H, W, 4] in [0, 1], upright (EXIF rotation
    applied); images without alpha get alpha 1. Refused before its pixels are decoded when its
    header says it is too large. Integer greyscale images (32-bit "I", and 16-bit PNGs) are
    divided by 255 first, as ComfyUI reads "I" images (16 bits then come out about right instead
    of nearly all white)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    path = services_of(ctx).folders.input_path(name)  # LinkOutside: a link leading out of the folder
    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow refuses to even read the header's size
        raise ValueError(f"{name} is too large to load ({exc}); at most {MAX_IMAGE_PIXELS:,} pixels") from None
    with opened:
        if opened.width * opened.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{name} is {opened.width}x{opened.height}; at most {MAX_IMAGE_PIXELS} pixels")
        # Image.open has read only the header: refuse before decoding the pixels.
        require_within(services_of(ctx).limits, name, size=(opened.width, opened.height))
        picture = ImageOps.exif_transpose(opened)
        if picture.mode.startswith("I;16"):  # 16-bit greyscale PNGs (Pillow reads them so)
            picture = picture.convert("I")
        if picture.mode == "I":
            picture = picture.point(lambda value: value * (1 / 255))
        rgba = picture.convert("RGBA")
    return torch.from_numpy(np.asarray(rgba, dtype=np.float32) / 255.0)


@node("load_image_mask", category="mask", title="Load image as mask")
class LoadImageMask(Node):
    """Load one channel of an image from the input folder as a mask (ComfyUI's Load Image (as
    Mask)): alpha gives 1 where the image is transparent (the part to repaint, as Load image's
    mask; an image without alpha gives a mask of zeros), red, green or blue give that channel's
    value (a black-and-white mask painted elsewhere: white is 1)."""

    image: str = Input(choices=_input_choices, description="file in the input folder")
    channel: Literal["alpha", "red", "green", "blue"] = Input("alpha", description="the channel that becomes the mask")

    class Outputs(NodeOutputs):
        mask: Any = Output(port=ports.MASK, description="the mask, [1, height, width] in [0, 1]")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.input_path(literal_inputs["image"]))

    def run(self, ctx: RunContext) -> Outputs:
        rgba = read_rgba(ctx, self.image)
        if self.channel == "alpha":
            return self.Outputs(mask=(1.0 - rgba[None, :, :, 3]).contiguous())
        index = ("red", "green", "blue").index(self.channel)
        return self.Outputs(mask=rgba[None, :, :, index].contiguous())


_COUNTER = re.compile(r"_(\d{5})_?\.png$")


def check_free_space(directory: Path, needed: int, reserve: int) -> None:
    """Refuse to write `needed` bytes under `directory` when that would leave less than `reserve`
    free on its disk (0: no check): a full disk breaks far more than this one save."""
    if not reserve:
        return
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free - needed < reserve:
        raise OSError(f"only {free / 2**20:,.0f} MiB are free on the disk of {directory}; saving needs about "
                      f"{needed / 2**20:,.1f} MiB and {reserve / 2**20:,.0f} MiB must stay free (--min-free-disk)")


def save_pngs(images: Any, folder: Path, prefix: str, workflow: dict[str, Any] | None,
              min_free: int = 0, follow_symlinks: bool = True) -> list[dict[str, str]]:
    """Write each image as `{prefix}_{counter:05}_.png` under `folder`, counting on from the
    highest file already there, with the workflow in a PNG text chunk. Returns the saved names.
    Refuses (OSError) when the disk would keep less than `min_free` bytes free, and (LinkOutside)
    a sub-folder that is a link leading out of `folder` unless `follow_symlinks`."""
    import numpy as np
    import torch
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    target = resolve_inside(folder, prefix + "_00000_.png")
    directory, stem = target.parent, target.name[: -len("_00000_.png")]
    if not follow_symlinks:
        check_within(folder, directory, prefix)
    check_free_space(directory, int(images.numel()) + len(json.dumps(workflow or {})) * len(images), min_free)
    directory.mkdir(parents=True, exist_ok=True)
    used = [int(m.group(1)) for p in directory.glob(f"{glob_escape(stem)}_*.png") if (m := _COUNTER.search(p.name))]
    counter = max(used, default=0) + 1
    info = PngInfo()
    if workflow is not None:
        info.add_text(WORKFLOW_PNG_KEY, json.dumps(workflow))
    saved = []
    subfolder = directory.relative_to(folder.resolve()).as_posix()
    for image in images:
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        name = f"{stem}_{counter:05}_.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(directory / name, pnginfo=info, compress_level=4)
        saved.append({"filename": name, "subfolder": "" if subfolder == "." else subfolder})
        counter += 1
    return saved


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@node("save_image", category="image", title="Save image", output=True)
class SaveImage(Node):
    """Save images as PNG files in the output folder, with the workflow embedded so the editor can
    restore it from the file."""

    images: Any = Input(port=ports.IMAGE, description="the images to save")
    filename_prefix: str = Input("latentgraph", min_length=1, max_length=200,
                                 description="file name start; may include sub-folders (portraits/me)")

    def run(self, ctx: RunContext) -> None:
        workflow = ctx.workflow.to_dict() if ctx.workflow is not None else None
        services = services_of(ctx)
        saved = save_pngs(self.images, services.folders.outputs, self.filename_prefix, workflow,
                          services.limits.min_free_disk, services.folders.follow_symlinks)
        ctx.report(images=[{**s, "type": "output"} for s in saved])


@node("preview_image", category="image", title="Preview image", output=True, cacheable=False)
class PreviewImage(Node):
    """Show images without keeping them: they go to a temporary folder cleared on restart."""

    images: Any = Input(port=ports.IMAGE, description="the images to show")

    def run(self, ctx: RunContext) -> None:
        workflow = ctx.workflow.to_dict() if ctx.workflow is not None else None
        services = services_of(ctx)
        saved = save_pngs(self.images, services.folders.temp, "preview", workflow, services.limits.min_free_disk,
                          services.folders.follow_symlinks)
        ctx.report(images=[{**s, "type": "temp"} for s in saved])
