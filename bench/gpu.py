"""Stable Diffusion on a CUDA GPU: the default workflow through our graph against diffusers'
StableDiffusionPipeline, on the same weights, in the same run.

    python bench/gpu.py [--family sd1|sdxl] [--size 512] [--steps 20] [--runs 3] [--weights-dir DIR]
                        [--precisions fp32,fp16,bf16] [--diffusers fp16,bf16] [--compile]

Needs a CUDA device (exits with a message otherwise). An SD1.5-size checkpoint with seeded random
weights (bench/sd.py's, 2.1 GB fp16) is built once in a temporary folder (or kept in
--weights-dir) and loaded through the real `checkpoint_loader` node, with the device and precision
set the way `latentgraph serve --device cuda --precision ...` sets them (`Services`). For each
precision, workflows/txt2img.json is run once to load and warm up, then `--runs` times with only
the seed changed (model and prompts cached: the sampler, VAE decode and PNG save run), best of.

For each precision in --diffusers, diffusers' UNet2DConditionModel and AutoencoderKL are built
from the very tensors our loader placed on the GPU (diffusers' own single-file converters; no
copy) and StableDiffusionPipeline runs the same prompt embeddings, sampler (DPM++ 2M Karras, as
DPMSolverMultistepScheduler) and cfg, saving its PNG too; diffusers' default attention (SDPA).

--family sdxl does the same for SDXL base: bench/sd.py's SDXL-size checkpoint (U-Net 2.6B, CLIP-L
and bigG; 6.5 GB fp16, built once), workflows/sdxl_txt2img.json at 1024x1024 unless --size says
otherwise (its size conditioning set to the image's), against StableDiffusionXLPipeline given
our prompt embeddings, pooled vectors and sizes (original = target = the image, no crop).

With --compile, a row "ours, --compile" runs the same workflow with the services `latentgraph serve
--compile` makes (U-Net and VAE decoder compiled by inductor; its first image pays the compiles).

Columns: load (first run, checkpoint read to first image), txt2img (best re-run), per step (that
divided by the steps; it includes the decode), peak GPU memory during a re-run
(torch.cuda.max_memory_allocated, weights included), and the difference of the decoded image from
our fp32 one on the same seed (mean absolute difference in 0-255 values; random weights amplify
rounding, so this is an upper bound of what a trained model shows; diffusers draws its noise
otherwise, so its images are not compared). Ratios are against diffusers at
the same precision, measured in the same run.

The U-Net table: one forward of the cond/uncond batch of 2 at the image's latent size, ours and
diffusers' (and ours under torch.compile with --compile: inductor, default mode, compile
time reported), best of 20 after warm-up; its FLOPs counted by torch's FlopCounterMode, and the
achieved TFLOP/s against this GPU's matmul peak for the dtype measured in this run (an 8192^3
matrix product).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # sd_tiny: the tiny model's configs
sys.path.insert(1, str(ROOT / "bench"))


def matmul_peak(torch: Any, dtype: Any, device: str, n: int = 8192) -> float:
    """TFLOP/s of an n^3 matrix product in `dtype` (mean of 10 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(torch, device)
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(torch, device)
    return 2 * n**3 * 10 / (time.perf_counter() - started) / 1e12


def sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(torch: Any, device: str, fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync(torch, device)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync(torch, device)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["sd1", "sdxl"], default="sd1",
                        help="sd1: the SD1.5-size model and workflows/txt2img.json; sdxl: SDXL base size and "
                             "workflows/sdxl_txt2img.json against StableDiffusionXLPipeline")
    parser.add_argument("--size", type=int, help="image side (default 512, 1024 for sdxl)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--weights-dir", type=Path)
    parser.add_argument("--precisions", default="fp32,fp16,bf16", help="ours (fp32 first: the images' reference)")
    parser.add_argument("--diffusers", default="fp16,bf16", help="diffusers' pipeline at these precisions ('' none)")
    parser.add_argument("--compile", action="store_true",
                        help="also ours with --compile through the graph (U-Net and VAE decoder), and our U-Net "
                             "forward under torch.compile")
    parser.add_argument("--unet-repeat", type=int, default=20)
    parser.add_argument("--checkpoint", type=Path, help="measure this checkpoint instead of the SD1.5-size one")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu" checks the script itself
    args = parser.parse_args()

    import numpy as np
    import torch

    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device; none is visible to torch", file=sys.stderr)
        return 2
    import warnings

    warnings.simplefilter("ignore")
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.sd.families.sdxl import SIZE_EMBEDDING
    from latentgraph.nodes.sd.tokenizer import get_tokenizer
    from latentgraph.nodes.sd.unet import timestep_embedding
    from latentgraph.nodes.services import Services
    from latentgraph.training.evaluate import DEMO_NAME, demo_folders, load_workflow, with_inputs
    from PIL import Image
    from sd import SD15_FILE, SDXL_FILE, build_sd15_checkpoint, build_sdxl_checkpoint, diffusers_modules

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    weights_dir = args.weights_dir or Path(tempfile.mkdtemp(prefix="latentgraph-gpu-bench-"))
    weights_dir.mkdir(parents=True, exist_ok=True)
    sdxl = args.family == "sdxl"
    size = args.size or (1024 if sdxl else 512)
    checkpoint = args.checkpoint or weights_dir / (SDXL_FILE if sdxl else SD15_FILE)
    if not checkpoint.exists():
        (build_sdxl_checkpoint if sdxl else build_sd15_checkpoint)(checkpoint)

    workflow = load_workflow(ROOT / "workflows" / "sdxl_txt2img.json") if sdxl else load_workflow()
    cfg = workflow["nodes"]["sampler"]["inputs"]["cfg"]
    wanted = [p for p in args.precisions.split(",") if p]
    with_diffusers = [p for p in args.diffusers.split(",") if p]
    rows: list[dict[str, Any]] = []
    unet_rows: list[dict[str, Any]] = []
    peaks = {name: matmul_peak(torch, dtypes[name], device, 8192 if cuda else 512) for name in ("fp16", "bf16", "fp32")
             if name in set(wanted) | set(with_diffusers)}
    reference = None
    latent_side = size // 8
    with demo_folders(checkpoint) as folders:
        for precision in dict.fromkeys(wanted + with_diffusers):
            events = EventBus()
            events.subscribe(lambda event: None)  # as the server listens: step previews get made
            executor = Executor(registry, OutputCache(1 << 30),
                                services=Services(folders=folders, device=device, precision=precision),
                                events=events)

            def document(seed: int) -> dict[str, Any]:
                settings = {"sampler.seed": seed, "sampler.steps": args.steps, "latent.width": size,
                            "latent.height": size, "checkpoint.checkpoint": DEMO_NAME}
                if sdxl:  # the size conditioning says the image's size: original = target, no crop
                    settings |= {f"size.{name}": size for name in
                                 ("original_width", "original_height", "target_width", "target_height")}
                return with_inputs(workflow, settings)

            def ours(seed: int, executor: Executor = executor) -> np.ndarray:
                sync(torch, device)
                result = executor.run(document(seed))
                sync(torch, device)
                if not result.ok:
                    raise RuntimeError(f"{precision}: {[str(e) for e in result.errors]}")
                info = result.results["save"]["images"][0]
                with Image.open(folders.outputs / info["subfolder"] / info["filename"]) as png:
                    return np.asarray(png.convert("RGB"), dtype=np.float64)

            def measure(label: str, run: Callable[[int], np.ndarray]) -> None:
                nonlocal reference
                first = 1000 * len(rows) + 1  # seeds of its own: a row never finds the previous row's results cached
                started = time.perf_counter()
                run(first)
                load = time.perf_counter() - started
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                times = []
                for index in range(args.runs):
                    started = time.perf_counter()
                    run(first + 100 + index)  # a new seed each time: the sampler runs, nothing is cached
                    times.append(time.perf_counter() - started)
                peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
                diff = None  # diffusers draws its noise otherwise: its images are not compared
                if label.startswith("ours"):  # the image of one seed, the same for every precision
                    image = run(7)
                    reference = image if reference is None else reference
                    diff = float(np.abs(image - reference).mean())
                rows.append({"who": label, "precision": precision, "load": load, "best": min(times),
                             "peak": peak, "diff": diff})
                print(f"  {label} {precision}: load {load:.2f} s, best {min(times):.3f} s", flush=True)

            if precision in wanted:
                measure("ours", ours)
                if cuda and precision == "fp16":  # what a preview at every step costs (the old default)
                    from latentgraph.nodes import previews

                    # No interval and no share limit: a preview after every step.
                    kept = previews.ASYNC_PREVIEW_INTERVAL, previews.PREVIEW_SHARE
                    previews.ASYNC_PREVIEW_INTERVAL, previews.PREVIEW_SHARE = 0.0, 1.0
                    try:
                        measure("ours, a preview every step", ours)
                    finally:
                        previews.ASYNC_PREVIEW_INTERVAL, previews.PREVIEW_SHARE = kept
                if args.compile:  # `latentgraph serve --compile`: its load + first image includes the compiles
                    compiled_executor = Executor(registry, OutputCache(1 << 30), events=events, services=Services(
                        folders=folders, device=device, precision=precision, compile=True))
                    measure("ours, --compile", lambda seed: ours(seed, compiled_executor))
                    del compiled_executor
                    torch._dynamo.reset()
            if precision not in with_diffusers:
                del executor
                if cuda:
                    torch.cuda.empty_cache()
                continue

            # diffusers on the very tensors our loader placed (loaded by the graph, prompts cached).
            from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

            prompt = "size" if sdxl else "positive"  # SDXL's positive prompt goes through its size conditioning
            loaded = executor.run(document(1), outputs=["checkpoint", prompt, "negative"])
            assert loaded.ok, loaded.errors
            handles = loaded.values
            model, vae = handles["checkpoint"]["model"], handles["checkpoint"]["vae"]
            unet = model.unet
            reference_unet, reference_vae = diffusers_modules(unet, vae.model)
            counts: dict[Any, int] = {}
            for parameter in unet.parameters():  # the weights' dtype (a few small ones may be kept in fp32)
                counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
            dtype = max(counts, key=counts.get)
            schedule = model.spec.schedule
            scheduler = DPMSolverMultistepScheduler(
                num_train_timesteps=schedule.timesteps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
                beta_schedule=schedule.beta_schedule, algorithm_type="dpmsolver++", solver_order=2,
                use_karras_sigmas=True, final_sigmas_type="zero")
            # The pipeline casts given embeddings to its text encoder's dtype: where ours differs from
            # the U-Net's (the CPU's bf16 placement) it gets none, and works in the U-Net's dtype.
            clip = handles["checkpoint"]["clip"]
            positive = handles[prompt]["conditioning"].entries[0]
            negative = handles["negative"]["conditioning"].entries[0]
            embeds = {"prompt_embeds": positive.embedding.to(device, dtype),
                      "negative_prompt_embeds": negative.embedding.to(device, dtype)}
            if sdxl:
                same = next(clip.encoders["clip_g"].parameters()).dtype == dtype
                encoders = ({"text_encoder": clip.encoders["clip_l"], "text_encoder_2": clip.encoders["clip_g"],
                             "tokenizer": get_tokenizer(), "tokenizer_2": get_tokenizer()} if same else
                            dict.fromkeys(("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")))
                pipeline = StableDiffusionXLPipeline(vae=reference_vae, unet=reference_unet, scheduler=scheduler,
                                                     force_zeros_for_empty_prompt=True, add_watermarker=False,
                                                     **encoders)
                embeds |= {"pooled_prompt_embeds": positive.pooled.to(device, dtype),
                           "negative_pooled_prompt_embeds": negative.pooled.to(device, dtype),
                           "original_size": (size, size), "target_size": (size, size)}
            else:
                text_encoder = clip.model
                same = next(text_encoder.parameters()).dtype == dtype
                pipeline = StableDiffusionPipeline(
                    vae=reference_vae, text_encoder=text_encoder if same else None,
                    tokenizer=get_tokenizer() if same else None, unet=reference_unet, scheduler=scheduler,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            vae_dtype = next(reference_vae.parameters()).dtype
            pipeline.set_progress_bar_config(disable=True)
            out = folders.outputs / "diffusers"
            out.mkdir(parents=True, exist_ok=True)

            def theirs(seed: int) -> np.ndarray:
                sync(torch, device)
                with torch.inference_mode():  # its latents decoded by its VAE in the VAE's dtype, as ours are
                    latents = pipeline(**embeds, height=size, width=size, num_inference_steps=args.steps,
                                       guidance_scale=cfg, generator=torch.Generator(device).manual_seed(seed),
                                       output_type="latent").images
                    decoded = reference_vae.decode(latents.to(vae_dtype) / reference_vae.config.scaling_factor).sample
                    image = pipeline.image_processor.postprocess(decoded.float(), output_type="pil")[0]
                image.save(out / f"diffusers_{seed:05}.png", compress_level=4)
                sync(torch, device)
                return np.asarray(image.convert("RGB"), dtype=np.float64)

            measure("diffusers", theirs)

            # The U-Net alone: the cond/uncond batch of 2 at the image's latent size.
            from torch.utils.flop_counter import FlopCounterMode

            generator = torch.Generator(device).manual_seed(1234)
            x = torch.randn(2, 4, latent_side, latent_side, generator=generator, device=device, dtype=dtype)
            t = torch.tensor([500.0, 500.0], device=device)
            context = torch.randn(2, 77, unet.config.context_dim, generator=generator, device=device, dtype=dtype)
            ours_extra: dict[str, Any] = {}
            theirs_extra: dict[str, Any] = {}
            if sdxl:  # y: the pooled text and the six size numbers, embedded as the family builds it
                pooled = torch.randn(2, unet.config.adm_in_channels - 6 * SIZE_EMBEDDING, generator=generator,
                                     device=device)
                time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32, device=device)
                embedded = timestep_embedding(time_ids.flatten(), SIZE_EMBEDDING).reshape(2, -1)
                ours_extra["y"] = torch.cat([pooled, embedded], dim=1).to(dtype)
                theirs_extra["added_cond_kwargs"] = {"text_embeds": pooled.to(dtype), "time_ids": time_ids}
            with torch.inference_mode():
                counter = FlopCounterMode(display=False)
                with counter:
                    unet(x, t, context, **ours_extra)
                flops = counter.get_total_flops()
                cases = {"ours": lambda: unet(x, t, context, **ours_extra),
                         "diffusers": lambda: reference_unet(x, t, encoder_hidden_states=context,
                                                             **theirs_extra).sample}
                if args.compile:
                    started = time.perf_counter()
                    try:
                        compiled = torch.compile(unet)
                        compiled(x, t, context, **ours_extra)
                        sync(torch, device)
                        cases["ours, compiled"] = lambda: compiled(x, t, context, **ours_extra)
                        print(f"  compiled the U-Net ({precision}) in {time.perf_counter() - started:.0f} s", flush=True)
                    except Exception as exc:  # reported, not fatal: the eager rows stand
                        print(f"  torch.compile failed ({precision}): {type(exc).__name__}: {exc}", flush=True)
                for label, fn in cases.items():
                    seconds = best_of(torch, device, fn, args.unet_repeat)
                    unet_rows.append({"who": label, "precision": precision, "ms": seconds * 1000,
                                      "tflops": flops / seconds / 1e12, "peak": peaks.get(precision, float("nan"))})
                if args.compile:
                    torch._dynamo.reset()  # what it compiled for this model must not linger into the next one's rows
            del executor, pipeline, reference_unet, reference_vae, handles, model, vae, unet, loaded
            if cuda:
                torch.cuda.empty_cache()

    name = torch.cuda.get_device_name() if cuda else "CPU"
    import diffusers

    model_name = checkpoint.name if args.checkpoint else f"{'SDXL' if sdxl else 'SD1.5'}-size random weights"
    print(f"\n{name}, torch {torch.__version__}, diffusers {diffusers.__version__}; {model_name}, {size}x{size}, "
          f"{args.steps} steps DPM++ 2M Karras, cfg {cfg}\n")
    print("| who | precision | load + first image | txt2img | per step | vs diffusers, same precision | peak GPU memory | image vs our fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next((r["best"] for r in rows if r["who"] == "diffusers" and r["precision"] == row["precision"]), None)
        ratio = f"{row['best'] / base:.2f}" if base else "—"
        print(f"| {row['who']} | {row['precision']} | {row['load']:.2f} s | {row['best']:.3f} s | "
              f"{row['best'] / args.steps * 1000:.1f} ms | {ratio} | {row['peak']:.0f} MiB | "
              f"{'—' if row['diff'] is None else format(row['diff'], '.2f')} |")
    if unet_rows:
        print(f"\nU-Net forward, batch 2, {latent_side}x{latent_side} latent; matmul peak measured here: "
              + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in peaks.items()) + "\n")
        print("| U-Net | precision | forward | TFLOP/s | of the matmul peak | vs diffusers |")
        print("|---|---|---|---|---|---|")
        for row in unet_rows:
            base = next(r["ms"] for r in unet_rows if r["who"] == "diffusers" and r["precision"] == row["precision"])
            print(f"| {row['who']} | {row['precision']} | {row['ms']:.2f} ms | {row['tflops']:.0f} | "
                  f"{row['tflops'] / row['peak'] * 100:.0f}% | {row['ms'] / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
