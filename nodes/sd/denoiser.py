"""Turn a noise-predicting network into the denoiser samplers call, with classifier-free guidance.

Samplers (`nodes.sd.samplers`) work in the k-diffusion form: `model(x, sigma, **extra_args)`
returns the denoised estimate of `x` at noise level `sigma` (a tensor of shape [B]), where
`x = x0 + sigma * noise`. An SD U-Net instead takes the variance-preserving input
`x / sqrt(sigma^2 + 1)` and a timestep, and predicts the noise (epsilon) or v. `Denoiser` does the
conversion (Karras et al. 2022, table 1 with sigma_data = 1); `CFGDenoiser` is classifier-free
guidance over any number of prompts on each side, in one network call per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from latentgraph.nodes.sd.schedules import NoiseSchedule

PredictionType = Literal["epsilon", "v_prediction"]


class NoisePredictor(Protocol):
    """A U-Net-like network: `net(x_in, t, context)` (and `y`, the extra conditioning vector, for
    models that take one), t a [B] tensor of (continuous) timesteps."""

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


class DenoiserFn(Protocol):
    """A denoiser in k-diffusion form with its conditioning: `denoiser(x, sigma, cond, y=None) -> denoised`."""

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

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                 y: torch.Tensor | None = None, control: Sequence[Any] | None = None,
                 concat: torch.Tensor | None = None) -> torch.Tensor:
        """Denoised estimate of `x` ([B, C, H, W]) at noise levels `sigma` ([B]) given `cond` (and
        `y`, the extra conditioning vector of models that take one). `control`: one entry per
        equal chunk of the batch (a prompt's ControlNets, or None), handed to the network as
        `ControlChunks` with the rows' sigmas; None: the network is called without it.
        `concat`: extra input channels ([B, extra, H, W]: an inpainting U-Net's mask and masked
        image) handed to the network as they are, without the input scaling x gets."""
        s, c_in = _scalings(x, sigma)
        t = self.schedule.sigma_to_t(sigma)
        if control is not None or concat is not None:
            extra: dict[str, Any] = {} if concat is None else {"concat": concat}
            if control is not None:
                extra["control"] = ControlChunks(tuple(control), sigma)
            out = self.net(x * c_in, t, cond, y, **extra)
        else:
            out = self.net(x * c_in, t, cond) if y is None else self.net(x * c_in, t, cond, y)
        return self._denoised(x, s, c_in, out)

    def denoised_from_output(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The denoised estimate of `x` at `sigma` ([B]) from the network's output (eps or v)."""
        return self._denoised(x, *_scalings(x, sigma), output)

    def output_from_denoised(self, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """The network output (eps or v) that gives `denoised` for `x` at `sigma` ([B] > 0): the
        inverse of `denoised_from_output`.

        epsilon: F = (x - denoised) / sigma;  v: F = (x / (sigma^2 + 1) - denoised) * sqrt(sigma^2 + 1) / sigma.
        """
        s, c_in = _scalings(x, sigma)
        if self.prediction_type == "epsilon":
            return (x - denoised) / s
        return (x * c_in**2 - denoised) / (s * c_in)

    def _denoised(self, x: torch.Tensor, s: torch.Tensor, c_in: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return x - s * out
        return x * c_in**2 - out * s * c_in


def _scalings(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma ([B]) shaped to broadcast over x, in x's dtype, and c_in = 1 / sqrt(sigma^2 + 1)."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return s, 1 / (s**2 + 1).sqrt()


def _match_batch(cond: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if cond.shape[0] == batch:
        return cond
    if batch % cond.shape[0] != 0:
        raise ValueError(f"{name} has batch {cond.shape[0]}, which does not divide the latent batch {batch}")
    return cond.repeat_interleave(batch // cond.shape[0], dim=0)


def _repeat_to_tokens(cond: torch.Tensor, tokens: int) -> torch.Tensor:
    return cond.repeat(1, tokens // cond.shape[1], 1)


@dataclass(frozen=True)
class ControlChunks:
    """What a network call gets besides its inputs when prompts carry control (ControlNets): the
    batch is len(controls) equal chunks, one per prompt, `controls[i]` that prompt's (empty or None:
    none), and `sigma` [B] the noise level of each row (ControlNets act on a range of them)."""

    controls: tuple[Any, ...]
    sigma: torch.Tensor


@dataclass(frozen=True)
class GuidanceEntry:
    """One prompt on one side of the guidance: its context [1 or B, tokens, dim], its weight among
    that side's prompts, for models that take one its extra conditioning vector y [1 or B, n], its
    control (what the network needs for the prompt's ControlNets; None: none), and for inpainting
    U-Nets its extra input channels `concat` [1 or B, extra, H, W] (see nodes.sd.inpaint)."""

    context: torch.Tensor
    weight: float = 1.0
    y: torch.Tensor | None = None
    control: Any = None
    concat: torch.Tensor | None = None


class CFGDenoiser:
    """Classifier-free guidance as a sampler model `(x, sigma)`: `uncond + cfg_scale * (cond - uncond)`,
    where each side is the weight-averaged denoised estimate of its prompts.

    Every prompt of both sides goes through the network in ONE call per step: the latent batch is
    repeated once per prompt and the contexts are stacked. Contexts of different token counts (a
    long prompt encoded as several 77-token windows against a one-window negative) are each
    repeated along the token axis to the least common multiple of the lengths: repeating keys and
    values leaves cross-attention's output unchanged (every key gets proportionally the same
    softmax weight), so unlike zero- or end-token padding it changes nothing in the result. A
    context of batch 1 is broadcast to the latent batch. With `cfg_scale == 1` (or no negative
    side) the negative prompts are not computed at all.

    positive / negative: GuidanceEntry sequences, or a plain context tensor for one prompt.

    rescale (phi, 0 to 1): CFG rescale (Lin et al. 2023, section 3.4; diffusers' `guidance_rescale`).
    In the network's output space (eps or v, as the pipelines apply it), the guided output is
    scaled to the standard deviation of the positive side's (per sample, over all other dims) and
    mixed with the unscaled one: phi * scaled + (1 - phi) * guided. Here both sides are denoised
    estimates, so they are taken to the output space with the denoiser's `output_from_denoised`
    and the result back with `denoised_from_output` (a `Denoiser` has both). 0 changes nothing
    (the same computation as without it); it applies only when the negative side is computed.
    """

    def __init__(self, denoiser: DenoiserFn, positive: Sequence[GuidanceEntry] | torch.Tensor,
                 negative: Sequence[GuidanceEntry] | torch.Tensor | None, cfg_scale: float,
                 rescale: float = 0.0) -> None:
        if not 0 <= rescale <= 1:
            raise ValueError(f"rescale must be in [0, 1], got {rescale}")
        if rescale and not all(hasattr(denoiser, m) for m in ("output_from_denoised", "denoised_from_output")):
            raise TypeError("CFG rescale needs a denoiser that converts to and from its network's output (a Denoiser)")
        self.denoiser = denoiser
        self.positive = _entries(positive, "positive")
        self.negative = _entries(negative, "negative") if negative is not None else None
        self.cfg_scale = cfg_scale
        self.rescale = rescale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Guided denoised estimate of `x` at noise levels `sigma` ([B])."""
        guided = self.negative is not None and self.cfg_scale != 1.0
        entries = [*self.positive, *(self.negative if guided else ())]
        batch = x.shape[0]
        contexts = [_match_batch(e.context, batch, "cond" if i < len(self.positive) else "uncond")
                    for i, e in enumerate(entries)]
        tokens = math.lcm(*(c.shape[1] for c in contexts))
        context = torch.cat([_repeat_to_tokens(c, tokens) for c in contexts])
        ys = [e.y for e in entries]
        if any(v is None for v in ys) and not all(v is None for v in ys):
            raise ValueError("some prompts carry the model's extra conditioning (y) and some do not")
        y = None if ys[0] is None else torch.cat([_match_batch(v, batch, "y") for v in ys])
        count = len(entries)
        controls = [e.control for e in entries]
        extra = {"control": controls} if any(controls) else {}  # per chunk; absent without control
        concats = [e.concat for e in entries]
        if any(c is None for c in concats) and not all(c is None for c in concats):
            raise ValueError("some prompts carry an inpainting model's extra input channels and some do not")
        if concats[0] is not None:
            extra["concat"] = torch.cat([_match_batch(c, batch, "concat") for c in concats])
        if count == 1:
            out = [self.denoiser(x, sigma, context, y, **extra) if y is not None or extra else self.denoiser(x, sigma, context)]
        else:
            x_all, sigma_all = torch.cat([x] * count), torch.cat([sigma] * count)
            denoised = (self.denoiser(x_all, sigma_all, context, y, **extra) if y is not None or extra
                        else self.denoiser(x_all, sigma_all, context))
            out = list(denoised.chunk(count))
        cond = _weighted(out[: len(self.positive)], self.positive)
        if not guided:
            return cond
        uncond = _weighted(out[len(self.positive):], self.negative)
        guided_denoised = uncond + self.cfg_scale * (cond - uncond)
        if not self.rescale:
            return guided_denoised
        return self._rescaled(x, sigma, cond, guided_denoised)

    def _rescaled(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        """CFG rescale (see the class doc) of the guided denoised estimate, in the output space."""
        if not bool((sigma > 0).all()):  # no output space at sigma 0 (samplers never ask there)
            return guided
        cond_out = self.denoiser.output_from_denoised(x, sigma, cond)
        guided_out = self.denoiser.output_from_denoised(x, sigma, guided)
        dims = list(range(1, x.ndim))
        scaled = guided_out * (cond_out.std(dim=dims, keepdim=True) / guided_out.std(dim=dims, keepdim=True))
        mixed = self.rescale * scaled + (1 - self.rescale) * guided_out
        return self.denoiser.denoised_from_output(x, sigma, mixed)


def _entries(side: Sequence[GuidanceEntry] | torch.Tensor, name: str) -> tuple[GuidanceEntry, ...]:
    entries = (GuidanceEntry(side),) if isinstance(side, torch.Tensor) else tuple(side)
    if not entries:
        raise ValueError(f"{name} conditioning is empty")
    total = sum(e.weight for e in entries)
    if not total > 0:
        raise ValueError(f"the {name} prompts' strengths add up to {total}; at least one must be above 0")
    return tuple(GuidanceEntry(e.context, e.weight / total, e.y, e.control, e.concat) for e in entries)


def _weighted(outputs: list[torch.Tensor], entries: Sequence[GuidanceEntry]) -> torch.Tensor:
    """The weighted sum of one side's estimates (a single prompt: its estimate as it is)."""
    if len(outputs) == 1:
        return outputs[0]
    total = outputs[0] * entries[0].weight
    for out, entry in zip(outputs[1:], entries[1:]):
        total = total + out * entry.weight
    return total
