"""Loader nodes: checkpoints and VAEs from the models folders, kept in the model cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.services import services_of


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _checkpoint_choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models("checkpoints")


def _vae_choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models("vae")


@node("checkpoint_loader", category="loaders", title="Load checkpoint")
class CheckpointLoader(Node):
    """Load a Stable Diffusion checkpoint (a single-file .safetensors in the LDM layout, as people
    download them) from the checkpoints folder: its U-Net, text encoders and VAE. SD1.x, SD2.x
    (512 epsilon and 768-v), SDXL base and SDXL refiner files load; the family is told from the
    file's keys. Loaded models stay in memory between runs."""

    checkpoint: str = Input(choices=_checkpoint_choices, description="file in models/checkpoints")
    prediction: Literal["auto", "epsilon", "v_prediction"] = Input(
        "auto", description="what the U-Net predicts: auto reads the file (a v_pred key; for SD2.x a weight "
                            "heuristic that tells 768-v from 512 models), else the family's usual choice")

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the U-Net with its noise schedule")
        clip: Any = Output(port=ports.CLIP, description="the text encoders")
        vae: Any = Output(port=ports.VAE, description="the autoencoder")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _file_identity(services_of(services).folders.model_path("checkpoints", literal_inputs["checkpoint"]))

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import gc

        from latentgraph.nodes.sd.checkpoint import InsufficientMemory, load_checkpoint
        from latentgraph.nodes.sd.handles import DiffusionModel, TextEncoder, Vae
        from latentgraph.nodes.sd.schedules import zero_terminal_snr

        services = services_of(ctx)
        path = services.folders.model_path("checkpoints", self.checkpoint)
        placement = services.placement
        identity = _file_identity(path)
        key = ("checkpoint", identity["path"], identity["size"], identity["mtime_ns"], placement.key())

        def load() -> Any:
            return load_checkpoint(path, placement.device, placement.unet_dtype, allow_pickle=services.allow_pickle,
                                   text_dtype=placement.text_dtype, vae_dtype=placement.vae_dtype,
                                   memory_fraction=services.limits.memory_fraction or None)

        try:
            loaded = services.models.get_or_load(key, load)
        except InsufficientMemory:
            if not len(services.models):
                raise
            # Other checkpoints kept from earlier runs may be what fills the memory: drop them, retry once.
            services.models.clear()
            gc.collect()
            loaded = services.models.get_or_load(key, load)
        family = loaded.family
        if self.prediction != "auto":
            family = replace(family, prediction_type=self.prediction, prediction_source="the loader's prediction input")
        schedule = family.spec.schedule.build()
        model = DiffusionModel(
            unet=loaded.unet,
            spec=family.spec,
            schedule=zero_terminal_snr(schedule) if family.zero_terminal_snr else schedule,
            prediction_type=family.prediction_type,
            latent_channels=family.latent_channels,
            source=self.checkpoint,
        )
        return self.Outputs(
            model=model,
            clip=TextEncoder(loaded.text_encoders, family.spec, self.checkpoint),
            vae=Vae(loaded.vae, self.checkpoint),
        )


@node("vae_loader", category="loaders", title="Load VAE")
class VaeLoader(Node):
    """Load a standalone VAE file from the vae folder (for example a fine-tuned SD1.x VAE or the
    fp16-fixed SDXL VAE), to use instead of the one inside a checkpoint. SD1.x/2.x and SDXL VAEs
    have the same architecture but scale their latents differently, which the weights cannot
    tell: say which family's latents it makes (a file's latentgraph.vae_scaling_factor metadata
    wins over it)."""

    vae_name: str = Input(choices=_vae_choices, description="file in models/vae")
    latent_space: Literal["sd1", "sdxl"] = Input("sd1", description="the family whose latents it encodes and decodes "
                                                                    "(sd1 also for SD2.x)")

    class Outputs(NodeOutputs):
        vae: Any = Output(port=ports.VAE, description="the autoencoder")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _file_identity(services_of(services).folders.model_path("vae", literal_inputs["vae_name"]))

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.checkpoint import load_vae
        from latentgraph.nodes.sd.families import family_named
        from latentgraph.nodes.sd.handles import Vae

        services = services_of(ctx)
        path = services.folders.model_path("vae", self.vae_name)
        placement = services.placement
        identity = _file_identity(path)
        key = ("vae", identity["path"], identity["size"], identity["mtime_ns"], placement.key(), self.latent_space)
        scaling = family_named(self.latent_space).latent.scaling_factor
        vae = services.models.get_or_load(
            key, lambda: load_vae(path, placement.device, placement.vae_dtype, allow_pickle=services.allow_pickle,
                                  default_scaling_factor=scaling))
        return self.Outputs(vae=Vae(vae, self.vae_name))
