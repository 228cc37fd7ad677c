"""Stable Diffusion on the CPU: our model code and graph against diffusers, on the same weights.

    .venv/bin/python bench/sd.py [--quick] [--size 256] [--steps 20] [--skip-sd15] [--skip-tiny]
                                 [--repeat 10] [--sd-repeat 3] [--sd-runs 1] [--threads 2]
                                 [--omp-passive] [--weights-dir DIR]
                                 [--sdxl [--sdxl-size 512] [--sdxl-steps 4] [--sdxl-bf16-steps 2]
                                  [--sdxl-precision fp32|bf16|both]] [--lora [--lora-size 512]]

--quick measures the tiny model only (under a minute on a quiet 2-core machine); the default adds
the SD1.5-size rows (about 4-5 minutes there, most of it the three 20-step txt2img runs, plus
about 25 s the first time to build the 2.1 GB checkpoint; --weights-dir keeps it).

Two models: the tiny SD1.x-architecture checkpoint of the tests (tests/sd_tiny.py) and an
SD1.5-size one (U-Net 860M, VAE 84M, CLIP ViT-L/14 text tower) with seeded random weights, built
once, saved as an fp16 LDM-layout .safetensors (about 2.1 GB; loading upcasts it to fp32 on the
CPU) in a temporary folder, or kept in --weights-dir and reused. Each model is measured in a fresh
subprocess that loads it through the real graph (checkpoint_loader node -> load_checkpoint) and
builds diffusers' UNet2DConditionModel / AutoencoderKL from the very same tensors with diffusers'
single-file conversion functions (offline, explicit configs): the two sides share weight memory,
so they compute with identical weights and the process holds one copy.

Rows, fp32, torch.inference_mode on both sides, one warm-up each, best of N, ours and diffusers
interleaved so that load from other processes hits both alike:
- U-Net forward at a (size/8)^2 latent, batch 2 (the cond/uncond batch of CFG);
- VAE decode of one (size/8)^2 latent to a size x size image;
- txt2img, `steps` steps of DPM++ 2M Karras, cfg 7.5: ours is workflows/txt2img.json through the
  executor, re-run with only the seed changed (checkpoint and prompts cached, so sampler, decode
  and PNG save run); diffusers is StableDiffusionPipeline with DPMSolverMultistepScheduler
  (dpmsolver++, order 2, Karras sigmas, final sigma 0) given the same prompt embeddings, plus
  saving its PNG. Loading is excluded on both sides.
And the graph overhead: the same seed-only re-run through the executor against calling the code
the nodes call directly (denoise_latents, decode_from_latent, save_pngs) in the same process.

--sdxl adds SDXL-base-size rows (U-Net 2.6B, CLIP-L + bigG, VAE; seeded random weights, built once
with the modules made in fp16, about 7 GB held, saved as a 6.5 GB fp16 file; --weights-dir keeps
it): the U-Net forward at a (sdxl-size/8)^2 latent, batch 2, with the y vector, and txt2img through
workflows/sdxl_txt2img.json against StableDiffusionXLPipeline given our prompt embeddings and pooled
vectors, both on the same tensors; first in fp32 (about 14 GB of weights, 18 GB at peak), then in a
fresh worker, after the fp32 one has exited, with our CPU bf16 placement (U-Net bf16). It also
reports loading time and the resident set after loading. About 13 minutes on a 2-core machine with
--sd-repeat 1 --sd-runs 1; --skip-tiny --skip-sd15 --sdxl measures SDXL only.

--lora adds LoRA rows on the SD1.5-size checkpoint (about 9 minutes at 512x512, 20 steps): a kohya
LoRA of kohya's default targets (the U-Net's transformer linears and proj_in/out, 31% of its
weights, and the text encoder's attention and MLP; rank 32) through workflows/txt2img.json with a
lora_loader added. Rows: txt2img without and with the LoRA (time, process peak), a strength change
(the patch switch alone, best of 3) with the base weights read back from the file as shipped and,
for reference, kept as copies, and reloading the checkpoint; ratios against the txt2img run.

Peak memory is the growth of the process's resident set during one call above what it held just
before (the kernel's high-water mark, reset through /proc/self/clear_refs before each call, after
gc and malloc_trim): activations and workspace, not the weights, which are loaded beforehand.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # sd_tiny: the tiny model's configs

CFG = 7.5
SAMPLER, SCHEDULE = "dpmpp_2m", "karras"
CHECKPOINT_NAME = "latentgraph-demo.safetensors"  # the name the shipped workflows load
SD15_FILE = "sd15-random-seed0-fp16.safetensors"
SDXL_FILE = "sdxl-random-seed0-fp16.safetensors"
RESULT_MARK = "RESULT "


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- memory --------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:
    _libc = None

_process_peak_kb = [0]  # the largest VmHWM seen, kept across the resets PeakRSS makes


def process_peak_mb() -> float | None:
    """The process's peak resident set so far (MB), PeakRSS's resets notwithstanding."""
    now = _status_kb("VmHWM")
    return None if now is None else max(now, _process_peak_kb[0]) / 1024


class PeakRSS:
    """Growth of the resident set during a block, above the resident set when it started (MB).

    Linux only: the high-water mark (VmHWM) is reset to the current RSS by writing 5 to
    /proc/self/clear_refs, so what the process held before (e.g. loading peaks) does not mask the
    block's peak. `mb` is None where that is not available.
    """

    def __init__(self) -> None:
        self.mb: float | None = None

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        if _libc is not None:
            _libc.malloc_trim(0)  # give freed heap back, so reuse of it still shows as growth
        _process_peak_kb[0] = max(_process_peak_kb[0], _status_kb("VmHWM") or 0)
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self._start = _status_kb("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _status_kb("VmHWM")
        _process_peak_kb[0] = max(_process_peak_kb[0], peak or 0)
        if self._start is not None and peak is not None:
            self.mb = (peak - self._start) / 1024


# --- the models ----------------------------------------------------------------------------------


def build_sd15_checkpoint(path: Path) -> None:
    """SD1.5-size U-Net, VAE and CLIP text encoder with seeded random weights, saved in fp16."""
    import torch

    from latentgraph.nodes.sd.checkpoint import save_checkpoint
    from latentgraph.nodes.sd.text_encoder import TextEncoderConfig, build_text_encoder
    from latentgraph.nodes.sd.unet import UNetConfig, UNetModel
    from latentgraph.nodes.sd.vae import AutoencoderKL, VAEConfig
    from sd_tiny import randomize_

    started = time.perf_counter()
    with torch.device("meta"):  # no default init: every weight is drawn once, by randomize_
        models = [UNetModel(UNetConfig()), AutoencoderKL(VAEConfig()), build_text_encoder(TextEncoderConfig())]
    for seed, model in enumerate(models):
        randomize_(model.to_empty(device="cpu"), seed)
    save_checkpoint(path, *models, dtype=torch.float16)
    log(f"built {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s")


def sdxl_configs() -> tuple[Any, Any, Any, Any]:
    """SDXL base's U-Net (2.6B), VAE (84M), CLIP ViT-L (123M) and OpenCLIP ViT-bigG (695M) text towers."""
    from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
    from latentgraph.nodes.sd.unet import UNetConfig
    from latentgraph.nodes.sd.vae import VAEConfig

    unet = UNetConfig(channel_mult=(1, 2, 4), attention_resolutions=(4, 2), transformer_depth=(0, 2, 10),
                      num_head_channels=64, context_dim=2048, use_linear_in_transformer=True, adm_in_channels=2816)
    clip_g = TextEncoderConfig(hidden_size=1280, num_layers=32, intermediate_size=5120, hidden_act="gelu",
                               projection_dim=1280)
    return unet, VAEConfig(), TextEncoderConfig(), clip_g


def build_sdxl_checkpoint(path: Path) -> None:
    """SDXL-base-size models with seeded random weights, saved in fp16 (about 7 GB).

    The modules are made in fp16 and filled there: randomize_ draws each tensor in fp32 and copies it
    in, so the values are those of an fp32 model saved in fp16, but the process holds about 7 GB,
    never the 14 GB fp32 copy."""
    import torch
    from latentgraph.nodes.sd.checkpoint import save_checkpoint
    from latentgraph.nodes.sd.families import SDXL
    from latentgraph.nodes.sd.text_encoder import build_text_encoder
    from latentgraph.nodes.sd.unet import UNetModel
    from latentgraph.nodes.sd.vae import AutoencoderKL
    from sd_tiny import randomize_

    started = time.perf_counter()
    unet_config, vae_config, clip_l_config, clip_g_config = sdxl_configs()
    with torch.device("meta"):
        models = [UNetModel(unet_config), AutoencoderKL(vae_config), build_text_encoder(clip_l_config),
                  build_text_encoder(clip_g_config)]
    for seed, model in enumerate(models):
        randomize_(model.to(torch.float16).to_empty(device="cpu"), seed)
    unet, vae, clip_l, clip_g = models
    extra = {SDXL.text_encoders[-1].prefix + "logit_scale": torch.tensor(4.6052)}  # as real files carry
    save_checkpoint(path, unet, vae, {"clip_l": clip_l, "clip_g": clip_g}, family=SDXL, dtype=torch.float16,
                    extra_tensors=extra)
    log(f"built {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s, "
        f"peak RSS {fmt_mb(process_peak_mb())}")


def diffusers_modules(unet: Any, vae: Any) -> tuple[Any, Any]:
    """diffusers' U-Net and VAE holding the same tensors as ours (views, no copies)."""
    import torch
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    from latentgraph.nodes.sd.layout import UNET_PREFIX, VAE_PREFIX

    state = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    state |= {VAE_PREFIX + k: v for k, v in vae.state_dict().items()}
    from latentgraph.nodes.sd.layout import ldm_original_config

    config = ldm_original_config(unet.config, vae.config)
    unet_config = create_unet_diffusers_config_from_ldm(config, state)
    if unet.config.adm_in_channels is not None:
        # SDXL's y (pooled text + 6 embedded numbers): the converter tells it from a projection
        # class embedding by the context width alone (2048 / 1280), so say it for any width.
        from latentgraph.nodes.sd.families.sdxl import SIZE_EMBEDDING

        unet_config |= {"class_embed_type": None, "addition_embed_type": "text_time",
                        "addition_time_embed_dim": SIZE_EMBEDDING}
    vae_config = create_vae_diffusers_config_from_ldm(config, state, scaling_factor=vae.config.scaling_factor)
    with torch.device("meta"):
        reference_unet = UNet2DConditionModel(**unet_config)
        reference_vae = DiffusersAutoencoderKL(**vae_config)
    reference_unet.load_state_dict(convert_ldm_unet_checkpoint(state, unet_config), strict=True, assign=True)
    reference_vae.load_state_dict(convert_ldm_vae_checkpoint(state, vae_config), strict=True, assign=True)
    for ours, theirs in ((unet, reference_unet), (vae, reference_vae)):
        pointers = {p.data_ptr() for p in ours.parameters()}
        assert all(p.data_ptr() in pointers for p in theirs.parameters()), "diffusers copied a weight"
        assert all(b.device.type != "meta" for b in theirs.buffers()), "a diffusers buffer stayed on meta"
    return reference_unet.eval().requires_grad_(False), reference_vae.eval().requires_grad_(False)


# --- timing --------------------------------------------------------------------------------------


class Case:
    """Best time and largest peak-RSS growth of one callable over repeated calls."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.name, self.fn = name, fn
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU seconds, all threads
        self.peaks: list[float] = []
        self.out: Any = None

    def call(self, record: bool = True) -> None:
        import torch

        with PeakRSS() as peak, torch.inference_mode():
            start, cpu_start = time.perf_counter(), time.process_time()
            self.out = self.fn()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if record:
            self.times.append(elapsed)
            self.cpu_times.append(cpu)
            if peak.mb is not None:
                self.peaks.append(peak.mb)

    def result(self) -> dict[str, Any]:
        return {"s": min(self.times), "all_s": self.times, "cpu_s": min(self.cpu_times),
                "peak_mb": max(self.peaks) if self.peaks else None}


def interleaved(label: str, cases: list[Case], repeat: int, warmup: Callable[[Case], None] | None = None) -> None:
    """Warm each case up once, then `repeat` rounds calling each once, the order rotating per round."""
    for case in cases:
        if warmup is not None:
            warmup(case)
        else:
            case.call(record=False)
    for round_ in range(repeat):
        shift = round_ % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.call()
        log(f"  {label} {round_ + 1}/{repeat}: " + ", ".join(f"{c.name} {c.times[-1]:.3f} s" for c in cases))


def graph_rerun(executor: Any, workflow: Callable[[int, int], dict[str, Any]], seeds: Any, executed: set[str],
                steps: int) -> Callable[..., Any]:
    """A txt2img re-run through the executor with the next seed: checkpoint and prompts are cached, so
    only the sampler, decode and save run (the checkpoint node may run again, a model-cache hit, when
    its outputs do not fit the output cache). The nodes it ran are added to `executed`."""

    def run(steps: int = steps) -> Any:
        result = executor.run(workflow(next(seeds), steps))
        assert result.ok and set(result.executed) - {"checkpoint"} == {"sampler", "decode", "save"}, (
            result.executed, result.errors)
        executed.update(result.executed)
        return result

    return run


def warm_up_with(steps: int) -> Callable[[Case], None]:
    """A warm-up for txt2img cases: one unrecorded call with `steps` steps instead of the full count."""

    def warmup(case: Case) -> None:
        fn = case.fn
        case.fn = lambda: fn(steps)
        case.call(record=False)
        case.fn = fn

    return warmup


def relative_difference(ours: Any, reference: Any) -> float:
    return float((ours - reference).abs().max() / max(1.0, float(reference.abs().max())))


# --- one model, in a worker process --------------------------------------------------------------


def txt2img_settings(document: dict[str, Any], size: int, steps: int, seed: int,
                     extra: dict[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """A copy of a shipped txt2img workflow set to the bench's size, steps, cfg, seed, sampler and
    schedule (and `extra`: (node, input) -> value)."""
    settings = {("latent", "width"): size, ("latent", "height"): size, ("sampler", "steps"): steps,
                ("sampler", "cfg"): CFG, ("sampler", "seed"): seed, ("sampler", "sampler"): SAMPLER,
                ("sampler", "scheduler"): SCHEDULE, ("save", "filename_prefix"): "graph", **(extra or {})}
    doc = json.loads(json.dumps(document))
    for (node, name), value in settings.items():
        doc["nodes"][node]["inputs"][name] = value
    return doc


def measure_model(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    import diffusers
    import transformers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.images import save_pngs
    from latentgraph.nodes.sd.families import SD1
    from latentgraph.nodes.sd.handles import Noise, SamplerChoice
    from latentgraph.nodes.sd.sample import denoise_latents
    from latentgraph.nodes.sd.schedules import sigmas_for
    from latentgraph.nodes.sd.tokenizer import get_tokenizer
    from latentgraph.nodes.sd.vae import decode_from_latent
    from latentgraph.nodes.services import Services

    size, steps, repeat, runs = spec["size"], spec["steps"], spec["repeat"], spec["runs"]
    work = Path(spec["workdir"]) / spec["model"]
    shutil.rmtree(work, ignore_errors=True)
    (work / "models" / "checkpoints").mkdir(parents=True)
    (work / "input").mkdir()
    link = work / "models" / "checkpoints" / CHECKPOINT_NAME
    if spec["checkpoint"] is None:
        from sd_tiny import write_tiny_checkpoint

        write_tiny_checkpoint(link)
    else:
        try:
            os.link(spec["checkpoint"], link)
        except OSError:
            link.symlink_to(spec["checkpoint"])
    folders = Folders(models=work / "models", inputs=work / "input", outputs=work / "output", temp=work / "temp")
    events = EventBus()
    events.subscribe(lambda event: None)  # as the server listens: previews get published
    # The CLI's and the server's default output-cache budget (--cache-size 4GiB).
    services = Services(folders=folders, device="cpu", precision="fp32")
    executor = Executor(registry, OutputCache(4 << 30), services=services, events=events)

    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())

    def workflow(seed: int, steps: int = steps) -> dict[str, Any]:
        return txt2img_settings(document, size, steps, seed)

    # Load through the graph: checkpoint_loader -> load_checkpoint, both prompts encoded and cached.
    started = time.perf_counter()
    loaded = executor.run(workflow(0), outputs=["checkpoint", "positive", "negative", "latent"])
    assert loaded.ok, loaded.errors
    load_s = time.perf_counter() - started
    handles = loaded.values
    model, vae = handles["checkpoint"]["model"], handles["checkpoint"]["vae"]
    positive, negative = handles["positive"]["conditioning"], handles["negative"]["conditioning"]
    empty_latent = handles["latent"]["latent"]
    unet = model.unet
    started = time.perf_counter()
    reference_unet, reference_vae = diffusers_modules(unet, vae.model)
    convert_s = time.perf_counter() - started
    log(f"[{spec['model']}] loaded through the graph in {load_s:.1f} s (checkpoint + 2 prompts); "
        f"diffusers modules from the same tensors in {convert_s:.2f} s")

    results: dict[str, Any] = {"model": spec["model"], "load_s": load_s, "convert_s": convert_s}
    generator = torch.Generator().manual_seed(1234)
    latent_side = size // 8

    # U-Net forward: the cond/uncond batch of 2 at one mid-schedule timestep.
    x = torch.randn(2, 4, latent_side, latent_side, generator=generator)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, unet.config.context_dim, generator=generator)
    cases = [Case("ours", lambda: unet(x, t, context)),
             Case("diffusers", lambda: reference_unet(x, t, encoder_hidden_states=context).sample)]
    interleaved(f"[{spec['model']}] U-Net", cases, repeat)
    results["unet"] = {c.name: c.result() for c in cases} | {"diff": relative_difference(cases[0].out, cases[1].out)}

    # VAE decode: one latent to a size x size image.
    z = torch.randn(1, 4, latent_side, latent_side, generator=generator)
    cases = [Case("ours", lambda: vae.model.decode(z)),
             Case("diffusers", lambda: reference_vae.decode(z).sample)]
    interleaved(f"[{spec['model']}] VAE decode", cases, repeat)
    results["vae"] = {c.name: c.result() for c in cases} | {"diff": relative_difference(cases[0].out, cases[1].out)}
    del x, context, z, cases

    # txt2img: the graph re-run with a new seed, diffusers' pipeline, and the nodes' code called directly.
    schedule = SD1.schedule  # the diffusers scheduler gets the family's own training schedule
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.timesteps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
        beta_schedule=schedule.beta_schedule,
        algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero")
    pipeline = StableDiffusionPipeline(
        vae=reference_vae, text_encoder=handles["checkpoint"]["clip"].model, tokenizer=get_tokenizer(),
        unet=reference_unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    prompt_embeds = positive.entries[0].embedding
    negative_embeds = negative.entries[0].embedding
    seeds = iter(range(1, 1 << 30))
    executed: set[str] = set()  # nodes the timed graph re-runs executed
    diffusers_out = work / "output" / "diffusers"
    diffusers_out.mkdir(parents=True)
    direct_out = work / "output" / "direct"

    graph_run = graph_rerun(executor, workflow, seeds, executed, steps)

    def diffusers_run(steps: int = steps) -> Any:
        seed = next(seeds)
        image = pipeline(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, height=size, width=size,
                         num_inference_steps=steps, guidance_scale=CFG,
                         generator=torch.Generator().manual_seed(seed)).images[0]
        image.save(diffusers_out / f"diffusers_{seed:05}.png", compress_level=4)
        return image

    def direct_run(steps: int = steps) -> Any:
        # What the sampler, decode and save nodes run, minus the graph around them.
        sigmas = sigmas_for(SCHEDULE, model.schedule, steps, 1.0)
        latent = denoise_latents(model, positive, negative, empty_latent, Noise(next(seeds)), sigmas,
                                 SamplerChoice(SAMPLER), CFG)
        pixels = decode_from_latent(vae.model, latent.samples)
        images = ((pixels + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().contiguous()
        return save_pngs(images, direct_out, "direct", document)

    cases = [Case("graph", graph_run), Case("diffusers", diffusers_run), Case("direct", direct_run)]
    interleaved(f"[{spec['model']}] txt2img", cases, runs, warm_up_with(min(steps, 2)))
    results["txt2img"] = {c.name: c.result() for c in cases}
    results["graph_executed"] = sorted(executed)
    stats = executor.cache.stats()
    results["output_cache"] = {"entries": stats.entries, "mb": stats.nbytes / 2**20, "max_mb": stats.max_bytes / 2**20}
    return results


def measure_sdxl(spec: dict[str, Any]) -> dict[str, Any]:
    """The SDXL-size rows in one precision: U-Net forward with y, and txt2img through
    workflows/sdxl_txt2img.json against StableDiffusionXLPipeline on the same tensors."""
    import torch

    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    import diffusers
    import transformers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.sd.families import SDXL
    from latentgraph.nodes.sd.families.sdxl import SIZE_EMBEDDING
    from latentgraph.nodes.sd.tokenizer import get_tokenizer
    from latentgraph.nodes.sd.unet import timestep_embedding
    from latentgraph.nodes.services import Services

    precision, size, steps, repeat, runs = spec["precision"], spec["size"], spec["steps"], spec["repeat"], spec["runs"]
    label = f"sdxl {precision}"
    work = Path(spec["workdir"]) / f"sdxl-{precision}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "models" / "checkpoints").mkdir(parents=True)
    (work / "input").mkdir()
    document = json.loads((ROOT / "workflows" / "sdxl_txt2img.json").read_text())
    link = work / "models" / "checkpoints" / document["nodes"]["checkpoint"]["inputs"]["checkpoint"]
    try:
        os.link(spec["checkpoint"], link)
    except OSError:
        link.symlink_to(spec["checkpoint"])
    folders = Folders(models=work / "models", inputs=work / "input", outputs=work / "output", temp=work / "temp")
    events = EventBus()
    events.subscribe(lambda event: None)
    services = Services(folders=folders, device="cpu", precision=precision)
    executor = Executor(registry, OutputCache(4 << 30), services=services, events=events)

    def workflow(seed: int, steps: int = steps) -> dict[str, Any]:
        sizes = {("size", name): size for name in ("original_width", "original_height", "target_width", "target_height")}
        return txt2img_settings(document, size, steps, seed, sizes)

    # Load through the graph: checkpoint_loader -> load_checkpoint, both prompts encoded (the positive
    # one with its size conditioning) and cached.
    started = time.perf_counter()
    loaded = executor.run(workflow(0), outputs=["checkpoint", "size", "negative", "latent"])
    assert loaded.ok, loaded.errors
    load_s = time.perf_counter() - started
    rss_after_load = (_status_kb("VmRSS") or 0) / 1024
    load_peak = process_peak_mb()
    handles = loaded.values
    model, vae, clip = handles["checkpoint"]["model"], handles["checkpoint"]["vae"], handles["checkpoint"]["clip"]
    positive = handles["size"]["conditioning"].entries[0]
    negative = handles["negative"]["conditioning"].entries[0]
    unet = model.unet
    modules = [unet, vae.model, *clip.encoders.values()]
    weights_mb = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values()) / 2**20
    dtypes = {name: str(next(m.parameters()).dtype).removeprefix("torch.")
              for name, m in [("unet", unet), ("vae", vae.model), *clip.encoders.items()]}
    started = time.perf_counter()
    reference_unet, reference_vae = diffusers_modules(unet, vae.model)
    convert_s = time.perf_counter() - started
    log(f"[{label}] loaded through the graph in {load_s:.1f} s (checkpoint + 2 prompts), RSS after load "
        f"{rss_after_load:,.0f} MB (weights {weights_mb:,.0f} MB: {dtypes}), peak {fmt_mb(load_peak)}; "
        f"diffusers modules from the same tensors in {convert_s:.2f} s")

    results: dict[str, Any] = {"model": label, "precision": precision, "load_s": load_s, "convert_s": convert_s,
                               "rss_after_load_mb": rss_after_load, "load_peak_mb": load_peak,
                               "weights_mb": weights_mb, "dtypes": dtypes}
    generator = torch.Generator().manual_seed(1234)
    latent_side = size // 8
    dtype = model.dtype

    # U-Net forward: the cond/uncond batch of 2 at one mid-schedule timestep, with y = pooled text and
    # the six size numbers (original h, w, crop top, left, target h, w) embedded, as the family builds it;
    # diffusers gets the pooled part and the numbers (added_cond_kwargs) and embeds them itself.
    x = torch.randn(2, 4, latent_side, latent_side, generator=generator).to(dtype)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, unet.config.context_dim, generator=generator).to(dtype)
    pooled = torch.randn(2, unet.config.adm_in_channels - 6 * SIZE_EMBEDDING, generator=generator)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), SIZE_EMBEDDING).reshape(2, -1)], dim=1).to(dtype)
    added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids}
    cases = [Case("ours", lambda: unet(x, t, context, y=y)),
             Case("diffusers", lambda: reference_unet(x, t, encoder_hidden_states=context,
                                                      added_cond_kwargs=added).sample)]
    interleaved(f"[{label}] U-Net", cases, repeat)
    results["unet"] = {c.name: c.result() for c in cases} | {
        "diff": relative_difference(cases[0].out.float(), cases[1].out.float())}
    del cases

    if steps > 0:
        # txt2img: the graph re-run with a new seed against StableDiffusionXLPipeline given the same
        # prompt embeddings, pooled vectors and sizes (original = target = the image, no crop).
        schedule = SDXL.schedule
        scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=schedule.timesteps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
            beta_schedule=schedule.beta_schedule,
            algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero")
        # The pipeline casts given embeddings to text_encoder_2's dtype and makes its latents in that
        # dtype: with a bf16 U-Net and fp32 text encoders (our CPU bf16 placement) it is given none, so it
        # works in the U-Net's dtype; and as our VAE stays fp32 there, it returns latents, which its fp32
        # VAE (ours, shared) decodes as ours does.
        same_dtype = dtype == next(clip.encoders["clip_g"].parameters()).dtype
        encoders = ({"text_encoder": clip.encoders["clip_l"], "text_encoder_2": clip.encoders["clip_g"],
                     "tokenizer": get_tokenizer(), "tokenizer_2": get_tokenizer()} if same_dtype else
                    {"text_encoder": None, "text_encoder_2": None, "tokenizer": None, "tokenizer_2": None})
        pipeline = StableDiffusionXLPipeline(vae=reference_vae, unet=reference_unet, scheduler=scheduler,
                                             force_zeros_for_empty_prompt=True, add_watermarker=False, **encoders)
        pipeline.set_progress_bar_config(disable=True)
        embeds = {"prompt_embeds": positive.embedding, "negative_prompt_embeds": negative.embedding,
                  "pooled_prompt_embeds": positive.pooled, "negative_pooled_prompt_embeds": negative.pooled}
        seeds = iter(range(1, 1 << 30))
        executed: set[str] = set()
        diffusers_out = work / "output" / "diffusers"
        diffusers_out.mkdir(parents=True)

        graph_run = graph_rerun(executor, workflow, seeds, executed, steps)

        def diffusers_run(steps: int = steps) -> Any:
            seed = next(seeds)
            arguments = dict(embeds, height=size, width=size, original_size=(size, size), target_size=(size, size),
                             num_inference_steps=steps, guidance_scale=CFG,
                             generator=torch.Generator().manual_seed(seed))
            if same_dtype:
                image = pipeline(**arguments).images[0]
            else:
                latents = pipeline(**arguments, output_type="latent").images
                pixels = reference_vae.decode(latents.float() / reference_vae.config.scaling_factor).sample
                image = pipeline.image_processor.postprocess(pixels, output_type="pil")[0]
            image.save(diffusers_out / f"diffusers_{seed:05}.png", compress_level=4)
            return image

        cases = [Case("graph", graph_run), Case("diffusers", diffusers_run)]
        interleaved(f"[{label}] txt2img", cases, runs, warm_up_with(spec["warmup_steps"]))
        results["txt2img"] = {c.name: c.result() for c in cases}
        results["steps"] = steps
        results["graph_executed"] = sorted(executed)
        results["diffusers_vae"] = "pipeline" if same_dtype else "latents, decoded by its fp32 VAE"
    results["process_peak_mb"] = process_peak_mb()
    return results


# --- the report ----------------------------------------------------------------------------------


def run_worker(spec: dict[str, Any], env: dict[str, str] | None = None, script: str = __file__) -> dict[str, Any]:
    """Run `script --worker SPEC` in a fresh process and return the result it printed."""
    command = [sys.executable, script, "--worker", json.dumps(spec)]
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        sys.exit(f"the {spec.get('variant') or spec['model']} worker failed (exit {process.returncode})")
    return json.loads(lines[-1][len(RESULT_MARK):])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_mb(mb: float | None) -> str:
    return "n/a" if mb is None else f"{mb:,.0f} MB"


def print_comparison_header() -> None:
    print("| model | measurement | ours | diffusers | ours / diffusers | same, CPU time | ours peak | diffusers peak "
          "| max rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")


def print_comparison_row(model: str, label: str, row: dict[str, Any], key: str) -> None:
    """One ours-vs-diffusers row: the graph's re-run for txt2img, the module call otherwise."""
    ours = row["graph"] if key == "txt2img" else row["ours"]
    theirs = row["diffusers"]
    diff = f"{row['diff']:.1e}" if "diff" in row else "—"
    print(f"| {model} | {label} | {fmt_s(ours['s'])} | {fmt_s(theirs['s'])} | "
          f"**{ours['s'] / theirs['s']:.2f}** | {ours['cpu_s'] / theirs['cpu_s']:.2f} | "
          f"{fmt_mb(ours['peak_mb'])} | {fmt_mb(theirs['peak_mb'])} | {diff} |")


def print_tables(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    side = args.size // 8
    print(f"\n### Ours vs diffusers on the same weights (fp32 CPU, torch threads {args.threads}, best of N; "
          f"peak = RSS growth during the call)\n")
    print_comparison_header()
    labels = {"unet": f"U-Net forward, latent {side}x{side}, batch 2",
              "vae": f"VAE decode to {args.size}x{args.size}, batch 1",
              "txt2img": f"txt2img {args.size}x{args.size}, {args.steps} steps DPM++ 2M Karras, cfg {CFG}"}
    for r in results:
        for key in ("unet", "vae", "txt2img"):
            print_comparison_row(r["model"], labels[key], r[key], key)

    print(f"\n### Graph overhead: seed-only re-run through the executor vs the same code called directly "
          f"(txt2img {args.size}x{args.size}, {args.steps} steps)\n")
    print("| model | graph re-run | direct calls | graph / direct | same, CPU time | overhead | graph peak "
          "| direct peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        graph, direct = r["txt2img"]["graph"], r["txt2img"]["direct"]
        print(f"| {r['model']} | {fmt_s(graph['s'])} | {fmt_s(direct['s'])} | **{graph['s'] / direct['s']:.3f}** | "
              f"{graph['cpu_s'] / direct['cpu_s']:.3f} | {(graph['s'] - direct['s']) * 1e3:+.1f} ms | "
              f"{fmt_mb(graph['peak_mb'])} | {fmt_mb(direct['peak_mb'])} |")

    print()
    print("- txt2img, ours: workflows/txt2img.json through the executor, re-run with only the seed changed "
          "(checkpoint and prompts cached: sampler, decode and PNG save run); diffusers: StableDiffusionPipeline with "
          "DPMSolverMultistepScheduler (dpmsolver++, order 2, Karras sigmas, final sigma 0) given the same prompt "
          "embeddings, plus saving its PNG. Direct calls: denoise_latents, decode_from_latent and save_pngs, "
          "as the nodes call them.")
    print("- CPU time: the process's CPU seconds (all its threads) for the best call. With other processes "
          "competing for the cores it is steadier than wall time (which the goals are about) at --threads 1 or "
          "with --omp-passive; with spinning OpenMP threads it counts the spinning too.")
    print("- max rel. diff: max |ours - diffusers| / max(1, max |diffusers|) for the same input, a same-weights check. "
          "txt2img images are not compared: diffusers rounds Karras sigmas to integer timesteps.")
    for r in results:
        n = len(r["unet"]["ours"]["all_s"]), len(r["txt2img"]["graph"]["all_s"])
        cache = r["output_cache"]
        print(f"- {r['model']}: best of {n[0]} (U-Net, VAE) and {n[1]} (txt2img); loading through the graph "
              f"(checkpoint + both prompts) {r['load_s']:.1f} s, not timed above; the diffusers modules share "
              f"its tensors (built in {r['convert_s']:.2f} s). Graph re-runs executed: "
              f"{', '.join(r['graph_executed'])}; "
              f"output cache {cache['mb']:,.0f} of {cache['max_mb']:,.0f} MB in {cache['entries']} entries.")
    summary = []
    for r in results:
        ratios = " / ".join(f"{(r[k]['graph'] if k == 'txt2img' else r[k]['ours'])['s'] / r[k]['diffusers']['s']:.2f}"
                            for k in ("unet", "vae", "txt2img"))
        overhead = r["txt2img"]["graph"]["s"] / r["txt2img"]["direct"]["s"]
        summary.append(f"{r['model']}: ours/diffusers U-Net / VAE / txt2img {ratios}, graph/direct {overhead:.3f}")
    print("\nSummary (wall time): " + "; ".join(summary) +
          " (goals: ours/diffusers <= 1.0, aim 0.8; graph/direct <= 1.05).")


def print_sdxl_tables(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    side = args.sdxl_size // 8
    print(f"\n### SDXL size, ours vs diffusers on the same weights (CPU, torch threads {args.threads}, best of N; "
          f"peak = RSS growth during the call)\n")
    print_comparison_header()
    for r in results:
        labels = {"unet": f"U-Net forward, latent {side}x{side}, batch 2, with y",
                  "txt2img": f"txt2img {args.sdxl_size}x{args.sdxl_size}, {r.get('steps')} steps DPM++ 2M Karras, "
                             f"cfg {CFG}"}
        for key in ("unet", "txt2img"):
            if key in r:
                print_comparison_row(r["model"], labels[key], r[key], key)
    print()
    print("- SDXL base size (U-Net 2.6B, CLIP-L + bigG text towers, VAE) with seeded random weights from an fp16 file. "
          "fp32: everything fp32; bf16: our CPU bf16 placement (U-Net bf16, text encoders and VAE fp32), measured "
          "in a fresh worker after the fp32 one has exited. diffusers' UNet2DConditionModel / AutoencoderKL share "
          "our tensors (so the same dtypes); StableDiffusionXLPipeline gets our prompt embeddings and pooled vectors, "
          "original = target size = the image. U-Net: ours gets y (pooled + the 6 size numbers embedded), diffusers "
          "the pooled vector and the numbers (added_cond_kwargs). Peak during load also counts the pages of the "
          "memory-mapped checkpoint the loader has read (file-backed, up to the file's size, gone once it is closed).")
    for r in results:
        dtypes = ", ".join(f"{name} {dtype}" for name, dtype in r["dtypes"].items())
        line = (f"- {r['model']}: best of {len(r['unet']['ours']['all_s'])} (U-Net)"
                + (f" and {len(r['txt2img']['graph']['all_s'])} (txt2img)" if "txt2img" in r else "")
                + f"; loading through the graph (checkpoint + both prompts) {r['load_s']:.1f} s, RSS after load "
                f"{fmt_mb(r['rss_after_load_mb'])} for {fmt_mb(r['weights_mb'])} of weights ({dtypes}), peak during "
                f"load {fmt_mb(r['load_peak_mb'])}, process peak {fmt_mb(r['process_peak_mb'])}; diffusers modules "
                f"built in {r['convert_s']:.2f} s.")
        if "txt2img" in r:
            line += (f" Graph re-runs executed: {', '.join(r['graph_executed'])}; diffusers' images: "
                     f"{r['diffusers_vae']}.")
        print(line)
    summary = []
    for r in results:
        ratios = [f"U-Net {r['unet']['ours']['s'] / r['unet']['diffusers']['s']:.2f}"]
        if "txt2img" in r:
            ratios.append(f"txt2img {r['txt2img']['graph']['s'] / r['txt2img']['diffusers']['s']:.2f}")
        summary.append(f"{r['model']}: ours/diffusers " + ", ".join(ratios))
    print("\nSDXL summary (wall time): " + "; ".join(summary) + " (goal: ours/diffusers <= 1.0 in fp32).")


def build_attention_lora(path: Path, unet: Any, text_encoder: Any, rank: int = 32) -> float:
    """A LoRA of what kohya's scripts train by default: every linear layer of the U-Net's
    transformers (attention q, k, v, out, feed-forward) and their 1x1 proj_in/proj_out, and the
    text encoder's attention and MLP; rank `rank`, alpha rank / 2, seeded fp16 tensors, kohya
    names. Returns the share of the U-Net's weights it touches."""
    import torch
    from safetensors.torch import save_file

    from latentgraph.nodes.sd.unet_names import diffusers_name

    generator = torch.Generator().manual_seed(7)
    tensors: dict[str, Any] = {}
    touched = 0

    def add(key: str, module: Any) -> None:
        weight = module.weight
        extra = (1,) * (weight.ndim - 2)  # a 1x1 convolution's down and up are 1x1 convolutions too
        down = torch.randn(rank, weight.shape[1], *extra, generator=generator) / weight.shape[1] ** 0.5
        tensors[key + ".lora_down.weight"] = down.half()
        tensors[key + ".lora_up.weight"] = (torch.randn(weight.shape[0], rank, *extra, generator=generator) * 1e-3).half()
        tensors[key + ".alpha"] = torch.tensor(rank / 2)

    for name, module in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        in_transformer = ".transformer_blocks." in name and isinstance(module, torch.nn.Linear)
        if in_transformer or leaf in ("proj_in", "proj_out"):
            add("lora_unet_" + diffusers_name(name, unet.config).replace(".", "_"), module)
            touched += module.weight.numel()
    inner = "" if hasattr(text_encoder, "text_model") else "text_model."
    for name, module in text_encoder.named_modules():
        if (".self_attn." in name or ".mlp." in name) and isinstance(module, torch.nn.Linear):
            add("lora_te_" + (inner + name).replace(".", "_"), module)
    save_file(tensors, path)
    return touched / sum(p.numel() for p in unet.parameters())


def measure_lora(spec: dict[str, Any]) -> dict[str, Any]:
    """LoRA on the SD1.5-size model: what a strength change costs against a txt2img run, and the
    peak memory of runs with and without the LoRA (see print_lora_tables)."""
    import dataclasses

    import torch

    torch.set_num_threads(spec["threads"])
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.nodes.sd.patches import BackupWeights, patch_state, set_base_weights
    from latentgraph.nodes.services import Services

    size, steps = spec["size"], spec["steps"]
    work = Path(spec["workdir"]) / "lora"
    shutil.rmtree(work, ignore_errors=True)
    for kind in ("checkpoints", "loras"):
        (work / "models" / kind).mkdir(parents=True)
    (work / "input").mkdir()
    os.link(spec["checkpoint"], work / "models" / "checkpoints" / CHECKPOINT_NAME)
    folders = Folders(models=work / "models", inputs=work / "input", outputs=work / "output", temp=work / "temp")
    services = Services(folders=folders, device="cpu", precision="fp32")
    executor = Executor(registry, OutputCache(4 << 30), services=services, events=EventBus())
    base_doc = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    lora_doc = json.loads(json.dumps(base_doc))
    lora_doc["nodes"]["lora"] = {"type": "lora_loader", "inputs": {
        "model": {"node": "checkpoint", "output": "model"}, "clip": {"node": "checkpoint", "output": "clip"},
        "lora_name": "attention.safetensors", "strength_model": 1.0, "strength_clip": 1.0}}
    for node, name in (("positive", "clip"), ("negative", "clip"), ("sampler", "model")):
        lora_doc["nodes"][node]["inputs"][name] = {"node": "lora", "output": name}
    seeds = iter(range(1, 1 << 30))

    def run(document: dict[str, Any], strength: float | None = None, steps: int = steps) -> tuple[float, Any]:
        extra = {} if strength is None else {("lora", "strength_model"): strength}
        started = time.perf_counter()
        result = executor.run(txt2img_settings(document, size, steps, next(seeds), extra))
        assert result.ok, result.errors
        return time.perf_counter() - started, result

    run(base_doc, steps=1)  # loads the checkpoint and encodes the prompts
    loaded = executor.run(txt2img_settings(base_doc, size, 1, 0), outputs=["checkpoint"]).values["checkpoint"]
    model = loaded["model"]
    touched = build_attention_lora(work / "models" / "loras" / "attention.safetensors", model.unet, loaded["clip"].model)
    gc.collect()
    rss_loaded = (_status_kb("VmRSS") or 0) / 1024
    results: dict[str, Any] = {"touched": touched, "rss_loaded_mb": rss_loaded, "size": size, "steps": steps}

    with PeakRSS() as peak:
        results["base_run_s"], _ = run(base_doc)
    results["base_peak_mb"] = peak.mb
    with PeakRSS() as peak:
        results["lora_run_s"], _ = run(lora_doc, 1.0)  # the first application included
    results["lora_peak_mb"] = peak.mb
    _, switched = run(lora_doc, 0.5, steps=1)
    results["switch_graph_executed"] = sorted(switched.executed)

    # The switch itself, timed on the handles: base -> strength a -> strength b..., best of 3.
    lora_model = executor.run(txt2img_settings(lora_doc, size, 1, 0), outputs=["lora"]).values["lora"]["model"]
    patch = lora_model.patches[0]

    def switches(label: str) -> None:
        times = []
        with PeakRSS() as peak:
            for strength in (0.8, 0.6, 0.4):
                handle = model.with_patches(dataclasses.replace(patch, strength=strength))
                started = time.perf_counter()
                with handle.patched():
                    pass
                times.append(time.perf_counter() - started)
        results[label] = {"s": min(times), "peak_mb": peak.mb}

    switches("switch_file")
    with model.patched():  # back to the base weights before the other strategy takes over
        pass
    set_base_weights(model.unet, BackupWeights())
    switches("switch_backup")
    results["backup_mb"] = patch_state(model.unet).base.nbytes / 2**20
    started = time.perf_counter()
    load_checkpoint(spec["checkpoint"])
    results["reload_s"] = time.perf_counter() - started
    log(f"[lora] {results}")
    return results


def print_lora_tables(row: dict[str, Any]) -> None:
    base = row["rss_loaded_mb"]
    print(f"\nLoRA on the SD1.5-size model (kohya's default targets: transformer linears and proj_in/out; rank 32; touching {row['touched']:.0%} of the "
          f"U-Net's weights; txt2img {row['size']}x{row['size']}, {row['steps']} steps):\n")
    print("| measurement | time | ratio | peak memory (process) | ratio |")
    print("|---|---:|---:|---:|---:|")
    run_s = row["base_run_s"]
    base_peak = base + (row["base_peak_mb"] or 0)
    print(f"| txt2img, no LoRA | {fmt_s(run_s)} | 1.00 | {fmt_mb(base_peak)} | 1.00 |")
    lora_peak = base + (row["lora_peak_mb"] or 0)
    print(f"| txt2img, LoRA applied (first application included) | {fmt_s(row['lora_run_s'])} | "
          f"{row['lora_run_s'] / run_s:.2f} | {fmt_mb(lora_peak)} | **{lora_peak / base_peak:.3f}** |")
    for key, label in (("switch_file", "strength change, base weights read back from the file (ours)"),
                       ("switch_backup", "strength change, base weights kept as a copy (reference)")):
        peak = base + (row[key]["peak_mb"] or 0)
        print(f"| {label} | {fmt_s(row[key]['s'])} | **{row[key]['s'] / run_s:.3f}** | {fmt_mb(peak)} | "
              f"{peak / base:.3f} of the loaded model |")
    print(f"| reloading the checkpoint instead (reference) | {fmt_s(row['reload_s'])} | {row['reload_s'] / run_s:.3f} | — | — |")
    print(f"\nA strength change re-runs {', '.join(row['switch_graph_executed'])} (the prompts stay cached); "
          f"the copy strategy held {row['backup_mb']:,.0f} MB of copies; the model was {fmt_mb(base)} resident.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny model only (seconds)")
    parser.add_argument("--skip-sd15", action="store_true", help="the tiny model only")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent side = size / 8)")
    parser.add_argument("--steps", type=int, default=20, help="txt2img sampling steps")
    parser.add_argument("--skip-tiny", action="store_true", help="the SD1.5-size model only")
    parser.add_argument("--repeat", type=int, help="tiny model: calls per measurement, best of (10; 5 with --quick)")
    parser.add_argument("--sd-repeat", type=int, default=3, help="SD1.5 size: U-Net and VAE calls (best of)")
    parser.add_argument("--sd-runs", type=int, default=1, help="SD1.5 size: txt2img runs per side (best of)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE in the workers: steadier numbers while other processes "
                             "load the cores")
    parser.add_argument("--weights-dir", type=Path, help="keep the SD1.5-size (and SDXL) checkpoint here and reuse it")
    parser.add_argument("--sdxl", action="store_true",
                        help="add the SDXL-size rows (builds a 7 GB checkpoint; fp32 needs about 16 GB of memory); "
                             "with --skip-tiny --skip-sd15, the SDXL rows only")
    parser.add_argument("--sdxl-size", type=int, default=512, help="SDXL: image side (U-Net latent side = size / 8)")
    parser.add_argument("--sdxl-steps", type=int, default=4, help="SDXL fp32: txt2img steps (0: no txt2img row)")
    parser.add_argument("--sdxl-bf16-steps", type=int, default=2, help="SDXL bf16: txt2img steps (0: no txt2img row)")
    parser.add_argument("--sdxl-precision", choices=("fp32", "bf16", "both"), default="both",
                        help="SDXL: which precisions, each in its own worker (fp32 first)")
    parser.add_argument("--lora", action="store_true",
                        help="add the LoRA rows on the SD1.5-size model (strength change against a txt2img run, "
                             "peak memory with and without); with --skip-tiny --skip-sd15, those only")
    parser.add_argument("--lora-size", type=int, default=512, help="LoRA rows: txt2img image side")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        if spec["model"] == "build":
            build_sd15_checkpoint(Path(spec["checkpoint"]))
            print(RESULT_MARK + "{}")
        elif spec["model"] == "build_sdxl":
            build_sdxl_checkpoint(Path(spec["checkpoint"]))
            print(RESULT_MARK + "{}")
        elif spec["model"] == "sdxl":
            print(RESULT_MARK + json.dumps(measure_sdxl(spec)))
        elif spec["model"] == "lora":
            print(RESULT_MARK + json.dumps(measure_lora(spec)))
        else:
            print(RESULT_MARK + json.dumps(measure_model(spec)))
        return
    if args.skip_tiny and args.skip_sd15 and not args.quick and not args.sdxl and not args.lora:
        parser.error("--skip-tiny and --skip-sd15 leave nothing to measure")
    if args.sdxl_size % 64:
        parser.error("--sdxl-size must be a multiple of 64")
    if args.size % 64:
        parser.error("--size must be a multiple of 64 (the SD1.5 U-Net downsamples the latent 3 times)")

    import torch  # only for the report's header

    if args.repeat is None:
        args.repeat = 5 if args.quick else 10

    with tempfile.TemporaryDirectory(prefix="latentgraph-bench-sd-") as scratch:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if args.omp_passive else None
        common = {"size": args.size, "steps": args.steps, "threads": args.threads, "workdir": scratch}

        def built(name: str, builder: str) -> Path:
            """The random-weight checkpoint `name` in --weights-dir (else the scratch folder), built
            by the `builder` worker the first time."""
            folder = args.weights_dir or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint = (folder / name).resolve()
            if not checkpoint.exists():
                run_worker({**common, "model": builder, "checkpoint": str(checkpoint)}, env)
            return checkpoint

        started = time.perf_counter()
        load_before = os.getloadavg()
        results = []
        if not args.skip_tiny or args.quick:
            results.append(run_worker({**common, "model": "tiny", "checkpoint": None, "repeat": args.repeat,
                                       "runs": args.repeat}, env))
        if not (args.quick or args.skip_sd15):
            checkpoint = built(SD15_FILE, "build")
            results.append(run_worker({**common, "model": "sd15", "checkpoint": str(checkpoint),
                                       "repeat": args.sd_repeat, "runs": args.sd_runs}, env))
        sdxl_results = []
        if args.sdxl:
            checkpoint = built(SDXL_FILE, "build_sdxl")
            for precision in ("fp32", "bf16"):
                if args.sdxl_precision in (precision, "both"):
                    sdxl_results.append(run_worker({
                        **common, "model": "sdxl", "precision": precision, "checkpoint": str(checkpoint),
                        "size": args.sdxl_size, "steps": args.sdxl_steps if precision == "fp32" else args.sdxl_bf16_steps,
                        "warmup_steps": 1, "repeat": args.sd_repeat, "runs": args.sd_runs}, env))
        lora_result = None
        if args.lora:
            checkpoint = built(SD15_FILE, "build")
            lora_result = run_worker({**common, "model": "lora", "checkpoint": str(checkpoint),
                                      "size": args.lora_size}, env)
        load_after = os.getloadavg()

    import diffusers

    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.perf_counter() - started:.0f} s in all" + (", OMP_WAIT_POLICY=PASSIVE." if args.omp_passive else "."))
    if results:
        print_tables(results, args)
    if sdxl_results:
        print_sdxl_tables(sdxl_results, args)
    if lora_result:
        print_lora_tables(lora_result)


if __name__ == "__main__":
    main()
