"""Schedules, the denoiser wrapper and the samplers, checked against diffusers and closed forms.

The sampler comparisons run diffusers' own denoising loop (set_timesteps, scale_model_input, step)
and ours on the same toy eps-network from the same starting latent, in float64, so that the only
differences left are diffusers' float32 arithmetic (its sigmas and alphas are float32 and several
schedulers round the sample to float32 inside `step`). Outputs are O(1) to O(5); the observed
differences are at most ~1e-6 and the tolerance is 1e-5. A wrong coefficient anywhere gives
differences of 1e-3 or more.

diffusers' VP-form schedulers (DDIM, DPM-Solver, UniPC, LCM) start from `noise` and return a sample
scaled by alpha = 1 / sqrt(sigma^2 + 1); ours work on x / alpha, so we start from
`noise * sqrt(sigma_0^2 + 1)` (the same point) and, when the last sigma is not 0, rescale our result.
"""

from __future__ import annotations

import inspect
import math
import time

import numpy as np
import pytest
import torch
from diffusers.schedulers import scheduling_lms_discrete
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteScheduler
from diffusers.schedulers.scheduling_k_dpm_2_discrete import KDPM2DiscreteScheduler
from diffusers.schedulers.scheduling_lcm import LCMScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from PIL import Image

from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser
from latentgraph.nodes.sd.families import SD1
from latentgraph.nodes.sd.samplers import (
    SAMPLERS,
    default_noise_sampler,
    initial_noise,
    latent_preview,
    sample_ddim,
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lcm,
    sample_lms,
    sample_uni_pc,
)
from latentgraph.nodes.sd.schedules import (
    SCHEDULES,
    NoiseSchedule,
    beta_cdf,
    beta_ppf,
    beta_sigmas,
    ddim_uniform_sigmas,
    karras_sigmas,
    sigmas_for,
)

# diffusers hands torch tensors to numpy in ways NumPy 2 deprecates; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

SD1_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SAMPLER_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def noise_schedule() -> NoiseSchedule:
    return SD1.schedule.build()


def diffusers_sigmas(scheduler) -> torch.Tensor:
    """diffusers' float32 training sigmas, as it computes them."""
    alphas_cumprod = scheduler.alphas_cumprod
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.double(), reference.double()
    nonzero = reference != 0
    assert torch.equal(ours == 0, ~nonzero)
    return ((ours[nonzero] - reference[nonzero]).abs() / reference[nonzero]).max().item()


# ---------------------------------------------------------------------------------------------
# Schedules


def test_training_sigmas_match_diffusers_alphas_cumprod(noise_schedule):
    scheduler = EulerDiscreteScheduler(**SD1_CONFIG)
    # diffusers takes the cumulative product in float32, which drifts by ~1.3e-5 over 1000 steps.
    assert relative_error(noise_schedule.sigmas, diffusers_sigmas(scheduler)) < 3e-5
    # The same product in float64 from diffusers' (float32-rounded) betas agrees to rounding.
    alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
    assert relative_error(noise_schedule.sigmas, ((1 - alphas_cumprod) / alphas_cumprod).sqrt()) < 1e-6
    assert noise_schedule.num_timesteps == 1000
    assert noise_schedule.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert noise_schedule.sigma_max == pytest.approx(14.6146, abs=1e-3)


def test_sigma_to_t_inverts_t_to_sigma(noise_schedule):
    assert torch.allclose(noise_schedule.sigma_to_t(noise_schedule.sigmas), torch.arange(1000, dtype=torch.float64), atol=1e-9)
    t = torch.tensor([0.0, 0.25, 17.5, 500.9, 998.99, 999.0], dtype=torch.float64)
    assert torch.allclose(noise_schedule.sigma_to_t(noise_schedule.t_to_sigma(t)), t, atol=1e-9)
    # Log-linear between neighbours: half way in t is the geometric mean of the sigmas.
    halfway = noise_schedule.t_to_sigma(torch.tensor(10.5, dtype=torch.float64))
    assert halfway.item() == pytest.approx(math.sqrt(noise_schedule.sigmas[10] * noise_schedule.sigmas[11]), rel=1e-12)
    # Out-of-range sigmas clamp to the ends; float32 in gives float32 out.
    assert noise_schedule.sigma_to_t(torch.tensor([100.0, 1e-4])).tolist() == [999.0, 0.0]


@pytest.mark.parametrize("steps", [10, 20, 30])
@pytest.mark.parametrize(
    "name, config, tolerance",
    [
        # Both inherit diffusers' float32 sigma_min/sigma_max (see the training-sigma test).
        ("karras", dict(use_karras_sigmas=True), 3e-5),
        ("exponential", dict(use_exponential_sigmas=True), 3e-5),
        # diffusers' "linspace" spacing is our "normal", but it interpolates sigma linearly between
        # training timesteps where k-diffusion/ComfyUI (and we) interpolate log-sigma: ~3e-5 apart.
        ("normal", dict(timestep_spacing="linspace"), 1e-4),
        # "leading" spacing with steps_offset=1 is the DDIM paper's (and SD1.x's config) schedule.
        ("ddim_uniform", dict(timestep_spacing="leading", steps_offset=1), 3e-5),
    ],
)
def test_schedule_matches_diffusers(noise_schedule, name, config, tolerance, steps):
    scheduler = EulerDiscreteScheduler(**SD1_CONFIG, **config)
    scheduler.set_timesteps(steps)
    assert relative_error(SCHEDULES[name](noise_schedule, steps), scheduler.sigmas) < tolerance


@pytest.mark.parametrize("steps", [10, 20])
def test_simple_schedule_matches_diffusers_trailing_spacing(noise_schedule, steps):
    # When steps divides 1000, ComfyUI's "simple" and diffusers' "trailing" pick the same timesteps
    # (otherwise they round the stride differently).
    scheduler = EulerDiscreteScheduler(**SD1_CONFIG, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    assert relative_error(SCHEDULES["simple"](noise_schedule, steps), scheduler.sigmas) < 3e-5


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("steps", [1, 10, 20, 30, 50])
def test_every_schedule_is_decreasing_and_ends_in_zero(noise_schedule, name, steps):
    sigmas = SCHEDULES[name](noise_schedule, steps)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    assert (sigmas.diff() < 0).all()
    if name == "ddim_uniform":  # starts at timestep 1 + (steps - 1) * (1000 // steps), below the top
        assert sigmas[0] <= noise_schedule.sigma_max
    else:
        assert sigmas[0].item() == pytest.approx(noise_schedule.sigma_max, rel=1e-6)


def test_beta_schedule_takes_timesteps_at_beta_quantiles(noise_schedule):
    # Beta(1/2, 1/2) has the closed-form quantile sin^2(pi q / 2), so the whole schedule is known.
    # (An odd step count: with an even one the median lands on timestep 499.5, a rounding tie.)
    steps = 11
    quantiles = 1 - np.arange(steps) / steps
    timesteps = np.rint(np.sin(np.pi * quantiles / 2) ** 2 * 999).astype(int)
    expected = torch.cat([noise_schedule.sigmas[timesteps], torch.zeros(1, dtype=torch.float64)]).float()
    assert torch.equal(beta_sigmas(noise_schedule, steps, alpha=0.5, beta=0.5), expected)


def test_beta_schedule_rounds_the_symmetric_median_like_scipy(noise_schedule):
    # With an even step count the median quantile maps to timestep 0.5 * 999 = 499.5; scipy's ppf
    # (which ComfyUI uses) lands on or just above 1/2, so the timestep rounds to 500.
    assert beta_ppf(np.array([0.5]), 0.6, 0.6)[0] == 0.5
    assert beta_sigmas(noise_schedule, 2)[1].item() == pytest.approx(noise_schedule.sigmas[500].item(), rel=1e-7)
    assert beta_sigmas(noise_schedule, 10)[5].item() == pytest.approx(noise_schedule.sigmas[500].item(), rel=1e-7)


def test_beta_ppf_matches_closed_forms():
    q = np.linspace(0, 1, 41)
    assert np.allclose(beta_ppf(q, 0.5, 0.5), np.sin(np.pi * q / 2) ** 2, atol=1e-12)
    assert np.allclose(beta_ppf(q, 2.0, 1.0), np.sqrt(q), atol=1e-12)
    assert np.allclose(beta_ppf(q, 1.0, 3.0), 1 - (1 - q) ** (1 / 3), atol=1e-12)
    assert np.allclose(beta_ppf(q, 1.0, 1.0), q, atol=1e-12)
    # The scheduler's Beta(0.6, 0.6): symmetric, and the CDF inverts the quantile function.
    ppf = beta_ppf(q, 0.6, 0.6)
    assert np.allclose(ppf + ppf[::-1], 1, atol=1e-12) and ppf[20] == pytest.approx(0.5, abs=1e-12)
    assert np.allclose(beta_cdf(ppf, 0.6, 0.6), q, atol=1e-12)
    assert np.all(np.diff(ppf) > 0)


def test_beta_ppf_matches_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    q = np.linspace(0, 1, 101)
    for a, b in [(0.6, 0.6), (0.3, 2.5), (3.0, 0.7)]:
        assert np.allclose(beta_ppf(q, a, b), stats.beta.ppf(q, a, b), atol=1e-10)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_denoise_below_one_takes_a_strict_suffix_of_a_longer_schedule(noise_schedule, name):
    partial = sigmas_for(name, noise_schedule, 10, denoise=0.4)
    longer = SCHEDULES[name](noise_schedule, 25)  # int(10 / 0.4)
    assert torch.equal(partial, longer[-11:])
    assert partial.shape == (11,) and partial[0] < longer[0]
    assert torch.equal(sigmas_for(name, noise_schedule, 10), SCHEDULES[name](noise_schedule, 10))


def test_sigmas_for_rejects_bad_arguments(noise_schedule):
    with pytest.raises(ValueError, match="unknown schedule"):
        sigmas_for("linear", noise_schedule, 10)
    with pytest.raises(ValueError, match="denoise"):
        sigmas_for("karras", noise_schedule, 10, denoise=0.0)
    with pytest.raises(ValueError, match="steps"):
        sigmas_for("karras", noise_schedule, 0)


# ---------------------------------------------------------------------------------------------
# Denoiser and classifier-free guidance


class ToyEpsNet:
    """A deterministic stand-in for the U-Net: a fixed channel mix through tanh, timestep-dependent
    gain and bias (so the sigma -> t mapping matters), and attention-pooled context."""

    def __init__(self, channels: int = 4, context_dim: int = 6, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(channels, channels, generator=generator, dtype=torch.float64) / channels**0.5
        self.bias = torch.randn(channels, generator=generator, dtype=torch.float64) * 0.3
        self.query = torch.randn(context_dim, generator=generator, dtype=torch.float64)
        self.to_channels = torch.randn(context_dim, channels, generator=generator, dtype=torch.float64) * 0.3
        self.calls: list[int] = []  # batch size of each call

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        self.calls.append(x_in.shape[0])
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1, 1, 1)
        h = torch.einsum("oc,bchw->bohw", self.mix, x_in) * (1 + 0.5 * torch.sin(t / 300))
        h = h + self.bias.reshape(1, -1, 1, 1) * torch.cos(t / 200)
        if context is not None:  # softmax pooling over tokens, like one cross-attention head
            weights = torch.softmax(context @ self.query, dim=1)
            pooled = torch.einsum("bk,bkd->bd", weights, context)
            h = h + (pooled @ self.to_channels).reshape(x_in.shape[0], -1, 1, 1)
        return 0.8 * x_in + 0.3 * torch.tanh(h)


def test_eps_denoiser_scales_input_maps_timestep_and_subtracts_noise(noise_schedule):
    seen = {}

    def net(x_in, t, context):
        seen.update(x_in=x_in, t=t, context=context)
        return torch.full_like(x_in, 0.5)

    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = noise_schedule.sigmas[[999, 250]]
    denoised = Denoiser(net, noise_schedule)(x, sigma, "cond")
    assert torch.allclose(seen["x_in"], x / (sigma**2 + 1).sqrt().reshape(-1, 1, 1, 1))
    assert torch.allclose(seen["t"], torch.tensor([999.0, 250.0], dtype=torch.float64))
    assert seen["context"] == "cond"
    assert torch.allclose(denoised, x - 0.5 * sigma.reshape(-1, 1, 1, 1))


def test_v_prediction_denoiser_recovers_x0_from_the_true_v(noise_schedule):
    # Forward process in VP form: z = alpha x0 + s eps, alpha = 1/sqrt(1+sigma^2), s = sigma alpha,
    # v = alpha eps - s x0 (Salimans & Ho 2022). The sampler's x is z / alpha = x0 + sigma eps.
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64)
    eps = torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([7.0, 0.3], dtype=torch.float64)
    s4 = sigma.reshape(-1, 1, 1, 1)
    alpha, s = 1 / (1 + s4**2).sqrt(), s4 / (1 + s4**2).sqrt()
    v = alpha * eps - s * x0
    x = x0 + s4 * eps
    denoised = Denoiser(lambda x_in, t, c: v, noise_schedule, "v_prediction")(x, sigma, None)
    assert torch.allclose(denoised, x0, atol=1e-12)
    # And term by term: c_skip = 1/(sigma^2+1), c_out = -sigma/sqrt(sigma^2+1) (sigma_data = 1).
    # For sigma = 0.3, x = 1, F = 2: 1/1.09 - 0.3/sqrt(1.09) * 2.
    one = Denoiser(lambda x_in, t, c: torch.full_like(x_in, 2.0), noise_schedule, "v_prediction")
    value = one(torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64), None)
    assert value.item() == pytest.approx(1 / 1.09 - 0.3 / math.sqrt(1.09) * 2, rel=1e-14)
    with pytest.raises(ValueError, match="prediction_type"):
        Denoiser(lambda *a: None, noise_schedule, "sample")


def make_conditioning(batch: int, tokens: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, tokens, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cfg_scale_one_is_cond_only_in_a_single_unbatched_pass(noise_schedule):
    net = ToyEpsNet()
    denoiser = Denoiser(net, noise_schedule)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([3.0, 3.0], dtype=torch.float64)
    cond, uncond = make_conditioning(2, 77, 1), make_conditioning(2, 77, 2)
    guided = CFGDenoiser(denoiser, cond, uncond, 1.0)(x, sigma)
    assert net.calls == [2]
    assert torch.equal(guided, denoiser(x, sigma, cond))


def test_cfg_batches_cond_and_uncond_into_one_forward_that_equals_two(noise_schedule):
    net = ToyEpsNet()
    denoiser = Denoiser(net, noise_schedule)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([5.0, 0.7], dtype=torch.float64)
    cond, uncond = make_conditioning(2, 77, 1), make_conditioning(2, 77, 2)
    guided = CFGDenoiser(denoiser, cond, uncond, 7.5)(x, sigma)
    assert net.calls == [4]
    denoised_cond, denoised_uncond = denoiser(x, sigma, cond), denoiser(x, sigma, uncond)
    assert torch.allclose(guided, denoised_uncond + 7.5 * (denoised_cond - denoised_uncond), atol=1e-12)


def test_cfg_repeats_the_shorter_conditioning_to_a_common_token_length(noise_schedule):
    net = ToyEpsNet()
    denoiser = Denoiser(net, noise_schedule)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([2.0, 2.0], dtype=torch.float64)
    cond, uncond = make_conditioning(1, 154, 1), make_conditioning(1, 77, 2)  # batch 1 broadcasts
    guided = CFGDenoiser(denoiser, cond, uncond, 4.0)(x, sigma)
    assert net.calls == [4]
    # Repeating tokens leaves attention unchanged, so this equals the unpadded separate passes.
    denoised_cond = denoiser(x, sigma, cond.expand(2, -1, -1))
    denoised_uncond = denoiser(x, sigma, uncond.expand(2, -1, -1))
    assert torch.allclose(guided, denoised_uncond + 4.0 * (denoised_cond - denoised_uncond), atol=1e-12)
    with pytest.raises(ValueError, match="cond has batch 3"):
        CFGDenoiser(denoiser, make_conditioning(3, 77, 1), uncond, 4.0)(x, sigma)


# ---------------------------------------------------------------------------------------------
# Samplers against diffusers


class RoundedTimesteps(NoiseSchedule):
    """diffusers' DPM-Solver and UniPC round the timestep they give the network when the sigmas are
    Karras ones; the comparison needs our network to see the same timesteps."""

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        return super().sigma_to_t(sigma).round()


class Reference:
    """A toy network, a starting latent and both sides' sampling loops."""

    def __init__(self):
        self.net = ToyEpsNet()
        self.noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run_diffusers(self, scheduler, steps: int, seed: int | None = None, **step_options) -> torch.Tensor:
        scheduler.set_timesteps(steps)
        x = self.noise * scheduler.init_noise_sigma
        if seed is not None:
            step_options["generator"] = torch.Generator().manual_seed(seed)
        for t in scheduler.timesteps:
            eps = self.net(scheduler.scale_model_input(x, t), t.expand(x.shape[0]), None)
            x = scheduler.step(eps, t, x, **step_options).prev_sample
        return x

    def run_ours(self, sampler, scheduler, sigmas: torch.Tensor, vp: bool = False, rounded_t: bool = False,
                 seed: int | None = None, noise_dtype=torch.float64, **options) -> torch.Tensor:
        sigmas = sigmas.double()
        schedule_type = RoundedTimesteps if rounded_t else NoiseSchedule
        denoiser = Denoiser(self.net, schedule_type(diffusers_sigmas(scheduler).double()))
        x = self.noise * ((1 + sigmas[0] ** 2).sqrt() if vp else sigmas[0])
        noise_sampler = None
        if seed is not None:  # draw exactly what diffusers' step() draws from its generator
            generator = torch.Generator().manual_seed(seed)
            noise_sampler = lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=noise_dtype).double()
        x = sampler(denoiser, x, sigmas, extra_args={"cond": None}, noise_sampler=noise_sampler, **options)
        return x / (1 + sigmas[-1] ** 2).sqrt() if vp else x


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def euler_sigmas(steps: int, **config) -> torch.Tensor:
    scheduler = EulerDiscreteScheduler(**SD1_CONFIG, **config)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.isfinite(theirs).all()
    difference = (ours - theirs).abs().max().item()
    assert difference < SAMPLER_TOLERANCE, f"max |ours - diffusers| = {difference:.3g}"


@pytest.mark.parametrize("steps, config", [(10, {}), (25, {}), (10, dict(use_karras_sigmas=True))])
def test_euler_matches_diffusers(reference, steps, config):
    scheduler = EulerDiscreteScheduler(**SD1_CONFIG, **config)
    theirs = reference.run_diffusers(scheduler, steps)
    assert_same(reference.run_ours(sample_euler, scheduler, scheduler.sigmas), theirs)


@pytest.mark.parametrize("steps", [10, 25])
def test_euler_ancestral_matches_diffusers_with_the_same_noise(reference, steps):
    scheduler = EulerAncestralDiscreteScheduler(**SD1_CONFIG)
    theirs = reference.run_diffusers(scheduler, steps, seed=5)
    assert_same(reference.run_ours(sample_euler_ancestral, scheduler, scheduler.sigmas, seed=5), theirs)


@pytest.mark.parametrize(
    "sampler, scheduler_type, seed",
    [
        (sample_heun, HeunDiscreteScheduler, None),
        (sample_dpm_2, KDPM2DiscreteScheduler, None),
        (sample_dpm_2_ancestral, KDPM2AncestralDiscreteScheduler, 7),
    ],
)
@pytest.mark.parametrize("steps", [10, 25])
def test_two_stage_samplers_match_diffusers(reference, sampler, scheduler_type, seed, steps):
    # These schedulers interleave the two model calls of each step in their own timestep list;
    # the step sigmas are the plain Euler ones.
    scheduler = scheduler_type(**SD1_CONFIG)
    theirs = reference.run_diffusers(scheduler, steps, seed=seed)
    assert_same(reference.run_ours(sampler, scheduler, euler_sigmas(steps), seed=seed), theirs)


class GaussLegendreQuad:
    """Stands in for scipy.integrate (not installed) inside diffusers' LMS scheduler: it only
    integrates Lagrange polynomials of degree <= 3, which 8-point Gauss-Legendre does exactly."""

    @staticmethod
    def quad(f, a, b, epsrel=None):
        nodes, weights = np.polynomial.legendre.leggauss(8)
        middle, half = (a + b) / 2, (b - a) / 2
        return half * sum(w * f(middle + half * node) for node, w in zip(nodes, weights)), 0.0


@pytest.mark.parametrize("steps", [10, 25])
def test_lms_matches_diffusers(reference, monkeypatch, steps):
    monkeypatch.setattr(scheduling_lms_discrete, "integrate", GaussLegendreQuad, raising=False)
    scheduler = scheduling_lms_discrete.LMSDiscreteScheduler(**SD1_CONFIG)
    theirs = reference.run_diffusers(scheduler, steps)
    assert_same(reference.run_ours(sample_lms, scheduler, scheduler.sigmas), theirs)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [10, 25])
def test_ddim_matches_diffusers_on_the_ddim_uniform_schedule(reference, noise_schedule, eta, steps):
    # SD1.x's DDIM config ("leading", steps_offset=1) with set_alpha_to_one so the last step goes
    # to sigma 0; its timesteps are exactly our ddim_uniform schedule.
    scheduler = DDIMScheduler(**SD1_CONFIG, clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading")
    theirs = reference.run_diffusers(scheduler, steps, seed=3, eta=eta)
    timesteps = scheduler.timesteps
    sigmas = torch.cat([diffusers_sigmas(scheduler)[timesteps], torch.zeros(1)])
    assert relative_error(ddim_uniform_sigmas(noise_schedule, steps), sigmas) < 3e-5
    assert_same(reference.run_ours(sample_ddim, scheduler, sigmas, vp=True, seed=3, eta=eta), theirs)


@pytest.mark.parametrize("steps", [10, 25])
def test_dpmpp_2m_karras_matches_diffusers(reference, noise_schedule, steps):
    # final_sigmas_type="zero" ends the schedule at 0 and makes diffusers' last step first order,
    # as ours is; lower_order_final/euler_at_final then change nothing.
    scheduler = DPMSolverMultistepScheduler(
        **SD1_CONFIG, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero"
    )
    theirs = reference.run_diffusers(scheduler, steps)
    assert relative_error(karras_sigmas(noise_schedule, steps), scheduler.sigmas) < 3e-5
    ours = reference.run_ours(sample_dpmpp_2m, scheduler, scheduler.sigmas, vp=True, rounded_t=True)
    assert_same(ours, theirs)


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("steps", [10, 25])
def test_dpmpp_2m_sde_matches_diffusers_with_the_same_noise(reference, solver_type, steps):
    scheduler = DPMSolverMultistepScheduler(
        **SD1_CONFIG, algorithm_type="sde-dpmsolver++", solver_order=2, solver_type=solver_type,
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    theirs = reference.run_diffusers(scheduler, steps, seed=11)
    ours = reference.run_ours(
        sample_dpmpp_2m_sde, scheduler, scheduler.sigmas, vp=True, rounded_t=True, seed=11,
        noise_dtype=torch.float32, solver_type=solver_type,  # diffusers draws this noise in float32
    )
    assert_same(ours, theirs)


@pytest.mark.parametrize("steps", [20, 25])
def test_dpmpp_3m_sde_without_noise_matches_diffusers_third_order(reference, steps):
    # eta = 0 is DPM-Solver++(3M). Its second-order warm-up step is diffusers' "heun" form. With
    # fewer than 15 steps diffusers also lowers the order of the second-to-last step, so use more.
    # (At eta > 0, diffusers' third-order SDE step has -0.5 where the exponential-integrator
    # derivation, and k-diffusion, have +0.5 in the D2 coefficient; we follow the derivation.)
    scheduler = DPMSolverMultistepScheduler(
        **SD1_CONFIG, algorithm_type="dpmsolver++", solver_order=3, solver_type="heun",
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    theirs = reference.run_diffusers(scheduler, steps)
    ours = reference.run_ours(sample_dpmpp_3m_sde, scheduler, scheduler.sigmas, vp=True, rounded_t=True, eta=0.0)
    assert_same(ours, theirs)


@pytest.mark.parametrize(
    "order, variant, final_sigmas_type",
    [
        (1, "bh2", "zero"),
        (2, "bh2", "zero"),
        (3, "bh2", "zero"),
        # diffusers' bh1 divides by B(h) = -h = -inf on a step to sigma 0 (NaN), so end at sigma_min.
        (2, "bh1", "sigma_min"),
        (3, "bh1", "sigma_min"),
        (3, "bh2", "sigma_min"),
    ],
)
@pytest.mark.parametrize("steps", [10, 25])
def test_uni_pc_matches_diffusers(reference, order, variant, final_sigmas_type, steps):
    scheduler = UniPCMultistepScheduler(
        **SD1_CONFIG, solver_order=order, solver_type=variant, final_sigmas_type=final_sigmas_type
    )
    theirs = reference.run_diffusers(scheduler, steps)
    ours = reference.run_ours(sample_uni_pc, scheduler, scheduler.sigmas, vp=True, order=order, variant=variant)
    assert_same(ours, theirs)


@pytest.mark.parametrize("steps", [4, 8])
def test_lcm_matches_diffusers_with_the_same_noise(reference, steps):
    # diffusers applies LCM's boundary condition c_skip/c_out at timestep * timestep_scaling; a huge
    # scaling makes it the identity (c_skip ~ 1e-12), leaving the multistep consistency sampler.
    scheduler = LCMScheduler(**SD1_CONFIG, timestep_scaling=1e6)
    theirs = reference.run_diffusers(scheduler, steps, seed=13)
    sigmas = torch.cat([diffusers_sigmas(scheduler)[scheduler.timesteps], torch.zeros(1)])
    assert_same(reference.run_ours(sample_lcm, scheduler, sigmas, vp=True, seed=13), theirs)


# ---------------------------------------------------------------------------------------------
# Samplers on Gaussian data, where the probability-flow ODE has a closed form

DATA_STD = 0.5


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser for data ~ N(0, DATA_STD^2): E[x0 | x] = x * c^2 / (c^2 + sigma^2)."""
    return x * DATA_STD**2 / (DATA_STD**2 + sigma.reshape(-1, 1, 1, 1) ** 2)


DETERMINISTIC = {
    "euler": ({}, 1),
    "ddim": ({}, 1),
    "euler_ancestral": ({"eta": 0.0}, 1),
    "heun": ({}, 2),
    "dpm_2": ({}, 2),
    "dpm_2_ancestral": ({"eta": 0.0}, 2),
    "lms": ({}, 2),
    "dpmpp_2m": ({}, 2),
    "dpmpp_2m_sde": ({"eta": 0.0}, 2),
    "dpmpp_sde": ({"eta": 0.0}, 2),
    "dpmpp_3m_sde": ({"eta": 0.0}, 2),
    "uni_pc": ({}, 2),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_samplers_converge_at_their_order(noise_schedule, name):
    # x(sigma) = x(sigma_0) * sqrt(c^2 + sigma^2) / sqrt(c^2 + sigma_0^2) exactly. We stop at
    # sigma_min: the jump to 0 is first order in every sampler and would mask the rest. Multistep
    # methods warm up at first/second order, so third-order ones are only checked for >= 2.
    options, order = DETERMINISTIC[name]
    x_unit = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (20, 40, 80):
        sigmas = karras_sigmas(noise_schedule, steps + 1).double()[:-1]
        x = x_unit * sigmas[0]
        exact = x * math.sqrt(DATA_STD**2 + sigmas[-1] ** 2) / math.sqrt(DATA_STD**2 + sigmas[0] ** 2)
        out = SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=refuse_noise, **options)
        errors.append(((out - exact).abs().max() / exact.abs().max()).item())
    observed = math.log2(errors[1] / errors[2])
    assert errors[2] < 0.03
    assert observed > order - 0.2 and (order > 1 or observed < 1.2), f"errors {errors}, order {observed:.2f}"


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_3m_sde"])
def test_stochastic_samplers_reach_the_data_distribution(noise_schedule, name):
    # Starting from x ~ N(0, c^2 + sigma_0^2), an accurate sampler ends at N(0, c^2). 65k samples
    # give the std to ~0.2%; the observed 30-step bias is <= 1.5%.
    sigmas = karras_sigmas(noise_schedule, 30).double()
    x = torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x * math.sqrt(DATA_STD**2 + sigmas[0] ** 2)
    out = SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=default_noise_sampler(x, 3))
    assert out.std().item() == pytest.approx(DATA_STD, rel=0.03)
    assert abs(out.mean().item()) < 0.01


def refuse_noise(sigma: float, sigma_next: float) -> torch.Tensor:
    raise AssertionError("a deterministic sampler asked for noise")


# ---------------------------------------------------------------------------------------------
# Seeds, callbacks, cancellation


def test_initial_noise_is_seeded_float32_on_the_cpu():
    a, b = initial_noise((1, 4, 8, 8), seed=42), initial_noise((1, 4, 8, 8), seed=42)
    assert a.dtype == torch.float32 and a.device.type == "cpu" and a.shape == (1, 4, 8, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, initial_noise((1, 4, 8, 8), seed=43))
    assert torch.equal(a, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42)))


def test_noise_sampler_is_reproducible_and_matches_the_latent_dtype():
    x = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    first, second = default_noise_sampler(x, seed=7), default_noise_sampler(x, seed=7)
    draws = [first(1.0, 0.5), first(0.5, 0.1)]
    assert torch.equal(draws[0], second(1.0, 0.5)) and torch.equal(draws[1], second(0.5, 0.1))
    assert not torch.equal(draws[0], draws[1])
    assert draws[0].dtype == torch.float64
    # Drawn in float32 then converted, so the values do not depend on the latent's dtype.
    assert torch.equal(draws[0].float(), default_noise_sampler(x.float(), seed=7)(1.0, 0.5))


STOCHASTIC = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_3m_sde", "lcm"]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_are_reproducible_for_a_seed(noise_schedule, name):
    sigmas = karras_sigmas(noise_schedule, 6)
    x = initial_noise((1, 4, 8, 8), seed=1) * sigmas[0]
    run = lambda seed: SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=default_noise_sampler(x, seed))
    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_3m_sde", "ddim"])
def test_eta_zero_draws_no_noise(noise_schedule, name):
    sigmas = karras_sigmas(noise_schedule, 6)
    x = initial_noise((1, 4, 8, 8), seed=1) * sigmas[0]
    SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=refuse_noise, eta=0.0)


def test_sampler_registry_and_common_signature():
    from latentgraph.nodes.sd.names import SAMPLER_NAMES

    assert list(SAMPLERS) == list(SAMPLER_NAMES)  # the names are written once (tests/test_families.py)
    for sampler in SAMPLERS.values():
        parameters = list(inspect.signature(sampler).parameters)
        assert parameters[:6] == ["model", "x", "sigmas", "extra_args", "callback", "noise_sampler"]
        assert sampler.__doc__


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_sees_every_step(noise_schedule, name):
    sigmas = karras_sigmas(noise_schedule, 5)
    x = initial_noise((1, 4, 8, 8), seed=1) * sigmas[0]
    seen = []
    out = SAMPLERS[name](gaussian_denoiser, x, sigmas, callback=seen.append, noise_sampler=default_noise_sampler(x, 0))
    assert [info["i"] for info in seen] == list(range(5))
    assert [info["sigma"] for info in seen] == pytest.approx(sigmas[:-1].tolist())
    for info in seen:
        assert set(info) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        assert info["x"].shape == info["denoised"].shape == x.shape
    assert torch.isfinite(out).all() and out.shape == x.shape


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "uni_pc"])
def test_raising_in_the_callback_stops_sampling(noise_schedule, name):
    calls = []

    def model(x, sigma):
        calls.append(float(sigma[0]))
        return gaussian_denoiser(x, sigma)

    def cancel_at_step_2(info):
        if info["i"] == 2:
            raise Cancelled

    sigmas = karras_sigmas(noise_schedule, 10)
    x = initial_noise((1, 4, 8, 8), seed=1) * sigmas[0]
    with pytest.raises(Cancelled):
        SAMPLERS[name](model, x, sigmas, callback=cancel_at_step_2)
    assert calls[-1] == pytest.approx(float(sigmas[2]))  # nothing ran after step 2's first call


def test_churn_raises_sigma_before_the_model_call(noise_schedule):
    sigmas = karras_sigmas(noise_schedule, 4)
    x = initial_noise((1, 4, 8, 8), seed=1) * sigmas[0]
    seen = []
    sample_euler(gaussian_denoiser, x, sigmas, callback=seen.append, noise_sampler=default_noise_sampler(x, 0), s_churn=1.0)
    assert all(info["sigma_hat"] == pytest.approx(info["sigma"] * 1.25) for info in seen)  # gamma = 1 / 4


# ---------------------------------------------------------------------------------------------
# Preview


def test_latent_preview_is_a_quick_rgb_image_of_the_latent_size():
    latent = initial_noise((2, 4, 64, 80), seed=0)
    start = time.perf_counter()
    image = latent_preview(latent, SD1.latent)
    assert time.perf_counter() - start < 0.5
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (80, 64)
    # A zero latent maps to mid-grey; the first channel pushes towards warm colours.
    assert latent_preview(torch.zeros(4, 2, 2), SD1.latent).getpixel((0, 0)) == (128, 128, 128)
    red, green, blue = latent_preview(torch.tensor([1.0, 0, 0, 0]).reshape(4, 1, 1), SD1.latent).getpixel((0, 0))
    assert red > blue > 128
    with pytest.raises(ValueError, match="latent_preview"):
        latent_preview(torch.zeros(3, 8, 8), SD1.latent)
