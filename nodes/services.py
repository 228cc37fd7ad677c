"""What the node library shares across runs: folders, loaded models, where models run.

The CLI and the server build one `Services` and give it to the executor; nodes reach it through
`services_of(ctx)`. Code that runs nodes without configuring anything gets the process default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from latentgraph.nodes.folders import Folders


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


PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "none")  # how step previews are made (nodes/previews.py)


@dataclass
class Services:
    folders: Folders = field(default_factory=Folders)
    model_cache_bytes: int = 16 << 30
    device: str | None = None  # None: CUDA when present, else the CPU
    precision: str | None = None  # None: the device's default (fp16 on CUDA, fp32 on the CPU)
    allow_pickle: bool = False  # .ckpt files: refused unless set, then read weights-only
    limits: RunLimits = field(default_factory=RunLimits)
    compile: bool = False  # torch.compile the U-Net and VAE decoder (nodes/sd/compiled.py; `--compile`)
    preview_method: str = "auto"  # step previews: auto, latent2rgb, taesd or none (nodes/previews.py)
    _models: Any = field(default=None, init=False, repr=False, compare=False)
    _placement: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.preview_method not in PREVIEW_METHODS:
            raise ValueError(f"preview_method must be one of {', '.join(PREVIEW_METHODS)}, not {self.preview_method!r}")

    @property
    def models(self) -> Any:
        """The model cache, made when a model is first loaded (it imports torch)."""
        if self._models is None:
            from latentgraph.nodes.model_cache import ModelCache

            self._models = ModelCache(self.model_cache_bytes)
        return self._models

    @property
    def placement(self) -> Any:
        """Where models run and in which dtypes, decided when a model is first loaded."""
        if self._placement is None:
            from latentgraph.nodes.sd.device import default_placement

            self._placement = default_placement(self.device, self.precision)
        return self._placement

    def loaded_models(self) -> dict[str, Any] | None:
        """The model cache's numbers, or None while no model was loaded (nothing is imported)."""
        models = self._models
        if models is None:
            return None
        return {"entries": len(models), "bytes": models.nbytes, "max_bytes": models.max_bytes, "loads": models.loads}

    def placement_info(self) -> dict[str, str] | None:
        """The device and U-Net dtype in use, or None while no model was loaded."""
        placement = self._placement
        if placement is None:
            return None
        return {"device": str(getattr(placement, "device", None)), "dtype": str(getattr(placement, "unet_dtype", None))}


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


@contextmanager
def running_models(ctx: Any) -> Iterator[None]:
    """Where a node runs a model: inference mode, cancel points that check the run's cancel flag,
    compiled forwards when the services say `compile` (at the full thread count, not fitted to
    the load: see cpu_load); the compiles the block paid for (seconds per model, or why it fell
    back to eager) go into the node's results as `compiled`."""
    from contextlib import nullcontext

    import torch

    from latentgraph.nodes.cpu_load import full_threads
    from latentgraph.nodes.sd.compiled import compiled_models
    from latentgraph.nodes.sd.interrupt import cancel_points

    compile = services_of(ctx).compile
    with torch.inference_mode(), cancel_points(ctx.check_cancelled), compiled_models(compile) as notes, \
            (full_threads() if compile else nullcontext()):
        try:
            yield
        finally:
            if notes:
                ctx.report(compiled=list(notes))
