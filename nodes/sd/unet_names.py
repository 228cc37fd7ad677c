"""The U-Net's module names in diffusers' layout, mapped to ours (the LDM checkpoint's).

Files made with diffusers name U-Net modules its way: LoRAs trained with diffusers or converted by
kohya's scripts (`lora_unet_down_blocks_0_attentions_0_...`), PEFT LoRAs (`unet.down_blocks...`),
and most SDXL ControlNets. Our U-Net keeps the LDM names (`input_blocks.1.1...`). The two layouts
describe the same modules block for block:

    conv_in                               input_blocks.0.0
    time_embedding.linear_1 / linear_2    time_embed.0 / time_embed.2
    add_embedding.linear_1 / linear_2     label_emb.0.0 / label_emb.0.2   (SDXL)
    down_blocks.i.resnets.j               input_blocks.(1 + i * (R + 1) + j).0
    down_blocks.i.attentions.j            input_blocks.(1 + i * (R + 1) + j).1
    down_blocks.i.downsamplers.0.conv     input_blocks.((i + 1) * (R + 1)).0.op
    mid_block.resnets.0 / attentions.0 / resnets.1     middle_block.0 / .1 / .2
    up_blocks.u.resnets.j                 output_blocks.(u * (R + 1) + j).0
    up_blocks.u.attentions.j              output_blocks.(u * (R + 1) + j).1
    up_blocks.u.upsamplers.0.conv         output_blocks.(u * (R + 1) + R).1 (or .2 after attention).conv
    conv_norm_out / conv_out              out.0 / out.2

with R residual blocks per level (up blocks have R + 1), and inside a residual block
norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut = in_layers.0, in_layers.2, emb_layers.1,
out_layers.0, out_layers.3, skip_connection. Transformer internals (proj_in, transformer_blocks.N.
attn1.to_q, ff.net.0.proj...) have the same names in both. The map is built from the config, so it
holds for SD1.x, SD2.x, SDXL (whose first level has no attention) and any fine-tune's widths.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from latentgraph.nodes.sd.unet import UNetConfig, UNetModel

_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_TOP = {
    "input_blocks.0.0": "conv_in",
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}


@lru_cache(maxsize=16)
def _block_prefixes(config: UNetConfig) -> dict[str, tuple[str, str]]:
    """LDM layer prefix ("input_blocks.4.1") -> (diffusers prefix, kind: resnet | attention | plain)."""
    per_level = config.num_res_blocks + 1
    levels = len(config.channel_mult)
    table: dict[str, tuple[str, str]] = {}
    for level in range(levels):
        attention = config.depth_at_level(level) > 0
        for j in range(config.num_res_blocks):
            index = 1 + level * per_level + j
            table[f"input_blocks.{index}.0"] = (f"down_blocks.{level}.resnets.{j}", "resnet")
            if attention:
                table[f"input_blocks.{index}.1"] = (f"down_blocks.{level}.attentions.{j}", "attention")
        if level != levels - 1:
            table[f"input_blocks.{(level + 1) * per_level}.0.op"] = (f"down_blocks.{level}.downsamplers.0.conv", "plain")
    table["middle_block.0"] = ("mid_block.resnets.0", "resnet")
    table["middle_block.1"] = ("mid_block.attentions.0", "attention")
    table["middle_block.2"] = ("mid_block.resnets.1", "resnet")
    for up in range(levels):
        level = levels - 1 - up
        attention = config.depth_at_level(level) > 0
        for j in range(per_level):
            index = up * per_level + j
            table[f"output_blocks.{index}.0"] = (f"up_blocks.{up}.resnets.{j}", "resnet")
            if attention:
                table[f"output_blocks.{index}.1"] = (f"up_blocks.{up}.attentions.{j}", "attention")
        if level != 0:
            slot = 2 if attention else 1
            table[f"output_blocks.{up * per_level + config.num_res_blocks}.{slot}.conv"] = (
                f"up_blocks.{up}.upsamplers.0.conv", "plain")
    return table


def diffusers_name(ldm_name: str, config: UNetConfig) -> str | None:
    """The diffusers name of one of our U-Net's modules (or parameters), None where it has none."""
    for ours, theirs in _TOP.items():
        if ldm_name == ours or ldm_name.startswith(ours + "."):
            return theirs + ldm_name[len(ours):]
    parts = ldm_name.split(".")
    table = _block_prefixes(config)
    for cut in range(min(len(parts), 4), 1, -1):  # the longest block prefix that matches
        prefix = ".".join(parts[:cut])
        if prefix not in table:
            continue
        theirs, kind = table[prefix]
        rest = ".".join(parts[cut:])
        if kind == "resnet" and rest:
            for inner_ours, inner_theirs in _RESNET.items():
                if rest == inner_ours or rest.startswith(inner_ours + "."):
                    rest = inner_theirs + rest[len(inner_ours):]
                    break
            else:
                return None
        return theirs + ("." + rest if rest else "")
    return None


@lru_cache(maxsize=16)
def ldm_module_names(config: UNetConfig) -> dict[str, str]:
    """diffusers module path -> our module path, for every U-Net module that holds parameters
    (linear layers, convolutions, norms) of a U-Net of this config."""
    with torch.device("meta"):
        model = UNetModel(config)
    names: dict[str, str] = {}
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        theirs = diffusers_name(name, config)
        if theirs is not None:
            names[theirs] = name
    return names
