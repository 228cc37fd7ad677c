"""Noise schedules: a family's discrete training schedule and the step schedules built on it.

A *noise schedule* (`NoiseSchedule`) is what the network was trained with: one sigma per training
timestep, `sigma_t = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])`, ascending in t.

A *step schedule* is what a sampler walks: a 1-D float32 tensor of `steps + 1` sigmas, strictly
decreasing and ending in 0, in the "variance exploding" (k-diffusion) parameterisation where
`x = x0 + sigma * noise`. Each schedule is one small function `(noise_schedule, steps) -> sigmas`,
collected in `SCHEDULES` under the names ComfyUI users know; `sigmas_for` adds img2img `denoise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from latentgraph.nodes.sd.names import SCHEDULE_NAMES


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The sigmas of a discrete diffusion model's training timesteps.

    `sigmas[t]` is the noise level (VE parameterisation) of training timestep `t`; float64,
    ascending. The network is conditioned on a timestep, so samplers that visit sigmas between
    (or beyond) the training ones need `sigma_to_t`, a continuous inverse, interpolated linearly
    in log-sigma exactly as k-diffusion's discrete wrappers do.
    """

    sigmas: torch.Tensor

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> "NoiseSchedule":
        """Build the schedule from the cumulative products of (1 - beta) of each training step."""
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        return cls(((1 - alphas_cumprod) / alphas_cumprod).sqrt())

    @property
    def log_sigmas(self) -> torch.Tensor:
        """Natural log of `sigmas`, the space in which timesteps are interpolated."""
        return self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        """Number of training timesteps (1000 for SD)."""
        return self.sigmas.shape[0]

    @property
    def sigma_min(self) -> float:
        """Smallest training sigma (timestep 0)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest training sigma (last timestep)."""
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep of each sigma: log-sigma interpolation, clamped to [0, T - 1].

        Computed on `sigma`'s device in at least float32; returns `sigma`'s shape.
        """
        sigma = torch.as_tensor(sigma)
        dtype = torch.promote_types(sigma.dtype, torch.float32)
        log_sigmas = self.log_sigmas.to(device=sigma.device, dtype=dtype)
        log_sigma = sigma.to(dtype).log().reshape(-1)
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
        w = ((log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])).clamp(0, 1)
        return (low.to(dtype) + w).reshape(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at a continuous timestep: log-sigma interpolated between neighbouring timesteps."""
        t = torch.as_tensor(t)
        dtype = torch.promote_types(t.dtype, torch.float32)
        log_sigmas = self.log_sigmas.to(device=t.device, dtype=dtype)
        t = t.to(dtype).clamp(0, len(log_sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t - low.to(dtype)
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def scaled_linear_noise_schedule(beta_start: float, beta_end: float, num_timesteps: int) -> NoiseSchedule:
    """A "scaled linear" training schedule (SD's): betas linear in sqrt between `beta_start` and
    `beta_end` (the family spec's `schedule` holds the values).

    Computed in float64 (diffusers computes the same in float32; they agree to ~1e-6 relative).
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return NoiseSchedule.from_alphas_cumprod(torch.cumprod(1 - betas, dim=0))


# The last training step's alphas_cumprod after the zero-terminal-SNR rescale: 0 would make its
# sigma infinite, so, as diffusers' schedulers with `rescale_betas_zero_snr=True` do, it is set to
# 2**-24 (float16's smallest subnormal), which makes sigma_max = sqrt(2**24 - 1), about 4096.
ZERO_SNR_LAST_ALPHAS_CUMPROD = 2.0**-24


def zero_terminal_snr(schedule: NoiseSchedule) -> NoiseSchedule:
    """The schedule rescaled to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", algorithm 1), for models trained that way (v-prediction).

    sqrt(alphas_cumprod) is shifted so the last timestep's is 0 and scaled so the first timestep's
    is unchanged; the last alphas_cumprod is then set to `ZERO_SNR_LAST_ALPHAS_CUMPROD` (2**-24)
    instead of 0, as diffusers does, so the first sigma is finite (about 4096). diffusers rescales
    float32 betas and takes their cumulative product again; here the same values come straight
    from float64 alphas_cumprod (equal up to diffusers' float32 rounding).
    """
    alphas_cumprod = 1 / (1 + schedule.sigmas.to(torch.float64) ** 2)
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_cumprod = root**2
    alphas_cumprod[-1] = ZERO_SNR_LAST_ALPHAS_CUMPROD
    return NoiseSchedule.from_alphas_cumprod(alphas_cumprod)


def _with_final_zero(sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def normal_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the last training timestep down to 0 (k-diffusion's `get_sigmas`)."""
    t_max = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64))
    t_min = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64))
    return _with_final_zero(schedule.t_to_sigma(torch.linspace(float(t_max), float(t_min), steps, dtype=torch.float64)))


def sgm_uniform_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """Like `normal`, but `steps + 1` evenly spaced timesteps with the last (t = 0) replaced by sigma 0.

    The spacing SGM/SDXL-Turbo/LCM style models expect: the final step lands on 0, not on sigma_min.
    """
    t_max = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64))
    t_min = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64))
    t = torch.linspace(float(t_max), float(t_min), steps + 1, dtype=torch.float64)[:-1]
    return _with_final_zero(schedule.t_to_sigma(t))


def karras_sigmas(schedule: NoiseSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5 over the model's training range (see `karras_between`)."""
    return karras_between(schedule.sigma_min, schedule.sigma_max, steps, rho)


def karras_between(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` sigmas evenly spaced in sigma^(1/rho) from sigma_max
    down to sigma_min, then 0 (computed in float64, returned as float32)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _with_final_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """Evenly spaced in log-sigma over the model's training range (see `exponential_between`)."""
    return exponential_between(schedule.sigma_min, schedule.sigma_max, steps)


def exponential_between(sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """`steps` sigmas evenly spaced in log-sigma from sigma_max down to sigma_min, then 0."""
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64)
    return _with_final_zero(log_sigmas.exp())


def simple_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """ComfyUI's "simple": every (T / steps)-th training sigma, counting down from the last one.

    The stride is computed in floating point as ComfyUI does, so the picked timesteps are the same.
    """
    stride = schedule.num_timesteps / steps
    indices = [schedule.num_timesteps - 1 - int(k * stride) for k in range(steps)]
    return _with_final_zero(schedule.sigmas[indices])


def ddim_uniform_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """The DDIM paper's uniform timesteps: t = 1 + k * (T // steps) for k < steps, highest first.

    This is diffusers' "leading" spacing with `steps_offset=1` (the SD1.x scheduler config), so it
    starts below sigma_max. ComfyUI's `ddim_uniform` picks the same timesteps when `steps` divides T
    but keeps going up to T - 1 otherwise (one extra step); we keep exactly `steps` steps.
    """
    stride = max(schedule.num_timesteps // steps, 1)
    indices = [t for t in (1 + k * stride for k in range(steps)) if t < schedule.num_timesteps]
    return _with_final_zero(schedule.sigmas[indices[::-1]])


def beta_sigmas(schedule: NoiseSchedule, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, arXiv:2407.12173).

    As ComfyUI's "beta": quantiles `1 - k / steps` of Beta(0.6, 0.6) (dense at both ends), scaled to
    the training timesteps and rounded; a timestep repeated by the rounding is dropped, so from about
    140 steps up the schedule has fewer than `steps` steps. Same timesteps as ComfyUI for 1-1000 steps.
    """
    quantiles = 1 - np.arange(steps, dtype=np.float64) / steps
    timesteps = np.rint(beta_ppf(quantiles, alpha, beta) * (schedule.num_timesteps - 1)).astype(np.int64)
    indices = [int(t) for k, t in enumerate(timesteps) if k == 0 or t != timesteps[k - 1]]
    return _with_final_zero(schedule.sigmas[indices])


def beta_cdf(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Regularised incomplete beta function I_x(alpha, beta), the CDF of Beta(alpha, beta), in float64.

    Uses the hypergeometric series I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * sum_n (a+b)_n / (a+1)_n x^n
    (DLMF 8.17.8) for x <= 1/2, where its terms shrink at least as fast as x^n, and the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) above 1/2.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    flip = x > 0.5
    a = np.where(flip, beta, alpha)
    b = np.where(flip, alpha, beta)
    y = np.where(flip, 1 - x, x)
    n = np.arange(200, dtype=np.float64)[:, None]
    ratios = (a + b + n) / (a + 1 + n) * y  # term[n + 1] / term[n]
    series = 1 + np.cumprod(ratios, axis=0).sum(axis=0)
    log_beta = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    with np.errstate(divide="ignore"):
        prefix = np.exp(a * np.log(y) + b * np.log1p(-y) - log_beta) / a
    cdf = np.where(y > 0, prefix * series, 0.0)
    return np.where(flip, 1 - cdf, cdf)


def beta_ppf(q: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Inverse CDF (quantile function) of Beta(alpha, beta), by bisection on `beta_cdf` (to ~1e-16).

    The median of a symmetric Beta is returned as exactly 1/2: the beta schedule rounds
    `ppf * 999`, and 499.5 must round (to even) the way scipy's value does, to 500.
    """
    q = np.asarray(q, dtype=np.float64)
    low, high = np.zeros_like(q), np.ones_like(q)
    for _ in range(55):
        mid = (low + high) / 2
        below = beta_cdf(mid, alpha, beta) < q
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    ppf = (low + high) / 2
    if alpha == beta:
        ppf = np.where(q == 0.5, 0.5, ppf)
    return np.where(q <= 0, 0.0, np.where(q >= 1, 1.0, ppf))


Schedule = Callable[[NoiseSchedule, int], torch.Tensor]

# Every step schedule by its name (the names are written once, in `names`).
SCHEDULES: dict[str, Schedule] = {name: globals()[f"{name}_sigmas"] for name in SCHEDULE_NAMES}


def sigmas_for(schedule_name: str, noise_schedule: NoiseSchedule, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The sigmas a sampler walks for `steps` steps of the named schedule.

    `denoise` < 1 (img2img) builds the schedule for `int(steps / denoise)` steps and keeps its last
    `steps + 1` sigmas, so sampling starts part-way down at a lower noise level and still takes
    `steps` steps, as in ComfyUI and A1111.
    """
    if schedule_name not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule_name!r}; expected one of {sorted(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < denoise <= 1:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    schedule = SCHEDULES[schedule_name]
    if denoise > 0.9999:
        return schedule(noise_schedule, steps)
    return schedule(noise_schedule, int(steps / denoise))[-(steps + 1):]
