"""What the node library shares across runs: folders, loaded models, where models run.

The CLI and the server build one `Services` and give it to the executor; nodes reach it through
`services_of(ctx)`. Code that runs nodes without configuring anything gets the process default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nodes.folders import Folders, folders as default_folders


@dataclass
class RunLimits:
    """What one run may ask of the machine; checked at validation for literal inputs (a node's
    `check_limits`) and again by the node when it runs, before the expensive work starts.
    0 (or None) switches a limit off."""

    max_pixels: int = 2048 * 2048  # width x height of any image or latent (in pixels) a node makes
    max_batch: int = 16  # images in one batch
    max_steps: int = 200  # sampler steps
    memory_fraction: float = 0.9  # refuse work whose estimated memory exceeds this share of what is free
    min_free_disk: int = 256 << 20  # bytes that must stay free on the disk images are saved to


@dataclass
class Services:
    folders: Folders = field(default_factory=lambda: default_folders)
    model_cache_bytes: int = 16 << 30
    device: str | None = None  # None: CUDA when present, else the CPU
    precision: str | None = None  # None: the device's default (fp16 on CUDA, fp32 on the CPU)
    allow_pickle: bool = False  # .ckpt files: refused unless set, then read weights-only
    limits: RunLimits = field(default_factory=RunLimits)

    @cached_property
    def models(self) -> Any:
        from nodes.sd.model_cache import ModelCache

        return ModelCache(self.model_cache_bytes)

    @cached_property
    def placement(self) -> Any:
        from nodes.sd.device import default_placement

        return default_placement(self.device, self.precision)


_default: Services | None = None


def default_services() -> Services:
    global _default
    if _default is None:
        _default = Services()
    return _default


def services_of(ctx_or_services: Any) -> Services:
    """The Services of a RunContext (or the services object a fingerprint receives)."""
    services = getattr(ctx_or_services, "services", ctx_or_services)
    return services if isinstance(services, Services) else default_services()
