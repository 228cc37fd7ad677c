"""OpenCLIP text encoders as stored in LDM/SGM checkpoints, loaded into transformers' CLIP models.

SD2.x keeps OpenCLIP ViT-H/14 under `cond_stage_model.model.` and SDXL keeps ViT-bigG/14 under
`conditioner.embedders.1.model.` (the refiner: `.0.model.`), both in open_clip's own layout::

    token_embedding.weight            [vocab, width]
    positional_embedding              [77, width]
    transformer.resblocks.N.ln_1 / ln_2                  (weight, bias)
    transformer.resblocks.N.attn.in_proj_weight          [3 * width, width]: q, k, v stacked
    transformer.resblocks.N.attn.in_proj_bias            [3 * width]
    transformer.resblocks.N.attn.out_proj                (weight, bias)
    transformer.resblocks.N.mlp.c_fc / c_proj            (weight, bias)
    ln_final                                             (weight, bias)
    text_projection                   [width, projection]: used as `pooled @ text_projection`
    logit_scale                       (training only)

The architecture is CLIP's text transformer (pre-norm blocks, causal attention, GELU where OpenAI's
CLIP has quick GELU), so it runs as transformers' `CLIPTextModel` (`CLIPTextModelWithProjection`
where the file has a projection the family uses). `KeyMap` says where each of the model's tensors
comes from in the file: a whole tensor, one third of a packed attention matrix (a view, so
splitting copies nothing), or the projection's transpose. `to_open_clip` writes the other way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# Where each per-block tensor of transformers' CLIP encoder layer sits in an open_clip resblock.
_BLOCK_TENSORS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = ("q_proj", "k_proj", "v_proj")  # the order in_proj_weight stacks them
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")

# Tensors an open_clip text tower may carry that inference does not use.
UNUSED = ("logit_scale", "attn_mask")


@dataclass(frozen=True)
class Source:
    """Where one model tensor comes from: `file_key`, and `take` turning the file tensor into it
    (None: the tensor as it is)."""

    file_key: str
    take: Callable[[torch.Tensor], torch.Tensor] | None = None
    file_shape: tuple[int, ...] | None = None  # the file tensor's shape, where it differs from the model's


def _third(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda packed: packed.chunk(3, dim=0)[index]


def _transposed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t()


def model_to_file(model_key: str, shape: Sequence[int], prefix: str) -> Source:
    """Where the transformers CLIP tensor `model_key` (without any `text_model.` wrapper) sits in
    an open_clip text tower stored under `prefix`."""
    if model_key == "embeddings.token_embedding.weight":
        return Source(prefix + "token_embedding.weight")
    if model_key == "embeddings.position_embedding.weight":
        return Source(prefix + "positional_embedding")
    if model_key.startswith("final_layer_norm."):
        return Source(prefix + "ln_final." + model_key.rpartition(".")[2])
    if model_key == "text_projection.weight":
        return Source(prefix + "text_projection", _transposed, (shape[1], shape[0]))
    match = _LAYER.match(model_key)
    if match is None:
        raise KeyError(f"no open_clip place for {model_key!r}")
    layer, name, kind = match.groups()
    block = f"{prefix}transformer.resblocks.{layer}."
    module = name.rpartition(".")[2]
    if module in _QKV:
        packed_shape = (3 * shape[0], *shape[1:])
        return Source(f"{block}attn.in_proj_{kind}", _third(_QKV.index(module)), packed_shape)
    if name not in _BLOCK_TENSORS:
        raise KeyError(f"no open_clip place for {model_key!r}")
    return Source(f"{block}{_BLOCK_TENSORS[name]}.{kind}")


def key_map(model: nn.Module, prefix: str) -> dict[str, Source]:
    """Every state_dict key of `model` (a CLIPTextModel or CLIPTextModelWithProjection) -> its Source."""
    wrapper = "text_model." if hasattr(model, "text_model") else ""
    return {key: model_to_file(key.removeprefix(wrapper), tuple(tensor.shape), prefix)
            for key, tensor in model.state_dict().items()}


def to_open_clip(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in open_clip's layout (keys without a prefix): what a checkpoint writer
    stores. q, k and v are stacked back into in_proj tensors; the projection is transposed back."""
    state = model.state_dict()
    sources = key_map(model, "")
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, list[torch.Tensor | None]] = {}
    for key, source in sources.items():
        tensor = state[key]
        if source.file_key.endswith(("in_proj_weight", "in_proj_bias")):
            index = _QKV.index(key.rsplit(".", 2)[-2])
            packed.setdefault(source.file_key, [None, None, None])[index] = tensor
        elif source.take is _transposed:
            out[source.file_key] = tensor.t().contiguous()
        else:
            out[source.file_key] = tensor
    for file_key, parts in packed.items():
        out[file_key] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out


def layer_count(keys: Iterable[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix + "transformer.resblocks.") + r"(\d+)\.")
    return len({int(m.group(1)) for key in keys if (m := pattern.match(key))})


def shapes_of(shapes: Mapping[str, Sequence[int]], prefix: str) -> dict[str, int]:
    """The text tower's sizes read off an open_clip layout: width, layers, MLP width, vocabulary,
    positions and the projection's width (0 where the file has none). Missing tensors raise KeyError
    naming the key."""
    def shape(name: str) -> Sequence[int]:
        key = prefix + name
        if key not in shapes:
            raise KeyError(key)
        return shapes[key]

    vocab, width = shape("token_embedding.weight")
    projection = shapes.get(prefix + "text_projection")
    return {
        "hidden_size": width,
        "vocab_size": vocab,
        "max_positions": shape("positional_embedding")[0],
        "num_layers": layer_count(shapes, prefix),
        "intermediate_size": shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
        "projection_dim": projection[1] if projection is not None else 0,
    }


__all__ = ["Source", "UNUSED", "key_map", "layer_count", "model_to_file", "shapes_of", "to_open_clip"]
