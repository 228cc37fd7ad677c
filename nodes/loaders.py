"""Loader nodes: checkpoints and VAEs from the models folders, kept in the model cache."""

from __future__ import annotations

from typing import Any, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.folders import file_identity
from latentgraph.nodes.services import services_of



def _checkpoint_choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models("checkpoints")


def _tiny_autoencoders() -> list[str]:
    """TAESD's names (taesd, taesdxl): the families' latent formats name them."""
    from latentgraph.nodes.sd.families import FAMILIES

    return sorted({spec.latent.taesd for spec in FAMILIES if spec.latent.taesd})


def _tiny_autoencoder_files(folders: Any, name: str) -> tuple[Any, Any] | None:
    """TAESD `name`'s decoder and encoder files, or None unless both are in models/vae_approx."""
    decoder, encoder = folders.tiny_autoencoder_file(name, "decoder"), folders.tiny_autoencoder_file(name, "encoder")
    return (decoder, encoder) if decoder is not None and encoder is not None else None


def _vae_choices(services: Any) -> list[str]:
    folders = services_of(services).folders
    tiny = [name for name in _tiny_autoencoders() if _tiny_autoencoder_files(folders, name)]
    return folders.list_models("vae") + tiny


@node("checkpoint_loader", category="loaders", title="Load checkpoint")
class CheckpointLoader(Node):
    """Load a Stable Diffusion checkpoint (a single-file .safetensors in the LDM layout, as people
    download them) from the checkpoints folder: its U-Net, text encoders and VAE. SD1.x, SD2.x
    (512 epsilon and 768-v), SDXL base and SDXL refiner files load, and the inpainting versions of
    SD1.x, SD2.x and SDXL (9-channel U-Nets, labelled "inpainting"); the family is told from the
    file's keys. Loaded models stay in memory between runs."""

    checkpoint: str = Input(choices=_checkpoint_choices, description="file in models/checkpoints")
    prediction: Literal["auto", "epsilon", "v_prediction"] = Input(
        "auto", description="what the U-Net predicts: auto reads the file (a v_pred key; for SD2.x a weight "
                            "heuristic that tells 768-v from 512 models), else the family's usual choice")

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the U-Net with its noise schedule")
        clip: Any = Output(port=ports.CLIP, description="the text encoders", depends_on=("checkpoint",))
        vae: Any = Output(port=ports.VAE, description="the autoencoder", depends_on=("checkpoint",))

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.model_path("checkpoints", literal_inputs["checkpoint"]))

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import gc

        from latentgraph.nodes.sd.checkpoint import InsufficientMemory, load_checkpoint
        from latentgraph.nodes.sd.handles import DiffusionModel, TextEncoder, Vae
        from latentgraph.nodes.sd.schedules import zero_terminal_snr

        services = services_of(ctx)
        path = services.folders.model_path("checkpoints", self.checkpoint)
        placement = services.placement
        key = ("checkpoint", *file_identity(path).values(), placement.key())

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
    wins over it). `taesd` and `taesdxl` (listed where both their decoder and encoder are in
    models/vae_approx, as in ComfyUI) are TAESD, the tiny autoencoder: about 1/18 of the VAE's time,
    previews' quality; each knows its own family's latents, whatever latent_space says."""

    vae_name: str = Input(choices=_vae_choices, description="file in models/vae, or taesd / taesdxl")
    latent_space: Literal["sd1", "sdxl"] = Input("sd1", description="the family whose latents it encodes and decodes "
                                                                    "(sd1 also for SD2.x)")

    class Outputs(NodeOutputs):
        vae: Any = Output(port=ports.VAE, description="the autoencoder")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        folders, name = services_of(services).folders, literal_inputs["vae_name"]
        if name in _tiny_autoencoders() and (pair := _tiny_autoencoder_files(folders, name)):
            return [file_identity(path) for path in pair]
        return file_identity(folders.model_path("vae", name))

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.checkpoint import load_vae
        from latentgraph.nodes.sd.families import family_named
        from latentgraph.nodes.sd.handles import Vae

        services = services_of(ctx)
        placement = services.placement
        if self.vae_name in _tiny_autoencoders():
            return self.Outputs(vae=self._tiny(services))
        path = services.folders.model_path("vae", self.vae_name)
        key = ("vae", *file_identity(path).values(), placement.key(), self.latent_space)
        scaling = family_named(self.latent_space).latent.scaling_factor
        vae = services.models.get_or_load(
            key, lambda: load_vae(path, placement.device, placement.vae_dtype, allow_pickle=services.allow_pickle,
                                  default_scaling_factor=scaling))
        return self.Outputs(vae=Vae(vae, self.vae_name))

    def _tiny(self, services: Any) -> Any:
        from latentgraph.nodes.sd.handles import Vae
        from latentgraph.nodes.sd.taesd import load_tiny_autoencoder

        pair = _tiny_autoencoder_files(services.folders, self.vae_name)
        if pair is None:
            searched = ", ".join(str(d) for d in services.folders.model_dirs("vae_approx"))
            raise FileNotFoundError(f"{self.vae_name} needs {self.vae_name}_decoder and {self.vae_name}_encoder "
                                    f"(.safetensors or .pth) in models/vae_approx (searched {searched})")
        placement = services.placement
        key = ("taesd", *(v for path in pair for v in file_identity(path).values()), placement.key())
        tiny = services.models.get_or_load(key, lambda: load_tiny_autoencoder(
            *pair, placement.device, placement.vae_dtype, allow_pickle=services.allow_pickle))
        return Vae(tiny, self.vae_name)


def _lora_choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models("loras")


def _apply_lora(ctx: RunContext, name: str, model: Any, clip: Any, strength_model: float,
                strength_clip: float) -> tuple[Any, Any]:
    """The model and text encoder handles with the LoRA's patches added (the loaded weights are
    shared, not copied; see nodes.sd.patches). Reports what was applied and skipped."""
    from latentgraph.nodes.sd.lora import lora_patches, read_lora

    services = services_of(ctx)
    path = services.folders.model_path("loras", name)
    lora = services.models.get_or_load(("lora", *file_identity(path).values()),
                                       lambda: read_lora(path, allow_pickle=services.allow_pickle))
    if clip is not None and clip.spec.name != model.spec.name:
        raise ValueError(f"the model is {model.spec.label} ({model.source}) but the text encoder is "
                         f"{clip.spec.label} ({clip.source}): give the LoRA both parts of one checkpoint")
    encoders = clip.encoders if clip is not None else {}
    patches, report = lora_patches(lora, model.spec, model.unet, encoders, strength_model, strength_clip)
    ctx.report(lora={"name": name, **report.summary()})
    unet_patches = [p for p in patches if p.target == "unet"]
    text_patches = [p for p in patches if p.target != "unet"]
    return model.with_patches(*unet_patches), (clip.with_patches(*text_patches) if clip is not None else None)


_STRENGTH = dict(ge=-20.0, le=20.0, step=0.05)


@node("lora_loader", category="loaders", title="Load LoRA")
class LoraLoader(Node):
    """Apply a LoRA (or LyCORIS: LoCon, LoHa, LoKr) from the loras folder to a checkpoint's U-Net
    and text encoders. Chain several to stack them; the strengths scale each LoRA's change (0 leaves
    that part as it was, negative values push the other way). Files from kohya's scripts, A1111,
    LyCORIS, diffusers and PEFT load, for SD1.x, SD2.x and SDXL. The checkpoint is not loaded again
    nor copied: the change is applied to its weights while a sampler or prompt encoder runs, and
    undone exactly when a run without it comes. The node's result lists how many layers were
    applied and which could not be (and why)."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    clip: Any = Input(port=ports.CLIP, description="its text encoders")
    lora_name: str = Input(choices=_lora_choices, description="file in models/loras")
    strength_model: float = Input(1.0, description="how strongly to change the U-Net", **_STRENGTH)
    strength_clip: float = Input(1.0, description="how strongly to change the text encoders", **_STRENGTH)

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the model with the LoRA",
                            depends_on=("model", "lora_name", "strength_model"))
        # A new U-Net strength does not encode the prompts again:
        clip: Any = Output(port=ports.CLIP, description="the text encoders with the LoRA",
                           depends_on=("clip", "lora_name", "strength_clip"))

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.model_path("loras", literal_inputs["lora_name"]))

    def run(self, ctx: RunContext) -> Outputs:
        model, clip = _apply_lora(ctx, self.lora_name, self.model, self.clip, self.strength_model, self.strength_clip)
        return self.Outputs(model=model, clip=clip)


@node("lora_loader_model_only", category="loaders", title="Load LoRA (model only)")
class LoraLoaderModelOnly(Node):
    """Apply a LoRA's U-Net part only (its text encoder layers, if any, are left out): for LoRAs
    trained on the U-Net alone, or to keep the prompt's encoding as it was."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    lora_name: str = Input(choices=_lora_choices, description="file in models/loras")
    strength_model: float = Input(1.0, description="how strongly to change the U-Net", **_STRENGTH)

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the model with the LoRA")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return file_identity(services_of(services).folders.model_path("loras", literal_inputs["lora_name"]))

    def run(self, ctx: RunContext) -> Outputs:
        model, _ = _apply_lora(ctx, self.lora_name, self.model, None, self.strength_model, 0.0)
        return self.Outputs(model=model)
