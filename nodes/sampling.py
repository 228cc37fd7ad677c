"""Sampling nodes: the one-node sampler and its step-range variant (sampling in stages), the stages
apart (noise, schedule, sampler, guided sampler), and the model's sampling settings (prediction
type, zero-terminal-SNR schedule, CFG rescale)."""

from __future__ import annotations

import time
from typing import Any, Iterator, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.latents import DOWNSCALE
from latentgraph.nodes.primitives import MAX_SEED
from latentgraph.nodes.sd.limits import require_within, steps_over
from latentgraph.nodes.sd.names import SAMPLER_NAMES, SCHEDULE_NAMES
from latentgraph.nodes.services import running_models, services_of

SamplerName = Literal[SAMPLER_NAMES]  # type: ignore[valid-type]  (the names are written once, in nodes.sd.names)
ScheduleName = Literal[SCHEDULE_NAMES]  # type: ignore[valid-type]


REFIT_THREADS = 2.0  # seconds between fittings of torch's CPU threads to the free cores during sampling


def _step_reporter(ctx: RunContext, model: Any):
    """Sampler step callback: node progress (also a cancel point) with a preview of the step's
    denoised latent when anyone listens, made and paced as nodes/previews.py says."""
    from latentgraph.nodes.previews import PreviewPace, previewer_for

    made: list[Any] = []  # [previewer or None, pace], settled when a preview is first wanted
    fitted = [time.monotonic()]

    def on_step(step: int, total: int, denoised: Any) -> None:
        if time.monotonic() - fitted[0] >= REFIT_THREADS:
            from latentgraph.nodes.cpu_load import fit_threads_for

            fitted[0] = time.monotonic()
            fit_threads_for(denoised.device)  # the machine got busier (or quieter) since the sampler started
        preview = None
        if ctx.wants_previews:
            if not made:
                made.extend((previewer_for(ctx, model), PreviewPace(asynchronous=denoised.device.type != "cpu")))
            make, pace = made
            if make is not None and pace.due(step, total):
                preview = pace.timed(lambda: make(denoised))
        ctx.progress(step, total, preview=preview)

    return on_step


def _steps_within_limits(inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
    if "steps" in inputs and (too_many := steps_over(inputs["steps"], services_of(services).limits)):
        yield "steps", too_many


def _check_sampling(ctx: RunContext, model: Any, latent: Any, steps: int, guided: bool,
                    conditionings: tuple[Any, ...] = ()) -> None:
    """Refuse, before the first step, sampling over the run limits: the latent's image size and
    batch, the steps, and the memory estimate (`nodes.sd.memory.sampling_memory`, with the
    ControlNets the `conditionings` carry) against what the model's device has free."""
    from latentgraph.nodes.sd.controlnet import control_configs
    from latentgraph.nodes.sd.limits import require_memory
    from latentgraph.nodes.sd.memory import sampling_memory

    limits = services_of(ctx).limits
    batch, channels, height, width = latent.samples.shape
    size = (width * DOWNSCALE, height * DOWNSCALE)
    require_within(limits, "the latent", size=size, batch=batch)
    require_within(limits, "the sampler", steps=steps)
    estimate = sampling_memory(model.unet.config, batch, channels, height, width, model.dtype.itemsize,
                               guided, model.device, controlnets=control_configs(*conditionings))
    require_memory(estimate, model.device, limits, f"sampling {batch} x {size[0]}x{size[1]}")
    from latentgraph.nodes.cpu_load import fit_threads_for

    fit_threads_for(model.device)  # as many torch threads as other processes leave cores free (nodes/cpu_load.py)


@node("ksampler", category="sampling", title="Sampler")
class KSampler(Node):
    """Denoise a latent with a prompt: seeded noise, a schedule of noise levels, a sampler and
    classifier-free guidance in one node. denoise < 1 keeps part of the input latent (img2img)."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    positive: Any = Input(port=ports.CONDITIONING, description="what the image should show")
    negative: Any = Input(port=ports.CONDITIONING, description="what it should not show")
    latent: Any = Input(port=ports.LATENT, description="empty latent (txt2img) or encoded image (img2img)")
    seed: int = Input(0, ge=0, le=MAX_SEED, widget="seed", description="noise seed; the same seed gives the same image on any device")
    steps: int = Input(20, ge=1, le=1000, description="sampling steps")
    cfg: float = Input(7.0, ge=0.0, le=100.0, step=0.1, description="guidance scale; 1 disables the negative prompt")
    sampler: SamplerName = Input("dpmpp_2m", description="the solver")
    scheduler: ScheduleName = Input("karras", description="how noise levels are spaced")
    denoise: float = Input(1.0, ge=0.0, le=1.0, step=0.01, description="how much of the latent to replace")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the denoised latent")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return _steps_within_limits(inputs, services)

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Noise, SamplerChoice
        from latentgraph.nodes.sd.sample import denoise_latents
        from latentgraph.nodes.sd.schedules import sigmas_for

        if self.denoise == 0:
            return self.Outputs(latent=self.latent)
        _check_sampling(ctx, self.model, self.latent, self.steps, guided=self.cfg != 1,
                        conditionings=(self.positive, self.negative))
        sigmas = sigmas_for(self.scheduler, self.model.schedule, self.steps, self.denoise)
        with running_models(ctx):
            latent = denoise_latents(self.model, self.positive, self.negative, self.latent, Noise(self.seed), sigmas,
                                     SamplerChoice(self.sampler), self.cfg, _step_reporter(ctx, self.model))
        return self.Outputs(latent=latent)


def advanced_sigmas(sigmas: Any, start_step: int, end_step: int, return_with_leftover_noise: bool) -> Any:
    """The part of a full schedule (steps + 1 sigmas) that steps start_step to end_step walk.

    The sigmas from index start_step to end_step (both clamped to the schedule); when that stops
    before the end and return_with_leftover_noise is False, the last one is replaced by 0, so the
    last step denoises fully. Fewer than 2 sigmas (nothing to walk) come back as they are.
    """
    part = sigmas[start_step: end_step + 1].clone()
    if len(part) >= 2 and not return_with_leftover_noise and end_step < len(sigmas) - 1:
        part[-1] = 0
    return part


@node("ksampler_advanced", category="sampling", title="Sampler (advanced)")
class KSamplerAdvanced(Node):
    """The sampler over a range of steps of a schedule, for sampling in stages: a base model runs
    steps 0 to k and returns its leftover noise, a refiner (or another prompt) continues from step
    k without adding noise. A range that is empty returns the latent unchanged."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    positive: Any = Input(port=ports.CONDITIONING, description="what the image should show")
    negative: Any = Input(port=ports.CONDITIONING, description="what it should not show")
    latent: Any = Input(port=ports.LATENT, description="empty latent, encoded image, or an earlier stage's noisy latent")
    add_noise: bool = Input(True, description="add the seeded noise first; off to continue an earlier stage's leftover noise")
    seed: int = Input(0, ge=0, le=MAX_SEED, widget="seed", description="noise seed (stochastic samplers' step noise too)")
    steps: int = Input(20, ge=1, le=1000, description="steps of the whole schedule (all stages)")
    cfg: float = Input(7.0, ge=0.0, le=100.0, step=0.1, description="guidance scale; 1 disables the negative prompt")
    sampler: SamplerName = Input("dpmpp_2m", description="the solver")
    scheduler: ScheduleName = Input("karras", description="how noise levels are spaced")
    start_step: int = Input(0, ge=0, le=10000, description="first step of the schedule to take")
    end_step: int = Input(10000, ge=0, le=10000, description="step to stop at (past the last: run to the end)")
    return_with_leftover_noise: bool = Input(False, description="stop at end_step's noise level instead of denoising fully")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the latent after the chosen steps")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return _steps_within_limits(inputs, services)

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Noise, SamplerChoice
        from latentgraph.nodes.sd.sample import denoise_latents
        from latentgraph.nodes.sd.schedules import sigmas_for

        sigmas = sigmas_for(self.scheduler, self.model.schedule, self.steps)
        sigmas = advanced_sigmas(sigmas, self.start_step, self.end_step, self.return_with_leftover_noise)
        if len(sigmas) < 2:
            return self.Outputs(latent=self.latent)
        _check_sampling(ctx, self.model, self.latent, self.steps, guided=self.cfg != 1,
                        conditionings=(self.positive, self.negative))
        with running_models(ctx):
            latent = denoise_latents(self.model, self.positive, self.negative, self.latent, Noise(self.seed), sigmas,
                                     SamplerChoice(self.sampler), self.cfg, _step_reporter(ctx, self.model),
                                     add_noise=self.add_noise)
        return self.Outputs(latent=latent)


@node("model_sampling", category="advanced/model", title="Model sampling")
class ModelSampling(Node):
    """Override what the model predicts and its training noise schedule: for v-prediction
    checkpoints the loader takes for epsilon ones, and models trained with zero terminal SNR
    (Lin et al. 2023), whose last timestep is pure noise."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    prediction: Literal["epsilon", "v_prediction"] = Input("epsilon", description="what the network predicts: the noise (epsilon) or v")
    zero_terminal_snr: bool = Input(False, description="rescale the family's schedule so its last timestep has zero SNR")

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the model with that prediction type and schedule")

    def run(self, ctx: RunContext) -> Outputs:
        import dataclasses

        from latentgraph.nodes.sd.schedules import zero_terminal_snr

        schedule = self.model.spec.schedule.build()  # the family's, so applying the node twice rescales once
        if self.zero_terminal_snr:
            schedule = zero_terminal_snr(schedule)
        return self.Outputs(model=dataclasses.replace(self.model, prediction_type=self.prediction, schedule=schedule))


@node("rescale_cfg", category="advanced/model", title="Rescale CFG")
class RescaleCfg(Node):
    """CFG rescale (Lin et al. 2023; diffusers' guidance_rescale): bring the guided prediction's
    spread back to the positive prompt's, against the over-saturation of high guidance scales
    (mostly with v-prediction, zero-terminal-SNR models)."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    multiplier: float = Input(0.7, ge=0.0, le=1.0, step=0.01, description="how much of the rescaled prediction to use (0: plain CFG)")

    class Outputs(NodeOutputs):
        model: Any = Output(port=ports.MODEL, description="the model with CFG rescale")

    def run(self, ctx: RunContext) -> Outputs:
        import dataclasses

        return self.Outputs(model=dataclasses.replace(self.model, cfg_rescale=self.multiplier))


@node("noise", category="sampling/custom", title="Noise")
class NoiseNode(Node):
    """Seeded starting noise for the guided sampler."""

    seed: int = Input(0, ge=0, le=MAX_SEED, widget="seed", description="the seed")

    class Outputs(NodeOutputs):
        noise: Any = Output(port=ports.NOISE, description="the noise source")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Noise

        return self.Outputs(noise=Noise(self.seed))


@node("scheduler", category="sampling/custom", title="Schedule")
class Scheduler(Node):
    """The noise levels (sigmas) a sampler walks down, from the model's training schedule."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model (its training noise schedule)")
    schedule: ScheduleName = Input("karras", description="how noise levels are spaced")
    steps: int = Input(20, ge=1, le=1000, description="sampling steps")
    denoise: float = Input(1.0, gt=0.0, le=1.0, step=0.01, description="below 1, start part-way down (img2img)")

    class Outputs(NodeOutputs):
        sigmas: Any = Output(port=ports.SIGMAS, description="steps + 1 noise levels ending in 0")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return _steps_within_limits(inputs, services)

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.schedules import sigmas_for

        require_within(services_of(ctx).limits, "the schedule", steps=self.steps)
        return self.Outputs(sigmas=sigmas_for(self.schedule, self.model.schedule, self.steps, self.denoise))


@node("sampler_select", category="sampling/custom", title="Sampler choice")
class SamplerSelect(Node):
    """Pick a sampler and its options for the guided sampler."""

    sampler: SamplerName = Input("euler", description="the solver")
    eta: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="ancestral/SDE noise amount (0 makes them deterministic)")
    s_noise: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="scale of the added noise")

    class Outputs(NodeOutputs):
        sampler: Any = Output(port=ports.SAMPLER, description="the sampler")

    def run(self, ctx: RunContext) -> Outputs:
        import inspect

        from latentgraph.nodes.sd.handles import SamplerChoice
        from latentgraph.nodes.sd.samplers import SAMPLERS

        accepted = inspect.signature(SAMPLERS[self.sampler]).parameters
        options = {k: v for k, v in (("eta", self.eta), ("s_noise", self.s_noise)) if k in accepted}
        return self.Outputs(sampler=SamplerChoice(self.sampler, options))


def _sample_custom(ctx: RunContext, model: Any, positive: Any, negative: Any, cfg: float, noise: Any, sampler: Any,
                   sigmas: Any, latent: Any) -> tuple[Any, Any]:
    """The guided sampler's work: (the sampled latent, the model's denoised estimate at the last
    step). The estimate is the x0 prediction of the last step's (first) model call, what
    ComfyUI's SamplerCustom returns as denoised_output; with a noise mask it is the input latent
    outside the mask. With nothing to walk (fewer than 2 sigmas) both are the latent as it is."""
    from latentgraph.nodes.sd.handles import Latent
    from latentgraph.nodes.sd.sample import denoise_latents

    _check_sampling(ctx, model, latent, max(0, len(sigmas) - 1), guided=cfg != 1, conditionings=(positive, negative))
    report = _step_reporter(ctx, model)
    last: dict[str, Any] = {}

    def on_step(step: int, total: int, denoised: Any) -> None:
        last["denoised"] = denoised
        report(step, total, denoised)

    with running_models(ctx):
        out = denoise_latents(model, positive, negative, latent, noise, sigmas, sampler, cfg, on_step)
    if "denoised" not in last:
        return out, out
    return out, Latent(last["denoised"].float().cpu().clone(), latent.noise_mask)


@node("guided_sampler", category="sampling/custom", title="Guided sampler")
class GuidedSampler(Node):
    """Sample with the stages chosen apart: noise, sigmas and sampler from their own nodes."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    positive: Any = Input(port=ports.CONDITIONING, description="what the image should show")
    negative: Any = Input(port=ports.CONDITIONING, description="what it should not show")
    noise: Any = Input(port=ports.NOISE, description="starting noise")
    sampler: Any = Input(port=ports.SAMPLER, description="the solver")
    sigmas: Any = Input(port=ports.SIGMAS, description="the noise levels to walk")
    latent: Any = Input(port=ports.LATENT, description="empty latent or encoded image")
    cfg: float = Input(7.0, ge=0.0, le=100.0, step=0.1, description="guidance scale")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the denoised latent")
        denoised: Any = Output(port=ports.LATENT, description="the model's estimate of the clean latent at the last "
                                                              "step (differs from latent when the sigmas stop above 0)")

    def run(self, ctx: RunContext) -> Outputs:
        latent, denoised = _sample_custom(ctx, self.model, self.positive, self.negative, self.cfg, self.noise,
                                          self.sampler, self.sigmas, self.latent)
        return self.Outputs(latent=latent, denoised=denoised)


@node("cfg_guider", category="sampling/custom", title="CFG guider")
class CfgGuider(Node):
    """A model with its prompt, negative prompt and guidance scale, for Sample with guider
    (ComfyUI's CFGGuider)."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    positive: Any = Input(port=ports.CONDITIONING, description="what the image should show")
    negative: Any = Input(port=ports.CONDITIONING, description="what it should not show")
    cfg: float = Input(8.0, ge=0.0, le=100.0, step=0.1, description="guidance scale; 1 disables the negative prompt")

    class Outputs(NodeOutputs):
        guider: Any = Output(port=ports.GUIDER, description="the model with its prompts and guidance")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Guider

        return self.Outputs(guider=Guider(self.model, self.positive, self.negative, self.cfg))


@node("basic_guider", category="sampling/custom", title="Guider without CFG")
class BasicGuider(Node):
    """A model with one prompt and no classifier-free guidance (ComfyUI's BasicGuider): one model
    call a step, as cfg 1. For models distilled to work without guidance."""

    model: Any = Input(port=ports.MODEL, description="the diffusion model")
    conditioning: Any = Input(port=ports.CONDITIONING, description="what the image should show")

    class Outputs(NodeOutputs):
        guider: Any = Output(port=ports.GUIDER, description="the model with its prompt")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import Guider

        return self.Outputs(guider=Guider(self.model, self.conditioning, self.conditioning, 1.0))


@node("sampler_custom_advanced", category="sampling/custom", title="Sample with guider")
class SamplerCustomAdvanced(Node):
    """Sample a latent with every stage chosen apart (ComfyUI's SamplerCustomAdvanced): starting
    noise, a guider (model, prompts, guidance), a sampler and the sigmas to walk. The same as the
    guided sampler, with model, prompts and cfg from a guider."""

    noise: Any = Input(port=ports.NOISE, description="starting noise (Disable noise: none)")
    guider: Any = Input(port=ports.GUIDER, description="model, prompts and guidance scale")
    sampler: Any = Input(port=ports.SAMPLER, description="the solver")
    sigmas: Any = Input(port=ports.SIGMAS, description="the noise levels to walk")
    latent: Any = Input(port=ports.LATENT, description="empty latent or encoded image")

    class Outputs(NodeOutputs):
        latent: Any = Output(port=ports.LATENT, description="the sampled latent")
        denoised: Any = Output(port=ports.LATENT, description="the model's estimate of the clean latent at the last "
                                                              "step (differs from latent when the sigmas stop above 0)")

    def run(self, ctx: RunContext) -> Outputs:
        guider = self.guider
        latent, denoised = _sample_custom(ctx, guider.model, guider.positive, guider.negative, guider.cfg, self.noise,
                                          self.sampler, self.sigmas, self.latent)
        return self.Outputs(latent=latent, denoised=denoised)


@node("disable_noise", category="sampling/custom", title="Disable noise")
class DisableNoise(Node):
    """No starting noise (ComfyUI's DisableNoise): the sampler starts from the latent as it is,
    for a latent that already holds its noise (an earlier stage's leftover noise) or to denoise an
    image without adding any. seed still seeds the step noise of stochastic samplers (ancestral,
    SDE)."""

    seed: int = Input(0, ge=0, le=MAX_SEED, widget="seed", description="seed of stochastic samplers' step noise")

    class Outputs(NodeOutputs):
        noise: Any = Output(port=ports.NOISE, description="no noise")

    def run(self, ctx: RunContext) -> Outputs:
        from latentgraph.nodes.sd.handles import DisabledNoise

        return self.Outputs(noise=DisabledNoise(self.seed))


@node("split_sigmas", category="sampling/custom", title="Split sigmas")
class SplitSigmas(Node):
    """Cut a schedule at a step (ComfyUI's SplitSigmas): the high part walks the first `step` steps,
    the low part the rest, both sharing the level at the cut, so two samplers can share one
    schedule (e.g. base then refiner)."""

    sigmas: Any = Input(port=ports.SIGMAS, description="the schedule to cut")
    step: int = Input(0, ge=0, le=10000, description="steps in the high part")

    class Outputs(NodeOutputs):
        high_sigmas: Any = Output(port=ports.SIGMAS, description="levels 0 to step")
        low_sigmas: Any = Output(port=ports.SIGMAS, description="levels step to the end")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(high_sigmas=self.sigmas[: self.step + 1], low_sigmas=self.sigmas[self.step:])


class _ScheduleBetween(Node):
    """Noise levels between a highest and a lowest level you give (the defaults are SD1.x's
    training range); subclasses say how they are spaced (`_spaced`)."""

    steps: int = Input(20, ge=1, le=10000, description="sampling steps")
    sigma_max: float = Input(14.614642, gt=0.0, le=5000.0, step=0.01, description="the first (highest) noise level")
    sigma_min: float = Input(0.0291675, gt=0.0, le=5000.0, step=0.01, description="the last noise level before 0")

    class Outputs(NodeOutputs):
        sigmas: Any = Output(port=ports.SIGMAS, description="steps + 1 noise levels ending in 0")

    @classmethod
    def check_limits(cls, inputs: dict[str, Any], services: Any) -> Iterator[tuple[str | None, str]]:
        return _steps_within_limits(inputs, services)

    def _spaced(self) -> Any:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> Outputs:
        require_within(services_of(ctx).limits, "the schedule", steps=self.steps)
        if self.sigma_min > self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) is above sigma_max ({self.sigma_max}): the levels must "
                             "go down")
        return self.Outputs(sigmas=self._spaced())


@node("karras_scheduler", category="sampling/custom", title="Karras schedule")
class KarrasScheduler(_ScheduleBetween):
    """Noise levels (sigmas) spaced as Karras et al. (2022) propose, between a highest and a lowest
    level you give (ComfyUI's KarrasScheduler; the defaults are SD1.x's training range). The
    Schedule node's karras is the same spacing over the model's own range. rho sets where steps
    crowd: higher spends more of them at low noise."""

    rho: float = Input(7.0, gt=0.0, le=100.0, step=0.01, description="spacing exponent (7 in the paper)")

    def _spaced(self) -> Any:
        from latentgraph.nodes.sd.schedules import karras_between

        return karras_between(self.sigma_min, self.sigma_max, self.steps, self.rho)


@node("exponential_scheduler", category="sampling/custom", title="Exponential schedule")
class ExponentialScheduler(_ScheduleBetween):
    """Noise levels evenly spaced in log-sigma between a highest and a lowest level you give
    (ComfyUI's ExponentialScheduler; the defaults are SD1.x's training range). The Schedule node's
    exponential is the same spacing over the model's own range."""

    def _spaced(self) -> Any:
        from latentgraph.nodes.sd.schedules import exponential_between

        return exponential_between(self.sigma_min, self.sigma_max, self.steps)


