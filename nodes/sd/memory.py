"""How much memory sampling and VAE decoding will take, and how much the machine has free.

Checked before the work starts, so that a run too large for the machine is refused with a message
instead of swapping it to a halt or being killed by the kernel. The estimates count the activations
alive at the peak of one forward pass, read from the model's config (channels per level, the
latent's size); the weights are already loaded, so they are not counted. They aim to be honest, not
exact: on the CPU in float32, the peak resident memory measured for one forward pass of the demo
U-Net (512² and 1024², batch 2), SD1.5's U-Net (512², batch 2) and SD's VAE decoding 512² and
1024² was 0.7-1.1 times the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from latentgraph.nodes.sd.chunked import work_per_piece
from latentgraph.nodes.sd.unet import UNetConfig
from latentgraph.nodes.sd.vae import MAX_UNTILED_LATENT_PIXELS, TILE_SIZE, VAEConfig

MEMINFO = Path("/proc/meminfo")

# Feature maps alive around one residual block: its input, the norm's result and the activation
# (the U-Net's GroupNorm32 adds float32 copies in half precision: 4 in all; the VAE's norms do not: 2);
# then the convolution's output, the second norm's activation and the sum (3).
TENSORS_PER_BLOCK_INPUT = 4
VAE_TENSORS_PER_BLOCK_INPUT = 2
TENSORS_PER_BLOCK_OUTPUT = 3
# Token tensors alive in a transformer block: the spatial transformer's input and tokens, a block's
# input and its norm, q, k, v, the attention's output and its projection, the residual sum, and the
# feed-forward's pieces and their concatenation.
TENSORS_PER_TRANSFORMER = 12
# A feed-forward piece holds its input's norm (1 x width), the GEGLU projection (8), the GELU and
# the product (4 each) and the output projection (1).
FEED_FORWARD_WIDTHS = 18
# Latent-sized float32 tensors a sampler keeps: the sample, noise, denoised estimates, the history
# of multistep samplers (up to 4 for lms) and the guidance's copies.
SAMPLER_LATENTS = 16
# Image-sized float32 tensors around a decode: the tiled decode's canvas and weights, the clamped
# and permuted copies the node returns.
DECODE_IMAGES = 4


def free_memory(device: torch.device | str) -> int | None:
    """Bytes free for new tensors on `device`, or None where it cannot be told.

    The CPU: MemAvailable from /proc/meminfo (what the kernel can hand out without swapping).
    CUDA: the driver's free memory plus what torch's caching allocator holds but does not use.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            for line in MEMINFO.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _pixels(height: int, width: int, level: int) -> int:
    """Latent pixels at `level` (each level halves the sides, rounding up as the convolutions do)."""
    return math.ceil(height / 2**level) * math.ceil(width / 2**level)


def _block_elements(pixels: int, in_channels: int, out_channels: int,
                    input_copies: int = TENSORS_PER_BLOCK_INPUT) -> int:
    return pixels * (input_copies * in_channels + TENSORS_PER_BLOCK_OUTPUT * out_channels)


def unet_memory(config: UNetConfig, batch: int, height: int, width: int, dtype_bytes: int,
                device: torch.device | str = "cpu") -> int:
    """Peak bytes of one U-Net forward pass over `batch` latents of `height` x `width` pixels.

    With P_l the latent pixels at level l and B the batch the U-Net sees (twice the images with
    classifier-free guidance; the caller doubles it):

        B x dtype_bytes x (sum over input blocks of channels x P_l)     the skips held for the way up
      + B x 4 x max over blocks of its working set                      float32: GroupNorm32's copies
      + 4 x the largest feed-forward piece

    where a residual block's working set is P_l x (4 x input channels + 3 x output channels) (on
    the way up the input is the block below concatenated with its skip), a transformer's is
    P_l x 12 x its width, and a feed-forward piece is 18 x width per token for as many tokens as
    `nodes.sd.chunked.per_token` puts in one piece. Attention scores are not counted: the flash
    kernels torch uses on the CPU and on CUDA never hold the score matrix (and `chunked.attention`
    bounds it per piece where one would).
    """
    c = config
    levels = len(c.channel_mult)
    piece = work_per_piece(torch.device(device))
    working = 0
    feed_forward = 0

    def transformer(level: int, channels: int) -> None:
        nonlocal working, feed_forward
        pixels = _pixels(height, width, level)
        working = max(working, pixels * TENSORS_PER_TRANSFORMER * channels)
        tokens = min(batch * pixels, batch * max(1, piece // max(1, batch * 12 * channels**2)))
        feed_forward = max(feed_forward, tokens * FEED_FORWARD_WIDTHS * channels)

    skips = [(c.model_channels, 0)]  # (channels, level) of every input block's output
    channels = c.model_channels
    for level, mult in enumerate(c.channel_mult):
        out_channels = c.model_channels * mult
        for _ in range(c.num_res_blocks):
            working = max(working, _block_elements(_pixels(height, width, level), channels, out_channels))
            channels = out_channels
            if c.depth_at_level(level):
                transformer(level, channels)
            skips.append((channels, level))
        if level != levels - 1:
            skips.append((channels, level + 1))
    working = max(working, _block_elements(_pixels(height, width, levels - 1), channels, channels))
    if c.middle_depth:
        transformer(levels - 1, channels)
    skip_elements = sum(ch * _pixels(height, width, level) for ch, level in skips)

    for level in reversed(range(levels)):
        out_channels = c.model_channels * c.channel_mult[level]
        for _ in range(c.num_res_blocks + 1):
            skip_channels, _ = skips.pop()
            working = max(working, _block_elements(_pixels(height, width, level), channels + skip_channels, out_channels))
            channels = out_channels
            if c.depth_at_level(level):
                transformer(level, channels)
    return batch * dtype_bytes * skip_elements + 4 * (batch * working + feed_forward)


def sampling_memory(config: UNetConfig, batch: int, latent_channels: int, height: int, width: int,
                    dtype_bytes: int, guided: bool, device: torch.device | str = "cpu",
                    controlnets: Sequence[Any] = ()) -> int:
    """Peak bytes of sampling `batch` latents of `height` x `width` latent pixels: one U-Net pass
    (`unet_memory`, over 2 x batch when `guided`: cond and uncond go through together) plus the
    sampler's own float32 latents (SAMPLER_LATENTS of them), plus, with ControlNets
    (`controlnet.ControlNetConfig`s), `control_memory`."""
    passes = batch * (2 if guided else 1)
    latents = SAMPLER_LATENTS * batch * latent_channels * height * width * 4
    total = unet_memory(config, passes, height, width, dtype_bytes, device) + latents
    if controlnets:
        total += control_memory(controlnets, passes, height, width, dtype_bytes)
    return total


# Hint-sized tensors alive in the hint encoder: a convolution's input, its output and the SiLU's.
HINT_TENSORS = 3


def control_memory(controlnets: Sequence[Any], batch: int, height: int, width: int, dtype_bytes: int) -> int:
    """Extra peak bytes of sampling with ControlNets (`controlnet.ControlNetConfig`s) over latents
    of `height` x `width`, `batch` of them per network call:

        2 x B x dtype_bytes x (sum over input blocks of channels x P_l)   residuals: the running sum
                                                                           the U-Net reads, and the
                                                                           next ControlNet's own
      + the largest hint encoder pass, for one hint image: HINT_TENSORS x dtype_bytes x the largest
        level's channels x pixels (8h x 8w at the first), and its output, kept for the run

    A ControlNet's blocks are the U-Net's way down and run before the U-Net, not beside it, so
    their working set is already within `unet_memory`'s."""
    total = 0
    hint = 0
    for control in controlnets:
        c = control.unet
        levels = len(c.channel_mult)
        elements = c.model_channels * _pixels(height, width, 0)
        channels = c.model_channels
        for level, mult in enumerate(c.channel_mult):
            channels = c.model_channels * mult
            elements += c.num_res_blocks * channels * _pixels(height, width, level)
            if level != levels - 1:
                elements += channels * _pixels(height, width, level + 1)
        elements += channels * _pixels(height, width, levels - 1)  # the middle block's
        total = max(total, 2 * batch * dtype_bytes * elements)
        scale = 2 ** (len(control.hint_widths) - 1)
        widest = max(w * _pixels(height * scale, width * scale, level) for level, w in enumerate(control.hint_widths))
        hint = max(hint, HINT_TENSORS * widest * dtype_bytes + c.model_channels * height * width * dtype_bytes)
    return total + hint


def decode_memory(config: VAEConfig, batch: int, height: int, width: int, dtype_bytes: int,
                  tiled: bool | None = None) -> int:
    """Peak bytes of decoding `batch` latents of `height` x `width` latent pixels
    (`nodes.sd.vae.decode_from_latent`; tiled None: tiles above MAX_UNTILED_LATENT_PIXELS, as it does).

        B x dtype_bytes x max over decoder blocks of P x (2 x input channels + 3 x output channels)
      + B x 4 x DECODE_IMAGES x 3 x the image's pixels

    where P is a block's pixels within one tile (a whole latent when not tiled), and the second
    term is the float32 images around the decode (the tiled canvas, the node's copies)."""
    if tiled is None:
        tiled = height * width > MAX_UNTILED_LATENT_PIXELS
    tile_h, tile_w = (min(height, TILE_SIZE), min(width, TILE_SIZE)) if tiled else (height, width)
    widths = [config.ch * m for m in config.ch_mult]
    pixels = tile_h * tile_w
    channels = widths[-1]
    working = _block_elements(pixels, config.z_channels, channels, VAE_TENSORS_PER_BLOCK_INPUT)
    working = max(working, pixels * TENSORS_PER_TRANSFORMER * channels)  # the mid-block attention
    for level in reversed(range(len(widths))):
        for _ in range(config.num_res_blocks + 1):
            working = max(working, _block_elements(pixels, channels, widths[level], VAE_TENSORS_PER_BLOCK_INPUT))
            channels = widths[level]
        if level != 0:
            pixels *= 4
            working = max(working, 3 * pixels * channels)  # the input, its upsampled copy, the conv's output
    image = DECODE_IMAGES * config.out_channels * height * width * config.downscale**2 * 4
    return batch * (dtype_bytes * working + image)


def encode_memory(config: VAEConfig, batch: int, height: int, width: int, dtype_bytes: int) -> int:
    """Peak bytes of encoding `batch` images of `height` x `width` pixels (no tiles):
    B x dtype_bytes x max over encoder blocks of P x (2 x input channels + 3 x output channels),
    P the block's pixels, plus the float32 image and its copies."""
    widths = [config.ch * m for m in config.ch_mult]
    pixels = height * width
    channels = config.ch
    working = _block_elements(pixels, config.in_channels, channels, VAE_TENSORS_PER_BLOCK_INPUT)
    for level, out_channels in enumerate(widths):
        for _ in range(config.num_res_blocks):
            working = max(working, _block_elements(pixels, channels, out_channels, VAE_TENSORS_PER_BLOCK_INPUT))
            channels = out_channels
        if level != len(widths) - 1:
            pixels = math.ceil(height / 2 ** (level + 1)) * math.ceil(width / 2 ** (level + 1))
    working = max(working, pixels * TENSORS_PER_TRANSFORMER * channels)
    image = DECODE_IMAGES * config.in_channels * height * width * 4
    return batch * (dtype_bytes * working + image)
