"""Tiny autoencoders for Stable Diffusion latents (TAESD): full-size step previews for a small part
of the VAE's cost.

TAESD (github.com/madebyollin/taesd) is a distilled decoder (and encoder) of SD's latent space:
about 1.2M parameters each against the VAE decoder's 49M, and about 1/35 of its work (at a 64x64
latent: some 70 G multiply-adds against 2.5 T), with colours and shapes close to the VAE's and fine
detail lost. People keep its files where ComfyUI looks for them, `models/vae_approx` (A1111:
`models/VAE-taesd`): `taesd_decoder.*` for SD1.x and SD2.x latents, `taesdxl_decoder.*` for SDXL,
as .safetensors or as the .pth files the project publishes (PyTorch pickles: read weights-only,
and only where pickles are allowed), and their encoders beside them.

Architecture (the weights fix every size): 64-channel blocks of three 3x3 convolutions with ReLUs
between them and an identity skip, ReLU after the sum. The decoder softly clamps the latent to
+-3 (3 tanh(x / 3)), maps it to 64 channels, then three times: three blocks, a nearest 2x
up-sampling and a bias-free convolution, then a last block and a convolution to RGB in [0, 1].
The encoder mirrors it with stride-2 bias-free convolutions, from RGB in [0, 1]. Both work on the
latent the U-Net samples (the VAE's latent times the family's scaling factor), so no scaling is
applied around them.

Key layouts read: the original one, each network one nn.Sequential (`1.weight`,
`3.conv.0.weight`, ...), also under a `taesd_decoder.` / `taesd_encoder.` prefix (ComfyUI's module
names), and diffusers' AutoencoderTiny (`decoder.layers.0.weight`, `encoder.layers.0.weight`:
its decoder Sequential has no clamp module, so its indices are one lower).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentgraph.nodes.sd.checkpoint import CheckpointError, open_tensor_file

CHANNELS = 64


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """Squash values smoothly into (-3, 3): 3 tanh(x / 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convolutions with ReLUs between, added to the input, then a ReLU (64 -> 64
    channels: the skip is the identity and has no weights)."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + x)


def tiny_decoder(latent_channels: int = 4) -> nn.Sequential:
    """Latent (the U-Net's scale) -> RGB in about [0, 1], 8x the size; module indices are the file's keys."""
    layers: list[nn.Module] = [SoftClamp(), _conv(latent_channels, CHANNELS), nn.ReLU()]
    for _ in range(3):
        layers += [Block(), Block(), Block(), nn.Upsample(scale_factor=2), _conv(CHANNELS, CHANNELS, bias=False)]
    layers += [Block(), _conv(CHANNELS, 3)]
    return nn.Sequential(*layers)


def tiny_encoder(latent_channels: int = 4) -> nn.Sequential:
    """RGB in [0, 1] -> latent (the U-Net's scale), 1/8 the size; module indices are the file's keys."""
    layers: list[nn.Module] = [_conv(3, CHANNELS), Block()]
    for _ in range(3):
        layers += [_conv(CHANNELS, CHANNELS, stride=2, bias=False), Block(), Block(), Block()]
    layers += [_conv(CHANNELS, latent_channels)]
    return nn.Sequential(*layers)


# What a file's keys start with in each layout, and the shift from its indices to ours.
_LAYOUTS = {
    "decoder": (("", 0), ("taesd_decoder.", 0), ("decoder.layers.", 1)),
    "encoder": (("", 0), ("taesd_encoder.", 0), ("encoder.layers.", 0)),
}
_INDEXED = re.compile(r"^(\d+)\.(.+)$")


def _our_keys(shapes: Mapping[str, tuple[int, ...]], part: str) -> dict[str, str] | None:
    """Our key -> the file's key for the `part` ("decoder" or "encoder") of a TAESD file, or None
    when the file holds no such part in a layout we know."""
    for prefix, shift in _LAYOUTS[part]:
        found: dict[str, str] = {}
        for key in shapes:
            if not key.startswith(prefix):
                continue
            match = _INDEXED.match(key[len(prefix):])
            if match:
                found[f"{int(match.group(1)) + shift}.{match.group(2)}"] = key
        first = "1.weight" if part == "decoder" else "0.weight"
        if first in found:
            return found
    return None


def read_tiny_autoencoder(path: str | os.PathLike, part: str = "decoder", allow_pickle: bool = False,
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """The TAESD decoder (or encoder) in the file at `path`, on `device` in `dtype`, in eval mode.

    The latent channels come from the weights. Raises CheckpointError naming the file when it is
    not a TAESD file of that part, misses weights or has weights of other shapes, and for a pickle
    file when pickles are not allowed.
    """
    if part not in _LAYOUTS:
        raise ValueError(f"part must be 'decoder' or 'encoder', not {part!r}")
    path = Path(path)
    with open_tensor_file(path, allow_pickle) as source:
        keys = _our_keys(source.shapes, part)
        if keys is None:
            raise CheckpointError(f"{path.name} is not a TAESD {part} (no {part} weights in the original or "
                                  "diffusers AutoencoderTiny layout)")
        # The latent side's convolution: the decoder's first, the encoder's last (index 14).
        end = "1.weight" if part == "decoder" else f"{len(tiny_encoder()) - 1}.weight"
        shape = source.shapes.get(keys.get(end, ""), ())
        if len(shape) != 4:
            raise CheckpointError(f"{path.name} is not a complete TAESD {part}: "
                                  + (f"{keys[end]} has shape {list(shape)}" if end in keys else f"{end} is missing"))
        latent_channels = shape[1] if part == "decoder" else shape[0]
        module = (tiny_decoder if part == "decoder" else tiny_encoder)(int(latent_channels))
        expected = module.state_dict()
        problems = [f"{key} is missing" for key in expected if key not in keys]
        problems += [f"{keys[key]} has shape {list(source.shapes[keys[key]])}, a TAESD {part} has "
                     f"{list(tensor.shape)}" for key, tensor in expected.items()
                     if key in keys and tuple(source.shapes[keys[key]]) != tuple(tensor.shape)]
        if problems:
            shown = "; ".join(problems[:4]) + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
            raise CheckpointError(f"{path.name} is not a complete TAESD {part}: {shown}")
        module.load_state_dict({key: source.read(keys[key]) for key in expected})
    # Channels-last: its 64-channel convolutions at full image size ran 1.4-1.6x faster so on the CPU
    # (oneDNN's preferred layout; NCHW pays a reorder around each of them), as cuDNN prefers on GPUs.
    return module.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval().requires_grad_(False)


def _input_for(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    parameter = next(module.parameters())
    return x.to(device=parameter.device, dtype=parameter.dtype).contiguous(memory_format=torch.channels_last)


class TinyAutoencoder(nn.Module):
    """TAESD's encoder and decoder behind the VAE's interface (`nodes.sd.vae.AutoencoderKL`), so
    the VAE nodes use it as they use a VAE: fast drafts and encodes, at TAESD's quality.

    Its latents are the U-Net's own (scaling factor 1); `encode` returns a distribution of zero
    spread (sampling it gives its mean); `config` is the VAE shape the memory estimates read,
    sized to bound TAESD's (64 channels at every level, three blocks per level)."""

    def __init__(self, decoder: nn.Sequential, encoder: nn.Sequential) -> None:
        super().__init__()
        from latentgraph.nodes.sd.vae import VAEConfig

        self.decoder = decoder
        self.encoder = encoder
        channels = decoder[1].in_channels
        if encoder[-1].out_channels != channels:
            raise CheckpointError(f"the TAESD encoder makes {encoder[-1].out_channels}-channel latents and its "
                                  f"decoder reads {channels}: they are not a pair")
        self.config = VAEConfig(ch=CHANNELS, ch_mult=(1, 1, 1, 1), num_res_blocks=3, z_channels=channels,
                                embed_dim=channels, scaling_factor=1.0)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def encode(self, image: torch.Tensor) -> Any:
        """image (batch, 3, H, W) in [-1, 1] -> the latent as a distribution of zero spread."""
        from latentgraph.nodes.sd.vae import LatentDistribution

        mean = tiny_encode(self.encoder, image).to(self.dtype)
        return LatentDistribution(mean, torch.full_like(mean, float("-inf")))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (batch, C, h, w) as sampled -> image (batch, 3, 8h, 8w) in [-1, 1]. The decoder
        runs compiled inside `compiled_models(True)` (`--compile`), as the VAE's does."""
        from latentgraph.nodes.sd.compiled import forward_of

        image = forward_of(self.decoder)(_input_for(self.decoder, latent))
        return (image.float() * 2 - 1).contiguous()


def load_tiny_autoencoder(decoder_path: str | os.PathLike, encoder_path: str | os.PathLike,
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                          allow_pickle: bool = False) -> TinyAutoencoder:
    """A TAESD decoder and encoder pair from their files, as a TinyAutoencoder."""
    return TinyAutoencoder(read_tiny_autoencoder(decoder_path, "decoder", allow_pickle, device, dtype),
                           read_tiny_autoencoder(encoder_path, "encoder", allow_pickle, device, dtype))


def tiny_decode(decoder: nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, 8H, 8W] in [-1, 1] (the VAE's range), float32, from latents [B, C, H, W] as sampled."""
    image = decoder(_input_for(decoder, latent))
    return (image.float() * 2 - 1).clamp(-1, 1).contiguous()


def tiny_encode(encoder: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Latents [B, C, H/8, W/8] as sampled, float32, from images [B, 3, H, W] in [-1, 1]."""
    return encoder(_input_for(encoder, (image + 1) / 2)).float().contiguous()


__all__ = ["Block", "SoftClamp", "TinyAutoencoder", "load_tiny_autoencoder", "read_tiny_autoencoder", "tiny_decode", "tiny_decoder", "tiny_encode",
           "tiny_encoder"]
