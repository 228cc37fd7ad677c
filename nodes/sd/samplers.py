"""Samplers: solvers for the diffusion ODE/SDE in the k-diffusion form, plus seeded noise and previews.

Every sampler has the signature
`sample_NAME(model, x, sigmas, extra_args=None, callback=None, noise_sampler=None, **options) -> x`:

- `model(x, sigma, **extra_args)` returns the denoised estimate of `x`, `sigma` a tensor of shape [B]
  (see `nodes.sd.denoiser`);
- `x` is the starting sample, already noised to `sigmas[0]` (pure noise: `initial_noise * sigmas[0]`);
- `sigmas` is a decreasing 1-D tensor, usually ending in 0 (see `nodes.sd.schedules`);
- `callback(info)` is called once per step, right after that step's (first) model call, with
  `{"i", "x", "sigma", "sigma_hat", "denoised"}`: `x` is the sample the step started from, sigmas are
  Python floats. To cancel, raise from the callback; the exception propagates out of the sampler;
- `noise_sampler(sigma, sigma_next)` returns a fresh standard-normal tensor shaped like `x`; only the
  stochastic samplers (ancestral, SDE, LCM, churn) call it, and default to an unseeded one.

Names follow the papers: `denoised` is the model's x0 estimate, `d` the ODE derivative
(x - denoised) / sigma, `dt` a change in sigma, `h` a step in lambda = -log(sigma).
Scalar coefficients are computed in Python floats (float64) whatever the tensors' dtype or device.

The SDE samplers take their noise from `noise_sampler` instead of a Brownian tree (k-diffusion's
default, which needs torchsde). Increments of Brownian motion over disjoint intervals are independent,
so independent draws per step are exact for the one-noise-per-step samplers; `dpmpp_sde`, which needs
the increment over a sub-interval and over the whole step, builds both from two independent draws
as a Brownian bridge would. What this gives up is the tree's property that the noise path stays the
same when the number of steps changes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import numpy as np
import torch
from PIL import Image

from latentgraph.nodes.sd.names import SAMPLER_NAMES
from latentgraph.nodes.sd.spec import LatentFormat, latent_rgb

NoiseSampler = Callable[[float, float], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


class SamplerModel(Protocol):
    """`model(x, sigma, **extra_args) -> denoised`, sigma a tensor of shape [B]."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor: ...


class Sampler(Protocol):
    """The common signature of every `sample_*` function."""

    def __call__(
        self,
        model: SamplerModel,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: dict[str, Any] | None = None,
        callback: Callback | None = None,
        noise_sampler: NoiseSampler | None = None,
        **options: Any,
    ) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# Noise


def initial_noise(shape: tuple[int, ...] | torch.Size, seed: int) -> torch.Tensor:
    """Standard-normal starting noise from a CPU generator seeded with `seed`, float32 on the CPU.

    Drawn on the CPU so that a seed gives the same image on any device; move it to the model's
    device and multiply by `sigmas[0]` before sampling.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """A noise sampler drawing successive float32 normals from one seeded CPU generator.

    Each draw is made on the CPU in float32 and then moved to `x`'s device and dtype, so a seed
    reproduces the same sampling noise everywhere. `seed=None` takes a seed from torch's global RNG.
    """
    generator = torch.Generator("cpu")
    seeded = False

    def noise_sampler(sigma: float, sigma_next: float) -> torch.Tensor:
        nonlocal seeded
        if not seeded:  # seeded on first use, so an unused sampler leaves the global RNG alone
            generator.manual_seed(int(torch.randint(0, 2**62, ())) if seed is None else seed)
            seeded = True
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        return noise.to(device=x.device, dtype=x.dtype)

    return noise_sampler


# ---------------------------------------------------------------------------------------------
# Shared step pieces


def _floats(sigmas: torch.Tensor) -> list[float]:
    return [float(s) for s in sigmas.detach().cpu().double()]


def _sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))


def _denoise(model: SamplerModel, x: torch.Tensor, sigma: float, extra_args: dict[str, Any]) -> torch.Tensor:
    return model(x, _sigma_batch(x, sigma), **extra_args)


def _report(callback: Callback | None, i: int, x: torch.Tensor, sigma: float, sigma_hat: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma (Karras et al. 2022, eq. 3 with sigma(t) = t)."""
    return (x - denoised) / sigma


def _ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split a step sigma -> sigma_next into a deterministic step to sigma_down plus fresh noise sigma_up.

    sigma_up^2 = eta^2 * sigma_next^2 * (sigma^2 - sigma_next^2) / sigma^2 is DDPM's posterior noise at
    eta = 1 (and DDIM's sigma_t(eta) in general); sigma_down^2 + sigma_up^2 = sigma_next^2.
    """
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _churn(
    x: torch.Tensor, sigma: float, steps: int, noise_sampler: NoiseSampler,
    s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
) -> tuple[torch.Tensor, float]:
    """Karras et al. 2022 algorithm 2, lines 5-7: raise the noise from sigma to sigma_hat = sigma (1 + gamma)."""
    gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    return x + noise_sampler(sigma, sigma_hat) * s_noise * math.sqrt(sigma_hat**2 - sigma**2), sigma_hat


# ---------------------------------------------------------------------------------------------
# Samplers


@torch.no_grad()
def sample_euler(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, algorithm 2 without the Heun step).

    `s_churn` > 0 adds Karras' stochastic churn on steps with s_tmin <= sigma <= s_tmax.
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    steps = len(sigmas) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(steps):
        x, sigma_hat = _churn(x, sigmas[i], steps, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        _report(callback, i, x, sigmas[i], sigma_hat, denoised)
        d = _to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        x = x + d * dt
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps down to sigma_down, then fresh noise up to sigma_next (ancestral sampling)."""
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        x = x + _to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_up > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, algorithm 2); the step to sigma = 0 is Euler."""
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    steps = len(sigmas) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(steps):
        sigma_next = sigmas[i + 1]
        x, sigma_hat = _churn(x, sigmas[i], steps, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        _report(callback, i, x, sigmas[i], sigma_hat, denoised)
        d = _to_d(x, sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = _denoise(model, x_2, sigma_next, extra_args)
            d_2 = _to_d(x_2, sigma_next, denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 in k-diffusion's form: a midpoint method with the midpoint at the geometric mean sigma.

    The step to sigma = 0 is Euler.
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    steps = len(sigmas) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(steps):
        sigma_next = sigmas[i + 1]
        x, sigma_hat = _churn(x, sigmas[i], steps, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        _report(callback, i, x, sigmas[i], sigma_hat, denoised)
        d = _to_d(x, sigma_hat, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma_hat)
        else:
            sigma_mid = math.sqrt(sigma_hat * sigma_next)
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = _denoise(model, x_2, sigma_mid, extra_args)
            x = x + _to_d(x_2, sigma_mid, denoised_2) * (sigma_next - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 down to sigma_down, then fresh noise up to sigma_next (ancestral sampling)."""
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        d = _to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            denoised_2 = _denoise(model, x_2, sigma_mid, extra_args)
            x = x + _to_d(x_2, sigma_mid, denoised_2) * (sigma_down - sigma)
        if sigma_up > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def _lms_coefficient(sigmas: list[float], i: int, j: int, order: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial for node i - j.

    The polynomial has degree order - 1, so it is integrated exactly from its coefficients.
    """
    basis = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-sigmas[i - k], 1.0]) / (sigmas[i - j] - sigmas[i - k])
    antiderivative = basis.integ()
    return float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i]))


@torch.no_grad()
def sample_lms(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth on the sigma grid) using the last `order` derivatives."""
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        ds = [_to_d(x, sigma, denoised), *ds][:order]  # newest first
        current_order = len(ds)
        x = x + sum(_lms_coefficient(sigmas, i, j, current_order) * d for j, d in enumerate(ds))
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): second-order multistep in data prediction.

    The first step, and the step to sigma = 0, are first order (DDIM).
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint",
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, appendix); `eta` = 0 is the ODE solver DPM-Solver++(2M).

    `solver_type` "midpoint" or "heun" chooses the second-order correction, as in diffusers.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            x = (sigma_next / sigma) * math.exp(-eta_h) * x - math.expm1(-h - eta_h) * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "midpoint":
                    coefficient = -0.5 * math.expm1(-h - eta_h)
                else:
                    coefficient = -math.expm1(-h - eta_h) / (-h - eta_h) + 1
                x = x + coefficient * (1 / r) * (denoised - old_denoised)
            if eta > 0:
                noise = noise_sampler(sigma, sigma_next)
                x = x + noise * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """Third-order multistep SDE-DPM-Solver++; `eta` = 0 is the ODE solver DPM-Solver++(3M).

    The exponential integrator's weights phi_2, phi_3 are taken at h * (1 + eta); the first two
    steps use the available history (first, then second order), the step to sigma = 0 is first order.
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    denoised_1 = denoised_2 = None  # the two previous denoised estimates
    h_1 = h_2 = None  # the two previous steps in lambda
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            phi_3 = phi_2 / h_eta - 0.5
            if denoised_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - phi_3 * d2
            elif denoised_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta > 0:
                noise = noise_sampler(sigma, sigma_next)
                x = x + noise * sigma_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
            h_1, h_2 = h, h_1
        denoised_1, denoised_2 = denoised, denoised_1
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
) -> torch.Tensor:
    """DPM-Solver++(2S) with ancestral noise: two model calls per step, the first at lambda + r * h.

    Each stage steps deterministically to its sigma_down and adds noise sigma_up. The two stages need
    the Brownian increment over [sigma_mid, sigma] and over [sigma_next, sigma]; we draw the increments
    over [sigma_mid, sigma] and [sigma_next, sigma_mid] independently and sum them for the whole step.
    The step to sigma = 0 is Euler.
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        sigma_mid = sigma * math.exp(-r * h)
        noise_mid = noise_step = None
        if eta > 0:  # normalised Brownian increments over [sigma_mid, sigma] and [sigma_next, sigma]
            z_early, z_late = noise_sampler(sigma, sigma_mid), noise_sampler(sigma_mid, sigma_next)
            noise_mid = z_early
            noise_step = (math.sqrt(sigma - sigma_mid) * z_early + math.sqrt(sigma_mid - sigma_next) * z_late)
            noise_step = noise_step / math.sqrt(sigma - sigma_next)
        # Stage 1: DDIM to sigma_mid (via its sigma_down), evaluate there.
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_mid, eta)
        x_2 = denoised + (sigma_down / sigma) * (x - denoised)
        if sigma_up > 0:
            x_2 = x_2 + noise_mid * s_noise * sigma_up
        denoised_2 = _denoise(model, x_2, sigma_mid, extra_args)
        # Stage 2: the whole step with the denoised estimates combined to second order.
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = denoised_d + (sigma_down / sigma) * (x - denoised_d)
        if sigma_up > 0:
            x = x + noise_step * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_ddim(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    eta: float = 0.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) in sigma form: x_next = x0 + sigma_down * eps + sigma_up * noise.

    `eta` = 0 is deterministic DDIM (identical to Euler on this parameterisation), `eta` = 1 is
    DDPM-like ancestral sampling. Pair it with the `ddim_uniform` schedule for classic DDIM.
    """
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        eps = (x - denoised) / sigma
        x = denoised + sigma_down * eps
        if sigma_up > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def _unipc_coefficients(h: float, order: int, variant: str) -> tuple[float, list[float]]:
    """B(h) and the right-hand side b of UniPC's order conditions (Zhao et al. 2023, eq. 7/8).

    With hh = -h (data prediction), b_k = k! * h phi_{k+1}(hh) / B(h) for k = 1..order, where
    h phi_1 = e^hh - 1 and h phi_{k+1} = h phi_k / hh - 1 / k!.
    """
    hh = -h
    h_phi = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    b = []
    factorial = 1
    h_phi_k = h_phi / hh - 1
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return b_h, b


def _solve_rhos(rks: list[float], b: list[float]) -> list[float]:
    """Solve sum_m rho_m r_m^(k-1) = b_k for the rhos (a Vandermonde system, tiny, in float64)."""
    rks_t = torch.tensor(rks, dtype=torch.float64)
    matrix = torch.stack([rks_t**k for k in range(len(rks))])
    return torch.linalg.solve(matrix, torch.tensor(b, dtype=torch.float64)).tolist()


@torch.no_grad()
def sample_uni_pc(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
    order: int = 3, variant: str = "bh2",
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): multistep UniP predictor + UniC corrector, data prediction.

    Defaults as ComfyUI's `uni_pc_bh2` / diffusers' UniPCMultistepScheduler with `solver_order=3`:
    order up to 3, warming up from first order, and lower order at the end (the last step is first
    order, the one before at most second). The corrector reuses each new model evaluation, so it costs
    no extra calls; the step to sigma = 0 has nothing to correct it and lands on the denoised estimate.
    `variant` "bh1" (B(h) = h) is ComfyUI's plain `uni_pc`, better for few steps without guidance.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    steps = len(sigmas) - 1
    lambdas = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    history: list[tuple[int, torch.Tensor]] = []  # (index into sigmas, denoised), newest last
    x_last, last_order = None, 0
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)

        if x_last is not None:  # UniC: redo the previous step with the model output at its end.
            s0, m0 = history[-1]
            h = lambdas[i] - lambdas[s0]
            rks = [(lambdas[s_k] - lambdas[s0]) / h for s_k, _ in history[-last_order:-1][::-1]]
            d1s = [(m_k - m0) / r_k for (_, m_k), r_k in zip(history[-last_order:-1][::-1], rks)]
            b_h, b = _unipc_coefficients(h, last_order, variant)
            rhos_c = [0.5] if last_order == 1 else _solve_rhos(rks + [1.0], b)
            correction = sum((rho * d1 for rho, d1 in zip(rhos_c[:-1], d1s)), torch.zeros_like(x))
            correction = correction + rhos_c[-1] * (denoised - m0)
            x = (sigma / sigmas[s0]) * x_last - math.expm1(-h) * m0 - b_h * correction

        history = (history + [(i, denoised)])[-order:]
        this_order = min(order, len(history), steps - i)
        x_last, last_order = x, this_order

        if sigma_next == 0:
            x = denoised
            continue
        # UniP: exponential-integrator step using this_order - 1 earlier outputs.
        h = lambdas[i + 1] - lambdas[i]
        earlier = history[-this_order:-1][::-1]
        rks = [(lambdas[s_k] - lambdas[i]) / h for s_k, _ in earlier]
        d1s = [(m_k - denoised) / r_k for (_, m_k), r_k in zip(earlier, rks)]
        b_h, b = _unipc_coefficients(h, this_order, variant)
        if this_order == 1:
            rhos_p = []
        elif this_order == 2:
            rhos_p = [0.5]
        else:
            rhos_p = _solve_rhos(rks, b[:-1])
        prediction = sum((rho * d1 for rho, d1 in zip(rhos_p, d1s)), torch.zeros_like(x))
        x = (sigma_next / sigma) * x - math.expm1(-h) * denoised - b_h * prediction
    return x


@torch.no_grad()
def sample_lcm(
    model: SamplerModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Latent Consistency Model multistep sampling: jump to the denoised estimate, re-noise to sigma_next."""
    extra_args = extra_args or {}
    sigmas = _floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * sigma_next
    return x


# Every sampler by its name (the names are written once, in `names`).
SAMPLERS: dict[str, Sampler] = {name: globals()[f"sample_{name}"] for name in SAMPLER_NAMES}


# ---------------------------------------------------------------------------------------------
# Preview

def latent_preview(latent: torch.Tensor, latent_format: LatentFormat) -> Image.Image:
    """A rough RGB image of a latent by the family's fixed linear map (`LatentFormat.rgb_factors`), no VAE.

    `latent` is [C, H, W] or [B, C, H, W] (the first image is shown), in the sampler's scaled latent
    space (pass the callback's `denoised` for a clean-looking preview). The image is H x W, i.e. 1/8
    of the decoded size; scale it up for display if needed.
    """
    if latent.ndim == 4:
        latent = latent[0]
    channels = len(latent_format.rgb_factors)
    if latent.ndim != 3 or latent.shape[0] != channels:
        raise ValueError(f"latent_preview expects a [{channels}, H, W] or [B, {channels}, H, W] latent, "
                         f"got shape {tuple(latent.shape)}")
    rgb = latent_rgb(latent, latent_format)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels)
