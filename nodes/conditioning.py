"""Conditioning nodes: prompts encoded by CLIP, and combinations of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.folders import file_identity
from latentgraph.nodes.services import services_of


def _embedding_file(folders: Any, name: str) -> Path:
    """The file `embedding:name` means: the name as given, then with .safetensors, .pt, .bin
    appended, in each embeddings folder. Raises EmbeddingNotFound saying where it looked and
    which embeddings exist."""
    from latentgraph.nodes.folders import UnsafeName
    from latentgraph.nodes.sd.embeddings import EmbeddingNotFound, candidate_names, display_name

    candidates = candidate_names(name)
    for candidate in candidates:
        try:
            return folders.model_path("embeddings", candidate)
        except FileNotFoundError:
            continue
        except UnsafeName as error:
            raise EmbeddingNotFound(f"embedding name {name!r} is not allowed: {error}") from None
    searched = ", ".join(str(folder) for folder in folders.model_dirs("embeddings"))
    available = [display_name(n) for n in folders.list_models("embeddings")]
    shown = ", ".join(available[:20]) + (f", ... ({len(available)} in all)" if len(available) > 20 else "")
    have = f"embeddings available: {shown}" if available else "there are no embeddings in that folder"
    raise EmbeddingNotFound(f"no embedding named {name!r} (looked for {', '.join(candidates)} in {searched}); {have}")



@node("clip_text_encode", category="conditioning", title="Encode prompt")
class ClipTextEncode(Node):
    """Encode a prompt with the checkpoint's text encoders, as its family conditions on them (SDXL:
    both encoders and the pooled vector; its size inputs come from the image unless an SDXL size
    conditioning node sets them).
    Emphasis works as in A1111 and ComfyUI: (word:1.3), (word) for x1.1, [word] for /1.1. Prompts
    longer than 75 tokens are split into 75-token windows whose encodings are concatenated; BREAK
    starts a new window. embedding:name uses the textual-inversion embedding `name` from the
    embeddings folder (sub-folders and weights work: (embedding:styles/ink:1.2)); an unknown name
    is an error, never read as text."""

    clip: Any = Input(port=ports.CLIP, description="text encoder from a checkpoint")
    text: str = Input("", multiline=True, description="the prompt")
    clip_skip: int = Input(0, ge=0, le=12, description="text encoder layer, counted from the end: 0 the one the "
                                                          "family was trained with (SD1.x: the last; SD2.x and SDXL: "
                                                          "the one before it); 1 the last; 2 the one before it "
                                                          "(some SD1.x anime models)...")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the encoded prompt")

    @classmethod
    def check_inputs(cls, inputs: dict[str, Any], services: Any = None) -> Iterator[tuple[str | None, str]]:
        """Every embedding a literal prompt names exists (a linked prompt is checked when it runs)."""
        text = inputs.get("text")
        if services is None or not isinstance(text, str) or "embedding:" not in text:
            return
        from latentgraph.nodes.sd.embeddings import EmbeddingNotFound
        from latentgraph.nodes.sd.prompt import embedding_names

        folders = services_of(services).folders
        for name in embedding_names(text):
            try:
                _embedding_file(folders, name)
            except EmbeddingNotFound as error:
                yield "text", str(error)

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        """The files of the embeddings the prompt names (so an edited file encodes again); for a
        linked prompt, which is not known yet, every file in the embeddings folders."""
        folders = services_of(services).folders
        text = literal_inputs.get("text")
        if isinstance(text, str):
            if "embedding:" not in text:
                return None
            from latentgraph.nodes.sd.embeddings import EmbeddingNotFound
            from latentgraph.nodes.sd.prompt import embedding_names

            files = []
            for name in embedding_names(text):
                try:
                    files.append(file_identity(_embedding_file(folders, name)))
                except EmbeddingNotFound:
                    files.append([name, None])
            return {"embeddings": files}
        return {"embeddings": [file_identity(folders.model_path("embeddings", name))
                               for name in folders.list_models("embeddings")]}

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        from latentgraph.nodes.sd.embeddings import load_embedding
        from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry
        from latentgraph.nodes.sd.prompt import encode_text

        services = services_of(ctx)

        def find_embedding(name: str) -> Any:
            path = _embedding_file(services.folders, name)
            key = ("embedding", *file_identity(path).values(), name)  # the name too: messages quote it
            return services.models.get_or_load(
                key, lambda: load_embedding(path, name, allow_pickle=services.allow_pickle))

        with torch.inference_mode(), self.clip.patched() as encoders:
            embedding, pooled = encode_text(encoders, self.clip.spec, self.text, self.clip_skip or None,
                                            embeddings=find_embedding)
        entry = ConditioningEntry(embedding.float().cpu(), pooled.float().cpu() if pooled is not None else None)
        return self.Outputs(conditioning=Conditioning((entry,)))


@node("conditioning_combine", category="conditioning", title="Combine conditioning")
class ConditioningCombine(Node):
    """Use two prompts at once: the sampler averages their noise predictions (weighted by strength)."""

    a: Any = Input(port=ports.CONDITIONING, description="first prompt")
    b: Any = Input(port=ports.CONDITIONING, description="second prompt")
    strength_b: float = Input(1.0, ge=0.0, le=10.0, step=0.05, description="weight of b relative to a")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="both prompts")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning

        b_entries = tuple(replace(e, strength=e.strength * self.strength_b) for e in self.b.entries)
        return self.Outputs(conditioning=Conditioning(self.a.entries + b_entries))


@node("sdxl_conditioning", category="conditioning", title="SDXL size conditioning")
class SdxlConditioning(Node):
    """Set the numbers SDXL was trained to read besides the prompt: the original image size, the
    crop's top-left corner and the target size (the base), or the original size, crop and
    aesthetic score (the refiner). Sizes left at 0 are the generated image's own. Without this
    node SDXL prompts use the image size, no crop, and aesthetic scores 6 (prompt) / 2.5 (negative).
    Other families ignore these numbers."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="a prompt encoded by an SDXL checkpoint")
    original_width: int = Input(0, ge=0, le=16384, step=8, description="width of the 'original' image (0: the image's)")
    original_height: int = Input(0, ge=0, le=16384, step=8, description="height of the 'original' image (0: the image's)")
    crop_left: int = Input(0, ge=0, le=16384, step=8, description="left edge of the crop taken from it")
    crop_top: int = Input(0, ge=0, le=16384, step=8, description="top edge of the crop taken from it")
    target_width: int = Input(0, ge=0, le=16384, step=8, description="width it was resized to (base only; 0: the image's)")
    target_height: int = Input(0, ge=0, le=16384, step=8, description="height it was resized to (base only; 0: the image's)")
    aesthetic_score: float = Input(0.0, ge=0.0, le=20.0, step=0.1,
                                   description="refiner only: the score it was trained with (0: 6 for a prompt, "
                                               "2.5 for a negative prompt)")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt with these numbers")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning

        values = {name: getattr(self, name) for name in ("original_width", "original_height", "crop_left", "crop_top",
                                                         "target_width", "target_height", "aesthetic_score")}
        # 0 means "unset" for the sizes and the score; crops are real numbers, 0 included.
        extra = {k: v for k, v in values.items() if v or k.startswith("crop_")}
        entries = tuple(replace(e, extra={**e.extra, **extra}) for e in self.conditioning.entries)
        return self.Outputs(conditioning=Conditioning(entries))


@node("conditioning_zero_out", category="conditioning", title="Zero out conditioning")
class ConditioningZeroOut(Node):
    """Replace a prompt's encoding (and pooled vector) by zeros, keeping its shape and size inputs:
    what diffusers' SDXL pipelines use as the negative prompt when none is given. An empty prompt
    is instead encoded as the empty text, as ComfyUI does."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt to zero out")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="zeros of the same shape")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import torch

        from latentgraph.nodes.sd.handles import Conditioning

        entries = tuple(replace(e, embedding=torch.zeros_like(e.embedding),
                                pooled=None if e.pooled is None else torch.zeros_like(e.pooled))
                        for e in self.conditioning.entries)
        return self.Outputs(conditioning=Conditioning(entries))
