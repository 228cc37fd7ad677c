"""Turn a noise-predicting network into the denoiser samplers call, with classifier-free guidance.

Samplers (`nodes.sd.samplers`) work in the k-diffusion form: `model(x, sigma, **extra_args)`
returns the denoised estimate of `x` at noise level `sigma` (a tensor of shape [B]), where
`x = x0 + sigma * noise`. An SD U-Net instead takes the variance-preserving input
`x / sqrt(sigma^2 + 1)` and a timestep, and predicts the noise (epsilon) or v. `Denoiser` does the
conversion (Karras et al. 2022, table 1 with sigma_data = 1); `CFGDenoiser` mixes a conditional and
an unconditional prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from latentgraph.nodes.sd.schedules import NoiseSchedule

PredictionType = Literal["epsilon", "v_prediction"]


class NoisePredictor(Protocol):
    """A U-Net-like network: `net(x_in, t, context)`, t a [B] tensor of (continuous) timesteps."""

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


class DenoiserFn(Protocol):
    """A denoiser in k-diffusion form with its conditioning: `denoiser(x, sigma, cond) -> denoised`."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Denoiser:
    """An eps- or v-prediction network as a denoiser: `denoiser(x, sigma, cond) -> denoised`.

    With c_in = 1 / sqrt(sigma^2 + 1) and t = schedule.sigma_to_t(sigma), F = net(c_in * x, t, cond):
    epsilon: denoised = x - sigma * F;
    v:       denoised = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * F.
    """

    net: NoisePredictor
    schedule: NoiseSchedule
    prediction_type: PredictionType = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Denoised estimate of `x` ([B, C, H, W]) at noise levels `sigma` ([B]) given `cond`."""
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        c_in = 1 / (s**2 + 1).sqrt()
        out = self.net(x * c_in, self.schedule.sigma_to_t(sigma), cond)
        if self.prediction_type == "epsilon":
            return x - s * out
        return x * c_in**2 - out * s * c_in


def _match_batch(cond: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if cond.shape[0] == batch:
        return cond
    if batch % cond.shape[0] != 0:
        raise ValueError(f"{name} has batch {cond.shape[0]}, which does not divide the latent batch {batch}")
    return cond.repeat_interleave(batch // cond.shape[0], dim=0)


def _repeat_to_tokens(cond: torch.Tensor, tokens: int) -> torch.Tensor:
    return cond.repeat(1, tokens // cond.shape[1], 1)


@dataclass
class CFGDenoiser:
    """Classifier-free guidance: `uncond + cfg_scale * (cond - uncond)`, as a sampler model `(x, sigma)`.

    Conditioning tensors are [B, tokens, dim]; a batch of 1 is broadcast to the latent batch. Cond
    and uncond go through the network in one batched forward pass. When their token counts differ
    (a long prompt encoded as several 77-token chunks against a one-chunk negative), each is
    repeated along the token axis to the least common multiple of the two lengths. Repeating keys
    and values leaves cross-attention's output unchanged (every key gets proportionally the same
    softmax weight), so unlike zero- or end-token padding it changes nothing in the result.
    With `cfg_scale == 1` (or no uncond) the unconditional pass is skipped.
    """

    denoiser: DenoiserFn
    cond: torch.Tensor
    uncond: torch.Tensor | None
    cfg_scale: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Guided denoised estimate of `x` at noise levels `sigma` ([B])."""
        batch = x.shape[0]
        cond = _match_batch(self.cond, batch, "cond")
        if self.uncond is None or self.cfg_scale == 1.0:
            return self.denoiser(x, sigma, cond)
        uncond = _match_batch(self.uncond, batch, "uncond")
        tokens = math.lcm(cond.shape[1], uncond.shape[1])
        both = torch.cat([_repeat_to_tokens(cond, tokens), _repeat_to_tokens(uncond, tokens)])
        denoised_cond, denoised_uncond = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        return denoised_uncond + self.cfg_scale * (denoised_cond - denoised_uncond)
