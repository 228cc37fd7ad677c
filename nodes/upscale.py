"""Upscale-model nodes: load an ESRGAN / Real-ESRGAN model from models/upscale_models and enlarge
images with it, tile by tile (the model code is nodes.sd.upscale)."""

from __future__ import annotations

from typing import Any

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.folders import file_identity
from latentgraph.nodes.sd.limits import require_within
from latentgraph.nodes.services import services_of

KIND = "upscale_models"

# The most memory one tile's forward pass may take when tile_size is 0 (auto), by device type; also
# never more than the run's share of free memory (--memory-fraction) after the result's own.
TILE_MEMORY = {"cpu": 2 << 30, "cuda": 4 << 30}
DEFAULT_TILE_MEMORY = 2 << 30


def _choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models(KIND)



@node("upscale_model_loader", category="loaders", title="Load upscale model")
class UpscaleModelLoader(Node):
    """Load an upscale model from the upscale_models folder: ESRGAN-style RRDBNets (4x-UltraSharp,
    RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, RealESRGAN_x2plus, BSRGAN and the many community
    x1/x2/x4/x8 models in the original ESRGAN layout) and Real-ESRGAN's compact models
    (realesr-general-x4v3, realesr-animevideov3). The architecture and the scale are read from
    the file's weights. .pth files are Python pickles: they load only when pickle files are
    allowed, and then as plain tensors; .safetensors files always load. Other architectures
    (SwinIR, HAT, DAT, ...) are refused with a message saying what the file looks like."""

    model_name: str = Input(choices=_choices, description="file in models/upscale_models")

    class Outputs(NodeOutputs):
        upscale_model: Any = Output(port=ports.UPSCALE_MODEL, description="the upscale model")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.model_path(KIND, literal_inputs["model_name"]))

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.upscale import load_upscale_model

        services = services_of(ctx)
        path = services.folders.model_path(KIND, self.model_name)
        placement = services.placement
        key = ("upscale_model", *file_identity(path).values(), str(placement.device),
               str(placement.unet_dtype))

        def load() -> Any:
            model = load_upscale_model(path, placement.device, placement.unet_dtype, allow_pickle=services.allow_pickle,
                                       memory_fraction=services.limits.memory_fraction or None)
            # The module first, so the model cache counts its weights (a handle says it costs nothing).
            return model.model, model

        _, model = services.models.get_or_load(key, load)
        ctx.report(upscale_model=model.summary())
        return self.Outputs(upscale_model=model)


@node("image_upscale_with_model", category="image", title="Upscale image (using model)")
class ImageUpscaleWithModel(Node):
    """Enlarge images with an upscale model, by the model's own factor (x4 for most; resize the
    result afterwards for other sizes). The image goes through the model in square tiles so memory
    stays bounded whatever its size: each tile sees a margin of its neighbours' pixels, enough for
    the result to be the same as in one piece (the margin covers the model's receptive field, up to
    40 pixels; see the README). Progress is reported per tile, and a cancel stops between tiles."""

    upscale_model: Any = Input(port=ports.UPSCALE_MODEL, description="the upscale model")
    image: Any = Input(port=ports.IMAGE, description="the images to enlarge")
    tile_size: int = Input(0, ge=0, le=8192, step=8,
                           description="input pixels a side each tile keeps; 0: the largest tile whose pass fits in "
                                       "2 GiB (4 GiB on a GPU) and in the free memory")
    overlap: int = Input(-1, ge=-1, le=1024,
                         description="margin in input pixels each tile sees around what it keeps; -1: the model's "
                                     "receptive field, at most 40")

    class Outputs(NodeOutputs):
        image: Any = Output(port=ports.IMAGE, description="the enlarged images")

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        from latentgraph.nodes.sd.interrupt import cancel_points
        from latentgraph.nodes.sd.limits import require_memory
        from latentgraph.nodes.sd.memory import free_memory
        from latentgraph.nodes.sd.upscale import default_margin, tile_for_memory, tile_memory, upscale

        model, image = self.upscale_model, self.image
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
            shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be an IMAGE [batch, height, width, 3], got {shape}")
        if model.channels != (3, 3):
            raise ValueError(f"{model.source} is a {model.channels[0]}-channel to {model.channels[1]}-channel model; "
                             "only RGB (3 to 3 channel) upscale models run on images")
        batch, height, width, _ = image.shape
        scale = model.scale
        services = services_of(ctx)
        limits = services.limits
        require_within(limits, "the upscaled image", size=(width * scale, height * scale), batch=batch)

        margin = default_margin(model) if self.overlap < 0 else self.overlap
        result_bytes = 2 * batch * 3 * height * width * scale * scale * 4  # the float32 result and the node's copy
        device = model.device
        if self.tile_size:
            tile = self.tile_size
        else:
            budget = TILE_MEMORY.get(device.type, DEFAULT_TILE_MEMORY)
            free = free_memory(device)
            if free is not None and limits.memory_fraction:
                share = free * limits.memory_fraction - (result_bytes if device.type == "cpu" else 0)
                budget = max(0, min(budget, int(share)))
            tile = tile_for_memory(model, budget, margin, height, width)
        estimate = tile_memory(model, tile, margin, height, width)
        if device.type == "cpu":
            estimate += result_bytes
        else:
            require_memory(result_bytes, torch.device("cpu"), limits,
                           f"the {batch} x {width * scale}x{height * scale} result")
        require_memory(estimate, device, limits,
                       f"upscaling {batch} x {width}x{height} with {model.source} in tiles of {tile} pixels")

        while True:
            try:
                with cancel_points(ctx.check_cancelled):
                    pixels = upscale(model, image.permute(0, 3, 1, 2), tile, margin, progress=ctx.progress)
                break
            except torch.cuda.OutOfMemoryError:
                # The estimate was short of what this GPU needed: halve the tile, as often as it helps.
                if self.tile_size or tile <= 64:
                    raise
                tile //= 2
                torch.cuda.empty_cache()
        ctx.report(upscale={"model": model.source, "scale": scale, "tile": min(tile, max(height, width)),
                            "margin": margin})
        return self.Outputs(image=pixels.clamp_(0, 1).permute(0, 2, 3, 1).contiguous())
