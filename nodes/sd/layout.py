"""The LDM single-file layout: where each part sits, and its config read off tensor shapes.

Everything here reads only key names and tensor shapes (no tensor data), so a 7 GB file is
understood from its header, and a tiny test checkpoint in the same layout goes through exactly the
same inference as a real one. Configs are inferred from shapes, not looked up by family, so
fine-tunes with unusual widths still load; what the weights cannot tell (attention heads,
v-prediction) comes from the family spec (`families`) or from the caller.
"""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from latentgraph.nodes.sd import open_clip
from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
from latentgraph.nodes.sd.unet import UNetConfig
from latentgraph.nodes.sd.vae import VAEConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

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


def infer_text_encoder_config(shapes: Mapping[str, Sequence[int]], prefix: str, hidden_act: str = "quick_gelu") -> TextEncoderConfig:
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
        hidden_act=hidden_act,
    )


def infer_open_clip_config(shapes: Mapping[str, Sequence[int]], prefix: str, hidden_act: str = "gelu",
                           projection: bool = False) -> TextEncoderConfig:
    """Read an OpenCLIP text tower's config from its tensor shapes (open_clip's key layout).
    projection: keep the file's `text_projection` (for a family that uses the pooled vector)."""
    try:
        sizes = open_clip.shapes_of(shapes, prefix)
    except KeyError as missing:
        raise CheckpointError(f"the text encoder is incomplete: tensor {missing.args[0]!r} is missing") from None
    if projection and not sizes["projection_dim"]:
        raise CheckpointError(f"the text encoder has no {prefix}text_projection, which its pooled vector needs")
    return TextEncoderConfig(
        hidden_size=sizes["hidden_size"],
        num_layers=sizes["num_layers"],
        intermediate_size=sizes["intermediate_size"],
        vocab_size=sizes["vocab_size"],
        max_positions=sizes["max_positions"],
        hidden_act=hidden_act,
        projection_dim=sizes["projection_dim"] if projection else 0,
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
    if unet.adm_in_channels is not None:  # SDXL's y vector, through label_emb, as its yaml says
        unet_params["num_classes"] = "sequential"
        unet_params["adm_in_channels"] = unet.adm_in_channels
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
