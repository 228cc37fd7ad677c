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
from dataclasses import dataclass, replace
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
    area: tuple[str, float, float, float, float] | None = None  # see `latent_area`
    sigma_range: tuple[float, float] | None = None  # (highest, lowest) noise level at which it acts
    mask: torch.Tensor | None = None  # [1 or B, H, W] in [0, 1] at any size: where it acts, and how much
    mask_strength: float = 1.0
    mask_bounds: bool = False  # run it on the mask's bounding box only (ComfyUI's "mask bounds")

    @property
    def special(self) -> bool:
        """It needs the per-prompt path (an area, a mask or a noise-level range)."""
        return self.area is not None or self.mask is not None or self.sigma_range is not None

    def acts_at(self, sigma: float) -> bool:
        return self.sigma_range is None or self.sigma_range[0] >= sigma >= self.sigma_range[1]


AREA_FUZZ = 8  # latent pixels over which an area's weight ramps up from its inner edges (ComfyUI's rule)


def latent_area(area: tuple[str, float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) in latent pixels of an area given as ("pixels", x, y, width, height)
    in image pixels (8 to a latent pixel, rounded down) or ("fraction", x, y, width, height) of the
    image (rounded, at least one latent pixel), clipped to the latent. Raises ValueError for an
    area that lies outside it."""
    kind, x, y, w, h = area
    if kind == "fraction":
        rows, cols = max(1, round(h * height)), max(1, round(w * width))
        top, left = round(y * height), round(x * width)
    else:
        rows, cols, top, left = int(h) // 8, int(w) // 8, int(y) // 8, int(x) // 8
    if top >= height or left >= width or rows < 1 or cols < 1:
        raise ValueError(f"the conditioning area at x={x}, y={y} ({w}x{h}) lies outside the "
                         f"{width * 8}x{height * 8} image")
    return top, left, min(rows, height - top), min(cols, width - left)


def area_weight(top: int, left: int, rows: int, cols: int, height: int, width: int, strength: float) -> torch.Tensor:
    """[rows, cols] weight of an area's estimate: its strength, ramping linearly over up to
    AREA_FUZZ latent pixels (a quarter of the side at most) along each edge that lies inside the
    image, so areas blend into what surrounds them (as ComfyUI weighs areas)."""
    weight = torch.full((rows, cols), float(strength))
    for axis, start, size, full in ((0, top, rows, height), (1, left, cols, width)):
        ramp = min(AREA_FUZZ, size // 4)
        steps = torch.arange(1, ramp + 1, dtype=torch.float32) / ramp if ramp else torch.empty(0)
        shape = (-1, 1) if axis == 0 else (1, -1)
        if start != 0 and ramp:
            weight.narrow(axis, 0, ramp).mul_(steps.view(shape))
        if start + size < full and ramp:
            weight.narrow(axis, size - ramp, ramp).mul_(steps.flip(0).view(shape))
    return weight


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

    Area prompts (`GuidanceEntry.area`, set by the area conditioning nodes): a prompt with an area
    is run on that part of the latent only, and each side's estimate is, pixel by pixel, the
    weighted mean of the estimates covering it (weights from `area_weight`; a pixel no prompt of
    a side covers gets 0 there, as in ComfyUI). A prompt with a mask weighs its estimate by the
    mask (resized to the latent, bilinear) times its mask strength, over the whole latent or the
    mask's bounding box. A prompt with a noise-level range is left out of the steps outside it.
    Steps with such prompts make one network call per prompt.
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
        if any(e.special for e in entries):
            cond = self._by_area(x, sigma, self.positive, "cond")
            if not guided:
                return cond
            uncond = self._by_area(x, sigma, self.negative, "uncond")
            guided_denoised = uncond + self.cfg_scale * (cond - uncond)
            return self._rescaled(x, sigma, cond, guided_denoised) if self.rescale else guided_denoised
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

    def _by_area(self, x: torch.Tensor, sigma: torch.Tensor, side: Sequence[GuidanceEntry], name: str) -> torch.Tensor:
        """One side's estimate when some prompt has an area: each prompt on its part of the latent,
        then the per-pixel weighted mean (see the class doc)."""
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        total = torch.zeros_like(x)
        count = torch.full_like(x, 1e-37)  # a pixel nobody covers ends 0, not NaN
        level = float(sigma.max())
        for entry in side:
            if not entry.acts_at(level):
                continue
            if entry.control and (entry.area is not None or entry.mask is not None):
                raise ValueError("a prompt with an area or a mask cannot carry a ControlNet here; apply the "
                                 "ControlNet to a prompt without one")
            mask = self._latent_mask(entry, batch, height, width) if entry.mask is not None else None
            if entry.area is not None:
                top, left, rows, cols = latent_area(entry.area, height, width)
            elif mask is not None and entry.mask_bounds:
                top, left, rows, cols = _bounds(mask, height, width)
            else:
                top, left, rows, cols = 0, 0, height, width
            region = (..., slice(top, top + rows), slice(left, left + cols))
            context = _match_batch(entry.context, batch, name)
            extra = {}
            if entry.concat is not None:
                extra["concat"] = _match_batch(entry.concat, batch, "concat")[region]
            y = _match_batch(entry.y, batch, "y") if entry.y is not None else None
            if entry.control:
                extra["control"] = [entry.control]  # one chunk: this prompt's ControlNets
            crop = x[region]
            out = (self.denoiser(crop, sigma, context, y, **extra) if y is not None or extra
                   else self.denoiser(crop, sigma, context))
            if mask is not None:
                weight = mask[region] * (entry.mask_strength * entry.weight)
            else:
                weight = area_weight(top, left, rows, cols, height, width, entry.weight).to(x)
            total[region] += out * weight
            count[region] += weight
        return total / count

    def _latent_mask(self, entry: GuidanceEntry, batch: int, height: int, width: int) -> torch.Tensor:
        """The entry's mask at the latent's size, [B, 1, H, W] (computed once per size)."""
        cache = self.__dict__.setdefault("_masks", {})
        key = (id(entry.mask), batch, height, width)
        if key not in cache:
            mask = entry.mask if entry.mask.ndim == 3 else entry.mask.reshape(1, *entry.mask.shape[-2:])
            mask = mask.float().unsqueeze(1)
            if mask.shape[-2:] != (height, width):
                mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
            cache[key] = _match_batch(mask, batch, "mask")
        return cache[key]

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
    return tuple(replace(e, weight=e.weight / total) for e in entries)


def _bounds(mask: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, columns) of the box around the mask's non-zero pixels (any batch item);
    an empty mask gives an 8x8 box at the corner (ComfyUI's fallback)."""
    rows = torch.nonzero(mask.abs().amax(dim=(0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(mask.abs().amax(dim=(0, 1, 2)) > 0).flatten()
    if rows.numel() == 0 or cols.numel() == 0:
        return 0, 0, min(8, height), min(8, width)
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def _weighted(outputs: list[torch.Tensor], entries: Sequence[GuidanceEntry]) -> torch.Tensor:
    """The weighted sum of one side's estimates (a single prompt: its estimate as it is)."""
    if len(outputs) == 1:
        return outputs[0]
    total = outputs[0] * entries[0].weight
    for out, entry in zip(outputs[1:], entries[1:]):
        total = total + out * entry.weight
    return total
