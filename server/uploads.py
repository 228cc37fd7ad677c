"""Uploaded images: read the request, prove it is an image by decoding it, store it under a
content-hashed name in the input folder.

Nothing about an upload is trusted: not its content type, not its file name (only a cleaned-up
stem is kept, for people to recognise it), not its size (the body is bounded before it is read,
the dimensions before the pixels are decoded). The stored file is the uploaded bytes, unchanged,
so EXIF orientation and a PNG's embedded workflow survive.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from latentgraph.server.errors import ApiError

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}  # what load_image reads
MASK_FOLDER = "masks"


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes
    fields: dict[str, str]


@dataclass(frozen=True)
class CheckedImage:
    format: str
    extension: str
    width: int
    height: int
    mode: str


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="file"; filename="a.png"` → ("form-data", {"name": "file", "filename": "a.png"})."""
    head, _, rest = value.partition(";")
    params = {}
    for match in re.finditer(r'\s*([\w*-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]*)\s*;?', rest):
        key, raw, quoted = match.group(1).lower(), match.group(2), match.group(3)
        params[key] = quoted.replace('\\"', '"') if quoted is not None else raw.strip()
    return head.strip().lower(), params


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/form-data body held in memory: (Content-Disposition params, bytes).
    Small and strict on purpose: the body is already bounded, and only file uploads use it."""
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "bad_multipart", "the multipart body has no boundary in its Content-Type")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ApiError(400, "bad_multipart", "the multipart body is incomplete (no closing boundary)")
    parts = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n"):
            raise ApiError(400, "bad_multipart", "the multipart body is malformed")
        head, separator, content = chunk[2:].partition(b"\r\n\r\n")
        if not separator:
            raise ApiError(400, "bad_multipart", "a part of the multipart body has no headers")
        disposition = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                _, disposition = _header_params(value)
        parts.append((disposition, content))
    return parts


def read_upload(body: bytes, content_type: str, filename: str | None) -> UploadedFile:
    """The uploaded file of a multipart form (field `file`, plus text fields) or of a raw body."""
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        fields, upload = {}, None
        for disposition, content in parse_multipart(body, content_type):
            if "filename" in disposition and disposition.get("name") in ("file", "image"):
                upload = (disposition["filename"], content)
            elif disposition.get("name") and len(content) <= 1000:
                fields[disposition["name"]] = content.decode("utf-8", "replace")
        if upload is None:
            raise ApiError(400, "no_file", "the form has no file field named 'file'")
        return UploadedFile(upload[0], upload[1], fields)
    if media.startswith("image/") or media == "application/octet-stream":
        return UploadedFile(filename or "upload", body, {})
    raise ApiError(415, "unsupported_media_type",
                   f"send the image as multipart/form-data (field 'file') or as the raw body with an image/* "
                   f"Content-Type, not {media or 'no Content-Type'}")


def check_image(data: bytes, max_side: int, max_pixels: int) -> CheckedImage:
    """Decode the image fully; refuse what is not a PNG, JPEG, WebP or BMP, or is too large."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "empty_upload", "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, kind = image.width, image.height, image.format
                if kind not in FORMATS:
                    raise ApiError(415, "unsupported_image_type",
                                   f"{kind or 'this'} images are not accepted; upload PNG, JPEG, WebP or BMP")
                if width > max_side or height > max_side or width * height > max_pixels:
                    raise ApiError(413, "image_too_large",
                                   f"the image is {width}x{height}; at most {max_side} pixels a side and "
                                   f"{max_pixels:,} pixels in all are accepted")
                image.load()  # decodes every pixel: a truncated or corrupt file fails here
                mode = image.mode
    except ApiError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # Pillow would not even say its size
        raise ApiError(413, "image_too_large",
                       f"the image is too large: {exc}; at most {max_side} pixels a side and {max_pixels:,} pixels "
                       "in all are accepted") from None
    except UnidentifiedImageError:
        raise ApiError(415, "not_an_image", "the uploaded file is not an image Pillow can read "
                                            "(PNG, JPEG, WebP or BMP)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, "corrupt_image", f"the image could not be decoded: {exc}") from None
    return CheckedImage(kind, FORMATS[kind], width, height, mode)


def stored_name(filename: str, data: bytes, extension: str) -> str:
    """`<clean stem>-<16 hex of sha256>.<ext>`: equal bytes, equal name (an upload repeated is stored once)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(filename.replace("\\", "/")).stem).strip("_")[:40] or "image"
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}{extension}"


__all__ = ["CheckedImage", "MASK_FOLDER", "UploadedFile", "check_image", "parse_multipart", "read_upload", "stored_name"]
