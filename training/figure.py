"""Draw docs/demo_grid.png: demo-model images for a few prompts (rows) x samplers (columns).

    python -m latentgraph.training.figure [--checkpoint models/checkpoints/latentgraph-demo.safetensors]
                                   [--output docs/demo_grid.png] [--seed 1] [--scale 2]

Every image is made by the project's own `workflows/txt2img.json` through the engine's Executor
(see `latentgraph.training.evaluate.GraphGenerator`), at the demo's native 64x64, 20 steps, the
workflow's guidance scale, the same seed in every cell; the last two columns are the same prompt
at cfg 1.0 (no guidance) and at cfg 7 (a usual SD1.5 scale, too strong for this model), for
comparison. Images are enlarged `--scale` times (nearest neighbour).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from latentgraph.training.evaluate import DEFAULT_CHECKPOINT, REPO_ROOT, GraphGenerator, demo_folders

PROMPTS = (
    "a red circle on a blue background, top left",
    "a large yellow star on a purple background, center",
    "a green triangle on a white background, bottom right",
    "a small white square on a black background, top right",
    "a pink diamond on a green background, left",
    "an orange circle, bottom",
)
COLUMNS = (  # (label, sampler, scheduler, cfg or None for the workflow's)
    ("euler", "euler", "normal", None),
    ("euler_ancestral", "euler_ancestral", "normal", None),
    ("dpmpp_2m karras", "dpmpp_2m", "karras", None),
    ("ddim", "ddim", "ddim_uniform", None),
    ("uni_pc", "uni_pc", "normal", None),
    ("dpmpp_2m cfg 1", "dpmpp_2m", "karras", 1.0),
    ("dpmpp_2m cfg 7", "dpmpp_2m", "karras", 7.0),
)
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "demo_grid.png"


def draw_grid(checkpoint: Path = DEFAULT_CHECKPOINT, output: Path = DEFAULT_OUTPUT, seed: int = 1, scale: int = 2,
              prompts: Sequence[str] = PROMPTS) -> Path:
    font = ImageFont.load_default()
    with demo_folders(checkpoint) as folders:
        generator = GraphGenerator(folders)
        rows = [[generator.generate(prompt, seed=seed, sampler=sampler, scheduler=scheduler, cfg=cfg)
                 for _, sampler, scheduler, cfg in COLUMNS] for prompt in prompts]
    cell = rows[0][0].shape[0] * scale
    gap, left, top, caption_height = 4, 0, 16, 14
    width = left + len(COLUMNS) * (cell + gap) + gap
    height = top + len(prompts) * (cell + caption_height + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, (label, *_rest) in enumerate(COLUMNS):
        draw.text((left + gap + column * (cell + gap), 2), label, fill=(0, 0, 0), font=font)
    for row, (prompt, images) in enumerate(zip(prompts, rows)):
        y = top + row * (cell + caption_height + gap)
        draw.text((left + gap, y), prompt, fill=(0, 0, 0), font=font)
        for column, image in enumerate(images):
            enlarged = Image.fromarray(np.asarray(image)).resize((cell, cell), Image.NEAREST)
            canvas.paste(enlarged, (left + gap + column * (cell + gap), y + caption_height))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output, optimize=True)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgraph.training.figure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(draw_grid(args.checkpoint, args.output, args.seed, args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
