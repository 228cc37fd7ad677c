"""Small JPEG or WebP versions of images, made once and kept on disk.

A thumbnail's file name hashes the source's path, size and modification time with the requested
size and format, so an edited source gets a new thumbnail and a stale one is never served. The
folder is pruned to the most recently made `max_files`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

FORMATS = {"jpeg": ("JPEG", ".jpg", "image/jpeg"), "webp": ("WEBP", ".webp", "image/webp")}
SIZES = (32, 2048)  # smallest and largest longer side one may ask for


class ImageTooLarge(ValueError):
    """The source image has more pixels than thumbnails are made of (a decompression bomb, say)."""


class Thumbnails:
    def __init__(self, folder: Path, max_files: int = 5000, max_pixels: int = 8192 * 8192) -> None:
        self.folder = folder
        self.max_files = max_files
        self.max_pixels = max_pixels  # sources with more pixels are refused before any is decoded
        self._writes = 0
        self._lock = threading.Lock()

    def get(self, source: Path, size: int, fmt: str) -> Path:
        """The thumbnail of `source`, at most `size` pixels a side, made if not made yet. Raises
        ImageTooLarge for a source of more than `max_pixels` pixels, OSError for one that is not an image."""
        pil_format, extension, _ = FORMATS[fmt]
        stat = source.stat()
        key = hashlib.blake2b(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{size}|{fmt}".encode(), digest_size=16).hexdigest()
        target = self.folder / key[:2] / (key + extension)
        if target.is_file():
            return target
        from PIL import Image, ImageOps

        try:
            opened = Image.open(source)  # reads the header only
        except Image.DecompressionBombError as exc:  # Pillow's own bound, far above ours
            raise ImageTooLarge(f"{exc} (thumbnails are made of images of at most {self.max_pixels:,} pixels)") from None
        with opened as image:
            width, height = image.size
            if width * height > self.max_pixels:
                raise ImageTooLarge(f"the image is {width}x{height}, {width * height:,} pixels; thumbnails are made "
                                    f"of images of at most {self.max_pixels:,} pixels")
            image.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale: much faster
            image = ImageOps.exif_transpose(image)
            image.thumbnail((size, size))
            if pil_format == "JPEG" or image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if pil_format == "WEBP" and "A" in image.getbands() else "RGB")
            target.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=target.parent, suffix=extension)
            try:
                with os.fdopen(descriptor, "wb") as file:
                    image.save(file, format=pil_format, quality=82)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        with self._lock:
            self._writes += 1
            prune = self._writes % 100 == 0
        if prune:
            self.prune()
        return target

    def prune(self) -> int:
        files = self._files()
        if len(files) <= self.max_files:
            return 0
        files.sort(key=lambda p: p.stat().st_mtime)
        for path in files[: len(files) - self.max_files]:
            path.unlink(missing_ok=True)
        return len(files) - self.max_files

    def stats(self) -> dict[str, int]:
        files = self._files()
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}

    def _files(self) -> list[Path]:
        return [p for p in self.folder.glob("*/*") if p.is_file()] if self.folder.is_dir() else []


__all__ = ["FORMATS", "ImageTooLarge", "SIZES", "Thumbnails"]
