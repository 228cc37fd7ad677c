"""The Stable Diffusion U-Net, with the LDM checkpoint's own parameter names.

Read top to bottom it follows the diagram: a sinusoidal timestep embedding goes through a small MLP;
the latent goes down through `input_blocks` (residual blocks, spatial transformers that attend to
the text context, strided-conv downsamplers), through the `middle_block`, and back up through
`output_blocks`, each of which first concatenates the matching skip connection; `out` maps the
features back to latent channels. Every attribute is named after the key it has in an LDM
checkpoint under `model.diffusion_model.`, so `UNetModel.state_dict()` and the file agree key for
key and loading needs no conversion table. Between blocks, and between the pieces large attention,
convolutions and feed-forwards are split into (`nodes.sd.chunked`), the forward pass offers cancel
points (`nodes.sd.interrupt`), so a cancelled run stops within a fraction of a second even at 2048².

One config expresses SD1.x, SD2.x (linear projections, 64-channel heads, attention upcast in
float16) and SDXL (per-level transformer depth with none at the first level, `label_emb` for the
pooled-text/size vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.nodes.sd.chunked import Conv2d, attention, per_token
from latentgraph.nodes.sd.interrupt import cancel_point

NORM_GROUPS = 32  # every GroupNorm in the LDM U-Net uses 32 groups


@dataclass(frozen=True)
class UNetConfig:
    """Shape of a U-Net. Defaults are SD1.x's (the `v1-inference.yaml` unet_config).

    in_channels / out_channels: latent channels in and out (4; 9 in for inpainting models).
    model_channels: width of the first level; level i is `model_channels * channel_mult[i]` wide.
    channel_mult: width multiplier per resolution level; one downsampling between levels.
    num_res_blocks: residual blocks per level on the way down (the way up has one more).
    attention_resolutions: downsampling factors (1 = full latent size, 2 = half, ...) whose levels
        carry spatial transformers.
    transformer_depth: transformer blocks per spatial transformer, one int for all levels or one
        per level (SDXL: (0, 2, 10)).
    transformer_depth_middle: depth of the middle block's transformer; None = the last level's.
    num_heads: attention heads, used when num_head_channels is None (SD1.x: 8).
    num_head_channels: channels per head, giving `width // num_head_channels` heads (SD2.x, SDXL: 64).
    context_dim: width of the text context the cross-attention reads (SD1.x: 768, SD2.x: 1024).
    use_linear_in_transformer: SD2.x and SDXL project in/out of the transformers with linear
        layers instead of 1x1 convolutions.
    adm_in_channels: width of the extra conditioning vector `y` added to the timestep embedding
        (SDXL: 2816); None for models without one.
    upcast_attention: attention runs in float32 when the model is float16 (SD2.x's attention
        overflows float16's range); weights and everything else keep the model's dtype.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    transformer_depth: int | tuple[int, ...] = 1
    transformer_depth_middle: int | None = None
    num_heads: int = 8
    num_head_channels: int | None = None
    context_dim: int = 768
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None
    upcast_attention: bool = False

    def depth_at_level(self, level: int) -> int:
        """Transformer blocks per spatial transformer at `level` (0 where the level has none)."""
        if 2**level not in self.attention_resolutions:
            return 0
        if isinstance(self.transformer_depth, int):
            return self.transformer_depth
        return self.transformer_depth[level]

    @property
    def middle_depth(self) -> int:
        if self.transformer_depth_middle is not None:
            return self.transformer_depth_middle
        if isinstance(self.transformer_depth, int):
            return self.transformer_depth
        return self.transformer_depth[-1]

    def heads_for(self, width: int) -> tuple[int, int]:
        """(number of heads, channels per head) for a transformer `width` channels wide."""
        if self.num_head_channels is not None:
            return width // self.num_head_channels, self.num_head_channels
        return self.num_heads, width // self.num_heads


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, laid out [cos | sin] as LDM does.

    Frequency k of `dim // 2` is `max_period ** (-k / (dim // 2))`; computed in float32 whatever
    the model's dtype, because timesteps up to 999 times a frequency lose precision in fp16.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always normalises in float32 (half-precision statistics drift), as LDM does."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(NORM_GROUPS, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float()
        bias = self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the timestep embedding added in between, plus a skip path."""

    def __init__(self, in_channels: int, embedding_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(in_channels), nn.SiLU(), Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(embedding_channels, out_channels))
        # Slot 2 held training dropout in LDM; keeping it makes the conv's key `out_layers.3`.
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Identity(),
            Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if in_channels == out_channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        cancel_point()
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class CrossAttention(nn.Module):
    """Multi-head attention from `x` to `context` (to itself when context is None)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_channels: int, upcast: bool = False):
        super().__init__()
        inner_dim = heads * head_channels
        self.heads = heads
        self.upcast = upcast
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Identity())

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = self.to_q(x)
        cancel_point()  # at 2048² a projection of SD1.x's first level is ~0.3 s on a CPU
        k = self.to_k(context)
        cancel_point()
        v = self.to_v(context)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        dtype = q.dtype
        if self.upcast and dtype == torch.float16:
            q, k, v = q.float(), k.float(), v.float()
        out = attention(q, k, v).to(dtype)  # scale 1/sqrt(head_channels), as LDM; in pieces when large
        return self.to_out(out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear layer to twice the width; one half gates the other through GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # Slot 1 held dropout; the output projection keeps its key `net.2`.
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text, feed-forward; each pre-normed and residual."""

    def __init__(self, dim: int, heads: int, head_channels: int, context_dim: int, upcast: bool = False):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, head_channels, upcast)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, head_channels, upcast)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        cancel_point()
        x = x + self.attn2(self.norm2(x), context)
        cancel_point()
        # The feed-forward is 12 * dim**2 multiply-adds per token (GEGLU to 8 * dim, then 4 * dim back).
        return x + per_token(lambda t: self.ff(self.norm3(t)), x, 12 * x.shape[-1] ** 2)


class SpatialTransformer(nn.Module):
    """Runs transformer blocks over the pixels of a feature map, as a sequence of tokens."""

    def __init__(self, channels: int, heads: int, head_channels: int, depth: int, context_dim: int, linear: bool,
                 upcast: bool = False):
        super().__init__()
        inner_dim = heads * head_channels
        self.linear = linear
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)
        if linear:
            self.proj_in = nn.Linear(channels, inner_dim)
            self.proj_out = nn.Linear(inner_dim, channels)
        else:
            self.proj_in = Conv2d(channels, inner_dim, 1)
            self.proj_out = Conv2d(inner_dim, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, heads, head_channels, context_dim, upcast) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            cancel_point()
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(batch, -1, height, width)
        if not self.linear:
            h = self.proj_out(h)
        return x + h


class Downsample(nn.Module):
    """Halves the resolution with a strided 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Doubles the resolution (nearest neighbour) and smooths with a 3x3 convolution.

    `size` lets the caller ask for the exact size of the skip connection that comes next, so
    latents whose sides are not multiples of 2**levels still line up.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class BlockSequence(nn.Sequential):
    """One entry of input_blocks / output_blocks: layers that each take what they need."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        for layer in self:
            cancel_point()
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, upsample_size)
            else:
                x = layer(x)
        return x


def embedding_layers(c: UNetConfig) -> tuple[nn.Sequential, nn.Sequential | None]:
    """The timestep embedding's MLP (`time_embed`) and, for models with a `y` vector, its own
    (`label_emb`), both to model_channels * 4."""
    channels = c.model_channels * 4
    time_embed = nn.Sequential(nn.Linear(c.model_channels, channels), nn.SiLU(), nn.Linear(channels, channels))
    if c.adm_in_channels is None:
        return time_embed, None
    return time_embed, nn.Sequential(nn.Sequential(nn.Linear(c.adm_in_channels, channels), nn.SiLU(),
                                                   nn.Linear(channels, channels)))


def spatial_transformer(c: UNetConfig, width: int, depth: int) -> SpatialTransformer:
    heads, head_channels = c.heads_for(width)
    return SpatialTransformer(width, heads, head_channels, depth, c.context_dim, c.use_linear_in_transformer,
                              c.upcast_attention)


def down_path(c: UNetConfig) -> tuple[nn.ModuleList, list[int], BlockSequence]:
    """The way down, as the U-Net and a ControlNet share it: `input_blocks` (the stem, then per
    level its residual blocks, each with a transformer where the level has attention, and a
    downsampler between levels), the width of each block's output, and the `middle_block`."""
    embedding_channels = c.model_channels * 4
    input_blocks = nn.ModuleList([BlockSequence(Conv2d(c.in_channels, c.model_channels, 3, padding=1))])
    widths = [c.model_channels]
    width = c.model_channels
    for level, mult in enumerate(c.channel_mult):
        depth = c.depth_at_level(level)
        for _ in range(c.num_res_blocks):
            layers: list[nn.Module] = [ResBlock(width, embedding_channels, c.model_channels * mult)]
            width = c.model_channels * mult
            if depth:
                layers.append(spatial_transformer(c, width, depth))
            input_blocks.append(BlockSequence(*layers))
            widths.append(width)
        if level != len(c.channel_mult) - 1:
            input_blocks.append(BlockSequence(Downsample(width)))
            widths.append(width)
    middle_block = BlockSequence(
        ResBlock(width, embedding_channels, width),
        spatial_transformer(c, width, c.middle_depth),
        ResBlock(width, embedding_channels, width),
    )
    return input_blocks, widths, middle_block


class UNetModel(nn.Module):
    """The denoising U-Net: `forward(x, timesteps, context)` predicts noise (or v) for latents x."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        embedding_channels = c.model_channels * 4
        self.time_embed, self.label_emb = embedding_layers(c)
        # Down: remember the width of every block's output; the way up concatenates them back.
        self.input_blocks, skip_widths, self.middle_block = down_path(c)
        width = skip_widths[-1]

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            depth = c.depth_at_level(level)
            for index in range(c.num_res_blocks + 1):
                out_width = c.model_channels * mult
                layers = [ResBlock(width + skip_widths.pop(), embedding_channels, out_width)]
                width = out_width
                if depth:
                    layers.append(spatial_transformer(c, width, depth))
                if level != 0 and index == c.num_res_blocks:
                    layers.append(Upsample(width))
                self.output_blocks.append(BlockSequence(*layers))

        self.out = nn.Sequential(
            GroupNorm32(width), nn.SiLU(), Conv2d(width, c.out_channels, 3, padding=1)
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        control: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the model's target (noise for epsilon models, v for v-prediction ones).

        x: latents (batch, in_channels, height, width).
        timesteps: DDPM timesteps in [0, 1000), one per batch item or a scalar; fractions allowed.
        context: text encoder hidden states (batch, tokens, context_dim).
        y: extra conditioning vector (batch, adm_in_channels), only for models with label_emb.
        control: ControlNet residuals (`nodes.sd.controlnet`): one per input block, shaped like its
            output, then one for the middle block. The middle one is added to the middle block's
            output; the others to the skip connections as the output blocks take them (the way
            down is unchanged). None: no control, the plain U-Net.
        Inputs are cast to the model's dtype; the result comes back in x's dtype.
        """
        input_dtype = x.dtype
        dtype = self.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])

        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this U-Net needs the conditioning vector y (label_emb), and none was given")
            emb = emb + self.label_emb(y.to(dtype))

        h = x.to(dtype)
        context = context.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        if control is not None:
            _check_control(control, skips, h)
            h = h + control[-1].to(h.dtype)
        for block in self.output_blocks:
            skip = skips.pop()
            if control is not None:
                skip = skip + control[len(skips)].to(skip.dtype)
            h = torch.cat([h, skip], dim=1)
            next_size = tuple(skips[-1].shape[-2:]) if skips else None
            h = block(h, emb, context, upsample_size=next_size)
        cancel_point()
        return self.out(h).to(input_dtype)


def _check_control(control: list[torch.Tensor], skips: list[torch.Tensor], middle: torch.Tensor) -> None:
    """Refuse control residuals that do not fit this U-Net (a ControlNet of another shape)."""
    expected = [tuple(t.shape) for t in (*skips, middle)]
    given = [tuple(t.shape) for t in control]
    if given != expected:
        raise ValueError(f"the control residuals do not fit this U-Net: it needs {len(expected)} tensors shaped "
                         f"{expected}, got {len(given)} shaped {given}")
