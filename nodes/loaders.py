"""Loader nodes: checkpoints and VAEs from the models folders, kept in the model cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    download them) from the checkpoints folder: its U-Net, CLIP text encoder and VAE. SD1.x is
    supported; SD2.x and SDXL files are recognised and refused with a clear message. Loaded models
    stay in memory between runs."""

    checkpoint: str = Input(choices=_checkpoint_choices, description="file in models/checkpoints")

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the U-Net with its noise schedule")
        clip: Any = Output(port=ports.CLIP, description="the text encoder")
        vae: Any = Output(port=ports.VAE, description="the autoencoder")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _file_identity(services_of(services).folders.model_path("checkpoints", literal_inputs["checkpoint"]))

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.checkpoint import load_checkpoint
        from latentgraph.nodes.sd.handles import DiffusionModel, TextEncoder, Vae

        services = services_of(ctx)
        path = services.folders.model_path("checkpoints", self.checkpoint)
        placement = services.placement
        identity = _file_identity(path)
        key = ("checkpoint", identity["path"], identity["size"], identity["mtime_ns"], placement.key())

        def load() -> Any:
            loaded = load_checkpoint(path, placement.device, placement.unet_dtype, allow_pickle=services.allow_pickle)
            loaded.unet.to(placement.unet_dtype)  # bf16 on the CPU when asked; the loader keeps fp32 there
            return loaded

        loaded = services.models.get_or_load(key, load)
        family = loaded.family
        model = DiffusionModel(
            unet=loaded.unet,
            spec=family.spec,
            schedule=family.spec.schedule.build(),
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
    """Load a standalone VAE file from the vae folder (for example a fine-tuned SD1.x VAE), to use
    instead of the one inside a checkpoint."""

    vae_name: str = Input(choices=_vae_choices, description="file in models/vae")

    class Outputs(NodeOutputs):
        vae: Any = Output(port=ports.VAE, description="the autoencoder")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _file_identity(services_of(services).folders.model_path("vae", literal_inputs["vae_name"]))

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.checkpoint import load_vae
        from latentgraph.nodes.sd.handles import Vae

        services = services_of(ctx)
        path = services.folders.model_path("vae", self.vae_name)
        placement = services.placement
        identity = _file_identity(path)
        key = ("vae", identity["path"], identity["size"], identity["mtime_ns"], placement.key())
        vae = services.models.get_or_load(
            key, lambda: load_vae(path, placement.device, placement.vae_dtype, allow_pickle=services.allow_pickle))
        return self.Outputs(vae=Vae(vae, self.vae_name))
