"""Masks painted in the editor, merged into an image's alpha channel on the server.

A mask travels as its own picture and the server writes it into a copy of the original image,
as ComfyUI's `/upload/mask` does. The browser cannot do the merge itself: a canvas keeps its
pixels with premultiplied alpha, so every fully transparent pixel (the area to repaint) would
lose its colour, and an inpainting model would see black there instead of the picture.

Conventions are load_image's (and ComfyUI's): in the merged image, alpha = 255 - mask, so a
transparent pixel is one to repaint and load_image's MASK output is the painted mask again.
The RGB pixels are the original's, bit for bit, with its EXIF rotation applied (as load_image
applies it; the saved PNG carries no rotation); its text chunks (an embedded workflow) and colour
profile are kept.

Also here: the two views of an image the mask painter opens, `rgb` (the colours without the
alpha) and `mask` (what load_image's MASK output will be, as a greyscale picture).
"""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentgraph.server.errors import ApiError
from latentgraph.server.uploads import stored_name

CHANNELS = ("luminance", "alpha")
"""How an uploaded mask is read. `luminance`: a greyscale picture of the mask, white = repaint
(transparent parts count as black). `alpha`: the file's alpha channel becomes the image's alpha
as it is (transparent = repaint), which is what ComfyUI's mask editor sends."""

VIEWS = ("rgb", "mask")

_HASH_SUFFIX = re.compile(r"(-masked)?-[0-9a-f]{16}$")


@dataclass(frozen=True)
class MaskedImage:
    data: bytes  # the PNG
    width: int
    height: int


def open_bounded(path: Path, label: str, max_side: int, max_pixels: int) -> Any:
    """A Pillow image of `path`, its header read and its size checked before any pixel is decoded
    (422 image_too_large, 415 not_an_image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ApiError(422, "image_too_large", f"{label} is too large: {exc}; at most {max_side} pixels a side "
                                               f"and {max_pixels:,} pixels in all are read") from None
    except UnidentifiedImageError:
        raise ApiError(415, "not_an_image", f"{label} is not an image Pillow can read") from None
    except OSError as exc:
        raise ApiError(415, "not_an_image", f"{label} could not be read: {exc}") from None
    width, height = image.size
    if width > max_side or height > max_side or width * height > max_pixels:
        image.close()
        raise ApiError(422, "image_too_large", f"{label} is {width}x{height}; at most {max_side} pixels a side and "
                                               f"{max_pixels:,} pixels in all are read")
    return image


def _decode(image: Any, label: str) -> tuple[Any, dict[str, str]]:
    """The image upright (EXIF rotation applied) and decoded, and its text chunks; 415 for a corrupt file."""
    from PIL import ImageOps

    try:
        text = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}  # a PNG's: decodes it
        upright = ImageOps.exif_transpose(image)
        upright.load()
        return upright, text
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(415, "not_an_image", f"{label} could not be decoded: {exc}") from None


def _has_alpha(image: Any) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def mask_values(mask: Any, channel: str) -> Any:
    """The mask (mode L, 255 = repaint) an uploaded mask picture means."""
    from PIL import Image, ImageChops

    if channel == "alpha":
        alpha = mask.convert("RGBA").getchannel("A") if _has_alpha(mask) else Image.new("L", mask.size, 255)
        return ImageChops.invert(alpha)
    if not _has_alpha(mask):
        return mask.convert("L")
    rgba = mask.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")  # over black


def merge_mask(original: Path, original_label: str, mask_data: bytes, channel: str, max_side: int,
               max_pixels: int) -> MaskedImage:
    """The original image with alpha = 255 - mask, as PNG bytes. The mask must have the size of the
    original as load_image sees it (EXIF rotation applied): 422 mask_size_mismatch otherwise."""
    from PIL import Image, ImageChops, PngImagePlugin

    if channel not in CHANNELS:
        raise ApiError(422, "invalid_request", f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    with open_bounded(original, original_label, max_side, max_pixels) as opened:
        icc = opened.info.get("icc_profile")
        upright, text = _decode(opened, original_label)
        rgba = upright.convert("RGBA")
    with Image.open(io.BytesIO(mask_data)) as uploaded:  # already checked by check_image
        if uploaded.size != rgba.size:
            upright_note = "" if upright.size == opened.size else " (its EXIF rotation applied, as load_image reads it)"
            raise ApiError(422, "mask_size_mismatch",
                           f"the mask is {uploaded.width}x{uploaded.height} but {original_label} is "
                           f"{rgba.width}x{rgba.height}{upright_note}; paint the mask at the image's size")
        mask = mask_values(uploaded, channel)
    rgba.putalpha(ImageChops.invert(mask))
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG", pnginfo=info, icc_profile=icc, compress_level=4)
    return MaskedImage(buffer.getvalue(), rgba.width, rgba.height)


def masked_name(original_name: str, data: bytes) -> str:
    """`<stem>-masked-<16 hex of sha256>.png`; a masked image masked again keeps the original's stem."""
    stem = _HASH_SUFFIX.sub("", Path(original_name.replace("\\", "/")).stem) or "image"
    return stored_name(f"{stem}-masked.png", data, ".png")


def parse_original(fields: dict[str, str]) -> tuple[str, str]:
    """(folder type, name) of the image to mask, from the form: `original` (a name as load_image
    takes it, `subfolder/filename`) with `type` (default input), or ComfyUI's `original_ref`, JSON
    {"filename", "subfolder", "type"}."""
    if "original_ref" in fields and "original" not in fields:
        try:
            ref = json.loads(fields["original_ref"])
        except ValueError:
            ref = None
        if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
            raise ApiError(422, "invalid_request", 'original_ref must be JSON like {"filename": "photo.png", '
                                                   '"subfolder": "", "type": "input"}')
        subfolder, kind = ref.get("subfolder") or "", ref.get("type") or "input"
        if not isinstance(subfolder, str) or not isinstance(kind, str):
            raise ApiError(422, "invalid_request", "original_ref's subfolder and type must be strings")
        return kind, f"{subfolder.strip('/')}/{ref['filename']}" if subfolder.strip("/") else ref["filename"]
    name = fields.get("original", "")
    if not name:
        raise ApiError(422, "invalid_request", "the form names no original image: send its name in 'original' "
                                               "(as a load_image node takes it) next to the mask in 'file'")
    return fields.get("type") or "input", name


def view(path: Path, label: str, which: str, max_side: int, max_pixels: int) -> bytes | None:
    """PNG bytes of the `rgb` or `mask` view of an image; None where the file itself is the view
    (`rgb` of an image without alpha: the browser applies its EXIF rotation as load_image does)."""
    from PIL import Image, ImageChops

    with open_bounded(path, label, max_side, max_pixels) as opened:
        alpha = _has_alpha(opened)
        if which == "rgb" and not alpha:
            return None
        upright, _ = _decode(opened, label)
        if which == "rgb":
            picture = upright.convert("RGBA").convert("RGB")
        elif alpha:
            picture = ImageChops.invert(upright.convert("RGBA").getchannel("A"))
        else:
            picture = Image.new("L", upright.size, 0)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


__all__ = ["CHANNELS", "VIEWS", "MaskedImage", "mask_values", "masked_name", "merge_mask", "open_bounded",
           "parse_original", "view"]
