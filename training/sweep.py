"""Train variants of the demo recipe side by side and score each as it trains.

    python -m latentgraph.training.sweep --variant base='{}' \\
        --variant frozen='{"train_text_with_unet": false}' \\
        [--steps 4000] [--evals 1000,2000,4000] [--prompts 60] [--device cuda] \\
        [--vae-from models/checkpoints/latentgraph-demo.safetensors] [--output sweep.jsonl]

Each variant is a JSON object of `TrainSettings` fields changed from the defaults; each trains
stages 3-4 (text encoder and U-Net) in its own process, all at once, on the VAE of `--vae-from`.
At every step in `--evals` the EMA models draw `--prompts` evaluation prompts
(`latentgraph.training.evaluate.evaluation_prompts`) in one batch with DPM++ 2M Karras, 20 steps, at
cfg 7 and cfg 1, and the images are scored like the evaluation's; one JSON line per variant and
step goes to `--output` and the terminal. This is how the README's recipe table was made (on a
GPU: eight variants of 2000 steps in about five minutes); on 2 CPU cores run one variant at a time.
It skips the node graph for speed; `python -m latentgraph.training.evaluate` is the full-path measure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Sequence

from latentgraph.training.evaluate import DEFAULT_CHECKPOINT, Scored, accuracy, evaluation_prompts

EVAL_CFGS = (7.0, 1.0)


def batch_scores(unet, text_encoder, vae, prompts: Sequence[tuple[str, dict]], cfg: float, device: str,
                 seed: int = 0) -> dict[str, float]:
    """Draw every prompt once, in one batch (DPM++ 2M Karras, 20 steps), and score the images."""
    import torch

    from latentgraph.training.measure import read_image
    from latentgraph.nodes.sd.denoiser import CFGDenoiser, Denoiser
    from latentgraph.nodes.sd.prompt import encode_prompt
    from latentgraph.nodes.sd.samplers import SAMPLERS
    from latentgraph.nodes.sd.families import SD1
    from latentgraph.nodes.sd.schedules import karras_sigmas

    schedule = SD1.schedule.build()
    was_training = unet.training
    unet.eval()
    with torch.no_grad():
        cond = torch.cat([encode_prompt(None, text_encoder, text)[0] for text, _ in prompts]).to(device)
        uncond = encode_prompt(None, text_encoder, "")[0].to(device)
        model = CFGDenoiser(Denoiser(unet, schedule), cond, uncond, cfg)
        sigmas = karras_sigmas(schedule, 20).to(device)
        noise = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(seed))
        latents = SAMPLERS["dpmpp_2m"](model, noise.to(device) * sigmas[0], sigmas)
        pixels = vae.decode(latents / vae.config.scaling_factor).float().clamp(-1, 1)
        images = ((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    unet.train(was_training)
    return accuracy([Scored(text, expected, read_image(image)) for (text, expected), image in zip(prompts, images)])


def run_variant(name: str, changes: dict[str, Any], args: argparse.Namespace) -> None:
    """Train one variant in this process, appending its scores to args.output."""
    import torch

    from latentgraph.nodes.sd.checkpoint import load_vae
    from latentgraph.training.train import TrainSettings, train_diffusion

    torch.set_num_threads(args.threads)
    settings = replace(TrainSettings(), unet_steps=args.steps, device=args.device, threads=args.threads, **changes)
    vae = load_vae(args.vae_from).eval().requires_grad_(False).to(args.device)
    prompts = evaluation_prompts(args.prompts, 0)
    evals = set(args.evals)
    started = time.perf_counter()

    def on_step(step: int, unet, text_encoder) -> None:
        if step not in evals:
            return
        line = {"variant": name, "step": step, "seconds": round(time.perf_counter() - started)}
        for cfg in EVAL_CFGS:
            line[f"cfg {cfg:g}"] = batch_scores(unet, text_encoder, vae, prompts, cfg, args.device)
        with open(args.output, "a") as handle:
            handle.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)

    with open(os.devnull, "w") as quiet:
        train_diffusion(vae, vae.config.scaling_factor, settings, quiet, on_step=on_step)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """NAME=JSON -> (name, changes); unknown TrainSettings fields are refused here, not mid-run."""
    from latentgraph.training.train import TrainSettings

    name, sep, body = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    try:
        changes = json.loads(body)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"variant {name!r}: {error}") from None
    if not isinstance(changes, dict):
        raise argparse.ArgumentTypeError(f"variant {name!r}: expected a JSON object of TrainSettings fields")
    known = {field.name for field in fields(TrainSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"variant {name!r}: unknown TrainSettings fields {', '.join(unknown)}")
    return name, changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgraph.training.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", type=parse_variant, required=True, metavar="NAME=JSON")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--evals", type=lambda text: [int(v) for v in text.split(",")], default=[1000, 2000, 4000])
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    parser.add_argument("--vae-from", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--output", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_variant(args.worker, dict(args.variant)[args.worker], args)
        return 0
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    base = [sys.executable, "-m", "latentgraph.training.sweep", *(argv if argv is not None else sys.argv[1:])]
    workers = [subprocess.Popen(base + ["--worker", name]) for name in names]
    return max(worker.wait() for worker in workers)


if __name__ == "__main__":
    raise SystemExit(main())
