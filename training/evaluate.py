"""Generate with the demo checkpoint through the real node graph and score the images.

    python -m latentgraph.training.evaluate [--checkpoint models/checkpoints/latentgraph-demo.safetensors]
                                     [--prompts 100] [--seed 0] [--sampler dpmpp_2m --scheduler karras]

Every image goes the way a user's does: `workflows/txt2img.json` run by the engine's `Executor`
over the node library (checkpoint_loader -> clip_text_encode with the CLIP tokenizer -> ksampler
with classifier-free guidance against the empty prompt -> vae_decode -> save_image as PNG), then
the PNG is read back and measured (`latentgraph.training.measure`). Prompts name a colour, shape,
background and position (and half of them a size); the report gives the share of images where
each measured attribute matches the prompt, at the workflow's guidance scale and at cfg 1.0
(no guidance), which shows what guidance adds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from latentgraph.bundled import demo_models_dir, workflows_dir
from latentgraph.training.dataset import Mentions, caption, random_spec
from latentgraph.training.measure import Reading, colour_error, read_image

REPO_ROOT = Path(__file__).resolve().parents[1]  # the repository (training/ is a source-checkout tool)
WORKFLOW = workflows_dir() / "txt2img.json"
DEMO_NAME = "latentgraph-demo.safetensors"  # the name the shipped workflows load
DEFAULT_CHECKPOINT = demo_models_dir() / DEMO_NAME
ATTRIBUTES = ("colour", "shape", "background", "position", "size")


@contextmanager
def demo_folders(checkpoint: Path, workdir: Path | None = None) -> Iterator[Any]:
    """Folders over a scratch tree whose checkpoints folder holds `checkpoint` under the
    workflows' name (removed afterwards when this made it)."""
    from latentgraph.nodes.folders import Folders

    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no demo checkpoint at {checkpoint}; train one with python -m latentgraph.training.train")
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="latentgraph-demo-")) if owned else Path(workdir)
    models = root / "models"
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    target = models / "checkpoints" / DEMO_NAME
    if not target.exists():
        try:
            os.link(checkpoint, target)
        except OSError:
            shutil.copyfile(checkpoint, target)
    folders = Folders(models=models, inputs=root / "input", outputs=root / "output", temp=root / "temp")
    try:
        folders.inputs.mkdir(exist_ok=True)
        yield folders
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def load_workflow(path: Path = WORKFLOW) -> dict:
    return json.loads(Path(path).read_text())


def with_inputs(document: dict, overrides: dict[str, Any]) -> dict:
    """A copy of a workflow with "node.input" overrides applied."""
    document = json.loads(json.dumps(document))
    for key, value in overrides.items():
        node_id, input_name = key.split(".")
        document["nodes"][node_id]["inputs"][input_name] = value
    return document


class GraphGenerator:
    """Runs txt2img.json through a real Executor over the node library; `generate` returns the
    saved PNG as a uint8 [H, W, 3] array. Use inside `demo_folders` (or with folders set up)."""

    def __init__(self, folders: Any, workflow: dict | None = None, size: int = 64, steps: int = 20,
                 precision: str | None = None):
        import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
        from latentgraph.engine import EventBus, Executor, OutputCache, registry
        from latentgraph.nodes.services import Services

        self.folders = folders
        self.workflow = workflow if workflow is not None else load_workflow()
        self.size, self.steps = size, steps
        self.executor = Executor(registry, OutputCache(1 << 30), services=Services(folders=folders, precision=precision),
                                 events=EventBus())

    def generate(self, prompt: str, seed: int = 0, sampler: str | None = None, scheduler: str | None = None,
                 cfg: float | None = None, steps: int | None = None, negative: str = "",
                 batch_size: int = 1) -> np.ndarray:
        """uint8 [H, W, 3] (or [batch, H, W, 3] when batch_size > 1) of the saved PNG(s)."""
        from PIL import Image

        overrides: dict[str, Any] = {
            "positive.text": prompt, "negative.text": negative, "sampler.seed": seed,
            "sampler.steps": steps if steps is not None else self.steps,
            "latent.width": self.size, "latent.height": self.size, "latent.batch_size": batch_size,
        }
        for key, value in (("sampler.sampler", sampler), ("sampler.scheduler", scheduler), ("sampler.cfg", cfg)):
            if value is not None:
                overrides[key] = value
        result = self.executor.run(with_inputs(self.workflow, overrides))
        if not result.ok:
            raise RuntimeError(f"the workflow failed: {[str(e) for e in result.errors]}")
        images = []
        for info in result.results["save"]["images"]:
            with Image.open(self.folders.outputs / info["subfolder"] / info["filename"]) as png:
                images.append(np.asarray(png.convert("RGB")))
        return images[0] if batch_size == 1 else np.stack(images)


@dataclass
class Scored:
    prompt: str
    expected: dict[str, str]
    reading: Reading

    def correct(self, attribute: str) -> bool | None:
        if attribute not in self.expected:
            return None
        return getattr(self.reading, attribute) == self.expected[attribute]


def evaluation_prompts(count: int, seed: int = 0) -> list[tuple[str, dict[str, str]]]:
    """`count` prompts naming colour, shape, background and position (half also a size), with the
    attributes they name. Drawn from their own seed, so they do not repeat the training captions'
    random stream."""
    rng = np.random.default_rng([seed, 7_777])
    prompts = []
    for _ in range(count):
        spec = random_spec(rng)
        mentions = Mentions(colour=True, background=True, size=bool(rng.random() < 0.5), position=True)
        expected = {"colour": spec.colour, "shape": spec.shape, "background": spec.background,
                    "position": spec.position}
        if mentions.size:
            expected["size"] = spec.size
        prompts.append((caption(spec, mentions), expected))
    return prompts


def accuracy(scored: Sequence[Scored]) -> dict[str, float]:
    """Percent correct per attribute (over the prompts that name it), all four named at once, and
    the mean RGB distance of the shape's and the background's colour from the ones asked for
    ("colour_error", "background_error"; 0-255 units, lower is better)."""
    report = {}
    for attribute in ATTRIBUTES:
        marks = [s.correct(attribute) for s in scored if s.correct(attribute) is not None]
        if marks:
            report[attribute] = round(100.0 * sum(marks) / len(marks), 1)
    main = ("colour", "shape", "background", "position")
    report["all_four"] = round(100.0 * np.mean([all(s.correct(a) for a in main) for s in scored]), 1)
    for key, attribute, field in (("colour_error", "colour", "colour_rgb"), ("background_error", "background", "background_rgb")):
        errors = [colour_error(getattr(s.reading, field), s.expected[attribute]) for s in scored if attribute in s.expected]
        if errors:
            report[key] = round(float(np.mean(errors)), 1)
    return report


def score_prompts(generator: GraphGenerator, prompts: Sequence[tuple[str, dict[str, str]]], seed: int,
                  **options: Any) -> list[Scored]:
    scored = []
    for index, (prompt, expected) in enumerate(prompts):
        image = generator.generate(prompt, seed=seed + index, **options)
        scored.append(Scored(prompt, expected, read_image(image)))
    return scored


def evaluate_checkpoint(checkpoint: Path = DEFAULT_CHECKPOINT, prompts: int = 100, seed: int = 0,
                        sampler: str | None = None, scheduler: str | None = None, cfg: float | None = None,
                        compare_cfg: float | None = 1.0, steps: int = 20, verbose: bool = True,
                        precision: str | None = None) -> dict:
    """Score `prompts` random prompts at the workflow's (or the given) settings, and again at
    `compare_cfg`; returns {"settings", "default_cfg": {...}, "cfg_1.0": {...}} of percentages."""
    workflow = load_workflow()
    sampler_inputs = workflow["nodes"]["sampler"]["inputs"]
    settings = {"sampler": sampler or sampler_inputs["sampler"], "scheduler": scheduler or sampler_inputs["scheduler"],
                "cfg": cfg if cfg is not None else sampler_inputs["cfg"], "steps": steps, "prompts": prompts,
                "seed": seed, "precision": precision or "default"}
    chosen = evaluation_prompts(prompts, seed)
    report: dict[str, Any] = {"settings": settings}
    with demo_folders(checkpoint) as folders:
        generator = GraphGenerator(folders, workflow, steps=steps, precision=precision)
        runs = [("default_cfg", settings["cfg"])]
        if compare_cfg is not None and compare_cfg != settings["cfg"]:
            runs.append((f"cfg_{compare_cfg}", compare_cfg))
        for label, scale in runs:
            scored = score_prompts(generator, chosen, seed, sampler=settings["sampler"],
                                   scheduler=settings["scheduler"], cfg=scale)
            report[label] = accuracy(scored)
            if verbose:
                print(f"{label} (cfg {scale}): {json.dumps(report[label])}", file=sys.stderr, flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentgraph.training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", help="default: the workflow's")
    parser.add_argument("--scheduler", help="default: the workflow's")
    parser.add_argument("--cfg", type=float, help="default: the workflow's")
    parser.add_argument("--compare-cfg", type=float, default=1.0, help="also score at this scale (default 1.0)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="the models' precision (default fp32 on the CPU)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    report = evaluate_checkpoint(args.checkpoint, args.prompts, args.seed, args.sampler, args.scheduler, args.cfg,
                                 args.compare_cfg, args.steps, precision=args.precision)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
