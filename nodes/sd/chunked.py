"""Big tensor operations done in pieces, with a cancel point before each piece.

At 2048x2048 one self-attention of SD1.x's first U-Net level is about 5.5 TFLOP and one 3x3
convolution of its last output blocks about 0.7 TFLOP: minutes and seconds on a CPU, during which
a cancelled run could not stop. Done in pieces of at most `work_per_piece(device)` multiply-adds,
a cancel is honoured within one piece (a fraction of a second) and the attention's memory stays
bounded too. Below that size an operation runs in one call, exactly as before; split, it equals
the whole call to float rounding (each output row is the same sum, possibly in another order).

- `attention`: softmax(q kᵀ / sqrt(d)) v in pieces of queries (every query sees all keys);
- `Conv2d`: nn.Conv2d (same parameters, same checkpoint keys) in pieces of the batch, then
  bands of output rows, each band reading its rows of input plus the kernel's halo;
- `per_token`: a function that treats tokens independently (a feed-forward) in pieces of tokens.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.nodes.sd.interrupt import cancel_point

# Multiply-adds per piece. On 2 CPU cores (AMD EPYC, AVX-512) attention and convolutions both run at
# about 50 G multiply-adds/s, so a CPU piece of 2**34 takes ~0.35 s (more when other processes
# share the cores). Half that (2**33) cut SDXL's feed-forwards and skip convolutions at 512x512 in
# two to four pieces each and cost its U-Net 3-8% against diffusers; a cancel still lands well
# within a second. A GPU does ~100x that; its pieces only need to bound a step's uninterruptible
# stretches, not its kernels' efficiency.
CPU_WORK_PER_PIECE = 2**34
GPU_WORK_PER_PIECE = 2**40
# What a score costs beyond its multiply-adds (the softmax's max, exp and sum), in multiply-adds:
# with 8-channel heads (the demo model) a score takes ~1.1 ns on those cores, like 54 multiply-adds.
SOFTMAX_WORK_PER_SCORE = 32
# An attention piece never holds more than this many scores (q·kᵀ elements): 4 GiB in float32,
# should a kernel materialise them (the flash kernels on CPU and CUDA do not).
MAX_SCORES_PER_PIECE = 2**30


def work_per_piece(device: torch.device) -> int:
    """Multiply-adds one uninterruptible piece may take on `device`."""
    return CPU_WORK_PER_PIECE if device.type == "cpu" else GPU_WORK_PER_PIECE


def balanced(total: int, most: int) -> int:
    """The piece size that cuts `total` items into as few pieces of at most `most` as possible, all
    of about the same size: a small leftover piece (218 + 38 tokens) runs its matmuls well below
    their efficient size, which cost SDXL's U-Net ~8% at 512x512; 128 + 128 does not."""
    most = max(1, most)
    pieces = -(-total // most)
    return -(-total // pieces)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, scale 1/sqrt(channels): q (batch, heads, queries, channels),
    k (batch, heads, keys, channels), v (batch, heads, keys, value channels) -> (batch, heads,
    queries, value channels). Large calls go in pieces of queries with a cancel point before each."""
    batch, heads, queries, channels = q.shape
    keys, value_channels = k.shape[-2], v.shape[-1]
    scores_per_query = batch * heads * keys
    work_per_query = scores_per_query * (channels + value_channels + SOFTMAX_WORK_PER_SCORE)
    rows = min(work_per_piece(q.device) // max(1, work_per_query), MAX_SCORES_PER_PIECE // max(1, scores_per_query))
    if rows >= queries:
        return F.scaled_dot_product_attention(q, k, v)
    rows = balanced(queries, rows)
    out = q.new_empty(batch, heads, queries, value_channels)
    for start in range(0, queries, rows):
        cancel_point()
        out[:, :, start : start + rows] = F.scaled_dot_product_attention(q[:, :, start : start + rows], k, v)
    return out


def per_token(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, work_per_token: int) -> torch.Tensor:
    """`fn(x)` for x (batch, tokens, channels) and an `fn` that treats every token on its own,
    computed in pieces of tokens when batch x tokens x work_per_token is more than a piece."""
    batch, tokens = x.shape[:2]
    rows = work_per_piece(x.device) // max(1, batch * work_per_token)
    if rows >= tokens:
        return fn(x)
    rows = balanced(tokens, rows)
    pieces = []
    for start in range(0, tokens, rows):
        cancel_point()
        pieces.append(fn(x[:, start : start + rows]))
    return torch.cat(pieces, dim=1)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that splits a large convolution into pieces: groups of images of the batch, and
    for an image that is itself too much, bands of output rows. Zero padding only (the models')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or x.ndim != 4:
            return super().forward(x)
        batch, _, height, width = x.shape
        (kernel_h, kernel_w), (stride_h, _), (pad_h, pad_w), (dilation_h, _) = (
            self.kernel_size, self.stride, self.padding, self.dilation)
        out_h = (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) // stride_h + 1
        out_w = (width + 2 * pad_w - self.dilation[1] * (kernel_w - 1) - 1) // self.stride[1] + 1
        work_per_row = out_w * self.out_channels * (self.in_channels // self.groups) * kernel_h * kernel_w
        budget = work_per_piece(x.device)
        if batch * out_h * work_per_row <= budget:
            return super().forward(x)

        images = balanced(batch, budget // (out_h * work_per_row))
        rows = out_h if images > 1 else balanced(out_h, budget // work_per_row)
        out = x.new_empty(batch, self.out_channels, out_h, out_w)
        for first in range(0, batch, images):
            part = x[first : first + images]
            for top in range(0, out_h, rows):
                cancel_point()
                bottom = min(out_h, top + rows)
                # Input rows that output rows [top, bottom) read, in padded coordinates made real.
                begin = top * stride_h - pad_h
                end = (bottom - 1) * stride_h - pad_h + dilation_h * (kernel_h - 1) + 1
                band = part[:, :, max(begin, 0) : min(end, height)]
                if begin < 0 or end > height:
                    band = F.pad(band, (0, 0, max(0, -begin), max(0, end - height)))
                out[first : first + images, :, top:bottom] = F.conv2d(
                    band, self.weight, self.bias, self.stride, (0, pad_w), self.dilation, self.groups)
        return out
