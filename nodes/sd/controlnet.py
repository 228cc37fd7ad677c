"""ControlNet: a trainable copy of the U-Net's encoder that steers it with an image (edges, depth, pose...).

The model (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models") is the
U-Net's time embedding (and SDXL's `label_emb`), input blocks and middle block, built here from the
same classes as the U-Net (`nodes.sd.unet`), plus two things of its own:

* `input_hint_block`, the hint encoder: 3x3 convolutions with SiLU between them that take the hint
  image (RGB in [0, 1], at the image's pixel size) down 8x, to the U-Net's first width. Its widths
  are (16, 32, 96, 256) in every released model: conv 3->16, then per width a conv at that width
  and a stride-2 conv to the next (three in all), and a last conv to `model_channels`
  (zero-initialised in training). Its output is added to the first input block's output.
* zero convolutions: a 1x1 conv after every input block (`zero_convs.N.0`) and after the middle
  block (`middle_block_out.0`), zero-initialised in training. Their outputs are the residuals.

`ControlNet.forward(x, hint, timesteps, context, y)` returns one residual per input block and one
for the middle block; `UNetModel.forward(..., control=residuals)` adds the middle one to the
middle block's output and the others to the skip connections as the output blocks take them (as
LDM's ControlledUnetModel, ComfyUI and diffusers do).

Files as people download them come in three layouts, all read here (`load_controlnet`): LDM keys
under `control_model.` (the original releases, sometimes with the whole SD model beside them), the
same keys without the prefix (`control_v11p_sd15_canny.safetensors`), and diffusers' layout (most
SDXL ControlNets: `controlnet_cond_embedding.*`, `controlnet_down_blocks.N`, `controlnet_mid_block`,
`down_blocks.*`...). "Difference" ControlNets hold deltas to a base U-Net's weights and a
`difference` key; they are loaded against a model (`base_unet`). The config is read off the tensor
shapes, as for checkpoints; attention heads come from the family whose U-Net it copies.

At sampling time a `ControlApplication` (what the apply_controlnet node attaches to a prompt:
ControlNet, hint image, strength, start and end percent) becomes a `PreparedControl` (hint resized
and on the device, percents turned into sigmas of the model's schedule), and `control_residuals`
computes the summed residuals of every prompt's ControlNets for one batched network call.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.nodes.sd.chunked import Conv2d
from latentgraph.nodes.sd.handles import ModelHandle
from latentgraph.nodes.sd.interrupt import cancel_point
from latentgraph.nodes.sd.layout import (
    UNET_PREFIX,
    CheckpointError,
    UnsupportedCheckpoint,
    _indices,
    describe_foreign_keys,
    infer_unet_config,
)
from latentgraph.nodes.sd.spec import FamilySpec
from latentgraph.nodes.sd.unet import UNetConfig, down_path, embedding_layers, timestep_embedding

LDM_PREFIX = "control_model."
DIFFERENCE_KEY = "difference"
HINT_WIDTHS = (16, 32, 96, 256)  # the hint encoder's widths in every released ControlNet
HINT_DOWNSCALE = 8  # the hint encoder's stride-2 convolutions take the image to the latent's size
DIFFUSERS_HINT = "controlnet_cond_embedding."


@dataclass(frozen=True)
class ControlNetConfig:
    """Shape of a ControlNet: the U-Net it copies (`unet`; its out_channels are unused), the hint
    image's channels and the hint encoder's widths (one stride-2 convolution between two widths)."""

    unet: UNetConfig
    hint_channels: int = 3
    hint_widths: tuple[int, ...] = HINT_WIDTHS

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.hint_widths) - 1)


def _hint_encoder(config: ControlNetConfig) -> nn.Sequential:
    """conv hint->w0, then per width w_i: conv w_i->w_i, stride-2 conv w_i->w_{i+1}; last conv to
    model_channels; SiLU after every conv but the last (LDM's indices: convs at 0, 2, 4, ...)."""
    widths = config.hint_widths
    layers: list[nn.Module] = [Conv2d(config.hint_channels, widths[0], 3, padding=1), nn.SiLU()]
    for width, following in zip(widths, widths[1:]):
        layers += [Conv2d(width, width, 3, padding=1), nn.SiLU(), Conv2d(width, following, 3, padding=1, stride=2), nn.SiLU()]
    layers.append(Conv2d(widths[-1], config.unet.model_channels, 3, padding=1))
    return nn.Sequential(*layers)


def _repeat_to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """`tensor` (batch 1 or a divisor of `batch`) repeated, whole, to `batch` rows."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    if batch % tensor.shape[0]:
        raise ValueError(f"{what} has batch {tensor.shape[0]}, which does not divide the batch {batch}")
    return tensor.repeat(batch // tensor.shape[0], *([1] * (tensor.ndim - 1)))


class ControlNet(nn.Module):
    """The ControlNet: `forward(x, hint, timesteps, context, y)` -> residuals for the U-Net.

    Attributes are named after the LDM keys (`time_embed`, `label_emb`, `input_blocks`,
    `zero_convs`, `input_hint_block`, `middle_block`, `middle_block_out`), so the state dict and
    an LDM-layout file agree key for key."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        c = config.unet
        self.time_embed, self.label_emb = embedding_layers(c)
        # The U-Net's way down, block for block, with a zero conv after each block.
        self.input_blocks, widths, self.middle_block = down_path(c)
        self.zero_convs = nn.ModuleList(nn.Sequential(Conv2d(w, w, 1)) for w in widths)
        self.input_hint_block = _hint_encoder(config)
        width = widths[-1]
        self.middle_block_out = nn.Sequential(Conv2d(width, width, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def embed_hint(self, hint: torch.Tensor) -> torch.Tensor:
        """The hint encoder's output for hint images [b, hint_channels, H, W] (in [0, 1], H and W
        the image's pixel size): [b, model_channels, H / 8, W / 8] in the model's dtype. It does not
        depend on the noisy latent or the timestep, so callers may compute it once per sampling."""
        if hint.ndim != 4 or hint.shape[1] != self.config.hint_channels:
            raise ValueError(f"the hint must be [batch, {self.config.hint_channels}, height, width], got {list(hint.shape)}")
        h = hint.to(self.device, self.dtype)
        for layer in self.input_hint_block:
            cancel_point()
            h = layer(h)
        return h

    def forward(
        self,
        x: torch.Tensor,
        hint: torch.Tensor | None,
        timesteps: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        hint_embedding: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Residuals for the U-Net: one per input block (in order), then the middle block's.

        x, timesteps, context, y: exactly what the U-Net gets (its scaled latent input, DDPM
        timesteps, text context, SDXL's vector). hint: [b, 3, 8h, 8w] images in [0, 1] for latents
        of h x w, b 1 or a divisor of x's batch (repeated whole to it); or `hint_embedding`, the
        output of `embed_hint`, instead. Results are in the model's dtype."""
        dtype = self.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.unet.model_channels).to(dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this ControlNet needs the conditioning vector y (label_emb), and none was given")
            emb = emb + self.label_emb(y.to(dtype))
        if hint_embedding is None:
            if hint is None:
                raise ValueError("a ControlNet needs its hint image")
            hint_embedding = self.embed_hint(hint)
        guided = _repeat_to_batch(hint_embedding.to(dtype), x.shape[0], "the hint image")
        if guided.shape[-2:] != x.shape[-2:]:
            scale = self.config.downscale
            raise ValueError(
                f"the hint image is {guided.shape[-1] * scale}x{guided.shape[-2] * scale} pixels but the latent is "
                f"{x.shape[-1]}x{x.shape[-2]} ({x.shape[-1] * scale}x{x.shape[-2] * scale} pixels): they must match")

        h = x.to(dtype)
        context = context.to(dtype)
        residuals = []
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + guided
            residuals.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        cancel_point()
        residuals.append(self.middle_block_out(h))
        return residuals


# ---------------------------------------------------------------------------------------------
# Families and configs from tensor shapes


def controlnet_family(config: UNetConfig) -> FamilySpec:
    """The family whose U-Net a ControlNet of this config copies (for its attention heads and
    messages): a label_emb means SDXL; else the context width (768: SD1.x, 1024: SD2.x), or for
    other widths the transformers' projections (linear: SD2.x, 1x1 convolutions: SD1.x)."""
    from latentgraph.nodes.sd.families import SD1, SD2, SDXL, SDXL_REFINER

    if config.adm_in_channels is not None:
        # The refiner's y is the pooled text (as wide as its context) and 5 numbers of 256.
        return SDXL_REFINER if config.adm_in_channels - config.context_dim == 5 * 256 else SDXL
    if config.context_dim == 768:
        return SD1
    if config.context_dim == 1024 or config.use_linear_in_transformer:
        return SD2
    return SD1


def _with_family(unet: UNetConfig, family: FamilySpec) -> UNetConfig:
    heads = {"num_heads": 8, "num_head_channels": None, **family.unet_heads}
    return replace(unet, out_channels=unet.in_channels, upcast_attention=family.upcast_attention, **heads)


def _hint_config(shapes: Mapping[str, Sequence[int]], prefix: str, source: str) -> tuple[int, tuple[int, ...]]:
    """(hint channels, hint widths) from the LDM hint encoder's conv shapes."""
    indices = _indices(shapes, re.escape(prefix + "input_hint_block.") + r"(\d+)\.weight")
    convs = [tuple(shapes[f"{prefix}input_hint_block.{i}.weight"]) for i in indices]
    if len(convs) < 2 or len(convs) % 2 or indices != list(range(0, 2 * len(convs), 2)):
        raise CheckpointError(f"{source}: the ControlNet's hint encoder (input_hint_block) has convolutions at "
                              f"{indices}, not at 0, 2, 4, ... in an even number")
    widths = tuple(conv[0] for conv in convs[0:-1:2])
    if len(widths) - 1 != round(math.log2(HINT_DOWNSCALE)):
        raise UnsupportedCheckpoint(
            f"{source}: the ControlNet's hint encoder scales the image down {2 ** (len(widths) - 1)}x, not 8x "
            "as Stable Diffusion's latents are", family=None)
    return convs[0][1], widths


def infer_controlnet_config(shapes: Mapping[str, Sequence[int]], prefix: str = "", source: str = "the file",
                            family: FamilySpec | None = None) -> ControlNetConfig:
    """Read an LDM-layout ControlNet's config from its tensor shapes (keys under `prefix`).

    The U-Net part is read as a U-Net's (`layout.infer_unet_config`), given a stand-in for the
    output layer a ControlNet does not have; heads come from `family` (default: the family its
    shapes say, `controlnet_family`)."""
    stem = shapes.get(prefix + "input_blocks.0.0.weight")
    if stem is None:
        raise CheckpointError(f"{source}: the ControlNet is incomplete: tensor {prefix + 'input_blocks.0.0.weight'!r} is missing")
    stand_in = {**shapes, prefix + "out.2.weight": (stem[1], stem[0], 3, 3)}
    try:
        unet = infer_unet_config(stand_in, prefix=prefix)
    except CheckpointError as error:
        raise type(error)(f"{source}: {str(error).replace('U-Net', 'ControlNet')}",
                          *(() if not isinstance(error, UnsupportedCheckpoint) else (error.family,))) from None
    hint_channels, widths = _hint_config(shapes, prefix, source)
    return ControlNetConfig(_with_family(unet, family or controlnet_family(unet)), hint_channels, widths)


def _diffusers_unet_config(shapes: Mapping[str, Sequence[int]], source: str) -> UNetConfig:
    """The U-Net config of a diffusers-layout ControlNet, from its keys and shapes."""
    def shape(key: str) -> Sequence[int]:
        if key not in shapes:
            raise CheckpointError(f"{source}: the ControlNet is incomplete: tensor {key!r} is missing")
        return shapes[key]

    model_channels, in_channels = shape("conv_in.weight")[:2]
    levels = _indices(shapes, r"down_blocks\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{source}: the ControlNet's down_blocks are {levels}, not 0, 1, 2, ...")
    res_blocks = {len(_indices(shapes, rf"down_blocks\.{level}\.resnets\.(\d+)\.")) for level in levels}
    if len(res_blocks) != 1:
        raise UnsupportedCheckpoint(f"{source}: the ControlNet has a different number of residual blocks per "
                                    f"level ({sorted(res_blocks)}), which no Stable Diffusion family has", family=None)
    widths = [shape(f"down_blocks.{level}.resnets.0.conv2.weight")[0] for level in levels]
    depths = [len(_indices(shapes, rf"down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")) for level in levels]
    attn = [key for key in shapes if key.endswith(".attn2.to_k.weight")]
    proj = [key for key in shapes if key.endswith(".proj_in.weight")]
    if not attn or not proj:
        raise CheckpointError(f"{source}: the ControlNet has no cross-attention layers (attn2), so it cannot read text")
    distinct = {d for d in depths if d}
    middle = len(_indices(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    config = UNetConfig(
        in_channels=in_channels,
        out_channels=in_channels,
        model_channels=model_channels,
        channel_mult=tuple(w // model_channels for w in widths),
        num_res_blocks=res_blocks.pop(),
        attention_resolutions=tuple(sorted((2**level for level, d in enumerate(depths) if d), reverse=True)),
        transformer_depth=distinct.pop() if len(distinct) == 1 else tuple(depths),
        context_dim=shapes[attn[0]][1],
        use_linear_in_transformer=len(shapes[proj[0]]) == 2,
        adm_in_channels=shapes["add_embedding.linear_1.weight"][1] if "add_embedding.linear_1.weight" in shapes else None,
    )
    if middle != config.middle_depth:
        config = replace(config, transformer_depth_middle=middle)
    return config


def _diffusers_hint_names(shapes: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """diffusers' hint encoder module names -> LDM's: conv_in, blocks.k, conv_out -> 0, 2k + 2, last."""
    blocks = _indices(shapes, re.escape(DIFFUSERS_HINT + "blocks.") + r"(\d+)\.")
    names = {DIFFUSERS_HINT + "conv_in": "input_hint_block.0"}
    for k in blocks:
        names[f"{DIFFUSERS_HINT}blocks.{k}"] = f"input_hint_block.{2 * k + 2}"
    names[DIFFUSERS_HINT + "conv_out"] = f"input_hint_block.{2 * len(blocks) + 2}"
    return names


def diffusers_module_names(shapes: Mapping[str, Sequence[int]], config: UNetConfig) -> dict[str, str]:
    """For a diffusers-layout ControlNet of this U-Net config: {diffusers module path: LDM module
    path}. U-Net modules go through `unet_names.ldm_module_names`; the ControlNet's own:
    controlnet_cond_embedding.conv_in / blocks.k / conv_out -> input_hint_block.0 / 2k + 2 / last,
    controlnet_down_blocks.N -> zero_convs.N.0, controlnet_mid_block -> middle_block_out.0."""
    from latentgraph.nodes.sd.unet_names import ldm_module_names

    modules = dict(ldm_module_names(replace(config, out_channels=config.in_channels)))
    modules.update(_diffusers_hint_names(shapes))
    modules["controlnet_mid_block"] = "middle_block_out.0"
    blocks = 1 + config.num_res_blocks * len(config.channel_mult) + len(config.channel_mult) - 1
    for index in range(blocks):
        modules[f"controlnet_down_blocks.{index}"] = f"zero_convs.{index}.0"
    return modules


def diffusers_to_ldm_keys(shapes: Mapping[str, Sequence[int]], source: str = "the file") -> tuple[dict[str, str], UNetConfig]:
    """For a diffusers-layout ControlNet: {file key: LDM key} for every key it can place (see
    `diffusers_module_names`), and the U-Net config read from it."""
    config = _diffusers_unet_config(shapes, source)
    modules = diffusers_module_names(shapes, config)
    keys = {}
    for key in shapes:
        module, _, leaf = key.rpartition(".")
        if module in modules:
            keys[key] = f"{modules[module]}.{leaf}"
    return keys, config


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class FileLayout:
    """How a file stores its ControlNet: "ldm" keys under `prefix`, or "diffusers" keys."""

    kind: str
    prefix: str = ""
    difference: bool = False


def detect_layout(shapes: Mapping[str, Sequence[int]], source: str = "the file") -> FileLayout:
    """Which ControlNet layout a file has, or a CheckpointError saying what the file is instead."""
    keys = set(shapes)
    difference = DIFFERENCE_KEY in keys
    if LDM_PREFIX + "zero_convs.0.0.weight" in keys or LDM_PREFIX + "input_hint_block.0.weight" in keys:
        return FileLayout("ldm", LDM_PREFIX, difference)
    if "zero_convs.0.0.weight" in keys or "input_hint_block.0.weight" in keys:
        return FileLayout("ldm", "", difference)
    if DIFFUSERS_HINT + "conv_in.weight" in keys:
        if any(key.startswith(("task_embedding", "control_add_embedding", "transformer_layes")) for key in keys):
            raise UnsupportedCheckpoint(f"{source} is a ControlNet Union (several control types in one model), "
                                        "which Latentgraph does not run yet", family=None)
        return FileLayout("diffusers", "", difference)
    if "lora_controlnet" in keys:
        raise UnsupportedCheckpoint(f"{source} is a Control-LoRA (a LoRA of a ControlNet), which Latentgraph does "
                                    "not run yet; use a full ControlNet file", family=None)
    if any(key.startswith(("adapter.", "body.")) for key in keys) or "conv_in.weight" in keys and "body.0.block1.weight" in keys:
        raise UnsupportedCheckpoint(f"{source} is a T2I-Adapter, not a ControlNet; Latentgraph does not run "
                                    "T2I-Adapters yet", family=None)
    if any(key.startswith(UNET_PREFIX) for key in keys):
        raise CheckpointError(f"{source} is not a ControlNet: it is a Stable Diffusion checkpoint (model.diffusion_model.*); "
                              "load it with the checkpoint loader")
    raise CheckpointError(f"{source} is not a ControlNet (no input_hint_block or controlnet_cond_embedding "
                          f"tensors): {describe_foreign_keys(keys)}")


def load_controlnet(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    memory_fraction: float | None = 0.9,
    base_unet: nn.Module | None = None,
) -> ControlNet:
    """Load a ControlNet file of any of the three layouts (see the module doc), eval mode, no grads.

    dtype: as `checkpoint.resolve_dtype` (float32 on the CPU unless bfloat16 is asked).
    base_unet: the U-Net a "difference" ControlNet's deltas apply to (its weights are added to the
        file's where the names agree; its config also gives the heads); needed for such files.
    Raises CheckpointError (or UnsupportedCheckpoint) for files that are not ControlNets, do not
    match the model their shapes describe, or are difference files loaded without a base.
    """
    from latentgraph.nodes.sd.checkpoint import _check_and_fill, _Part, open_tensor_file, resolve_dtype
    from latentgraph.nodes.sd.open_clip import Source

    path = Path(path)
    device = torch.device(device)
    model_dtype = resolve_dtype(device, dtype)
    with open_tensor_file(path, allow_pickle) as source:
        layout = detect_layout(source.shapes, path.name)
        if layout.difference and base_unet is None:
            raise CheckpointError(f"{path.name} is a difference ControlNet (its weights are changes to a base "
                                  "model's); load it with the diff_controlnet_loader node, which takes the model")
        base_config = getattr(base_unet, "config", None) if layout.difference else None
        family = controlnet_family(base_config) if base_config is not None else None
        if layout.kind == "diffusers":
            renamed, unet = diffusers_to_ldm_keys(source.shapes, path.name)
            ldm_shapes = {ours: source.shapes[theirs] for theirs, ours in renamed.items()}
            hint_channels, widths = _hint_config(ldm_shapes, "", path.name)
            config = ControlNetConfig(_with_family(unet, family or controlnet_family(unet)), hint_channels, widths)
            to_file = {ours: theirs for theirs, ours in diffusers_module_names(source.shapes, unet).items()}
            prefix = ""
        else:
            config = infer_controlnet_config(source.shapes, layout.prefix, path.name, family)
            prefix = layout.prefix
            to_file = None
        with torch.device("meta"):
            model = ControlNet(config)
        sources = {key: Source(prefix + key if to_file is None else _renamed(key, to_file))
                   for key in model.state_dict()}
        ignored = frozenset({DIFFERENCE_KEY})
        shapes = source.shapes
        if layout.kind == "ldm" and not prefix:
            # No common prefix: compare only the ControlNet's own keys (a file may carry extras).
            shapes = {k: v for k, v in shapes.items() if k.startswith(_LDM_PARTS) or k == DIFFERENCE_KEY}
        part = _Part("ControlNet", model, prefix, sources, ignored)
        checked = type(source)(shapes, source.read, source.metadata, source.description)
        _check_and_fill([part], checked, device, [model_dtype], memory_fraction)
    if layout.difference:
        _add_base_weights(model, base_unet, path.name)
    return model


def _renamed(key: str, modules: Mapping[str, str]) -> str:
    """An LDM parameter key in diffusers' names (module renamed, parameter name kept)."""
    module, _, leaf = key.rpartition(".")
    return f"{modules[module]}.{leaf}" if module in modules else f"{key} (no diffusers name)"


_LDM_PARTS = ("time_embed.", "label_emb.", "input_blocks.", "zero_convs.", "input_hint_block.", "middle_block.",
              "middle_block_out.")


def _add_base_weights(model: ControlNet, base_unet: nn.Module, source: str) -> None:
    """A difference ControlNet's weights are deltas: add the base U-Net's tensor of the same name."""
    base = base_unet.state_dict()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key in base:
                if base[key].shape != tensor.shape:
                    raise CheckpointError(f"{source}: its {key} is {list(tensor.shape)} but the model's is "
                                          f"{list(base[key].shape)}: it is a difference to another model")
                tensor += base[key].to(tensor.device, tensor.dtype)


# ---------------------------------------------------------------------------------------------
# Links and sampling


@dataclass(eq=False)
class ControlNetHandle(ModelHandle):
    """A loaded ControlNet as a link value (port CONTROL_NET), with the file's name for messages."""

    model: ControlNet
    source: str

    @property
    def config(self) -> ControlNetConfig:
        return self.model.config

    @property
    def family(self) -> FamilySpec:
        return controlnet_family(self.model.config.unet)


@dataclass(frozen=True, eq=False)
class ControlApplication:
    """One ControlNet applied to a prompt (what apply_controlnet attaches to a ConditioningEntry's
    `control`): the hint images (an IMAGE [B, H, W, 3] in [0, 1] on the CPU), the strength its residuals are
    multiplied by, and the part of the schedule it acts on, as percents (ComfyUI's meaning: see
    `percent_to_sigma`). Compared by identity: the positive and negative prompts share it."""

    controlnet: ControlNetHandle
    image: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0


def percent_to_sigma(schedule: Any, percent: float) -> float:
    """The noise level at `percent` of the sampling schedule, as ComfyUI computes it: 0 or less is
    "from the start" (infinite sigma), 1 or more "to the end" (sigma 0); in between the sigma of
    the continuous timestep (1 - percent) x (T - 1) of the model's training schedule (T = 1000:
    999 at 0%, 0 at 100%), log-sigma interpolated between training timesteps."""
    if percent <= 0.0:
        return math.inf
    if percent >= 1.0:
        return 0.0
    t = torch.tensor((1.0 - percent) * (schedule.num_timesteps - 1), dtype=torch.float64)
    return float(schedule.t_to_sigma(t))


def fit_hint(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """An IMAGE [B, H, W, 3] as a hint [B, 3, height, width]. An image of another size is first
    cropped to the target's aspect ratio around its centre, then resized with nearest-neighbour
    sampling ("nearest-exact": pixel centres), as ComfyUI does, which keeps edge maps and
    segmentation colours crisp (no blended values)."""
    hint = image.movedim(-1, 1).float()
    old_height, old_width = hint.shape[-2:]
    if (old_height, old_width) == (height, width):
        return hint.contiguous()
    old_aspect, new_aspect = old_width / old_height, width / height
    if old_aspect > new_aspect:  # too wide: cut the sides
        keep = round(old_width * new_aspect / old_aspect)
        left = (old_width - keep) // 2
        hint = hint[..., left:left + keep]
    elif old_aspect < new_aspect:  # too tall: cut top and bottom
        keep = round(old_height * old_aspect / new_aspect)
        top = (old_height - keep) // 2
        hint = hint[..., top:top + keep, :]
    return F.interpolate(hint, size=(height, width), mode="nearest-exact").contiguous()


def check_fits(controlnet: ControlNetHandle, model: Any) -> None:
    """Refuse a ControlNet made for another family (or another U-Net shape) than `model`'s, saying which."""
    ours, theirs = controlnet.config.unet, model.unet.config
    problems = []
    if ours.context_dim != theirs.context_dim:
        problems.append(f"it reads text {ours.context_dim} channels wide, the model {theirs.context_dim}")
    if ours.adm_in_channels != theirs.adm_in_channels:
        problems.append(f"its extra conditioning vector is {ours.adm_in_channels or 'absent'}, "
                        f"the model's {theirs.adm_in_channels or 'absent'}")
    shape = lambda c: (c.model_channels, tuple(c.channel_mult), c.num_res_blocks)  # noqa: E731
    if shape(ours) != shape(theirs):
        problems.append(f"its blocks are {ours.model_channels} x {list(ours.channel_mult)} channels with "
                        f"{ours.num_res_blocks} per level, the model's {theirs.model_channels} x "
                        f"{list(theirs.channel_mult)} with {theirs.num_res_blocks}")
    if problems:
        raise ValueError(f"the ControlNet {controlnet.source} ({controlnet.family.label}) does not fit the model "
                         f"{model.source} ({model.spec.label}): " + "; ".join(problems)
                         + f". Use a ControlNet made for {model.spec.label}")


@dataclass(eq=False)
class PreparedControl:
    """A ControlApplication ready for one sampling run: the hint at the latent's pixel size on the
    ControlNet's device, and the sigma range [end_sigma, start_sigma] in which it acts. The hint
    encoder's output is computed on first use and kept for the run (it depends on the hint only)."""

    model: ControlNet
    hint: torch.Tensor
    strength: float
    start_sigma: float
    end_sigma: float
    _embedded: torch.Tensor | None = field(default=None, repr=False)

    def active(self, sigma: float) -> bool:
        """Whether it acts at noise level `sigma`: start_sigma >= sigma >= end_sigma (ComfyUI's rule)."""
        return self.start_sigma >= sigma >= self.end_sigma

    def residuals(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None,
                  rows_per_prompt: int) -> list[torch.Tensor]:
        """Its residuals (times the strength) for a batch of whole prompt chunks of `rows_per_prompt`
        latents each: the hint batch (1, or one image per latent) is repeated for each chunk."""
        if self._embedded is None:
            self._embedded = self.model.embed_hint(self.hint)
        hint = self._embedded
        if hint.shape[0] not in (1, rows_per_prompt):
            raise ValueError(f"the ControlNet's hint image batch is {hint.shape[0]} but the latent batch is "
                             f"{rows_per_prompt}: give one hint image, or one per latent")
        out = self.model(x, None, t, context, y, hint_embedding=hint)
        if self.strength != 1.0:
            out = [r * self.strength for r in out]
        return out


def prepare_controls(stack: Sequence[ControlApplication], model: Any, size: tuple[int, int] | None,
                     memo: dict[int, PreparedControl]) -> tuple[PreparedControl, ...]:
    """The prompt's ControlNets ready for sampling `model` at `size` (width, height in pixels).
    `memo` maps applications already prepared (by id) to theirs, so prompts that share one share
    the prepared one too, and `control_residuals` runs it once over all of them."""
    out = []
    for application in stack:
        prepared = memo.get(id(application))
        if prepared is None:
            if size is None:
                raise ValueError("a ControlNet needs the image size to fit its hint image")
            check_fits(application.controlnet, model)
            net = application.controlnet.model
            width, height = size
            hint = fit_hint(application.image, width, height).to(net.device, net.dtype)
            prepared = PreparedControl(net, hint, application.strength,
                                       percent_to_sigma(model.schedule, application.start_percent),
                                       percent_to_sigma(model.schedule, application.end_percent))
            memo[id(application)] = prepared
        out.append(prepared)
    return tuple(out)


def control_residuals(chunks: Any, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                      y: torch.Tensor | None) -> list[torch.Tensor] | None:
    """The summed residuals of every prompt's active ControlNets for one batched network call.

    chunks: a `denoiser.ControlChunks`: `controls[i]` (a tuple of PreparedControl, or empty) belongs
    to rows [i * n, (i + 1) * n) of the batch, n = batch / len(controls); `sigma` the rows' noise
    levels. Prompts with equal tuples (the same applications: a positive and a negative prompt
    given the same ControlNets) go through their ControlNets together; each ControlNet acts when
    the chunk's noise level is in its range. Rows without control get zero residuals. Returns None
    when no ControlNet acts at all (the U-Net then runs exactly as without control)."""
    controls = tuple(chunks.controls)
    count = len(controls)
    rows = x.shape[0] // count
    groups: list[tuple[tuple, list[int]]] = []
    for index, stack in enumerate(controls):
        if not stack:
            continue
        for group_stack, members in groups:
            if group_stack == tuple(stack):
                members.append(index)
                break
        else:
            groups.append((tuple(stack), [index]))
    total: list[torch.Tensor] | None = None
    for stack, members in groups:
        whole = len(members) == count
        select = slice(None) if whole else torch.cat(
            [torch.arange(m * rows, (m + 1) * rows) for m in members]).to(x.device)
        sigma = float(chunks.sigma[members[0] * rows])
        summed: list[torch.Tensor] | None = None
        for prepared in stack:
            if not prepared.active(sigma):
                continue
            out = prepared.residuals(x[select], t[select], context[select], None if y is None else y[select], rows)
            summed = out if summed is None else [a + b for a, b in zip(summed, out)]
        if summed is None:
            continue
        if whole:
            return summed
        if total is None:
            total = [r.new_zeros((x.shape[0], *r.shape[1:])) for r in summed]
        for accumulated, residual in zip(total, summed):
            accumulated[select] = residual
    return total


def control_configs(*conditionings: Any) -> list[ControlNetConfig]:
    """The distinct ControlNets' configs attached to these conditionings (for memory estimates)."""
    seen: dict[int, ControlNetConfig] = {}
    for conditioning in conditionings:
        for entry in getattr(conditioning, "entries", ()):
            for application in getattr(entry, "control", ()):
                seen.setdefault(id(application.controlnet.model), application.controlnet.config)
    return list(seen.values())


__all__ = [
    "ControlApplication", "ControlNet", "ControlNetConfig", "ControlNetHandle", "PreparedControl", "check_fits",
    "control_configs", "control_residuals", "controlnet_family", "detect_layout", "diffusers_to_ldm_keys", "fit_hint",
    "infer_controlnet_config", "load_controlnet", "percent_to_sigma", "prepare_controls",
]
