"""The model families Latentgraph knows, one spec module each, and telling which one a file holds.

`FAMILIES` lists the specs in detection order, most specific first; `detect_family` classifies a
checkpoint from its key -> shape table and infers the configs of its parts (`layout`), filling in
what the weights cannot tell from the family's spec. Adding a family: write its spec module and
add it here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch

from latentgraph.nodes.sd.families.sd1 import SD1
from latentgraph.nodes.sd.families.sd2 import SD2
from latentgraph.nodes.sd.families.sdxl import SDXL, SDXL_REFINER
from latentgraph.nodes.sd.layout import (
    PREDICTION_TYPES,
    UNET_PREFIX,
    CheckpointError,
    UnsupportedCheckpoint,
    describe_foreign_keys,
    infer_open_clip_config,
    infer_text_encoder_config,
    infer_unet_config,
    infer_vae_config,
    scaling_factor_from_metadata,
)
from latentgraph.nodes.sd.spec import FamilySpec
from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
from latentgraph.nodes.sd.unet import UNetConfig
from latentgraph.nodes.sd.vae import VAEConfig

FAMILIES: tuple[FamilySpec, ...] = (SDXL, SDXL_REFINER, SD2, SD1)


def family_named(name: str) -> FamilySpec:
    for spec in FAMILIES:
        if spec.name == name:
            return spec
    raise KeyError(f"no model family {name!r} (known: {', '.join(s.name for s in FAMILIES)})")


@dataclass(frozen=True)
class ModelFamily:
    """A checkpoint's family with the configs inferred from its tensors.

    spec: the family's facts. text_encoders: one config per spec text encoder.
    prediction_type: "epsilon" or "v_prediction"; prediction_source says who decided it ("the
    caller", "the file's v_pred key", "the weights", "the family's default").
    zero_terminal_snr: the file marks itself as trained with a zero-terminal-SNR schedule (`ztsnr`).
    own_latent_space: the file's VAE scales its latents otherwise than the family's (its metadata
        says so, as our demo model's does): a VAE of its own, whose preview colours the family's
        map does not know (the loader fits them: `vae.fit_preview_colours`).
    """

    spec: FamilySpec
    unet: UNetConfig
    vae: VAEConfig
    text_encoders: tuple[TextEncoderConfig, ...]
    prediction_type: str
    prediction_source: str = "the family's default"
    zero_terminal_snr: bool = False
    own_latent_space: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def inpainting(self) -> bool:
        """An inpainting U-Net (9 input channels for SD: the latent, a mask and the masked image's latent)."""
        return self.unet.in_channels != self.vae.embed_dim

    @property
    def label(self) -> str:
        """The family's label, with "inpainting" for inpainting checkpoints."""
        return self.spec.label + (" inpainting" if self.inpainting else "")

    @property
    def text_encoder(self) -> TextEncoderConfig | None:
        """The first text encoder's config (the only one for SD1.x)."""
        return self.text_encoders[0] if self.text_encoders else None

    @property
    def vae_scaling_factor(self) -> float:
        return self.vae.scaling_factor

    @property
    def latent_channels(self) -> int:
        return self.vae.embed_dim


# Markers some fine-tunes store as (empty) top-level tensors, honoured for every family as ComfyUI does.
V_PREDICTION_KEY = "v_pred"
ZERO_TERMINAL_SNR_KEY = "ztsnr"


def detect_family(
    shapes: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None = None,
    prediction_type: str | None = None,
    source: str = "the checkpoint",
    read: Callable[[str], torch.Tensor] | None = None,
) -> ModelFamily:
    """Classify a checkpoint from its key -> shape table and infer its configs.

    prediction_type: "epsilon" or "v_prediction" to override; None (or "auto") decides from the
        file: a `v_pred` key, else the family's weight heuristic (needs `read`, which reads one
        tensor by key), else the family's usual choice.
    source: how messages name the file.
    Raises CheckpointError for files that are not an LDM-layout SD checkpoint (saying what they
    look like instead), UnsupportedCheckpoint for a U-Net with no text encoder any family has;
    recognised families this version cannot load are returned (see `ensure_supported`).
    """
    keys = shapes.keys()
    if not any(key.startswith(UNET_PREFIX) for key in keys):
        raise CheckpointError(f"{source} is not a Stable Diffusion checkpoint: {describe_foreign_keys(keys)}")
    spec = next((spec for spec in FAMILIES if spec.detect(shapes)), None)
    if spec is None:
        expected = ", ".join(f"{e.prefix}* ({s.label})" for s in FAMILIES for e in s.text_encoders[:1])
        raise UnsupportedCheckpoint(
            f"{source} has a U-Net (model.diffusion_model.*) but no text encoder Latentgraph recognises "
            f"(expected one of {expected}); {_supported_sentence()}", family=None)

    unet = replace(infer_unet_config(shapes, **spec.unet_heads), upcast_attention=spec.upcast_attention)
    _check_unet_channels(spec, unet, source)
    text_encoders = tuple(_text_encoder_config(shapes, e, source) for e in spec.text_encoders)
    context = sum(e.hidden_size for e in text_encoders)
    if context != unet.context_dim:
        raise CheckpointError(
            f"{source}: the text encoders are {context} wide but the U-Net's cross-attention reads "
            f"{unet.context_dim}; the file mixes parts of different models")
    if spec.vector is None and unet.adm_in_channels is not None:
        raise UnsupportedCheckpoint(
            f"{source} is a {spec.label} checkpoint whose U-Net also reads a {unet.adm_in_channels}-wide vector "
            f"(label_emb), as unCLIP variants do; Latentgraph does not build that input yet", family=spec.name)
    if spec.vector is not None:
        pooled = next((c.projection_dim or c.hidden_size for e, c in zip(spec.text_encoders, text_encoders)
                       if e.pooled), 0)
        probe = SimpleNamespace(pooled=torch.zeros(1, pooled), extra={})  # a stand-in conditioning entry
        dummy = spec.vector(probe, "positive", (8, 8))
        if unet.adm_in_channels != dummy.shape[1]:
            raise CheckpointError(
                f"{source}: the U-Net's label_emb reads {unet.adm_in_channels} channels but a {spec.label} "
                f"conditioning vector with this text encoder is {dummy.shape[1]}; the file mixes parts of different models")

    prediction_type, prediction_source = _prediction(spec, shapes, prediction_type, read)
    scaling_factor = scaling_factor_from_metadata(metadata, source)
    own_latent_space = scaling_factor is not None and scaling_factor != spec.latent.scaling_factor
    if own_latent_space:
        # A VAE of its own (as our demo model's): the family's TAESD preview decoder does not know its latents.
        spec = replace(spec, latent=replace(spec.latent, scaling_factor=scaling_factor, taesd=""))
    vae = replace(infer_vae_config(shapes), scaling_factor=scaling_factor or spec.latent.scaling_factor)
    return ModelFamily(spec, unet, vae, text_encoders, prediction_type, prediction_source,
                       zero_terminal_snr=ZERO_TERMINAL_SNR_KEY in shapes, own_latent_space=own_latent_space)


def _check_unet_channels(spec: FamilySpec, unet: UNetConfig, source: str) -> None:
    """A U-Net reads the latent (and, inpainting ones, a mask and a masked image) and predicts
    noise of the latent's channels; other variants (InstructPix2Pix's 8 input channels, SD2 depth's
    5) need inputs Latentgraph does not build: refuse them by what they read."""
    from latentgraph.nodes.sd.inpaint import inpainting_in_channels

    latent, inpainting = spec.latent.channels, inpainting_in_channels(spec)
    if unet.out_channels != latent:
        raise CheckpointError(f"{source}: the U-Net predicts {unet.out_channels} channels but {spec.label} latents "
                              f"have {latent}; the file mixes parts of different models")
    if unet.in_channels not in (latent, inpainting):
        known = {latent + 4: " (as InstructPix2Pix models do: the latent and an image's)",
                 latent + 1: " (as SD2 depth models do: the latent and a depth map)"}.get(unet.in_channels, "")
        raise UnsupportedCheckpoint(
            f"{source} is a {spec.label} checkpoint whose U-Net reads {unet.in_channels} input channels{known}; "
            f"Latentgraph runs U-Nets that read {latent} (the latent) or {inpainting} (inpainting models: the latent, "
            f"a mask and the masked image)", family=spec.name)


def _text_encoder_config(shapes: Mapping[str, Sequence[int]], encoder, source: str) -> TextEncoderConfig:
    try:
        if encoder.layout == "open_clip":
            return infer_open_clip_config(shapes, encoder.prefix, encoder.hidden_act, projection=encoder.pooled)
        return infer_text_encoder_config(shapes, encoder.prefix, encoder.hidden_act)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: text encoder {encoder.name}: {error}") from error


def _prediction(spec: FamilySpec, shapes: Mapping[str, Sequence[int]], asked: str | None,
                read: Callable[[str], torch.Tensor] | None) -> tuple[str, str]:
    if asked not in (None, "auto"):
        if asked not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of auto, {', '.join(PREDICTION_TYPES)}, got {asked!r}")
        return asked, "the caller"
    if V_PREDICTION_KEY in shapes:
        return "v_prediction", "the file's v_pred key"
    if spec.prediction_from_weights is not None and read is not None:
        guess = spec.prediction_from_weights(shapes, read)
        if guess is not None:
            return guess, "the weights"
    return spec.prediction_type, "the family's default"


def ensure_supported(family: ModelFamily, source: str = "the checkpoint") -> None:
    """Raise UnsupportedCheckpoint unless this version can load the family."""
    if not family.spec.supported:
        raise UnsupportedCheckpoint(f"{source} is a {family.label} checkpoint; {_supported_sentence()}", family.name)


def _supported_sentence() -> str:
    return "this version of Latentgraph loads " + ", ".join(s.label for s in FAMILIES if s.supported) + " checkpoints"


__all__ = ["FAMILIES", "ModelFamily", "SD1", "SD2", "SDXL", "SDXL_REFINER", "detect_family", "ensure_supported",
           "family_named"]
