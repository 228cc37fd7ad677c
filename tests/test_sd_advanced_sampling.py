"""Sampling in stages (ksampler_advanced), zero-terminal-SNR schedules and CFG rescale, checked
against diffusers and against themselves switched off.

Our side runs graphs through the executor on the tiny SD1.x checkpoint; the reference is the same
StableDiffusionPipeline as in test_sd_pipeline.py (its fixture, prompts and tolerances, started
from the same point as described there: our starting x divided by the scheduler's
init_noise_sigma). All comparisons use Euler, a k-diffusion-form scheduler, whose sample is x itself.

* ksampler_advanced: a split into steps 0..k (leftover noise) and k..N (no noise added) is one
  N-step run for single-step deterministic samplers; diffusers' SD1 pipeline has no
  denoising_end / denoising_start, so the two stages are run there with the custom sigmas of each
  stage (`sigmas=`), split where diffusers' SDXL pipelines would split for denoising_end = 0.8.
* model_sampling: v-prediction with the zero-terminal-SNR schedule (Lin et al. 2023) against
  EulerDiscreteScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
  timestep_spacing="trailing"), whose sigmas are our "simple" schedule's when steps divide 1000.
* rescale_cfg: CFG rescale against the pipeline's guidance_rescale, for eps and for v.

Observed (10 steps, 128x128, one thread), max |ours - diffusers| / max |their latent|, against
LATENT_RTOL = 1e-4 (test_sd_pipeline's), and what the feature switched off or misplaced gives:

    base + refiner split at denoising_end 0.8 (step 6)  leftover 2.9e-6, final 2.9e-6   split at 8: 0.13
    zero-SNR v-prediction, Euler trailing             1.4e-5 (first sigma's float32 unit, see the test)
                                                      plain schedule: 0.026, epsilon: 2.8e3
    guidance_rescale 0.7, eps, Euler normal           2.2e-6    no rescale: 0.12
    guidance_rescale 0.7, zero-SNR v                  1.4e-5    no rescale: 0.22

Two stages against one run of ours (64x64): 0 for euler, ddim, and dpmpp_2m split before its last
step; dpmpp_2m split mid-way restarts at first order (5.3e-3).
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from latentgraph.nodes.sampling import advanced_sigmas
from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser, GuidanceEntry
from latentgraph.nodes.sd.families import SD1
from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry, DiffusionModel, Latent, Noise, SamplerChoice
from latentgraph.nodes.sd.sample import denoise_latents, guided_model
from latentgraph.nodes.sd.samplers import SAMPLERS, default_noise_sampler, initial_noise
from latentgraph.nodes.sd.schedules import (
    SCHEDULES,
    ZERO_SNR_LAST_ALPHAS_CUMPROD,
    sigmas_for,
    zero_terminal_snr,
)
import test_sd_pipeline
from test_sd_pipeline import CFG, LATENT_RTOL, NEGATIVE, PROMPT, SD1_CONFIG, SEED, txt2img

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from diffusers.schedulers import EulerDiscreteScheduler
    from diffusers.schedulers.scheduling_euler_discrete import rescale_zero_terminal_snr

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

# test_sd_pipeline's fixtures: diffusers' pipeline on the tiny checkpoint, and one thread (autouse).
pipeline = test_sd_pipeline.pipeline
one_thread = test_sd_pipeline.one_thread

STEPS = 10
SIZE = 128  # pixels (a 16x16 latent) for the comparisons with diffusers
SMALL = 64  # pixels (8x8) for our runs against each other
REFINER_PROMPT = "a green square on a yellow background, bottom right"


# ---------------------------------------------------------------------------------------------
# Graphs


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def base_graph(size: int, **nodes: dict) -> dict:
    """The txt2img workflow's loader, prompts and empty latent (a second prompt node, "refiner",
    for two-stage runs), with `nodes` added; the decode node decodes "out"."""
    document = txt2img(**{"latent.width": size, "latent.height": size, "positive.text": PROMPT,
                          "negative.text": NEGATIVE})
    graph = document["nodes"]
    del graph["sampler"], graph["save"]
    document.pop("ui", None)
    graph["refiner"] = {**graph["positive"], "inputs": {**graph["positive"]["inputs"], "text": REFINER_PROMPT}}
    graph["decode"]["inputs"]["latent"] = link("out", "latent")
    graph.update(nodes)
    return document


def sampler_node(kind: str = "ksampler", *, model: str = "checkpoint", latent: str = "latent",
                 positive: str = "positive", **inputs) -> dict:
    """A ksampler / ksampler_advanced node on the graph's model (or a model node's output)."""
    defaults = {"seed": SEED, "steps": STEPS, "cfg": CFG, "sampler": "euler", "scheduler": "normal"}
    return {"type": kind, "inputs": {
        "model": link(model, "model"), "positive": link(positive, "conditioning"),
        "negative": link("negative", "conditioning"), "latent": link(latent, "latent"), **defaults, **inputs,
    }}


def run(executor, document: dict, *outputs: str) -> dict:
    result = executor.run(document, outputs=list(outputs))
    assert result.status == "succeeded", result.errors
    return result.values


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    assert ours.shape == theirs.shape
    assert torch.isfinite(ours).all() and torch.isfinite(theirs).all()
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def diffusers_latents(pipe, scheduler, x_start: torch.Tensor, *, prompt: str = PROMPT, sigmas=None,
                      cfg: float = CFG, guidance_rescale: float = 0.0) -> torch.Tensor:
    """The pipeline's final latents (output_type="latent") from the k-diffusion-form sample
    `x_start`, with `STEPS` steps of `scheduler`'s spacing or the given custom `sigmas`."""
    probe = type(scheduler).from_config(scheduler.config)
    if sigmas is None:
        probe.set_timesteps(STEPS)
    else:
        probe.set_timesteps(sigmas=sigmas)
    latents = (x_start.double() / float(probe.init_noise_sigma)).float()  # the pipeline multiplies it back
    pipe.scheduler = scheduler
    size = x_start.shape[-1] * 8
    return pipe(
        prompt, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=STEPS, sigmas=sigmas,
        guidance_scale=cfg, guidance_rescale=guidance_rescale, latents=latents, output_type="latent",
    ).images


def starting_x(sigma_0: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """What denoise_latents starts from on an empty latent: initial_noise * sigmas[0] (float32)."""
    return initial_noise((1, 4, size // 8, size // 8), SEED) * sigma_0.float()


def euler_scheduler(**config) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(**SD1_CONFIG, **{"timestep_spacing": "linspace", **config})


def zero_snr_v_euler() -> EulerDiscreteScheduler:
    return euler_scheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")


# ---------------------------------------------------------------------------------------------
# ksampler_advanced: which sigmas


def test_advanced_sigmas_slice_the_full_schedule():
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])  # 5 steps
    assert advanced_sigmas(sigmas, 0, 10000, False).tolist() == sigmas.tolist()
    assert advanced_sigmas(sigmas, 0, 5, False).tolist() == sigmas.tolist()
    # Stopping early: the last sigma becomes 0 (denoise fully) unless the leftover noise is kept.
    assert advanced_sigmas(sigmas, 0, 2, False).tolist() == [8.0, 4.0, 0.0]
    assert advanced_sigmas(sigmas, 0, 2, True).tolist() == [8.0, 4.0, 2.0]
    assert advanced_sigmas(sigmas, 2, 10000, False).tolist() == [2.0, 1.0, 0.5, 0.0]
    assert advanced_sigmas(sigmas, 1, 3, True).tolist() == [4.0, 2.0, 1.0]
    assert advanced_sigmas(sigmas, 4, 10000, True).tolist() == [0.5, 0.0]
    # Nothing to walk: fewer than 2 sigmas.
    for start, end in ((3, 2), (3, 3), (5, 10000), (6, 10000), (9, 12)):
        assert len(advanced_sigmas(sigmas, start, end, False)) < 2
    # The full schedule is not modified in place.
    assert sigmas.tolist() == [8.0, 4.0, 2.0, 1.0, 0.5, 0.0]


# ---------------------------------------------------------------------------------------------
# ksampler_advanced: the two stages against one run


def two_stage_graph(sampler: str, scheduler: str, split: int, refiner: bool = False, size: int = SMALL) -> dict:
    """Nodes "one", a ksampler over all STEPS; "first", steps 0..split with leftover noise; "out",
    steps split..end from "first" without adding noise (with the "refiner" prompt if `refiner`)."""
    common = {"sampler": sampler, "scheduler": scheduler}
    return base_graph(
        size,
        one=sampler_node(**common, denoise=1.0),
        first=sampler_node("ksampler_advanced", **common, add_noise=True, start_step=0, end_step=split,
                           return_with_leftover_noise=True),
        out=sampler_node("ksampler_advanced", latent="first", positive="refiner" if refiner else "positive", **common,
                         add_noise=False, start_step=split, end_step=10000, return_with_leftover_noise=False),
    )


@pytest.mark.parametrize("sampler, scheduler, split", [
    ("euler", "normal", 4),
    ("euler", "karras", 7),
    ("ddim", "ddim_uniform", 5),
    # DPM-Solver++(2M) is multistep and its step to sigma 0 first order: split before the last
    # step, the second stage's single first-order step is the one run's last step.
    ("dpmpp_2m", "karras", STEPS - 1),
])
def test_two_stages_with_leftover_noise_equal_one_run(sd_executor, sampler, scheduler, split):
    values = run(sd_executor, two_stage_graph(sampler, scheduler, split), "one", "first", "out")
    one, first, out = (values[n]["latent"].samples for n in ("one", "first", "out"))
    error = relative(out, one)
    print(f"{sampler}/{scheduler} split at {split}: two stages vs one run {error:.3g} x max|latent|")
    assert error <= 1e-6  # observed: 0 (the same float32 operations in the same order)
    # The first stage stopped at sigma_split with its noise: far from the denoised result.
    sigma_split = sigmas_for(scheduler, SD1.schedule.build(), STEPS)[split].item()
    print(f"  first stage vs one run: std {(first - one).std():.3g}, sigma_{split} {sigma_split:.3g}")
    assert (first - one).std().item() > 0.1 * sigma_split


def test_multistep_samplers_restart_at_first_order_in_the_second_stage(sd_executor):
    # dpmpp_2m split mid-way: the second stage has no previous denoised estimate, so its first
    # step is first order where the one run takes a second-order step: close, but not rounding.
    # Observed: 5.3e-3 x max|latent|.
    values = run(sd_executor, two_stage_graph("dpmpp_2m", "karras", 5), "one", "out")
    error = relative(values["out"]["latent"].samples, values["one"]["latent"].samples)
    print(f"dpmpp_2m/karras split at 5: two stages vs one run {error:.3g} x max|latent|")
    assert 1e-4 < error < 0.1


def test_empty_step_ranges_return_the_latent_unchanged(sd_executor):
    start = {"sampler": "euler", "scheduler": "normal"}
    cases = {  # (start_step, end_step)
        "reversed": (6, 3), "same": (4, 4), "past_the_end": (STEPS, 10000), "far_past": (STEPS + 5, 10000),
    }
    document = base_graph(SMALL, out=sampler_node(**start, denoise=1.0), **{
        name: sampler_node("ksampler_advanced", latent="out", **start, add_noise=True, start_step=a, end_step=b,
                           return_with_leftover_noise=False)
        for name, (a, b) in cases.items()
    })
    values = run(sd_executor, document, "out", *cases)
    given = values["out"]["latent"].samples
    for name in cases:
        assert torch.equal(values[name]["latent"].samples, given), name


def test_add_noise_and_the_leftover_noise_flag_matter(sd_executor):
    common = {"sampler": "euler", "scheduler": "normal", "start_step": 0}
    document = base_graph(
        SMALL,
        out=sampler_node(denoise=1.0),
        full=sampler_node("ksampler_advanced", **common, add_noise=True, end_step=10000, return_with_leftover_noise=False),
        no_noise=sampler_node("ksampler_advanced", **common, add_noise=False, end_step=10000,
                              return_with_leftover_noise=False),
        denoised_at_5=sampler_node("ksampler_advanced", **common, add_noise=True, end_step=5,
                                   return_with_leftover_noise=False),
        noisy_at_5=sampler_node("ksampler_advanced", **common, add_noise=True, end_step=5,
                                return_with_leftover_noise=True),
    )
    values = run(sd_executor, document, "out", "full", "no_noise", "denoised_at_5", "noisy_at_5")
    one = values["out"]["latent"].samples
    # Steps 0..end with the seeded noise is exactly the one-node sampler.
    assert torch.equal(values["full"]["latent"].samples, one)
    # Without the noise the empty latent stays a very different (deterministic) thing.
    assert relative(values["no_noise"]["latent"].samples, one) > 0.1
    # Stopping at step 5: fully denoised (last sigma 0) vs with sigma_5 of noise left in.
    sigma_5 = sigmas_for("normal", SD1.schedule.build(), STEPS)[5].item()
    leftover = values["noisy_at_5"]["latent"].samples - values["denoised_at_5"]["latent"].samples
    print(f"leftover noise at step 5: std {leftover.std():.3g}, sigma_5 {sigma_5:.3g}")
    assert leftover.std().item() > 0.3 * sigma_5


def test_second_stage_step_noise_comes_from_seed_plus_one(tiny_sd15):
    # add_noise=False adds nothing, but the stochastic samplers' per-step noise still comes from
    # the seed + 1 stream (as in a one-stage run), not from the starting noise's.
    model = DiffusionModel(tiny_sd15.unet, SD1, SD1.schedule.build(), "epsilon", 4, "tiny")
    torch.manual_seed(0)
    cond = Conditioning((ConditioningEntry(torch.randn(1, 77, 64)),))
    uncond = Conditioning((ConditioningEntry(torch.randn(1, 77, 64)),))
    sigmas = sigmas_for("normal", model.schedule, STEPS)[4:]
    x = torch.randn(1, 4, 8, 8) * sigmas[0]
    given = x.clone()
    with torch.inference_mode():
        ours = denoise_latents(model, cond, uncond, Latent(x), Noise(SEED), sigmas, SamplerChoice("euler_ancestral"),
                               CFG, add_noise=False).samples
        expected = SAMPLERS["euler_ancestral"](guided_model(model, cond, uncond, CFG), x.clone(), sigmas,
                                               noise_sampler=default_noise_sampler(x, SEED + 1))
        other = denoise_latents(model, cond, uncond, Latent(x), Noise(SEED + 7), sigmas,
                                SamplerChoice("euler_ancestral"), CFG, add_noise=False).samples
    assert torch.equal(x, given)  # the input latent is not modified
    assert torch.equal(ours, expected)
    assert relative(other, ours) > 1e-2


# ---------------------------------------------------------------------------------------------
# ksampler_advanced against diffusers' denoising_end


def diffusers_denoising_end_steps(scheduler, denoising_end: float) -> int:
    """How many steps diffusers' SDXL pipeline keeps for `denoising_end` (pipeline_stable_diffusion_xl,
    "Apply denoising_end"): those whose timestep is at least round(T - denoising_end * T)."""
    T = scheduler.config.num_train_timesteps
    cutoff = round(T - denoising_end * T)  # diffusers: int(round(...))
    return len([t for t in scheduler.timesteps if t >= cutoff])


def test_denoising_end_is_a_timestep_cutoff_not_a_step_fraction():
    # diffusers' denoising_end = 0.8 keeps the steps whose timestep is >= 200, not 80% of the
    # steps. With Karras sigmas (dense at low noise), 20 steps: timesteps 999, 961.7, ..., 285.3,
    # 197.1, ...: the split is after step 12, not round(0.8 * 20) = 16; so ksampler_advanced's
    # end_step 12 (with the second stage's start_step 12) reproduces a diffusers base + refiner
    # at 0.8. For evenly spaced timesteps ("normal", "simple") the two agree.
    noise_schedule = SD1.schedule.build()
    karras = euler_scheduler(use_karras_sigmas=True)
    karras.set_timesteps(20)
    assert diffusers_denoising_end_steps(karras, 0.8) == 12 != round(0.8 * 20)
    assert karras.timesteps[11] > 200 > karras.timesteps[12]
    # The same split from our sigmas: our continuous timesteps agree with diffusers' to 1.2e-3
    # (its float32 training sigmas), far from the cutoff here (197.1 and 285.3 around 200).
    ours = noise_schedule.sigma_to_t(SCHEDULES["karras"](noise_schedule, 20)[:-1].double())
    assert int((ours >= 200).sum()) == 12
    assert torch.allclose(ours.float(), karras.timesteps, atol=1e-2)
    for name, config in (("normal", {}), ("simple", {"timestep_spacing": "trailing"})):
        scheduler = euler_scheduler(**config)
        scheduler.set_timesteps(20)
        assert diffusers_denoising_end_steps(scheduler, 0.8) == 16, name


def test_base_and_refiner_stages_match_diffusers_split_at_denoising_end(sd_executor, pipeline):
    # A base stage and a "refiner" stage with another prompt and another model (the same U-Net
    # read as v-prediction by model_sampling: as different as a refiner), Euler on Karras sigmas.
    # diffusers runs each stage with its custom sigmas (an eps, then a v-prediction Euler).
    # 10 steps: denoising_end 0.8 keeps 6 steps, where round(0.8 * 10) would be 8.
    # Observed: leftover latents 2.9e-6, final 2.9e-6 x max|latent|; split at 8: 0.13.
    karras = euler_scheduler(use_karras_sigmas=True)
    karras.set_timesteps(STEPS)
    split = diffusers_denoising_end_steps(karras, 0.8)
    assert split == 6
    sigmas = sigmas_for("karras", SD1.schedule.build(), STEPS)
    x_start = starting_x(sigmas[0])
    leftover = diffusers_latents(pipeline, euler_scheduler(), x_start, sigmas=sigmas[: split + 1].tolist())
    final = diffusers_latents(pipeline, euler_scheduler(prediction_type="v_prediction"), leftover,
                              prompt=REFINER_PROMPT, sigmas=sigmas[split:].tolist())

    def ours(at: int) -> tuple[torch.Tensor, torch.Tensor]:
        document = two_stage_graph("euler", "karras", at, refiner=True, size=SIZE)
        document["nodes"]["refiner_model"] = {"type": "model_sampling", "inputs": {
            "model": link("checkpoint", "model"), "prediction": "v_prediction", "zero_terminal_snr": False}}
        document["nodes"]["out"]["inputs"]["model"] = link("refiner_model", "model")
        values = run(sd_executor, document, "first", "out")
        return values["first"]["latent"].samples, values["out"]["latent"].samples

    first, out = ours(split)
    errors = relative(first, leftover), relative(out, final)
    print(f"base + refiner split at {split}: leftover {errors[0]:.3g}, final {errors[1]:.3g} x max|latent|")
    assert max(errors) <= LATENT_RTOL
    # Splitting at the step fraction instead gives the refiner fewer steps: a different image.
    _, out_at_8 = ours(round(0.8 * STEPS))
    mismatch = relative(out_at_8, final)
    print(f"split at 8 instead: final {mismatch:.3g} x max|latent|")
    assert mismatch > 100 * LATENT_RTOL


# ---------------------------------------------------------------------------------------------
# Zero terminal SNR


def test_zero_terminal_snr_schedule_matches_diffusers():
    original = SD1.schedule.build()
    rescaled = zero_terminal_snr(original)
    assert rescaled is not original and torch.equal(original.sigmas, SD1.schedule.build().sigmas)
    scheduler = euler_scheduler(rescale_betas_zero_snr=True)
    theirs = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
    # diffusers rescales float32 betas and takes their product in float32: 1.9e-5 apart (the
    # plain schedule: 1.3e-5, see test_sd_sampling); its algorithm in float64 agrees to rounding.
    assert ((rescaled.sigmas - theirs.double()).abs() / theirs.double()).max() < 3e-5
    betas = torch.linspace(SD1_CONFIG["beta_start"] ** 0.5, SD1_CONFIG["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    alphas_cumprod[-1] = 2**-24
    reference = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    assert ((rescaled.sigmas - reference).abs() / reference).max() < 1e-12
    # First timestep unchanged; the last one at alphas_cumprod 2**-24 (sigma ~4096), not infinite.
    assert ZERO_SNR_LAST_ALPHAS_CUMPROD == 2**-24
    assert rescaled.sigma_min == pytest.approx(original.sigma_min, rel=1e-12)
    assert rescaled.sigma_max == pytest.approx((2**24 - 1) ** 0.5, rel=1e-12)
    assert (rescaled.sigmas.diff() > 0).all() and (rescaled.sigmas[1:] > original.sigmas[1:]).all()
    # Every other timestep: sqrt(alphas_cumprod) is the original one minus the original last one,
    # scaled by first / (first - last).
    root = (1 / (1 + rescaled.sigmas[:-1] ** 2)).sqrt()
    original_root = (1 / (1 + original.sigmas**2)).sqrt()
    shift_scale = (original_root[0] - original_root[-1]) / original_root[0]
    assert torch.allclose(root * shift_scale + original_root[-1], original_root[:-1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("steps", [10, 20, 25])
def test_simple_schedule_on_zero_snr_is_diffusers_trailing_spacing(steps):
    rescaled = zero_terminal_snr(SD1.schedule.build())
    scheduler = zero_snr_v_euler()
    scheduler.set_timesteps(steps)
    ours = SCHEDULES["simple"](rescaled, steps)
    assert ours[-1] == 0 and scheduler.sigmas[-1] == 0
    error = ((ours[:-1].double() - scheduler.sigmas[:-1].double()).abs() / scheduler.sigmas[:-1].double()).max()
    assert error < 1e-5  # observed 1.2e-6 to 2.8e-6 (float32 sigmas)
    # sigma_max = sqrt(2**24 - 1): float32 rounds ours (from float64) and diffusers' a unit apart.
    assert ours[0].item() == pytest.approx(4096.0, rel=1e-6)
    assert float(scheduler.init_noise_sigma) == pytest.approx(ours[0].item(), rel=1e-6)


def zero_snr_graph(prediction: str = "v_prediction", zero_snr: bool = True, rescale: float | None = None,
                   scheduler: str = "simple") -> dict:
    nodes = {"sampling": {"type": "model_sampling", "inputs": {
        "model": link("checkpoint", "model"), "prediction": prediction, "zero_terminal_snr": zero_snr}}}
    model = "sampling"
    if rescale is not None:
        nodes["rescale"] = {"type": "rescale_cfg", "inputs": {"model": link(model, "model"), "multiplier": rescale}}
        model = "rescale"
    return base_graph(SIZE, out=sampler_node(model=model, scheduler=scheduler, denoise=1.0), **nodes)


def test_model_sampling_and_rescale_cfg_nodes_replace_the_model_fields(sd_executor):
    document = zero_snr_graph(rescale=0.4)
    document["nodes"]["plain"] = {"type": "model_sampling", "inputs": {
        "model": link("rescale", "model"), "prediction": "epsilon", "zero_terminal_snr": False}}
    values = run(sd_executor, document, "checkpoint", "sampling", "rescale", "plain")
    loaded, sampling, rescaled, plain = (values[n]["model"] for n in ("checkpoint", "sampling", "rescale", "plain"))
    assert (loaded.prediction_type, loaded.cfg_rescale) == ("epsilon", 0.0)
    assert sampling.prediction_type == "v_prediction" and sampling.unet is loaded.unet
    assert torch.equal(sampling.schedule.sigmas, zero_terminal_snr(loaded.schedule).sigmas)
    assert rescaled.cfg_rescale == 0.4 and rescaled.schedule is sampling.schedule and sampling.cfg_rescale == 0.0
    # Back to epsilon and the family's schedule (not rescaled twice); the CFG rescale is kept.
    assert plain.prediction_type == "epsilon" and plain.cfg_rescale == 0.4
    assert torch.equal(plain.schedule.sigmas, loaded.schedule.sigmas)


def test_zero_snr_v_prediction_txt2img_matches_diffusers(sd_executor, pipeline):
    # Observed: 1.4e-5 x max|latent| (max |latent| 6.7; see below). Mutations: the plain
    # schedule 0.026, epsilon 2.8e3 x max|latent| (an eps reading at sigma 4096 explodes).
    values = run(sd_executor, zero_snr_graph(), "sampling", "out")
    model = values["sampling"]["model"]
    sigmas = sigmas_for("simple", model.schedule, STEPS)
    theirs = diffusers_latents(pipeline, zero_snr_v_euler(), starting_x(sigmas[0]))
    error = relative(values["out"]["latent"].samples, theirs)
    print(f"zero-SNR v-prediction, Euler trailing: {error:.3g} x max|latent|")
    assert error <= LATENT_RTOL
    # Nearly all of that is the first sigma, sqrt(2**24 - 1): ours is it rounded to float32
    # (4095.99976), diffusers' float32 pow gives 4096.0, one unit above; from x = 4096 * noise the
    # first Euler step cancels down to ~18 * noise, so the unit shows (diffusers against itself
    # with that one sigma changed: 1.4e-5). Given our float32 sigmas (`sigmas=`; it then gives
    # the U-Net timesteps from its own float32 schedule), diffusers agrees 4x closer: 3.3e-6.
    ours_sigmas = diffusers_latents(pipeline, zero_snr_v_euler(), starting_x(sigmas[0]), sigmas=sigmas.tolist())
    error_same_sigmas = relative(values["out"]["latent"].samples, ours_sigmas)
    print(f"  with our float32 sigmas: {error_same_sigmas:.3g} x max|latent|")
    assert error_same_sigmas < error / 2
    # Each of prediction type and schedule matters.
    for label, document in (("epsilon", zero_snr_graph(prediction="epsilon")),
                            ("no zero SNR", zero_snr_graph(zero_snr=False))):
        mismatch = relative(run(sd_executor, document, "out")["out"]["latent"].samples, theirs)
        print(f"{label} vs zero-SNR v-prediction: {mismatch:.3g} x max|latent|")
        assert mismatch > 100 * LATENT_RTOL, label


def test_zero_snr_model_built_with_dataclasses_replace_matches_the_node(sd_executor):
    values = run(sd_executor, zero_snr_graph(), "checkpoint", "sampling")
    loaded, node_model = values["checkpoint"]["model"], values["sampling"]["model"]
    by_hand = dataclasses.replace(loaded, prediction_type="v_prediction", schedule=zero_terminal_snr(loaded.schedule))
    torch.manual_seed(1)
    cond = GuidanceEntry(torch.randn(1, 77, 64))
    x, sigma = torch.randn(1, 4, 8, 8) * 50, torch.tensor([50.0])
    with torch.inference_mode():
        a = Denoiser(by_hand.net, by_hand.schedule, by_hand.prediction_type)(x, sigma, cond.context)
        b = Denoiser(node_model.net, node_model.schedule, node_model.prediction_type)(x, sigma, cond.context)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# CFG rescale


class ToyNet:
    """A smooth stand-in network: output depends on the input, timestep and context."""

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_in * 0.7 + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)) + 1e-3 * t.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoiser_output_conversions_invert_each_other(prediction_type):
    denoiser = Denoiser(ToyNet(), SD1.schedule.build(), prediction_type)
    torch.manual_seed(2)
    x, sigma = torch.randn(2, 4, 8, 8, dtype=torch.float64) * 3, torch.tensor([3.0, 0.2], dtype=torch.float64)
    output = torch.randn_like(x)
    denoised = denoiser.denoised_from_output(x, sigma, output)
    assert torch.allclose(denoiser.output_from_denoised(x, sigma, denoised), output, rtol=0, atol=1e-12)
    s = sigma.reshape(-1, 1, 1, 1)
    expected = x - s * output if prediction_type == "epsilon" else x / (s**2 + 1) - s / (s**2 + 1).sqrt() * output
    assert torch.allclose(denoised, expected, rtol=0, atol=1e-12)
    # The denoiser's call is the same formula on the network's output, bit for bit.
    context = torch.randn(2, 77, 8, dtype=torch.float64)
    net_out = ToyNet()(x * (1 / (s**2 + 1).sqrt()), denoiser.schedule.sigma_to_t(sigma), context)
    assert torch.equal(denoiser(x, sigma, context), denoiser.denoised_from_output(x, sigma, net_out))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_cfg_rescale_is_diffusers_formula_in_the_output_space(prediction_type):
    denoiser = Denoiser(ToyNet(), SD1.schedule.build(), prediction_type)
    torch.manual_seed(3)
    x, sigma = torch.randn(2, 4, 8, 8, dtype=torch.float64) * 5, torch.tensor([5.0, 1.5], dtype=torch.float64)
    cond, uncond = torch.randn(1, 77, 8, dtype=torch.float64), torch.randn(1, 77, 8, dtype=torch.float64) + 1
    plain = CFGDenoiser(denoiser, cond, uncond, 6.0)
    off = CFGDenoiser(denoiser, cond, uncond, 6.0, rescale=0.0)
    assert torch.equal(off(x, sigma), plain(x, sigma))  # 0 is today's computation, bit for bit
    # Reference: diffusers' rescale_noise_cfg on the network outputs.
    s = sigma.reshape(-1, 1, 1, 1)
    t = denoiser.schedule.sigma_to_t(sigma)
    out_cond, out_uncond = (ToyNet()(x / (s**2 + 1).sqrt(), t, c.expand(2, -1, -1)) for c in (cond, uncond))
    guided = out_uncond + 6.0 * (out_cond - out_uncond)
    scaled = guided * out_cond.std(dim=(1, 2, 3), keepdim=True) / guided.std(dim=(1, 2, 3), keepdim=True)
    for phi in (0.7, 1.0):
        expected = denoiser.denoised_from_output(x, sigma, phi * scaled + (1 - phi) * guided)
        ours = CFGDenoiser(denoiser, cond, uncond, 6.0, rescale=phi)(x, sigma)
        assert torch.allclose(ours, expected, rtol=0, atol=1e-10), phi
        assert (ours - plain(x, sigma)).abs().max() > 1e-2
    # At sigma 0 there is no output space (eps = 0 / 0): the guided estimate as it is.
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.equal(CFGDenoiser(denoiser, cond, uncond, 6.0, rescale=0.7)(x, zero), plain(x, zero))
    # Without a negative side (or at cfg 1) there is nothing to rescale, as in diffusers.
    assert torch.equal(CFGDenoiser(denoiser, cond, None, 6.0, rescale=0.7)(x, sigma),
                       CFGDenoiser(denoiser, cond, None, 6.0)(x, sigma))


def test_cfg_rescale_rejects_bad_values_and_denoisers_it_cannot_convert():
    denoiser = Denoiser(ToyNet(), SD1.schedule.build())
    cond = torch.zeros(1, 77, 8)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="rescale"):
            CFGDenoiser(denoiser, cond, cond, 5.0, rescale=bad)
    with pytest.raises(TypeError, match="Denoiser"):
        CFGDenoiser(lambda x, sigma, context: x, cond, cond, 5.0, rescale=0.5)
    CFGDenoiser(lambda x, sigma, context: x, cond, cond, 5.0)  # fine without the rescale


@pytest.mark.parametrize("case", ["epsilon", "zero-snr-v"])
def test_rescale_cfg_txt2img_matches_diffusers_guidance_rescale(sd_executor, pipeline, case):
    # Observed: eps (Euler "normal") 2.2e-6, v (zero SNR, Euler trailing) 1.4e-5 x max|latent|
    # (the zero-SNR run's own error, see the test above); without the rescale 0.12 and 0.22.
    if case == "epsilon":
        document = zero_snr_graph(prediction="epsilon", zero_snr=False, rescale=0.7, scheduler="normal")
        make_scheduler, schedule = euler_scheduler, SD1.schedule.build()
        plain = zero_snr_graph(prediction="epsilon", zero_snr=False, scheduler="normal")
    else:
        document, make_scheduler = zero_snr_graph(rescale=0.7), zero_snr_v_euler
        schedule, plain = zero_terminal_snr(SD1.schedule.build()), zero_snr_graph()
    sigmas = sigmas_for("simple" if case != "epsilon" else "normal", schedule, STEPS)
    theirs = diffusers_latents(pipeline, make_scheduler(), starting_x(sigmas[0]), guidance_rescale=0.7)
    ours = run(sd_executor, document, "out")["out"]["latent"].samples
    error = relative(ours, theirs)
    print(f"{case} guidance_rescale 0.7: {error:.3g} x max|latent|")
    assert error <= LATENT_RTOL
    mismatch = relative(run(sd_executor, plain, "out")["out"]["latent"].samples, theirs)
    print(f"{case} without rescale vs guidance_rescale 0.7: {mismatch:.3g} x max|latent|")
    assert mismatch > 100 * LATENT_RTOL
