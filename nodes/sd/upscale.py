"""Upscale models: ESRGAN's RRDBNet and Real-ESRGAN's compact SRVGGNet, read from the files people
download, and run over an image in tiles whose margins cover what each output pixel sees.

Two architectures cover most upscaler downloads:

- RRDBNet (ESRGAN, 2018; Real-ESRGAN, 2021): a trunk of residual-in-residual dense blocks at the
  input's resolution, then nearest-neighbour x2 upsamplings each followed by a convolution. Three
  key layouts are in circulation and all load here: BasicSR's (`conv_first`, `body.N.rdbM.convK`,
  `conv_body`, `conv_upK`, `conv_hr`, `conv_last`: RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B,
  RealESRGAN_x2plus), xinntao/ESRGAN's later one (`RRDB_trunk`, `trunk_conv`, `upconvK`, `HRconv`:
  BSRGAN, RealSR) and the original `model.N` one of the community models (4x-UltraSharp, 4x-AnimeSharp,
  1x_* restoration models), where every layer is a position in one nn.Sequential. Real-ESRGAN's x2
  and x1 models are the x4 network fed with a pixel-unshuffled input (each 2x2 or 4x4 block of
  pixels folded into channels); that shows in the first convolution's input width (12 or 48 for RGB).
- SRVGGNetCompact (Real-ESRGAN's realesr-general-x4v3, realesr-animevideov3): a plain stack of
  3x3 convolutions with PReLU activations at the input's resolution, a pixel shuffle, and the
  nearest-neighbour enlarged input added back.

Our modules use BasicSR's and Real-ESRGAN's attribute names, so those files load key for key; the
other layouts are renamed on the way in (`detect_architecture`'s `to_file`). Architecture, scale,
depth and widths are read from key names and tensor shapes, never from the file's name.

Tiles: each output pixel of a stack of 3x3 convolutions depends only on the input within a fixed
distance, the receptive field (`receptive_field`, in input pixels). A tile is the image region it
keeps plus a margin on every side that touches another tile; where the margin is at least that
distance, tiled equals untiled exactly (the zero padding at the image's own border is the same in
both). Deep RRDBNets see far (RealESRGAN_x4plus: 351 pixels) but what lies beyond a few dozen pixels
reaches an output only through many 0.2-scaled residual branches, and in our measurements changed
nothing beyond float32 rounding; `DEFAULT_MAX_MARGIN` caps the margin there (see `default_margin`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.nodes.sd.handles import ModelHandle
from latentgraph.nodes.sd.interrupt import cancel_point
from latentgraph.nodes.sd.layout import CheckpointError, UNET_PREFIX, describe_foreign_keys

LRELU_SLOPE = 0.2  # ESRGAN's LeakyReLU
RESIDUAL_SCALE = 0.2  # each dense block's and each RRDB's branch is scaled by this before the skip is added

# Margins (in input pixels) are capped at this by default. It covers the whole receptive field of
# the compact models (18 and 34 pixels for the released ones) and of RRDBNets up to two blocks. For
# the 23-block RRDBNets (351 pixels) covering it would make a 256-pixel tile compute 14x as many
# pixels; measured on a 23-block x4 RRDBNet with random weights (PyTorch's initialisation, and
# Kaiming's at full gain, whose outputs reach 280), tiles with a 16-pixel margin already equal the
# untiled result to float32 rounding (1.5e-6 relative), as they do with 24 to 64 pixels: what lies
# further away reaches an output only through many 0.2-scaled residual branches.
DEFAULT_MAX_MARGIN = 40

SUPPORTED = ("ESRGAN / Real-ESRGAN RRDBNet (model.N, RRDB_trunk or BasicSR body.N keys; x1, x2, x4, x8) "
             "and Real-ESRGAN's compact SRVGGNet (body.N keys with PReLU)")


class UpscaleModelError(CheckpointError):
    """A file that is not an upscale model this code runs; the message says what it looks like."""


# ---------------------------------------------------------------------------------------------
# RRDBNet


@dataclass(frozen=True)
class RRDBConfig:
    """Shape of an RRDBNet. Defaults are ESRGAN's and RealESRGAN_x4plus's.

    in_channels / out_channels: image channels (3 for RGB) before any pixel unshuffle.
    features: width of the trunk and of the upsampling layers (num_feat / nf).
    blocks: residual-in-residual dense blocks in the trunk (num_block / nb).
    grow: channels each convolution of a dense block adds (num_grow_ch / gc).
    upsamples: nearest x2 + conv stages after the trunk (2 for x4 models).
    unshuffle: the input is pixel-unshuffled by this factor first (Real-ESRGAN x2: 2, x1: 4).
    """

    in_channels: int = 3
    out_channels: int = 3
    features: int = 64
    blocks: int = 23
    grow: int = 32
    upsamples: int = 2
    unshuffle: int = 1

    @property
    def scale(self) -> int:
        return 2**self.upsamples // self.unshuffle

    @property
    def receptive_field(self) -> int:
        """Input pixels on each side of a pixel that can reach its output: conv_first, five convs per
        dense block (three per RRDB), conv_body, then the upsampling convs and conv_hr/conv_last,
        each of which sees one pixel at its resolution (counted as a whole trunk pixel, rounding up),
        all times the unshuffle factor (tiles start on its grid)."""
        trunk_pixels = 1 + 15 * self.blocks + 1 + self.upsamples + 2
        return trunk_pixels * self.unshuffle


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each reading the block's input and every earlier output."""

    def __init__(self, features: int, grow: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, grow, 3, padding=1)
        self.conv2 = nn.Conv2d(features + grow, grow, 3, padding=1)
        self.conv3 = nn.Conv2d(features + 2 * grow, grow, 3, padding=1)
        self.conv4 = nn.Conv2d(features + 3 * grow, grow, 3, padding=1)
        self.conv5 = nn.Conv2d(features + 4 * grow, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1) if len(seen) > 1 else x), LRELU_SLOPE, inplace=True))
        out = self.conv5(torch.cat(seen, 1))
        del seen
        return out.mul_(RESIDUAL_SCALE).add_(x)


class RRDB(nn.Module):
    """Three dense blocks in a row, their result scaled and added to the input."""

    def __init__(self, features: int, grow: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, grow)
        self.rdb2 = ResidualDenseBlock(features, grow)
        self.rdb3 = ResidualDenseBlock(features, grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))).mul_(RESIDUAL_SCALE).add_(x)


class RRDBNet(nn.Module):
    """ESRGAN's generator with BasicSR's parameter names (see the module doc for the other layouts)."""

    def __init__(self, config: RRDBConfig):
        super().__init__()
        self.config = config
        c = config
        self.conv_first = nn.Conv2d(c.in_channels * c.unshuffle**2, c.features, 3, padding=1)
        self.body = nn.ModuleList(RRDB(c.features, c.grow) for _ in range(c.blocks))
        self.conv_body = nn.Conv2d(c.features, c.features, 3, padding=1)
        for index in range(1, c.upsamples + 1):
            setattr(self, f"conv_up{index}", nn.Conv2d(c.features, c.features, 3, padding=1))
        self.conv_hr = nn.Conv2d(c.features, c.features, 3, padding=1)
        self.conv_last = nn.Conv2d(c.features, c.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in_channels, H, W) in [0, 1], H and W multiples of the unshuffle factor ->
        (batch, out_channels, H * scale, W * scale), not clamped."""
        if self.config.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.config.unshuffle)
        feat = self.conv_first(x)
        trunk = feat
        for block in self.body:
            cancel_point()
            trunk = block(trunk)
        feat = feat + self.conv_body(trunk)
        del trunk
        for index in range(1, self.config.upsamples + 1):
            cancel_point()
            conv = getattr(self, f"conv_up{index}")
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), LRELU_SLOPE, inplace=True)
        feat = F.leaky_relu(self.conv_hr(feat), LRELU_SLOPE, inplace=True)
        return self.conv_last(feat)

    def activation_elements(self, height: int, width: int) -> int:
        """Elements alive at the peak of a forward pass over an input of height x width pixels
        (weights not counted): in the trunk the input of the net, of the RRDB and of the dense block
        (3 x features), the four grown outputs, the concatenation conv5 reads and its output; in
        each upsampling stage the stage's input, its enlarged copy and the convolution's output."""
        c = self.config
        pixels = math.ceil(height / c.unshuffle) * math.ceil(width / c.unshuffle)
        peak = pixels * (5 * c.features + 8 * c.grow)
        for stage in range(1, c.upsamples + 1):
            peak = max(peak, pixels * 4**stage * c.features * 2 + pixels * 4 ** (stage - 1) * c.features)
        last = pixels * 4**c.upsamples
        peak = max(peak, last * (2 * c.features + c.out_channels))
        return peak + c.in_channels * height * width


# ---------------------------------------------------------------------------------------------
# SRVGGNetCompact


@dataclass(frozen=True)
class CompactConfig:
    """Shape of an SRVGGNetCompact. Defaults are realesr-animevideov3's (general-x4v3: 32 convs)."""

    channels: int = 3  # image channels, in and out (the enlarged input is added to the output)
    features: int = 64
    convs: int = 16  # 3x3 convolutions between the first and the last
    scale: int = 4

    @property
    def receptive_field(self) -> int:
        """Input pixels on each side that reach an output pixel: one per convolution (the pixel
        shuffle and the nearest-neighbour base stay within the input pixel the output came from)."""
        return self.convs + 2


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network with its own parameter names: `body` alternates Conv2d and PReLU."""

    def __init__(self, config: CompactConfig):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = [nn.Conv2d(c.channels, c.features, 3, padding=1), nn.PReLU(c.features)]
        for _ in range(c.convs):
            layers += [nn.Conv2d(c.features, c.features, 3, padding=1), nn.PReLU(c.features)]
        layers.append(nn.Conv2d(c.features, c.channels * c.scale**2, 3, padding=1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, channels, H, W) in [0, 1] -> (batch, channels, H * scale, W * scale), not clamped."""
        out = x
        for index, layer in enumerate(self.body):
            if index % 8 == 0:
                cancel_point()
            out = layer(out)
        out = F.pixel_shuffle(out, self.config.scale)
        return out.add_(F.interpolate(x, scale_factor=self.config.scale, mode="nearest"))

    def activation_elements(self, height: int, width: int) -> int:
        """Elements alive at the peak of a forward pass: a convolution's input and output at the
        input's size, or at the end the last convolution's output, its shuffled copy and the base."""
        c = self.config
        pixels = height * width
        return pixels * max(2 * c.features + c.channels, 3 * c.channels * c.scale**2 + c.features)


# ---------------------------------------------------------------------------------------------
# Reading files


@dataclass(eq=False)
class UpscaleModel(ModelHandle):
    """A loaded upscale model as a link value (port UPSCALE_MODEL): the module, what it is, and the
    file's name for messages."""

    model: nn.Module
    architecture: str  # "RRDBNet" or "SRVGGNetCompact"
    layout: str  # how the file named its keys
    source: str

    @property
    def config(self) -> RRDBConfig | CompactConfig:
        return self.model.config

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def channels(self) -> tuple[int, int]:
        c = self.config
        return (c.channels, c.channels) if isinstance(c, CompactConfig) else (c.in_channels, c.out_channels)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (the unshuffle factor); images are padded to it."""
        return getattr(self.config, "unshuffle", 1)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def describe(self) -> str:
        """e.g. "RRDBNet x4 (23 blocks, 64 features, 32 grow channels; BasicSR keys)"."""
        c = self.config
        if isinstance(c, CompactConfig):
            return f"SRVGGNetCompact x{c.scale} ({c.convs} convolutions, {c.features} features)"
        unshuffled = f", input pixel-unshuffled by {c.unshuffle}" if c.unshuffle > 1 else ""
        return (f"RRDBNet x{c.scale} ({c.blocks} blocks, {c.features} features, {c.grow} grow channels"
                f"{unshuffled}; {self.layout} keys)")

    def summary(self) -> dict[str, object]:
        return {"name": self.source, "architecture": self.architecture, "scale": self.scale,
                "description": self.describe(), "receptive_field": self.receptive_field}


@dataclass(frozen=True)
class Detected:
    """What a file holds: the config, and for each of our module's keys the file key it is read from."""

    architecture: str
    layout: str
    config: RRDBConfig | CompactConfig
    to_file: Callable[[str], str]


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in keys if (m := regex.fullmatch(key))})


def _contiguous(indices: Sequence[int], what: str, source: str) -> int:
    if not indices or list(indices) != list(range(len(indices))):
        raise UpscaleModelError(f"{source}: its {what} are not numbered 0, 1, 2...: found {list(indices)[:8]}")
    return len(indices)


def _shape(shapes: Mapping[str, Sequence[int]], key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise UpscaleModelError(f"{source} is incomplete: tensor {key!r} is missing")
    return tuple(shapes[key])


# Our RRDBNet key -> the key in each of the other two named layouts.
_ESRGAN_NAMES = (
    (r"conv_first\.(weight|bias)", r"conv_first.\1"),
    (r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", r"RRDB_trunk.\1.RDB\2.conv\3.\4"),
    (r"conv_body\.(weight|bias)", r"trunk_conv.\1"),
    (r"conv_up(\d+)\.(weight|bias)", r"upconv\1.\2"),
    (r"conv_hr\.(weight|bias)", r"HRconv.\1"),
    (r"conv_last\.(weight|bias)", r"conv_last.\1"),
)


def _renamer(table: Sequence[tuple[str, str]]) -> Callable[[str], str]:
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in table]

    def rename(key: str) -> str:
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                return pattern.sub(replacement, key)
        return key

    return rename


def _rrdb_from(shapes: Mapping[str, Sequence[int]], first: str, block_pattern: str, conv1: str, upsamples: int,
               last: str, layout: str, to_file: Callable[[str], str], source: str) -> Detected:
    features, in_width = _shape(shapes, first, source)[:2]
    blocks = _contiguous(_indices(shapes, block_pattern), "dense blocks", source)
    grow = _shape(shapes, conv1, source)[0]
    out_channels = _shape(shapes, last, source)[0]
    # Real-ESRGAN folds 2x2 (x2 models) or 4x4 (x1 models) pixels into channels before conv_first.
    unshuffle = {out_channels: 1, 4 * out_channels: 2, 16 * out_channels: 4}.get(in_width, 1)
    in_channels = in_width // unshuffle**2
    if 2**upsamples < unshuffle:
        raise UpscaleModelError(f"{source}: its first convolution reads {in_width} channels (a {unshuffle}x{unshuffle} "
                                f"pixel unshuffle) but it upsamples only x{2**upsamples}, which would shrink images")
    config = RRDBConfig(in_channels, out_channels, features, blocks, grow, upsamples, unshuffle)
    return Detected("RRDBNet", layout, config, to_file)


def _old_esrgan(shapes: Mapping[str, Sequence[int]], source: str) -> Detected:
    """The original ESRGAN layout: model.0 conv_first; model.1.sub.N the trunk's blocks (each conv
    at .0 of a conv+activation pair) and model.1.sub.<blocks> its last conv; then per x2 stage an
    Upsample, a conv and a LeakyReLU (3 positions); conv_hr and its LeakyReLU; conv_last."""
    blocks = _contiguous(_indices(shapes, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight"), "dense blocks", source)
    tail = _indices(shapes, r"model\.(\d+)\.weight")
    tail = [index for index in tail if index >= 2]
    if len(tail) < 2:
        raise UpscaleModelError(f"{source}: an ESRGAN (model.N) file needs model.N convolutions after the trunk; "
                                f"found {['model.%d' % i for i in tail]}")
    *ups, hr, last = tail
    upsamples = len(ups)
    expected = [3 * (k + 1) for k in range(upsamples)] + [3 * upsamples + 2, 3 * upsamples + 4]
    if tail != expected:
        raise UpscaleModelError(
            f"{source}: its layers after the trunk sit at model.{', model.'.join(map(str, tail))}, not where "
            f"ESRGAN's nearest-neighbour upsampling puts them (model.{', model.'.join(map(str, expected))}); "
            "variants with pixel-shuffle upsampling or normalisation layers are not supported")
    features = _shape(shapes, "model.0.weight", source)[0]
    for index in ups:
        if _shape(shapes, f"model.{index}.weight", source)[0] != features:
            raise UpscaleModelError(f"{source}: model.{index} makes {shapes[f'model.{index}.weight'][0]} channels, not "
                                    f"{features}: a pixel-shuffle upsampler, which is not supported")
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "conv_hr": f"model.{hr}",
             "conv_last": f"model.{last}"}
    names.update({f"conv_up{k + 1}": f"model.{index}" for k, index in enumerate(ups)})
    block = re.compile(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)")

    def to_file(key: str) -> str:
        if match := block.fullmatch(key):
            return "model.1.sub.{0}.RDB{1}.conv{2}.0.{3}".format(*match.groups())
        module, _, leaf = key.rpartition(".")
        return f"{names.get(module, module)}.{leaf}"

    return _rrdb_from(shapes, "model.0.weight", r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight",
                      "model.1.sub.0.RDB1.conv1.0.weight", upsamples, f"model.{last}.weight", "ESRGAN model.N",
                      to_file, source)


def _compact(shapes: Mapping[str, Sequence[int]], source: str) -> Detected:
    indices = _indices(shapes, r"body\.(\d+)\.weight")
    highest = _contiguous(indices, "body layers", source) - 1
    for index in indices:
        rank = len(shapes[f"body.{index}.weight"])
        if rank != (4 if index % 2 == 0 else 1):
            raise UpscaleModelError(f"{source}: body.{index}.weight is {list(shapes[f'body.{index}.weight'])}; a compact "
                                    "SRVGGNet alternates 3x3 convolutions (even positions) and PReLUs (odd ones)")
    if highest % 2:
        raise UpscaleModelError(f"{source}: its body ends with an activation (body.{highest}), not a convolution")
    features, channels = _shape(shapes, "body.0.weight", source)[:2]
    out_width = _shape(shapes, f"body.{highest}.weight", source)[0]
    scale = math.isqrt(out_width // channels) if out_width % channels == 0 else 0
    if scale < 1 or scale * scale * channels != out_width:
        raise UpscaleModelError(f"{source}: its last convolution makes {out_width} channels, not {channels} x a square "
                                "scale factor, as a compact SRVGGNet's pixel shuffle needs")
    config = CompactConfig(channels, features, highest // 2 - 1, scale)
    return Detected("SRVGGNetCompact", "Real-ESRGAN compact", config, lambda key: key)


def _foreign(keys: Sequence[str]) -> str:
    """What a file that is not a supported upscaler looks like, from its key names."""
    key_set = set(keys)
    examples = ", ".join(repr(key) for key in sorted(keys)[:3])

    def has(*names: str) -> bool:
        return all(name in key_set for name in names)

    def starts(*prefixes: str) -> bool:
        return any(key.startswith(prefixes) for key in keys)

    transformers = (
        ("relative_position_index_SA", "a HAT or ATD transformer upscaler"),
        ("layers.0.residual_group.blocks.0.norm1.weight", "a SwinIR or Swin2SR transformer upscaler"),
        ("before_RG.1.weight", "a DAT transformer upscaler"),
        ("layers.0.swin1.norm1.weight", "a DRCT transformer upscaler"),
    )
    for key, what in transformers:
        if key in key_set:
            return f"it looks like {what} (keys such as {examples}), an architecture Latentgraph does not run"
    others = (
        (("block_1.c1_r.sk.weight",), "a SPAN upscaler"),
        (("residual_layer.0.residual_layer.0.layer.0.fn.0.weight",), "an OmniSR upscaler"),
        (("feats.0.weight", "feats.1.refine.weight"), "a PLKSR / RealPLKSR upscaler"),
        (("to_feat.weight",), "a SAFMN upscaler"),
        (("unet1.conv1.conv.0.weight",), "a Real-CUGAN upscaler"),
        (("m_head.0.weight", "m_tail.0.weight"), "an SCUNet denoiser"),
        (("stylegan_decoder.style_mlp.1.weight",), "a GFPGAN face restoration model"),
        (("model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"), "an ESRGAN+ model (dense blocks with 1x1 noise "
                                                                   "convolutions), a variant Latentgraph does not run"),
    )
    for needed, what in others:
        if has(*needed):
            if "variant" in what:
                return f"it looks like {what}"
            return f"it looks like {what} (keys such as {examples}), an architecture Latentgraph does not run"
    if any("quantize.embedding" in key or key.startswith("fuse_convs_dict.") for key in keys):
        return "it looks like a CodeFormer face restoration model, an architecture Latentgraph does not run"
    if "body.0.weight" in key_set and "body.2.weight" in key_set and "body.1.weight" not in key_set:
        return ("it looks like a compact SRVGGNet with ReLU or LeakyReLU activations, which its weights cannot tell "
                "apart; only PReLU compact models (the ones Real-ESRGAN released) load")
    if starts(UNET_PREFIX):
        return ("it is a Stable Diffusion checkpoint (model.diffusion_model.*); put it in models/checkpoints and "
                "load it with the checkpoint loader")
    described = describe_foreign_keys(keys)
    if described.startswith(("none of its", "it holds VAE or text encoder")):
        return f"none of its {len(keys)} tensors matches a supported upscaler; first keys: {examples}"
    return described


def detect_architecture(shapes: Mapping[str, Sequence[int]], source: str = "the file") -> Detected:
    """Which upscaler a file holds and its config, from key names and shapes, or an
    UpscaleModelError saying what the file looks like instead."""
    keys = set(shapes)
    if not keys:
        raise UpscaleModelError(f"{source} holds no tensors")
    plus = any(".conv1x1." in key for key in keys)  # ESRGAN+: its dense blocks differ
    if {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"} <= keys and not plus:
        return _old_esrgan(shapes, source)
    if {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"} <= keys:
        upsamples = _contiguous([i - 1 for i in _indices(keys, r"conv_up(\d+)\.weight")], "upsampling convs (conv_upN, from 1)",
                                source) if any(k.startswith("conv_up") for k in keys) else 0
        return _rrdb_from(shapes, "conv_first.weight", r"body\.(\d+)\.rdb1\.conv1\.weight", "body.0.rdb1.conv1.weight",
                          upsamples, "conv_last.weight", "BasicSR", lambda key: key, source)
    if {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"} <= keys:
        upsamples = _contiguous([i - 1 for i in _indices(keys, r"upconv(\d+)\.weight")], "upsampling convs (upconvN, from 1)",
                                source) if any(k.startswith("upconv") for k in keys) else 0
        return _rrdb_from(shapes, "conv_first.weight", r"RRDB_trunk\.(\d+)\.RDB1\.conv1\.weight",
                          "RRDB_trunk.0.RDB1.conv1.weight", upsamples, "conv_last.weight", "ESRGAN RRDB_trunk",
                          _renamer(_ESRGAN_NAMES), source)
    if "body.0.weight" in keys and "body.1.weight" in keys and len(shapes["body.0.weight"]) == 4 \
            and len(shapes["body.1.weight"]) == 1:
        return _compact(shapes, source)
    raise UpscaleModelError(f"{source} is not an upscale model Latentgraph can load: {_foreign(sorted(keys))}. "
                            f"Supported: {SUPPORTED}.")


_WRAPPER_PREFIXES = ("module.", "params_ema.", "params.")


def _strip_wrapper(shapes: Mapping[str, Sequence[int]]) -> str:
    """A prefix every key carries from how the file was saved (DataParallel's `module.`), else ""."""
    for prefix in _WRAPPER_PREFIXES:
        if shapes and all(key.startswith(prefix) for key in shapes):
            return prefix
    return ""


def load_upscale_model(path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                       allow_pickle: bool = False, memory_fraction: float | None = 0.9) -> UpscaleModel:
    """Load an upscale model file (.safetensors; .pth/.pt only with allow_pickle, read weights-only),
    eval mode, no gradients. dtype: as `checkpoint.resolve_dtype` (float32 on the CPU, float16 on CUDA
    unless another is asked). Raises UpscaleModelError for files of other kinds (naming what they look
    like) and CheckpointError for files that do not match the network their shapes describe."""
    from latentgraph.nodes.sd.checkpoint import _check_and_fill, _Part, open_tensor_file, resolve_dtype
    from latentgraph.nodes.sd.open_clip import Source

    path = Path(path)
    device = torch.device(device)
    model_dtype = resolve_dtype(device, dtype)
    with open_tensor_file(path, allow_pickle) as source:
        prefix = _strip_wrapper(source.shapes)
        shapes = {key[len(prefix):]: shape for key, shape in source.shapes.items()}
        detected = detect_architecture(shapes, path.name)
        with torch.device("meta"):
            module = RRDBNet(detected.config) if detected.architecture == "RRDBNet" else SRVGGNetCompact(detected.config)
        sources = {key: Source(prefix + detected.to_file(key)) for key in module.state_dict()}
        part = _Part(f"the {detected.architecture}", module, prefix, sources)
        _check_and_fill([part], source, device, [model_dtype], memory_fraction)
    return UpscaleModel(module, detected.architecture, detected.layout, path.name)


# ---------------------------------------------------------------------------------------------
# Running over an image in tiles


def default_margin(model: UpscaleModel) -> int:
    """The margin tiles get by default: the receptive field, capped at DEFAULT_MAX_MARGIN, on the
    unshuffle grid."""
    return _round_up(min(model.receptive_field, DEFAULT_MAX_MARGIN), model.multiple)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# The peak resident memory of a forward pass on the CPU in float32, measured for RRDBNets (23 and 6
# blocks, x4 and x2) and compact models at 128-256 pixels, was 1.47-1.57 times the elements that
# `activation_elements` counts (oneDNN keeps convolutions' inputs and outputs in its blocked layout
# too); estimates are scaled by this.
WORKSPACE_FACTOR = 1.6


def tile_memory(model: UpscaleModel, tile: int, margin: int, height: int, width: int) -> int:
    """Peak bytes of one tile's forward pass (a tile is at most tile + 2 x margin a side, and no
    larger than the image)."""
    side_h = min(height, tile + 2 * margin)
    side_w = min(width, tile + 2 * margin)
    return int(model.model.activation_elements(side_h, side_w) * model.dtype.itemsize * WORKSPACE_FACTOR)


MIN_TILE = 32


def tile_for_memory(model: UpscaleModel, budget: int, margin: int, height: int, width: int) -> int:
    """The largest tile (input pixels a side, a multiple of 8 and of the unshuffle factor) whose
    forward pass fits in `budget` bytes; MIN_TILE where even that does not fit."""
    step = math.lcm(8, model.multiple)
    largest = _round_up(max(height, width), step)
    low, high = 1, largest // step
    best = step
    while low <= high:
        middle = (low + high) // 2
        if tile_memory(model, middle * step, margin, height, width) <= budget:
            best, low = middle * step, middle + 1
        else:
            high = middle - 1
    return max(best, _round_up(MIN_TILE, step))


def _spans(length: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """[start, end) pieces that cover [0, length) in equal parts of at most `tile`, on the grid."""
    count = max(1, -(-length // tile))
    bounds = [min(length, (i * length // count) // multiple * multiple) for i in range(count)] + [length]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right to a multiple (reflecting, as Real-ESRGAN does; replicating where the
    image is too small to reflect)."""
    height, width = image.shape[-2:]
    pad_h, pad_w = _round_up(height, multiple) - height, _round_up(width, multiple) - width
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def upscale(model: UpscaleModel, image: torch.Tensor, tile: int | None = None, margin: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Upscale images (batch, channels, H, W), float in [0, 1], on any device -> float32 on the CPU,
    (batch, channels, H * scale, W * scale), not clamped.

    tile: the region each forward pass keeps, in input pixels a side (rounded up to the unshuffle
        factor); None or anything covering the image runs it whole.
    margin: input pixels of context around each tile where it meets another (rounded up to the
        unshuffle factor); None: `default_margin`. Tiled equals untiled exactly when the margin is
        at least the model's receptive field.
    progress(done, total): called after each tile of each image (a cancel point sits before each).
    """
    if image.ndim != 4:
        raise ValueError(f"expected images (batch, channels, height, width), got shape {list(image.shape)}")
    channels = model.channels[0]
    if image.shape[1] != channels:
        raise ValueError(f"{model.source} reads {channels}-channel images, got {image.shape[1]} channels")
    batch, _, height, width = image.shape
    unit = model.multiple
    margin = default_margin(model) if margin is None else _round_up(max(0, margin), unit)
    padded = _pad_to_multiple(image.float().cpu(), unit)
    padded_h, padded_w = padded.shape[-2:]
    tile = max(padded_h, padded_w) if tile is None else _round_up(max(1, tile), unit)
    rows, cols = _spans(padded_h, tile, unit), _spans(padded_w, tile, unit)
    scale, device, dtype = model.scale, model.device, model.dtype
    result = torch.empty(batch, model.channels[1], padded_h * scale, padded_w * scale)
    total, done = batch * len(rows) * len(cols), 0
    with torch.inference_mode():
        for index in range(batch):
            for top, bottom in rows:
                for left, right in cols:
                    cancel_point()
                    y0, y1 = max(0, top - margin), min(padded_h, bottom + margin)
                    x0, x1 = max(0, left - margin), min(padded_w, right + margin)
                    region = padded[index : index + 1, :, y0:y1, x0:x1].to(device, dtype)
                    out = model.model(region)
                    kept = out[:, :, (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale]
                    result[index : index + 1, :, top * scale : bottom * scale, left * scale : right * scale] = kept.float().cpu()
                    del out, kept, region
                    done += 1
                    if progress is not None:
                        progress(done, total)
    return result[:, :, : height * scale, : width * scale]
