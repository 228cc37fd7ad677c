"""Local diffusers config folders for the tiny checkpoints (tests/sd_tiny.py), so diffusers can
load them with its OWN single-file loader, fully offline:

    StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True)

`from_single_file` takes the weights from the file and every component's config from `config`,
a folder laid out like a pipeline repository on the hub (model_index.json, <component>/config.json,
scheduler/scheduler_config.json, tokenizer/...). Real repositories describe full-size models;
these describe the tiny ones, written from the same config objects the checkpoints were built
from. Nothing here holds weights, and nothing is downloaded. Generic over families: each
family's test says which components its pipeline has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers read it

from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
from latentgraph.nodes.sd.unet import UNetConfig
from latentgraph.nodes.sd.vae import VAEConfig

DIFFUSERS_VERSION = "0.42.1"  # what the config files say wrote them; diffusers only logs a mismatch


def unet_config(config: UNetConfig, sample_size: int = 64, **overrides: Any) -> dict[str, Any]:
    """A UNet2DConditionModel config (unet/config.json) of the same architecture as our UNetConfig.

    diffusers' `attention_head_dim` is, for historical reasons, the number of heads per level;
    a level gets cross-attention blocks where ours has transformers. `overrides` adds what only
    some families have (SDXL: addition_embed_type="text_time", addition_time_embed_dim,
    projection_class_embeddings_input_dim)."""
    widths = [config.model_channels * mult for mult in config.channel_mult]
    depths = [config.depth_at_level(level) for level in range(len(widths))]
    attention = ["CrossAttn" if depth else "" for depth in depths]
    result: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": widths,
        "layers_per_block": config.num_res_blocks,
        "down_block_types": [f"{kind}DownBlock2D" for kind in attention],
        "up_block_types": [f"{kind}UpBlock2D" for kind in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "attention_head_dim": [config.heads_for(width)[0] for width in widths],
        "cross_attention_dim": config.context_dim,
        "transformer_layers_per_block": [max(depth, 1) for depth in depths],
        "use_linear_projection": config.use_linear_in_transformer,
        "upcast_attention": config.upcast_attention,
        "act_fn": "silu",
        "center_input_sample": False,
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
    }
    if config.middle_depth != max(depths[-1], 1):
        result["transformer_layers_per_mid_block"] = config.middle_depth
    result.update(overrides)
    return result


def vae_config(config: VAEConfig, sample_size: int = 512, **overrides: Any) -> dict[str, Any]:
    """An AutoencoderKL config (vae/config.json) of the same architecture as our VAEConfig."""
    levels = len(config.ch_mult)
    result = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": [config.ch * mult for mult in config.ch_mult],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": config.num_res_blocks,
        "latent_channels": config.embed_dim,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": sample_size,
        "scaling_factor": config.scaling_factor,
    }
    result.update(overrides)
    return result


def clip_text_config(config: TextEncoderConfig, num_hidden_layers: int | None = None,
                     architecture: str = "CLIPTextModel", **overrides: Any) -> dict[str, Any]:
    """A transformers CLIPTextConfig (text_encoder/config.json) for our TextEncoderConfig.
    `num_hidden_layers` may be fewer than the file holds (diffusers' SD2.x text encoder drops the
    last OpenCLIP layer: see the SD2 tests)."""
    result = {
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": num_hidden_layers if num_hidden_layers is not None else config.num_layers,
        "num_attention_heads": config.num_heads,
        "max_position_embeddings": config.max_positions,
        "hidden_act": config.hidden_act,
        "projection_dim": config.projection_dim or config.hidden_size,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
        "torch_dtype": "float32",
    }
    result.update(overrides)
    return result


def scheduler_config(class_name: str = "DDIMScheduler", **overrides: Any) -> dict[str, Any]:
    """A scheduler config with SD's training schedule (the tests usually swap the scheduler)."""
    result = {
        "_class_name": class_name,
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
    }
    result.update(overrides)
    return result


def save_tokenizer(folder: str | Path, pad_token: str) -> Path:
    """Save our CLIP tokenizer (latentgraph.nodes.sd.tokenizer) into `folder` with `pad_token`:
    "<|endoftext|>" for OpenAI's CLIP (SD1.x, SDXL's CLIP-L), "!" (id 0) for OpenCLIP towers.
    The shared tokenizer itself is not modified."""
    from latentgraph.nodes.sd.tokenizer import get_tokenizer
    from transformers import CLIPTokenizer

    folder = Path(folder)
    get_tokenizer().save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, pad_token=pad_token, local_files_only=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_pipeline_folder(
    folder: str | Path,
    pipeline_class: str,
    components: Mapping[str, tuple[str, str, Mapping[str, Any]]],
    tokenizers: Mapping[str, str] | None = None,
    **pipeline_config: Any,
) -> Path:
    """Write a pipeline config folder for `from_single_file(path, config=folder)`.

    components: name -> (library, class name, config dict), e.g.
        {"unet": ("diffusers", "UNet2DConditionModel", unet_config(...)),
         "text_encoder": ("transformers", "CLIPTextModel", clip_text_config(...)),
         "scheduler": ("diffusers", "DDIMScheduler", scheduler_config())}
        Schedulers' configs go to scheduler_config.json, everything else's to config.json.
    tokenizers: name -> pad token (saved with `save_tokenizer`, as transformers' CLIPTokenizer).
    pipeline_config: further model_index.json entries, e.g. safety_checker=[None, None],
        requires_safety_checker=False.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": pipeline_class, "_diffusers_version": DIFFUSERS_VERSION}
    for name, (library, class_name, config) in components.items():
        index[name] = [library, class_name]
        (folder / name).mkdir(exist_ok=True)
        filename = "scheduler_config.json" if class_name.endswith("Scheduler") else "config.json"
        (folder / name / filename).write_text(json.dumps(dict(config), indent=2))
    for name, pad_token in (tokenizers or {}).items():
        index[name] = ["transformers", "CLIPTokenizer"]
        save_tokenizer(folder / name, pad_token)
    index.update(pipeline_config)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
