"""How fast an SD1.5-size txt2img is on this CPU: ours in fp32 and bf16, eager and `--compile`d,
against diffusers fp32 and bf16 (eager) on the same file, in the same run.

    .venv/bin/python bench/speed.py [--sizes 256:6,512:2] [--runs 2] [--weights-dir DIR]
                                    [--variants ours-fp32,ours-bf16,...] [--threads 2]

The checkpoint is bench/sd.py's SD1.5-size one (U-Net 860M, VAE 84M, CLIP ViT-L/14 text tower,
seeded random weights, saved as a 2.1 GB fp16 LDM-layout file; built the first time, kept with
--weights-dir). Each variant runs in a fresh process, one after another, so that time to first
image, compile time and peak memory are each variant's own:

- ours: workflows/txt2img.json through the executor with the CLI's services (`--precision`,
  `--compile`), DPM++ 2M Karras, cfg 7.5; compiled variants compile the U-Net and the VAE's
  decoder (inductor with freezing), once per image size, into an inductor cache made empty for
  this run (what a first start pays); "ours-bf16-compiled-again" is a second process after
  "ours-bf16-compiled" with that cache kept (what every later start pays), measuring its first
  image only;
- diffusers: `StableDiffusionPipeline.from_single_file` on the same file (every component's
  config from a local folder, nothing fetched; `torch_dtype` fp32 or bf16: all its models in that
  dtype, as ours in bf16), DPMSolverMultistepScheduler as DPM++ 2M Karras, the same prompts
  (given as text, so each call encodes them: about 0.1 s of a run), saving its PNG too.

Per variant: time to first image (load the checkpoint, encode the prompts, sample, decode, save at
the first size; compile included), then per size a warm-up run (the compile for that size) and
`--runs` timed runs with new seeds (best of), with the growth of the resident set during the run
(activations and workspace) and the process's peak resident set (weights included); the U-Net
forward of the cond/uncond batch of 2 at that size (best of 3), its FLOPs counted by torch's
FlopCounterMode, and the achieved GFLOP/s against this CPU's matmul peak for the dtype, measured
first in a process of its own (a 2048^3 product, best of 5; in the variants' processes it read low
where compiling had filled the memory).
Ratios are against diffusers fp32 and bf16 of the same run. Needs a quiet machine.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # a worker's first image is also timed from here: imports included

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # sd_tiny, diffusers_tiny: configs and local config folders
sys.path.insert(1, str(ROOT / "bench"))

from sd import (  # noqa: E402  (bench/sd.py: the checkpoint, memory probes, formatting)
    CFG, CHECKPOINT_NAME, RESULT_MARK, SAMPLER, SCHEDULE, SD15_FILE, PeakRSS, build_sd15_checkpoint, cpu_name,
    fmt_mb, fmt_s, log, process_peak_mb, txt2img_settings,
)
from sd import run_worker as sd_worker  # noqa: E402

VARIANTS = ("ours-fp32", "ours-bf16", "ours-fp32-compiled", "ours-bf16-compiled", "ours-bf16-compiled-again",
            "diffusers-fp32", "diffusers-bf16")


def matmul_gflops(torch: Any, dtype: Any, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of an n^3 matrix product in `dtype` on this CPU (best of `repeat` after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def write_diffusers_folder(folder: Path) -> Path:
    """A local config folder for `from_single_file(config=folder)` describing SD1.5's architecture."""
    from diffusers_tiny import clip_text_config, scheduler_config, unet_config, vae_config, write_pipeline_folder

    from latentgraph.nodes.sd.text_encoder import TextEncoderConfig
    from latentgraph.nodes.sd.unet import UNetConfig
    from latentgraph.nodes.sd.vae import VAEConfig

    return write_pipeline_folder(
        folder, "StableDiffusionPipeline",
        {"unet": ("diffusers", "UNet2DConditionModel", unet_config(UNetConfig(), sample_size=64)),
         "vae": ("diffusers", "AutoencoderKL", vae_config(VAEConfig(), sample_size=512)),
         "text_encoder": ("transformers", "CLIPTextModel", clip_text_config(TextEncoderConfig())),
         "scheduler": ("diffusers", "PNDMScheduler", scheduler_config("PNDMScheduler", skip_prk_steps=True))},
        tokenizers={"tokenizer": "<|endoftext|>"},
        safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)


def measure_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant in this (fresh) process: time to first image, then per size runs and the U-Net."""
    import torch

    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    side, precision, compiled = spec["side"], spec["precision"], spec["compile"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    sizes = [tuple(s) for s in spec["sizes"]]
    work = Path(spec["workdir"]) / spec["variant"]
    (work / "models" / "checkpoints").mkdir(parents=True)
    (work / "input").mkdir()
    out = work / "output"
    out.mkdir()
    document = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt = document["nodes"]["positive"]["inputs"]["text"]
    negative = document["nodes"]["negative"]["inputs"]["text"]
    seeds = iter(range(1, 1 << 30))
    result: dict[str, Any] = {"variant": spec["variant"], "sizes": {}}

    if side == "ours":
        import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
        from latentgraph.engine import EventBus, Executor, OutputCache, registry
        from latentgraph.nodes.folders import Folders
        from latentgraph.nodes.sd.compiled import compiled_models, forward_of
        from latentgraph.nodes.services import Services

        link = work / "models" / "checkpoints" / CHECKPOINT_NAME
        try:
            os.link(spec["checkpoint"], link)
        except OSError:  # another file system
            link.symlink_to(spec["checkpoint"])
        folders = Folders(models=work / "models", inputs=work / "input", outputs=out, temp=work / "temp")
        events = EventBus()
        events.subscribe(lambda event: None)  # as the server listens: step previews are made (latent2rgb here)
        services = Services(folders=folders, device="cpu", precision=precision, compile=compiled)
        executor = Executor(registry, OutputCache(4 << 30), services=services, events=events)
        compiles: list[dict[str, Any]] = []

        def run(size: int, steps: int) -> None:
            ran = executor.run(txt2img_settings(document, size, steps, next(seeds)))
            assert ran.ok, ran.errors
            compiles.extend(note | {"size": size} for node in ran.results.values() for note in node.get("compiled", []))

        def load() -> Any:
            loaded = executor.run(txt2img_settings(document, sizes[0][0], 1, 0), outputs=["checkpoint"])
            assert loaded.ok, loaded.errors
            return loaded.values["checkpoint"]["model"].unet

        def unet_call(unet: Any, x: Any, t: Any, context: Any) -> Any:
            with compiled_models(compiled):
                return forward_of(unet)(x, t, context)
    else:
        import diffusers
        import transformers
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        config = write_diffusers_folder(work / "config")
        pipeline: Any = None
        compiles = []

        def load() -> Any:
            nonlocal pipeline
            pipeline = StableDiffusionPipeline.from_single_file(
                spec["checkpoint"], config=str(config), local_files_only=True, torch_dtype=dtype)
            pipeline.scheduler = DPMSolverMultistepScheduler.from_config(
                pipeline.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True,
                final_sigmas_type="zero")
            pipeline.set_progress_bar_config(disable=True)
            return pipeline.unet

        def run(size: int, steps: int) -> None:
            seed = next(seeds)
            image = pipeline(prompt=prompt, negative_prompt=negative, height=size, width=size,
                             num_inference_steps=steps, guidance_scale=CFG,
                             generator=torch.Generator().manual_seed(seed)).images[0]
            image.save(out / f"diffusers_{seed:05}.png", compress_level=4)

        def unet_call(unet: Any, x: Any, t: Any, context: Any) -> Any:
            return unet(x, t, encoder_hidden_states=context).sample

    # Time to first image: the checkpoint read, then the first image at the first size.
    size, steps = sizes[0]
    started = time.perf_counter()
    unet = load()
    result["load_s"] = time.perf_counter() - started
    result["first_image_s"] = result["load_s"] + _timed(lambda: run(size, steps))
    result["from_start_s"] = time.perf_counter() - PROCESS_START
    result["loaded_peak_mb"] = process_peak_mb()
    log(f"[{spec['variant']}] load {result['load_s']:.1f} s, first image {result['first_image_s']:.1f} s")
    if spec["first_only"]:
        result["compiles"] = compiles
        return result

    from torch.utils.flop_counter import FlopCounterMode

    generator = torch.Generator().manual_seed(1234)
    for index, (size, steps) in enumerate(sizes):
        row: dict[str, Any] = {"steps": steps}
        if index > 0:
            row["warmup_s"] = _timed(lambda: run(size, steps))  # a compiled variant compiles this size here
        times, growth = [], []
        for _ in range(spec["runs"]):
            with PeakRSS() as peak:
                times.append(_timed(lambda: run(size, steps)))
            growth.append(peak.mb)
        row |= {"s": min(times), "all_s": times, "growth_mb": max(g for g in growth if g is not None) if any(
            g is not None for g in growth) else None}
        latent = size // 8
        x = torch.randn(2, 4, latent, latent, generator=generator).to(dtype)
        t = torch.tensor([500.0, 500.0])
        context = torch.randn(2, 77, 768, generator=generator).to(dtype)
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                unet(x, t, encoder_hidden_states=context) if side == "diffusers" else unet(x, t, context)
            unet_call(unet, x, t, context)  # warm-up (compiled: guards checked, nothing new to compile)
            unet_s = min(_timed(lambda: unet_call(unet, x, t, context)) for _ in range(3))
        flops = counter.get_total_flops()
        row |= {"unet_s": unet_s, "unet_gflop": flops / 1e9, "unet_gflops": flops / unet_s / 1e9}
        result["sizes"][str(size)] = row
        log(f"[{spec['variant']}] {size}: {row}")
    result["compiles"] = compiles
    result["process_peak_mb"] = process_peak_mb()
    return result


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    return sd_worker(spec, script=__file__)


def print_report(results: dict[str, dict[str, Any]], sizes: list[tuple[int, int]], args: argparse.Namespace,
                 peaks: dict[str, float]) -> None:
    print("\n### Time to first image (fresh process: checkpoint read, prompts encoded, the first image "
          f"{sizes[0][0]}x{sizes[0][0]} in {sizes[0][1]} steps and saved; compile included)\n")
    print("| variant | load | first image | from process start | compiled (s, per model and size) | process peak after |")
    print("|---|---:|---:|---:|---|---:|")
    for name, r in results.items():
        compiles = ", ".join(f"{c['model']} {c['size']}: {c['seconds']:.0f}" if "seconds" in c else
                             f"{c['model']} {c['size']}: failed" for c in r["compiles"]) or "—"
        print(f"| {name} | {fmt_s(r['load_s'])} | {fmt_s(r['first_image_s'])} | {fmt_s(r['from_start_s'])} | {compiles} "
              f"| {fmt_mb(r['loaded_peak_mb'])} |")
    if "diffusers-fp32" in results and "ours-fp32" in results:
        ours, theirs = results["ours-fp32"], results["diffusers-fp32"]
        loaded = ours["first_image_s"] / theirs["first_image_s"]
        started = ours["from_start_s"] / theirs["from_start_s"]
        print(f"\nTime to first image, ours fp32 / diffusers fp32 (from_single_file): **{loaded:.2f}** from the "
              f"load, **{started:.2f}** from the process's start")
    references = [name for name in ("diffusers-fp32", "diffusers-bf16") if name in results]
    for size, steps in [] if args.first_only else sizes:
        key = str(size)
        print(f"\n### txt2img {size}x{size}, {steps} steps {SAMPLER} {SCHEDULE}, cfg {CFG} (best of {args.runs}) "
              f"and the U-Net forward at latent {size // 8}x{size // 8}, batch 2 (matmul peak: "
              f"fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s)\n")
        print("| variant | txt2img | " + " | ".join(f"vs {ref}" for ref in references)
              + " | run's memory growth | process peak | U-Net forward | GFLOP/s | of the matmul peak |")
        print("|---|---:|" + "---:|" * len(references) + "---:|---:|---:|---:|---:|")
        for name, r in results.items():
            if key not in r.get("sizes", {}):
                continue
            row = r["sizes"][key]
            ratios = " | ".join(f"**{row['s'] / results[ref]['sizes'][key]['s']:.2f}**" for ref in references)
            peak = peaks[name.split("-")[1]]
            print(f"| {name} | {fmt_s(row['s'])} | {ratios} | {fmt_mb(row['growth_mb'])} | {fmt_mb(r['process_peak_mb'])} "
                  f"| {fmt_s(row['unet_s'])} | {row['unet_gflops']:.0f} | {row['unet_gflops'] / peak:.0%} |")
    best = {}
    for key in (str(s) for s, _ in ([] if args.first_only else sizes)):
        for ref in references:
            dtype = ref.split("-")[1]
            ours = [n for n in results if n.startswith("ours") and key in results[n].get("sizes", {})]
            if ours:
                fastest = min(ours, key=lambda n: results[n]["sizes"][key]["s"])
                best[(key, ref)] = (fastest, results[fastest]["sizes"][key]["s"] / results[ref]["sizes"][key]["s"], dtype)
    if best:
        print("\nBest of ours against diffusers (goals on the CPU: <= 0.85x fp32, <= 0.80x bf16): " + "; ".join(
            f"{size}px vs {ref}: {name} {ratio:.2f}x" for (size, ref), (name, ratio, _) in best.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256:6,512:2", help="image side:steps pairs, the first also for the first image")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per size (best of)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"which of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--weights-dir", type=Path, help="keep the SD1.5-size checkpoint here and reuse it")
    parser.add_argument("--first-only", action="store_true", help="time to first image only (no per-size rows)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("model") == "build":
            build_sd15_checkpoint(Path(spec["checkpoint"]))
            print(RESULT_MARK + "{}")
        elif spec.get("model") == "peak":
            import torch

            torch.set_num_threads(spec["threads"])
            print(RESULT_MARK + json.dumps({name: matmul_gflops(torch, dtype) for name, dtype in (
                ("fp32", torch.float32), ("bf16", torch.bfloat16))}))
        else:
            print(RESULT_MARK + json.dumps(measure_variant(spec)))
        return
    sizes = [(int(a), int(b)) for a, b in (pair.split(":") for pair in args.sizes.split(","))]
    if any(size % 64 for size, _ in sizes):
        parser.error("sizes must be multiples of 64")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    import diffusers
    import torch

    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="latentgraph-bench-speed-") as scratch:
        folder = args.weights_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = (folder / SD15_FILE).resolve()
        if not checkpoint.exists():
            run_worker({"model": "build", "checkpoint": str(checkpoint)})
        peaks = run_worker({"model": "peak", "threads": args.threads})  # a quiet process of its own
        results = {}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(scratch) / "inductor-cache")  # empty: a first start
        for variant in variants:
            side, precision, *rest = variant.split("-")
            results[variant] = run_worker({
                "variant": variant, "side": side, "precision": precision, "compile": bool(rest),
                "first_only": args.first_only or rest[-1:] == ["again"], "sizes": sizes, "runs": args.runs, "threads": args.threads,
                "checkpoint": str(checkpoint), "workdir": scratch})
    load_after = os.getloadavg()
    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.perf_counter() - started:.0f} s in all.")
    print_report(results, sizes, args, peaks)


if __name__ == "__main__":
    main()
