"""Step previews: how a sampler's steps become images for the editor, and how often.

Methods (`--preview-method`, ComfyUI's names):
- "latent2rgb": the family's fixed linear map from latent channels to RGB, at the latent's size
  (1/8 of the image): about a millisecond, blurry and off in colour;
- "taesd": TAESD, the tiny autoencoder's decoder (nodes/sd/taesd.py), at the image's size (at most
  MAX_PREVIEW_LATENT latent pixels a side are decoded; a larger latent is shrunk first): close to
  the final picture, for about 1/35 of a VAE decode. Its file is `models/vae_approx/<name>_decoder.*`,
  the name the family's latent format gives (taesd, taesdxl);
- "auto" (the default): TAESD where its file is present for the model's family, else latent2rgb;
- "none": no previews.
A TAESD file that is missing (for "taesd") or unreadable is logged once and latent2rgb used.

How often (`PreviewPace`): previews take at most PREVIEW_SHARE of the sampling time: after one
that took t seconds the next waits t / PREVIEW_SHARE from the start of the last one (latent2rgb on
the CPU: every step). On an asynchronous device (CUDA) also at least ASYNC_PREVIEW_INTERVAL apart:
a preview copies the latent to the host, which waits for the GPU to finish its queued work, and
the GPU then idles while Python queues the next step. The last step always has its preview.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from latentgraph.nodes.folders import file_identity
from latentgraph.nodes.services import PREVIEW_METHODS, services_of

log = logging.getLogger(__name__)

PREVIEW_SHARE = 0.1  # previews may take at most this share of a sampler's time
ASYNC_PREVIEW_INTERVAL = 0.25  # seconds between previews on an asynchronous device (CUDA)
MAX_PREVIEW_LATENT = 64  # latent pixels a side a TAESD preview decodes (512 px; the server sends 256)

_told: set[str] = set()  # problems already logged (once per process, not once per step or run)


def _tell_once(message: str) -> None:
    if message not in _told:
        _told.add(message)
        log.warning("%s", message)


class PreviewPace:
    """When the next preview may be made (see the module's text); `clock` is the seconds' source."""

    def __init__(self, asynchronous: bool, clock: Callable[[], float] | None = None) -> None:
        self.interval = ASYNC_PREVIEW_INTERVAL if asynchronous else 0.0
        self.clock = clock or (lambda: time.monotonic())
        self.next_at = float("-inf")

    def due(self, step: int, total: int) -> bool:
        return step >= total or self.clock() >= self.next_at

    def timed(self, make: Callable[[], Any]) -> Any:
        """Make a preview and set when the next one may come."""
        started = self.clock()
        preview = make()
        spent = self.clock() - started
        self.next_at = started + max(self.interval, spent / PREVIEW_SHARE)
        return preview


def _taesd_previewer(services: Any, model: Any) -> Callable[[Any], Any] | None:
    """A function latent -> PIL image by the family's TAESD decoder, or None (logged) if there is
    none to use."""
    name = model.spec.latent.taesd
    path = services.folders.tiny_autoencoder_file(name, "decoder") if name else None
    if path is None:
        if services.preview_method == "taesd":
            where = ", ".join(str(d) for d in services.folders.model_dirs("vae_approx"))
            wanted = f"{name}_decoder.safetensors (or .pth)" if name else "a TAESD decoder"
            _tell_once(f"previews: no {wanted} for {model.spec.label} in {where}; using latent2rgb previews")
        return None
    from latentgraph.nodes.sd.checkpoint import CheckpointError
    from latentgraph.nodes.sd.taesd import read_tiny_autoencoder

    placement = services.placement
    device = getattr(model, "device", None) or placement.device  # the U-Net's (a DiffusionModel handle)
    key = ("taesd_decoder", *file_identity(path).values(), str(device), str(placement.vae_dtype))
    try:
        decoder = services.models.get_or_load(key, lambda: read_tiny_autoencoder(
            path, "decoder", allow_pickle=services.allow_pickle, device=device, dtype=placement.vae_dtype))
    except (CheckpointError, OSError) as error:
        _tell_once(f"previews: {path} cannot be used ({error}); using latent2rgb previews")
        return None
    channels = next(decoder.parameters()).shape[1]
    if channels != model.spec.latent.channels:
        _tell_once(f"previews: {path} decodes {channels}-channel latents, {model.spec.label} makes "
                   f"{model.spec.latent.channels}; using latent2rgb previews")
        return None
    return lambda latent: taesd_preview(decoder, latent)


def taesd_preview(decoder: Any, latent: Any) -> Any:
    """The first image of a latent batch decoded by TAESD, as a PIL image (8x the latent's size, the
    latent first shrunk to at most MAX_PREVIEW_LATENT a side)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    latent = latent[:1] if latent.ndim == 4 else latent[None]
    height, width = latent.shape[-2:]
    if max(height, width) > MAX_PREVIEW_LATENT:
        scale = MAX_PREVIEW_LATENT / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        latent = F.interpolate(latent.float(), size=size, mode="area")
    from latentgraph.nodes.sd.taesd import tiny_decode

    with torch.inference_mode():
        image = tiny_decode(decoder, latent)[0]
    pixels = ((image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def previewer_for(ctx: Any, model: Any) -> Callable[[Any], Any] | None:
    """What makes a step's preview (latent -> PIL image) for `model` under the services' preview
    method, or None for no previews."""
    services = services_of(ctx)
    method = services.preview_method
    if method == "none":
        return None
    if method in ("auto", "taesd"):
        made = _taesd_previewer(services, model)
        if made is not None:
            return made
    from latentgraph.nodes.sd.samplers import latent_preview

    latent_format = model.spec.latent
    return lambda latent: latent_preview(latent, latent_format)


__all__ = ["ASYNC_PREVIEW_INTERVAL", "MAX_PREVIEW_LATENT", "PREVIEW_METHODS", "PREVIEW_SHARE", "PreviewPace",
           "previewer_for", "taesd_preview"]
