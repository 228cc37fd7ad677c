"""The Stable Diffusion autoencoder (AutoencoderKL), with the LDM checkpoint's own parameter names.

The encoder takes an image in [-1, 1] down by 2**(levels-1) (8 for SD) to a diagonal Gaussian over
latents; the decoder takes latents back up to an image. Attribute names follow the keys under
`first_stage_model.` in an LDM checkpoint (`encoder.down.0.block.1.conv2.weight`, ...) so a file
loads without conversion.

The diffusion model does not see the raw latent but `latent * scaling_factor`, which brings it to
unit variance (the family's spec, or the file, gives the factor). `encode_to_latent` and `decode_from_latent` are
the caller-facing helpers that apply it; `decode_from_latent` switches to tiles for large images.
Between blocks and tiles, and between the pieces large convolutions and the mid-block attention are
split into (`nodes.sd.chunked`), encode and decode offer cancel points (`nodes.sd.interrupt`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentgraph.nodes.sd.chunked import Conv2d, attention
from latentgraph.nodes.sd.interrupt import cancel_point

NORM_GROUPS = 32  # every GroupNorm in the LDM autoencoder uses 32 groups and eps 1e-6


@dataclass(frozen=True)
class VAEConfig:
    """Shape of an AutoencoderKL. Defaults are SD's (the `first_stage_config.ddconfig`).

    in_channels / out_channels: image channels (3).
    ch: width of the first level; level i is `ch * ch_mult[i]` wide.
    ch_mult: width multiplier per level; the image shrinks by 2 between levels.
    num_res_blocks: residual blocks per encoder level (the decoder has one more).
    z_channels: latent channels out of the encoder / into the decoder.
    embed_dim: latent channels after quant_conv, the ones the U-Net sees (4).
    scaling_factor: multiplier from the encoder's latents to the diffusion model's latents.
    """

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    scaling_factor: float = 1.0  # set from the family spec or the file when a VAE is loaded

    @property
    def downscale(self) -> int:
        """Image pixels per latent pixel along each side (8 for SD)."""
        return 2 ** (len(self.ch_mult) - 1)


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with a residual path (a 1x1 `nin_shortcut` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        cancel_point()
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels; q, k, v and proj_out are 1x1 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q = Conv2d(channels, channels, 1)
        self.k = Conv2d(channels, channels, 1)
        self.v = Conv2d(channels, channels, 1)
        self.proj_out = Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        # (batch, 1 head, pixels, channels); the default scale 1/sqrt(channels) is LDM's.
        q, k, v = (conv(h).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))
        h = attention(q, k, v)  # in pieces of pixels when large: 128x128 latents are 16384 tokens
        h = h[:, 0].transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halves the resolution: pad one pixel on the right and bottom only, then a stride-2 3x3 conv.

    The asymmetric padding is LDM's (torch's conv padding is symmetric); weights were trained with
    it, so symmetric padding would shift every feature map by half a pixel.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Doubles the resolution (nearest neighbour), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        cancel_point()
        x = self.attn_1(x)
        cancel_point()
        return self.block_2(x)


class EncoderLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, downsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in zip(widths, widths[1:]))
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            cancel_point()
            x = block(x)
        cancel_point()
        return x if self.downsample is None else self.downsample(x)


class DecoderLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, upsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in zip(widths, widths[1:]))
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            cancel_point()
            x = block(x)
        cancel_point()
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """Image -> mean and log-variance of the latent (2 * z_channels channels), 8x smaller."""

    def __init__(self, c: VAEConfig):
        super().__init__()
        widths = [c.ch * m for m in c.ch_mult]
        last = len(widths) - 1
        self.conv_in = Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList(
            EncoderLevel(([c.ch] + widths)[i], widths[i], c.num_res_blocks, downsample=i != last)
            for i in range(len(widths))
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = normalize(widths[-1])
        self.conv_out = Conv2d(widths[-1], 2 * c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        cancel_point()
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (z_channels) -> image, 8x larger. `up[i]` is level i, run from the last to the first."""

    def __init__(self, c: VAEConfig):
        super().__init__()
        widths = [c.ch * m for m in c.ch_mult]
        self.conv_in = Conv2d(c.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        # Level i receives the width of level i+1 (the deepest level receives its own).
        incoming = widths[1:] + widths[-1:]
        self.up = nn.ModuleList(
            DecoderLevel(incoming[i], widths[i], c.num_res_blocks + 1, upsample=i != 0) for i in range(len(widths))
        )
        self.norm_out = normalize(widths[0])
        self.conv_out = Conv2d(widths[0], c.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        cancel_point()
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class LatentDistribution:
    """The encoder's diagonal Gaussian over (unscaled) latents."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a latent; noise comes from `generator`'s device (a CPU generator gives CPU noise)."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)


class AutoencoderKL(nn.Module):
    """SD's VAE: `encode(image) -> LatentDistribution`, `decode(latent) -> image`, both unscaled."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    def encode(self, image: torch.Tensor) -> LatentDistribution:
        """image: (batch, 3, H, W) in [-1, 1]; H and W multiples of 8 give exact 8x latents."""
        moments = self.quant_conv(self.encoder(image.to(self.device, self.dtype)))
        mean, logvar = moments.chunk(2, dim=1)
        return LatentDistribution(mean, logvar.clamp(-30.0, 20.0))  # LDM's clamp keeps exp() finite

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: (batch, embed_dim, h, w), unscaled -> image (batch, 3, 8h, 8w), roughly [-1, 1].
        The decoder runs compiled inside `compiled_models(True)` (`--compile`)."""
        from latentgraph.nodes.sd.compiled import forward_of

        return forward_of(self.decoder)(self.post_quant_conv(latent.to(self.device, self.dtype)))


# Preview colours of a VAE of its own: synthetic images (half one colour, half two side by side, at
# a random place) encoded, and the least-squares linear map from each latent pixel to its 8x8
# block's mean colour. On our demo model it cut the preview's colour error on its own images
# about threefold against SD1.x's map (which is fitted to another VAE).
PREVIEW_FIT_IMAGES = 48
PREVIEW_FIT_SIZE = 64


def fit_preview_colours(vae: AutoencoderKL, seed: int = 0) -> tuple[tuple[tuple[float, float, float], ...],
                                                                     tuple[float, float, float]]:
    """A latent-to-RGB preview map for `vae`: (rows of (R, G, B) per latent channel, bias), fitted
    by least squares on encoded synthetic images (see PREVIEW_FIT_IMAGES), as `LatentFormat` holds it."""
    generator = torch.Generator().manual_seed(seed)
    count, side = PREVIEW_FIT_IMAGES, PREVIEW_FIT_SIZE
    first = torch.rand(count, 3, 1, 1, generator=generator) * 2 - 1
    second = torch.rand(count, 3, 1, 1, generator=generator) * 2 - 1
    images = first.expand(count, 3, side, side).clone()
    splits = torch.randint(side // 8, side - side // 8, (count // 2,), generator=generator)
    for index, split in enumerate(splits.tolist()):
        images[index, :, :, split:] = second[index]
    with torch.inference_mode():
        latents = encode_to_latent(vae, images).cpu()
    downscale = side // latents.shape[-1]
    targets = torch.nn.functional.avg_pool2d(images, downscale)
    channels = latents.shape[1]
    inputs = torch.cat([latents.permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(latents[:, 0].numel(), 1)], 1)
    solution = torch.linalg.lstsq(inputs.double(), targets.permute(0, 2, 3, 1).reshape(-1, 3).double()).solution
    rows = tuple(tuple(round(float(v), 4) for v in row) for row in solution[:channels])
    return rows, tuple(round(float(v), 4) for v in solution[channels])  # type: ignore[return-value]


def encode_to_latent(
    vae: AutoencoderKL, image: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Image in [-1, 1] (batch, 3, H, W) -> latent the diffusion model sees (scaled).

    Without a generator the distribution's mean is used (deterministic); with one, a sample.
    The result is float32 on the VAE's device.
    """
    with torch.no_grad():
        distribution = vae.encode(image)
        latent = distribution.mean if generator is None else distribution.sample(generator)
    return latent.float() * vae.config.scaling_factor


# Tiles are TILE_SIZE latent pixels square (512 image pixels for SD) and neighbours overlap by
# TILE_OVERLAP latent pixels (128 image pixels). Within an overlap, the outer quarter next to each
# tile's edge is discarded (convolutions there saw zero padding instead of the neighbour) and the
# middle half blends linearly from one tile to the other.
TILE_SIZE = 64
TILE_OVERLAP = 16
# Decodes larger than this many latent pixels (a 1024x1024 image for SD) go through tiles.
MAX_UNTILED_LATENT_PIXELS = 128 * 128


def decode_from_latent(
    vae: AutoencoderKL,
    latent: torch.Tensor,
    tiled: bool | None = None,
    tile_size: int = TILE_SIZE,
    tile_overlap: int = TILE_OVERLAP,
) -> torch.Tensor:
    """Scaled latent (batch, 4, h, w) -> image in [-1, 1] (batch, 3, 8h, 8w), float32, clamped.

    tiled: True/False forces the choice; None tiles latents above MAX_UNTILED_LATENT_PIXELS and
    retries in tiles when a full decode runs out of GPU memory.
    """
    latent = latent.float() / vae.config.scaling_factor
    with torch.no_grad():
        if tiled is None:
            tiled = latent.shape[-2] * latent.shape[-1] > MAX_UNTILED_LATENT_PIXELS
            if not tiled:
                try:
                    return vae.decode(latent).float().clamp(-1.0, 1.0)
                except torch.cuda.OutOfMemoryError:
                    tiled = True
        image = decode_tiled(vae, latent, tile_size, tile_overlap) if tiled else vae.decode(latent)
    return image.float().clamp(-1.0, 1.0)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _blend_weights(length: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Per-pixel weight along one side of a tile: 1 inside, 0 for the first quarter of an overlap
    shared with a neighbour, rising linearly across its middle half. Two neighbours' weights sum
    to 1 across their overlap."""
    position = torch.arange(length, dtype=torch.float32) + 0.5
    rising = ((position - overlap / 4) / (overlap / 2)).clamp(0.0, 1.0)
    weights = torch.ones(length)
    if fade_in:
        weights = torch.minimum(weights, rising)
    if fade_out:
        weights = torch.minimum(weights, rising.flip(0))
    return weights


def decode_tiled(
    vae: AutoencoderKL, latent: torch.Tensor, tile_size: int = TILE_SIZE, tile_overlap: int = TILE_OVERLAP
) -> torch.Tensor:
    """Decode an unscaled latent in overlapping square tiles and blend them into one image.

    Peak memory is one tile's decode whatever the image size. Across an overlap the image passes
    from one tile to the next linearly, ignoring the pixels next to either tile's edge, so there
    is no seam; where the decoder is local (convolutions only) this equals a full decode. It is not
    identical for SD's VAE, whose GroupNorm statistics and mid-block attention see one tile rather
    than the whole latent, so colours can drift slightly between distant tiles.
    tile_size and tile_overlap are in latent pixels; the overlap may be at most half a tile.
    """
    if not (0 < tile_overlap and 2 * tile_overlap <= tile_size):
        raise ValueError(f"tile_overlap must be in (0, tile_size / 2], got {tile_overlap} with tile_size {tile_size}")
    scale = vae.config.downscale
    batch, _, height, width = latent.shape
    ys = _tile_starts(height, tile_size, tile_overlap)
    xs = _tile_starts(width, tile_size, tile_overlap)
    image = torch.zeros(batch, vae.config.out_channels, height * scale, width * scale)
    total_weight = torch.zeros(1, 1, height * scale, width * scale)
    for y in ys:
        for x in xs:
            cancel_point()
            tile = latent[:, :, y : y + tile_size, x : x + tile_size]
            decoded = vae.decode(tile).float().cpu()
            tile_h, tile_w = decoded.shape[-2:]
            overlap = tile_overlap * scale
            weight_y = _blend_weights(tile_h, overlap, fade_in=y > 0, fade_out=y + tile_size < height)
            weight_x = _blend_weights(tile_w, overlap, fade_in=x > 0, fade_out=x + tile_size < width)
            weight = weight_y[:, None] * weight_x[None, :]
            top, left = y * scale, x * scale
            image[:, :, top : top + tile_h, left : left + tile_w] += decoded * weight
            total_weight[:, :, top : top + tile_h, left : left + tile_w] += weight
    return (image / total_weight).to(latent.device)
