"""Stable Diffusion on a CUDA GPU: the default workflow through the graph in fp32, fp16 and bf16.

    python bench/gpu.py [--size 512] [--steps 20] [--runs 3] [--weights-dir DIR]

Needs a CUDA device (exits with a message otherwise). An SD1.5-size checkpoint with seeded random
weights (bench/sd.py's, 2.1 GB fp16) is built once in a temporary folder (or kept in
--weights-dir) and loaded through the real `checkpoint_loader` node, with the device and precision
set the way `latentgraph serve --device cuda --precision ...` sets them (`Services`). For each
precision, workflows/txt2img.json is run once to load and warm up, then `--runs` times with only
the seed changed (model and prompts cached: the sampler, VAE decode and PNG save run), best of.

Columns: load (first run, checkpoint read to first image), txt2img (best re-run), per step (that
divided by the steps; it includes the decode), peak GPU memory during a re-run
(torch.cuda.max_memory_allocated, weights included), and the difference of the decoded image from
fp32's on the same seed (mean absolute difference in 0-255 pixel values; random weights amplify
rounding, so this is an upper bound of what a trained model shows). Ratios are against fp32 in
the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # sd_tiny: the tiny model's configs
sys.path.insert(1, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--weights-dir", type=Path)
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--checkpoint", type=Path, help="measure this checkpoint instead of the SD1.5-size one")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu" checks the script itself
    args = parser.parse_args()

    import numpy as np
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device; none is visible to torch", file=sys.stderr)
        return 2
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.training.evaluate import demo_folders, load_workflow, with_inputs
    from latentgraph.nodes.services import Services
    from PIL import Image
    from sd import SD15_FILE, build_sd15_checkpoint

    weights_dir = args.weights_dir or Path(tempfile.mkdtemp(prefix="latentgraph-gpu-bench-"))
    weights_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or weights_dir / SD15_FILE
    if not checkpoint.exists():
        build_sd15_checkpoint(checkpoint)
    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    workflow = load_workflow()
    rows = []
    reference = None
    with demo_folders(checkpoint) as folders:
        for precision in args.precisions.split(","):
            executor = Executor(registry, OutputCache(1 << 30),
                                services=Services(folders=folders, device=args.device, precision=precision),
                                events=EventBus())

            def run(seed: int) -> np.ndarray:
                document = with_inputs(workflow, {"sampler.seed": seed, "sampler.steps": args.steps,
                                                  "latent.width": args.size, "latent.height": args.size})
                synchronize()
                result = executor.run(document)
                synchronize()
                if not result.ok:
                    raise RuntimeError(f"{precision}: {[str(e) for e in result.errors]}")
                info = result.results["save"]["images"][0]
                with Image.open(folders.outputs / info["subfolder"] / info["filename"]) as png:
                    return np.asarray(png.convert("RGB"), dtype=np.float64)

            started = time.perf_counter()
            run(1)
            load = time.perf_counter() - started
            times, final = [], None
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for index in range(args.runs):
                started = time.perf_counter()
                image = run(100 + index)  # a new seed each time: the sampler runs, nothing is cached
                times.append(time.perf_counter() - started)
                if index == 0:
                    final = image
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            best = min(times)
            if reference is None:
                reference = final
            rows.append((precision, load, best, best / args.steps, peak, float(np.abs(final - reference).mean())))
            del executor
            if cuda:
                torch.cuda.empty_cache()

    device = torch.cuda.get_device_name() if cuda else "CPU"
    model = checkpoint.name if args.checkpoint else "SD1.5-size random weights"
    print(f"\n{device}, torch {torch.__version__}; {model}, {args.size}x{args.size}, "
          f"{args.steps} steps DPM++ 2M Karras, cfg {workflow['nodes']['sampler']['inputs']['cfg']}\n")
    print("| precision | load + first image | txt2img | per step | vs fp32 | peak GPU memory | image vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    base = rows[0][2]
    for precision, load, best, per_step, peak, diff in rows:
        print(f"| {precision} | {load:.2f} s | {best:.3f} s | {per_step * 1000:.1f} ms | {best / base:.2f} | "
              f"{peak:.0f} MiB | {diff:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
