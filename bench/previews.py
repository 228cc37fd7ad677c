"""What a step preview costs on an SD1.5-size model: latent2rgb and TAESD (nodes/previews.py)
against a full VAE decode and against the sampler step they accompany, in the same run.

    .venv/bin/python bench/previews.py [--sizes 256,512] [--precisions fp32,bf16] [--weights-dir DIR]

The checkpoint is bench/sd.py's SD1.5-size one (seeded random weights; built the first time, kept
with --weights-dir); the TAESD decoder has seeded random weights in the real architecture (its
speed does not depend on them). Per image size and precision: the preview of one latent by
latent2rgb and by TAESD (best of 5, through `nodes.previews`, PIL image included), the VAE
decode of that latent (best of 2) and the U-Net forward of one guided step (the cond/uncond
batch of 2; best of 2). Previews are paced to at most PREVIEW_SHARE of the sampling time, so a
preview that costs more than that share of a step is made every few steps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(1, str(ROOT / "bench"))

from sd import SD15_FILE, build_sd15_checkpoint, cpu_name, fmt_s, log  # noqa: E402


def best(fn: Any, repeat: int) -> float:
    fn()  # warm-up: first-call allocations and oneDNN's kernel choices
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512", help="image sides, comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--weights-dir", type=Path, help="keep the SD1.5-size checkpoint here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from latentgraph.nodes import previews
    from latentgraph.nodes.sd.checkpoint import load_checkpoint
    from latentgraph.nodes.sd.families import SD1
    from latentgraph.nodes.sd.samplers import latent_preview
    from latentgraph.nodes.sd.taesd import read_tiny_autoencoder, tiny_decoder
    from sd_tiny import randomize_

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights_dir or Path(tempfile.mkdtemp(prefix="latentgraph-bench-"))
    weights.mkdir(parents=True, exist_ok=True)
    checkpoint = weights / SD15_FILE
    if not checkpoint.exists():
        build_sd15_checkpoint(checkpoint)
    taesd_file = weights / "taesd_decoder.safetensors"
    if not taesd_file.exists():
        save_file(randomize_(tiny_decoder(), 7).state_dict(), taesd_file)

    rows = []
    for precision in args.precisions.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        log(f"loading the checkpoint in {precision}")
        loaded = load_checkpoint(checkpoint, "cpu", dtype, vae_dtype=dtype)
        decoder = read_tiny_autoencoder(taesd_file, dtype=dtype)
        for side in (int(s) for s in args.sizes.split(",")):
            generator = torch.Generator().manual_seed(side)
            latent = torch.randn(1, 4, side // 8, side // 8, generator=generator)
            x = torch.randn(2, 4, side // 8, side // 8, generator=generator).to(dtype)
            context = torch.randn(2, 77, 768, generator=generator).to(dtype)
            t = torch.tensor([500.0, 500.0])
            with torch.inference_mode():
                row = {
                    "size": side, "precision": precision,
                    "latent2rgb": best(lambda: latent_preview(latent, SD1.latent), 5),
                    "taesd": best(lambda: previews.taesd_preview(decoder, latent), 5),
                    "vae": best(lambda: loaded.vae.decode(latent.to(dtype) / SD1.latent.scaling_factor), 2),
                    "step": best(lambda: loaded.unet(x, t, context), 2),
                }
            rows.append(row)
            log(f"{side} {precision}: " + ", ".join(f"{k} {fmt_s(v)}" for k, v in row.items() if isinstance(v, float)))
        del loaded

    print(f"\n{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; previews of one "
          f"image, a step = the U-Net on the guided batch of 2; previews paced to at most "
          f"{previews.PREVIEW_SHARE:.0%} of the sampling time\n")
    print("| image | precision | latent2rgb | TAESD | VAE decode | U-Net step | TAESD / VAE | TAESD / step "
          "| TAESD previews |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        every = max(1, -(-row["taesd"] // (previews.PREVIEW_SHARE * row["step"])))
        print(f"| {row['size']}x{row['size']} | {row['precision']} | {fmt_s(row['latent2rgb'])} | {fmt_s(row['taesd'])} "
              f"| {fmt_s(row['vae'])} | {fmt_s(row['step'])} | {row['taesd'] / row['vae']:.3f}x "
              f"| {row['taesd'] / row['step']:.1%} | every {'step' if every == 1 else f'{every:.0f} steps'} |")


if __name__ == "__main__":
    main()
