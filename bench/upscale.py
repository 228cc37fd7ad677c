"""Tiled upscaling against one untiled pass: time, peak memory and the largest difference.

    .venv/bin/python bench/upscale.py [--size 512] [--tiles 128,256] [--blocks 23] [--threads 2]
                                      [--untiled-size N] [--device cpu|cuda]

A RealESRGAN_x4plus-size RRDBNet (23 blocks, 64 features, 32 grow channels, x4; 16.7M parameters)
with seeded random weights (PyTorch's default initialisation) is saved as a BasicSR-layout
.safetensors file in a temporary folder and loaded the way the upscale_model_loader node loads it.
A size x size picture (workflows/example.png, resized) is then upscaled by `nodes.sd.upscale.upscale`
(what the image_upscale_with_model node calls) once in one piece and once per tile size, in that
order, in one process, fp32, torch.inference_mode. Each tiled row gives its time and peak against the
untiled call's (wall and CPU time: the process's CPU seconds, which other jobs on the machine
disturb less), the largest |tiled - untiled| and what the node's memory estimate said for one tile.

The untiled reference runs at --untiled-size (default: --size): on a 2-core CPU a 512x512 x4 pass
takes about 3 minutes and 4-5 GB; give a smaller one where that does not fit, and the tiled rows
run at that size too, so each ratio compares the same work.

Peak memory is the growth of the resident set during the call above what the process held just
before (bench/sd.py's PeakRSS: the kernel's high-water mark, reset before each call); on CUDA the
peak allocated GPU memory above what was allocated before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sd import PeakRSS, log  # noqa: E402  (the same memory measure as the other benchmarks)


def build(path: Path, blocks: int) -> None:
    import torch
    from safetensors.torch import save_file

    from latentgraph.nodes.sd.upscale import RRDBConfig, RRDBNet

    torch.manual_seed(0)
    model = RRDBNet(RRDBConfig(blocks=blocks))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def picture(size: int):
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(ROOT / "workflows" / "example.png") as image:
        pixels = np.asarray(image.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def measure(fn, device: str) -> tuple[object, float, float | None]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        return out, elapsed, (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as peak:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    CPU_SECONDS[id(out)] = cpu
    return out, elapsed, peak.mb


CPU_SECONDS: dict[int, float] = {}  # the process's CPU time (all threads) per result, on the CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--untiled-size", type=int, default=None)
    parser.add_argument("--tiles", default="128,256")
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from latentgraph.nodes.sd.upscale import default_margin, load_upscale_model, tile_memory, upscale

    torch.set_num_threads(args.threads)
    size = args.untiled_size or args.size
    tiles = [int(t) for t in args.tiles.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rrdb-x4-random.safetensors"
        build(path, args.blocks)
        model = load_upscale_model(path, args.device, torch.float32)
    x = picture(size)
    margin = default_margin(model)
    log(f"{model.describe()}, receptive field {model.receptive_field} px, margin {margin} px; input {size}x{size}")

    with torch.inference_mode():
        upscale(model, x[:, :, :64, :64])  # warm-up
        log("untiled...")
        whole, whole_s, whole_mb = measure(lambda: upscale(model, x), args.device)
        rows = []
        for tile in tiles:
            log(f"tile {tile}...")
            tiled, tiled_s, tiled_mb = measure(lambda: upscale(model, x, tile=tile), args.device)
            difference = (tiled - whole).abs().max().item() / whole.abs().max().item()
            rows.append((tile, tiled_s, CPU_SECONDS.get(id(tiled)), tiled_mb, difference,
                         tile_memory(model, tile, margin, size, size) / 2**20))
    untiled_estimate = tile_memory(model, size, 0, size, size) / 2**20

    def mb(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f} MB"

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"\n{model.describe()} with random weights, {size}x{size} -> {size * 4}x{size * 4}, fp32, {device}; "
          f"margin {margin} px (receptive field {model.receptive_field} px); max |untiled| "
          f"{whole.abs().max().item():.2f}\n")
    whole_cpu = CPU_SECONDS.get(id(whole))

    def cpu_ratio(cpu: float | None) -> str:
        return f"{cpu / whole_cpu:.2f}" if cpu is not None and whole_cpu else "—"

    print("| run | time | time / untiled | CPU time / untiled | peak memory | peak / untiled | estimate "
          "| max diff / max untiled |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| untiled | {whole_s:.1f} s | 1.00 | 1.00 | {mb(whole_mb)} | 1.00 | {mb(untiled_estimate)} | — |")
    for tile, seconds, cpu, peak, difference, estimate in rows:
        count = (-(-size // tile)) ** 2
        ratio = f"{peak / whole_mb:.2f}" if peak is not None and whole_mb else "—"
        print(f"| tiles of {tile} ({count} tiles) | {seconds:.1f} s | **{seconds / whole_s:.2f}** | {cpu_ratio(cpu)} | "
              f"{mb(peak)} | **{ratio}** | {mb(estimate)} | {difference:.1e} |")


if __name__ == "__main__":
    main()
