"""Which kind of Stable Diffusion a checkpoint holds, and the shapes of its parts.

Everything here reads only key names and tensor shapes (no tensor data), so a 7 GB file is
classified from its header, and a tiny test checkpoint in the same layout goes through exactly the
same inference as a real one. Configs are inferred from shapes, not looked up by family, so
fine-tunes with unusual widths still load; what the weights cannot tell (SD1.x's 8 heads vs
SD2.x's 64-channel heads, v-prediction) comes from the family or from the caller.
"""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from latentgraph.nodes.sd.text_encoder import SD1_TEXT_ENCODER_PREFIX, TextEncoderConfig
from latentgraph.nodes.sd.unet import UNetConfig
from latentgraph.nodes.sd.vae import VAEConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
OPENCLIP_PREFIX = "cond_stage_model.model."  # SD2.x: OpenCLIP ViT-H in open_clip's own layout
SDXL_CONDITIONER_PREFIX = "conditioner.embedders."

# safetensors metadata key that overrides the family's VAE scaling factor (our demo model sets it).
SCALING_FACTOR_METADATA_KEY = "latentgraph.vae_scaling_factor"

PREDICTION_TYPES = ("epsilon", "v_prediction")


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says what was found and what to do."""


class UnsupportedCheckpoint(CheckpointError):
    """A recognised Stable Diffusion checkpoint of a family this version cannot load yet."""

    def __init__(self, message: str, family: str | None):
        super().__init__(message)
        self.family = family


@dataclass(frozen=True)
class ModelFamily:
    """A detected checkpoint family with the configs inferred from its tensors.

    name: short id ("sd1", "sd2", "sdxl", "sdxl_refiner"); label: for people.
    text_encoder: None where the family's encoder is not one this version builds.
    prediction_type: "epsilon" (the U-Net predicts noise) or "v_prediction".
    """

    name: str
    label: str
    unet: UNetConfig
    vae: VAEConfig
    text_encoder: TextEncoderConfig | None
    prediction_type: str

    @property
    def vae_scaling_factor(self) -> float:
        return self.vae.scaling_factor

    @property
    def latent_channels(self) -> int:
        return self.vae.embed_dim


# What this version loads, by family name.
SUPPORTED_FAMILIES = {"sd1": "Stable Diffusion 1.x"}

_DEFAULT_SCALING_FACTOR = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}


def detect_family(
    shapes: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None = None,
    prediction_type: str | None = None,
    source: str = "the checkpoint",
) -> ModelFamily:
    """Classify a checkpoint from its key -> shape table and infer its configs.

    prediction_type: "epsilon" or "v_prediction". The weights cannot tell them apart (SD2.x
        768-v and the 512 base have identical shapes), so None means the family's usual choice,
        epsilon, and callers pass "v_prediction" for v-models.
    source: how messages name the file.
    Raises CheckpointError for files that are not an LDM-layout SD checkpoint (saying what they
    look like instead); SD2.x and SDXL are detected and returned, see `ensure_supported`.
    """
    keys = shapes.keys()
    if not any(key.startswith(UNET_PREFIX) for key in keys):
        raise CheckpointError(f"{source} is not a Stable Diffusion checkpoint: {describe_foreign_keys(keys)}")

    has_label_emb = UNET_PREFIX + "label_emb.0.0.weight" in shapes
    if has_label_emb or any(key.startswith(SDXL_CONDITIONER_PREFIX) for key in keys):
        refiner = not any(key.startswith(SDXL_CONDITIONER_PREFIX + "1.") for key in keys)
        name, label = ("sdxl_refiner", "Stable Diffusion XL refiner") if refiner else ("sdxl", "Stable Diffusion XL")
        unet = infer_unet_config(shapes, num_head_channels=64)
        text_encoder = None
    elif any(key.startswith(OPENCLIP_PREFIX) for key in keys):
        name, label = "sd2", "Stable Diffusion 2.x"
        unet = infer_unet_config(shapes, num_head_channels=64)
        text_encoder = None
    elif any(key.startswith(SD1_TEXT_ENCODER_PREFIX) for key in keys):
        name, label = "sd1", "Stable Diffusion 1.x"
        unet = infer_unet_config(shapes, num_heads=8)
        text_encoder = infer_text_encoder_config(shapes)
        if text_encoder.hidden_size != unet.context_dim:
            raise CheckpointError(
                f"{source}: the text encoder is {text_encoder.hidden_size} wide but the U-Net's "
                f"cross-attention reads {unet.context_dim}; the file mixes parts of different models"
            )
    else:
        raise UnsupportedCheckpoint(
            f"{source} has a U-Net (model.diffusion_model.*) but no text encoder Latentgraph "
            f"recognises (expected {SD1_TEXT_ENCODER_PREFIX}* for Stable Diffusion 1.x); "
            f"{_supported_sentence()}",
            family=None,
        )

    if prediction_type is None:
        prediction_type = "epsilon"
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")

    scaling_factor = scaling_factor_from_metadata(metadata, source)
    if scaling_factor is None:
        scaling_factor = _DEFAULT_SCALING_FACTOR[name]
    vae = replace(infer_vae_config(shapes), scaling_factor=scaling_factor)
    return ModelFamily(name, label, unet, vae, text_encoder, prediction_type)


def ensure_supported(family: ModelFamily, source: str = "the checkpoint") -> None:
    """Raise UnsupportedCheckpoint unless this version can load the family."""
    if family.name not in SUPPORTED_FAMILIES:
        raise UnsupportedCheckpoint(f"{source} is a {family.label} checkpoint; {_supported_sentence()}", family.name)


def _supported_sentence() -> str:
    return "this version of Latentgraph loads " + ", ".join(SUPPORTED_FAMILIES.values()) + " checkpoints"


def scaling_factor_from_metadata(metadata: Mapping[str, str] | None, source: str = "the file") -> float | None:
    """The `latentgraph.vae_scaling_factor` metadata entry as a number, or None where absent."""
    if not metadata or SCALING_FACTOR_METADATA_KEY not in metadata:
        return None
    text = metadata[SCALING_FACTOR_METADATA_KEY]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise CheckpointError(
            f"{source}: metadata {SCALING_FACTOR_METADATA_KEY} must be a positive number, got {text!r}"
        )
    return value


def _shape(shapes: Mapping[str, Sequence[int]], key: str, part: str) -> Sequence[int]:
    if key not in shapes:
        raise CheckpointError(f"the {part} is incomplete: tensor {key!r} is missing")
    return shapes[key]


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    """Sorted distinct values of the single (\\d+) group in `pattern`, matched at key starts."""
    regex = re.compile(pattern)
    found = {int(m.group(1)) for key in keys if (m := regex.match(key))}
    return sorted(found)


def infer_unet_config(
    shapes: Mapping[str, Sequence[int]],
    num_heads: int = 8,
    num_head_channels: int | None = None,
    prefix: str = UNET_PREFIX,
) -> UNetConfig:
    """Read a U-Net's config from its tensor shapes.

    Walks input_blocks: a block with `0.op` is a downsampler and ends a level; the others are
    residual blocks whose output width gives the level's channel_mult, and whose `1.` transformer
    (if any) gives the level's attention and depth. Heads cannot be seen in the weights (q/k/v are
    one matrix whatever the split) and come from the arguments.
    """
    keys = [key for key in shapes if key.startswith(prefix)]
    stem = _shape(shapes, prefix + "input_blocks.0.0.weight", "U-Net")
    model_channels, in_channels = stem[0], stem[1]
    out_channels = _shape(shapes, prefix + "out.2.weight", "U-Net")[0]

    def transformer_depth(block: str) -> int:
        return len(_indices(keys, re.escape(f"{prefix}{block}.1.transformer_blocks.") + r"(\d+)\."))

    levels: list[tuple[int, list[int]]] = []  # (width, depth of each residual block)
    widths: list[int] = []
    depths: list[int] = []
    for index in _indices(keys, re.escape(prefix + "input_blocks.") + r"(\d+)\.")[1:]:
        if prefix + f"input_blocks.{index}.0.op.weight" in shapes:
            levels.append((widths[-1], depths))
            widths, depths = [], []
            continue
        widths.append(_shape(shapes, prefix + f"input_blocks.{index}.0.out_layers.3.weight", "U-Net")[0])
        depths.append(transformer_depth(f"input_blocks.{index}"))
    if not widths:
        raise CheckpointError("the U-Net is incomplete: its input_blocks hold no residual blocks")
    levels.append((widths[-1], depths))

    res_block_counts = {len(level_depths) for _, level_depths in levels}
    if len(res_block_counts) != 1:
        raise UnsupportedCheckpoint(
            f"the U-Net has a different number of residual blocks per level ({sorted(res_block_counts)}), "
            "which no Stable Diffusion family has",
            family=None,
        )
    level_depths = [level[1][0] for level in levels]
    # One int when every level with transformers has the same depth (SD1.x/2.x), else per level (SDXL).
    distinct_depths = {d for d in level_depths if d}
    depth: int | tuple[int, ...] = distinct_depths.pop() if len(distinct_depths) == 1 else tuple(level_depths)
    # Listed largest factor first, as LDM's yaml files do (SD1.x: 4, 2, 1).
    attention_resolutions = tuple(sorted((2**level for level, d in enumerate(level_depths) if d), reverse=True))

    transformer_keys = [key for key in keys if ".transformer_blocks.0.attn2.to_k.weight" in key]
    proj_in_keys = [key for key in keys if key.endswith(".1.proj_in.weight")]
    if not transformer_keys or not proj_in_keys:
        raise CheckpointError("the U-Net has no cross-attention layers (attn2), so it cannot read text")
    context_dim = shapes[transformer_keys[0]][1]
    use_linear = len(shapes[proj_in_keys[0]]) == 2

    adm_key = prefix + "label_emb.0.0.weight"
    config = UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(width // model_channels for width, _ in levels),
        num_res_blocks=res_block_counts.pop(),
        attention_resolutions=attention_resolutions,
        transformer_depth=depth,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        context_dim=context_dim,
        use_linear_in_transformer=use_linear,
        adm_in_channels=shapes[adm_key][1] if adm_key in shapes else None,
    )
    middle_depth = transformer_depth("middle_block")
    if middle_depth != config.middle_depth:
        config = replace(config, transformer_depth_middle=middle_depth)
    return config


def infer_vae_config(shapes: Mapping[str, Sequence[int]], prefix: str = VAE_PREFIX) -> VAEConfig:
    """Read an AutoencoderKL's config from its tensor shapes (scaling_factor left at its default)."""
    keys = [key for key in shapes if key.startswith(prefix)]
    stem = _shape(shapes, prefix + "encoder.conv_in.weight", "VAE")
    ch, in_channels = stem[0], stem[1]
    levels = _indices(keys, re.escape(prefix + "encoder.down.") + r"(\d+)\.block\.")
    blocks = _indices(keys, re.escape(prefix + "encoder.down.0.block.") + r"(\d+)\.")
    widths = [_shape(shapes, prefix + f"encoder.down.{level}.block.0.conv2.weight", "VAE")[0] for level in levels]
    return VAEConfig(
        in_channels=in_channels,
        out_channels=_shape(shapes, prefix + "decoder.conv_out.weight", "VAE")[0],
        ch=ch,
        ch_mult=tuple(width // ch for width in widths),
        num_res_blocks=len(blocks),
        z_channels=_shape(shapes, prefix + "decoder.conv_in.weight", "VAE")[1],
        embed_dim=_shape(shapes, prefix + "post_quant_conv.weight", "VAE")[1],
    )


def infer_text_encoder_config(
    shapes: Mapping[str, Sequence[int]], prefix: str = SD1_TEXT_ENCODER_PREFIX
) -> TextEncoderConfig:
    """Read a CLIP text encoder's config from its tensor shapes (transformers' key layout)."""
    keys = [key for key in shapes if key.startswith(prefix)]
    vocab_size, hidden_size = _shape(shapes, prefix + "embeddings.token_embedding.weight", "text encoder")
    max_positions = _shape(shapes, prefix + "embeddings.position_embedding.weight", "text encoder")[0]
    layers = _indices(keys, re.escape(prefix + "encoder.layers.") + r"(\d+)\.")
    intermediate = _shape(shapes, prefix + "encoder.layers.0.mlp.fc1.weight", "text encoder")[0]
    return TextEncoderConfig(
        hidden_size=hidden_size,
        num_layers=len(layers),
        intermediate_size=intermediate,
        vocab_size=vocab_size,
        max_positions=max_positions,
    )


def describe_foreign_keys(keys: Iterable[str]) -> str:
    """Say what a file that is not an LDM checkpoint looks like, from its key names."""
    keys = list(keys)
    if not keys:
        return "it holds no tensors"
    key_set = set(keys)
    examples = ", ".join(repr(key) for key in sorted(keys)[:3])

    def any_start(*prefixes: str) -> bool:
        return any(key.startswith(prefixes) for key in keys)

    def any_contains(*parts: str) -> bool:
        return any(part in key for key in keys for part in parts)

    if any_start("lora_unet_", "lora_te") or any_contains(".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "lora."):
        return f"it looks like a LoRA (keys such as {examples}); apply it to a checkpoint with a LoRA loader"
    if any_start("down_blocks.", "up_blocks.", "mid_block.") or "time_embedding.linear_1.weight" in key_set:
        return (
            f"it looks like a diffusers-format U-Net (keys such as {examples}), one file of a diffusers folder; "
            "Latentgraph reads single-file LDM checkpoints (.safetensors with model.diffusion_model.* keys)"
        )
    if any_start("encoder.down_blocks.", "decoder.up_blocks."):
        return f"it looks like a diffusers-format VAE (keys such as {examples}); load a single-file LDM VAE instead"
    if "encoder.conv_in.weight" in key_set and "decoder.conv_in.weight" in key_set:
        return "it looks like a standalone VAE; load it as a VAE (load_vae / the VAE loader), not as a checkpoint"
    if any_start("text_model.", "embeddings.token_embedding", "encoder.layers.", "transformer.resblocks."):
        return f"it looks like a text encoder on its own (keys such as {examples})"
    if any_start("control_model.", "input_hint_block.", "controlnet_"):
        return f"it looks like a ControlNet (keys such as {examples})"
    if key_set & {"emb_params", "string_to_param", "clip_l", "clip_g"} or any_start("string_to_param."):
        return f"it looks like a textual-inversion embedding (keys {examples})"
    if any_start(VAE_PREFIX, "cond_stage_model.", "conditioner."):
        return "it holds VAE or text encoder weights but no U-Net (model.diffusion_model.*)"
    return (
        f"none of its {len(keys)} tensors belongs to a Stable Diffusion U-Net (model.diffusion_model.*); "
        f"first keys: {examples}"
    )


def ldm_original_config(unet: UNetConfig, vae: VAEConfig) -> dict[str, Any]:
    """The LDM yaml (`v1-inference.yaml`-style, as a dict) describing these configs: what tools that
    read original configs, such as diffusers' single-file converters, expect beside a checkpoint."""
    unet_params = {
        "in_channels": unet.in_channels,
        "out_channels": unet.out_channels,
        "model_channels": unet.model_channels,
        "channel_mult": list(unet.channel_mult),
        "num_res_blocks": unet.num_res_blocks,
        "attention_resolutions": list(unet.attention_resolutions),
        "transformer_depth": unet.transformer_depth,
        "context_dim": unet.context_dim,
        "use_linear_in_transformer": unet.use_linear_in_transformer,
    }
    if unet.num_head_channels is None:
        unet_params["num_heads"] = unet.num_heads
    else:
        unet_params["num_head_channels"] = unet.num_head_channels
    ddconfig = {
        "in_channels": vae.in_channels,
        "out_ch": vae.out_channels,
        "ch": vae.ch,
        "ch_mult": list(vae.ch_mult),
        "num_res_blocks": vae.num_res_blocks,
        "z_channels": vae.z_channels,
        "double_z": True,
        "attn_resolutions": [],
    }
    return {
        "model": {
            "params": {
                "scale_factor": vae.scaling_factor,
                "unet_config": {"params": unet_params},
                "first_stage_config": {"params": {"embed_dim": vae.embed_dim, "ddconfig": ddconfig}},
            }
        }
    }
