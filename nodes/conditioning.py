"""Conditioning nodes: prompts encoded by CLIP, and combinations of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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


def _check_embeddings(inputs: dict[str, Any], services: Any, fields: tuple[str, ...]) -> Iterator[tuple[str | None, str]]:
    """Every embedding the literal prompts in `fields` name exists (linked ones are checked when
    the node runs)."""
    if services is None:
        return
    from latentgraph.nodes.sd.embeddings import EmbeddingNotFound
    from latentgraph.nodes.sd.prompt import embedding_names

    folders = services_of(services).folders
    for field in fields:
        text = inputs.get(field)
        if not isinstance(text, str) or "embedding:" not in text:
            continue
        for name in embedding_names(text):
            try:
                _embedding_file(folders, name)
            except EmbeddingNotFound as error:
                yield field, str(error)


def _embeddings_fingerprint(literal_inputs: dict[str, Any], services: Any, fields: tuple[str, ...]) -> Any:
    """The files of the embeddings the prompts in `fields` name (so an edited file encodes again);
    when a prompt is linked, and so not known yet, every file in the embeddings folders."""
    folders = services_of(services).folders
    texts = [literal_inputs.get(field) for field in fields]
    if not all(isinstance(text, str) for text in texts):
        return {"embeddings": [file_identity(folders.model_path("embeddings", name))
                               for name in folders.list_models("embeddings")]}
    if not any("embedding:" in text for text in texts):
        return None
    from latentgraph.nodes.sd.embeddings import EmbeddingNotFound
    from latentgraph.nodes.sd.prompt import embedding_names

    files = []
    for name in dict.fromkeys(name for text in texts for name in embedding_names(text)):
        try:
            files.append(file_identity(_embedding_file(folders, name)))
        except EmbeddingNotFound:
            files.append([name, None])
    return {"embeddings": files}


def _encode(ctx: RunContext, clip: Any, text: Any, clip_skip: int) -> Any:
    """`text` (a prompt, or a mapping encoder name -> prompt) encoded by `clip` as one-entry
    conditioning: at layer `clip_skip` from the end when it is > 0, else the one the text encoder
    handle says (clip_set_last_layer), else the family's own."""
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

    layer = clip_skip or getattr(clip, "clip_skip", None) or None
    with torch.inference_mode(), clip.patched() as encoders:
        embedding, pooled = encode_text(encoders, clip.spec, text, layer, embeddings=find_embedding)
    entry = ConditioningEntry(embedding.float().cpu(), pooled.float().cpu() if pooled is not None else None)
    return Conditioning((entry,))



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
    clip_skip: int = Input(0, ge=0, le=12, description="text encoder layer, counted from the end: 0 the one "
                                                          "Set CLIP last layer chose, else the one the family was "
                                                          "trained with (SD1.x: the last; SD2.x and SDXL: the one "
                                                          "before it); 1 the last; 2 the one before it (some SD1.x "
                                                          "anime models)...")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the encoded prompt")

    @classmethod
    def check_inputs(cls, inputs: dict[str, Any], services: Any = None) -> Iterator[tuple[str | None, str]]:
        """Every embedding a literal prompt names exists (a linked prompt is checked when it runs)."""
        return _check_embeddings(inputs, services, ("text",))

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        """The files of the embeddings the prompt names (so an edited file encodes again); for a
        linked prompt, which is not known yet, every file in the embeddings folders."""
        return _embeddings_fingerprint(literal_inputs, services, ("text",))

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(conditioning=_encode(ctx, self.clip, self.text, self.clip_skip))


def _layer_counts(clip: Any) -> dict[str, int]:
    """Layers of each text encoder of a CLIP handle, by name (those whose depth is known)."""
    counts = {}
    for name, encoder in clip.encoders.items():
        layers = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
        if isinstance(layers, int):
            counts[name] = layers
    return counts


@node("clip_set_last_layer", category="conditioning", title="Set CLIP last layer")
class ClipSetLastLayer(Node):
    """Choose the text encoder layer prompts are read from, for every Encode prompt node fed by
    this CLIP (ComfyUI's CLIP Set Last Layer): -1 the last layer, -2 the one before it ("CLIP
    skip 2", which some SD1.x anime models want)... Without this node each family uses the layer
    it was trained with (SD1.x: the last; SD2.x and SDXL: the one before it). An Encode prompt
    node's own clip_skip, when above 0, wins over this."""

    clip: Any = Input(port=ports.CLIP, description="text encoder from a checkpoint")
    stop_at_clip_layer: int = Input(-1, ge=-24, le=-1, description="the layer to stop at, counted from the end: "
                                                                    "-1 the last, -2 the one before it...")

    class Outputs(NodeOutputs):
        clip: Any = Output(port=ports.CLIP, description="the same text encoder, read at that layer")

    def run(self, ctx: RunContext) -> Outputs:
        import dataclasses

        skip = -self.stop_at_clip_layer
        too_shallow = {name: n for name, n in _layer_counts(self.clip).items() if n < skip}
        if too_shallow:
            have = ", ".join(f"{name} has {n}" for name, n in too_shallow.items())
            raise ValueError(f"stop_at_clip_layer {self.stop_at_clip_layer} asks for layer {skip} from the end, but "
                             f"the text encoder of {self.clip.source} is not that deep ({have} layers)")
        return self.Outputs(clip=dataclasses.replace(self.clip, clip_skip=skip))


SDXL_BASE = "sdxl"  # the family clip_text_encode_sdxl serves (CLIP-L and bigG)


@node("clip_text_encode_sdxl", category="conditioning", title="Encode prompt (SDXL, two texts)")
class ClipTextEncodeSdxl(Node):
    """An SDXL base prompt with a different text for each of its two text encoders, and its size
    numbers, in one node (ComfyUI's CLIPTextEncodeSDXL): text_g goes to the large OpenCLIP bigG
    encoder (which also gives the pooled vector), text_l to CLIP ViT-L. Giving both the same text
    is what Encode prompt does. A text longer than the other in 75-token windows has empty-prompt
    windows added to the shorter one. The sizes are SDXL's micro-conditioning (as SDXL size
    conditioning's original size, crop's top-left corner and target size); a size of 0 is the
    generated image's own. Emphasis, BREAK and embedding:name work as in Encode prompt."""

    clip: Any = Input(port=ports.CLIP, description="the text encoders of an SDXL base checkpoint")
    text_g: str = Input("", multiline=True, description="the prompt for OpenCLIP bigG (the main one: it also gives "
                                                       "the pooled vector)")
    text_l: str = Input("", multiline=True, description="the prompt for CLIP ViT-L")
    width: int = Input(1024, ge=0, le=16384, description="width of the 'original' image (0: the generated image's)")
    height: int = Input(1024, ge=0, le=16384, description="height of the 'original' image (0: the generated image's)")
    crop_w: int = Input(0, ge=0, le=16384, description="left edge of the crop taken from it")
    crop_h: int = Input(0, ge=0, le=16384, description="top edge of the crop taken from it")
    target_width: int = Input(1024, ge=0, le=16384, description="width it was resized to (0: the generated image's)")
    target_height: int = Input(1024, ge=0, le=16384, description="height it was resized to (0: the generated image's)")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the encoded prompt with its size numbers")

    @classmethod
    def check_inputs(cls, inputs: dict[str, Any], services: Any = None) -> Iterator[tuple[str | None, str]]:
        """Every embedding a literal prompt names exists (linked prompts are checked when it runs)."""
        return _check_embeddings(inputs, services, ("text_g", "text_l"))

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _embeddings_fingerprint(literal_inputs, services, ("text_g", "text_l"))

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning

        spec = self.clip.spec
        if spec.name != SDXL_BASE:
            raise ValueError(f"Encode prompt (SDXL, two texts) needs the text encoders of an SDXL base checkpoint "
                             f"(CLIP ViT-L and OpenCLIP bigG); {self.clip.source} is {spec.label}: use Encode prompt")
        conditioning = _encode(ctx, self.clip, {"clip_g": self.text_g, "clip_l": self.text_l}, 0)
        sizes = {"original_width": self.width, "original_height": self.height, "target_width": self.target_width,
                 "target_height": self.target_height}
        extra = {name: value for name, value in sizes.items() if value}  # 0: the image's own
        extra.update(crop_left=self.crop_w, crop_top=self.crop_h)
        entries = tuple(replace(e, extra={**e.extra, **extra}) for e in conditioning.entries)
        return self.Outputs(conditioning=Conditioning(entries))


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


def _with_area(conditioning: Any, area: tuple[str, float, float, float, float] | None, strength: float) -> Any:
    from dataclasses import replace

    from latentgraph.nodes.sd.handles import Conditioning

    return Conditioning(tuple(replace(e, area=area if area is not None else e.area, strength=strength)
                              for e in conditioning.entries))


@node("conditioning_set_area", category="conditioning", title="Conditioning area")
class ConditioningSetArea(Node):
    """Make a prompt apply to one rectangle of the image (in pixels): the sampler runs it on that
    part of the latent and blends its estimate, weighted by strength and faded in over 64 pixels
    at edges inside the image, with the other prompts covering each pixel (ComfyUI's area
    conditioning). Combine it with a prompt for the whole image, or parts nobody covers stay
    unguided. Not with a ControlNet on the same prompt."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt")
    width: int = Input(64, ge=8, le=16384, step=8, description="width of the area in pixels")
    height: int = Input(64, ge=8, le=16384, step=8, description="height of the area in pixels")
    x: int = Input(0, ge=0, le=16384, step=8, description="left edge in pixels")
    y: int = Input(0, ge=0, le=16384, step=8, description="top edge in pixels")
    strength: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="weight against the other prompts there")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt, for that area")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(conditioning=_with_area(self.conditioning, ("pixels", self.x, self.y, self.width,
                                                                        self.height), self.strength))


@node("conditioning_set_area_percentage", category="conditioning", title="Conditioning area (fraction)")
class ConditioningSetAreaPercentage(Node):
    """As Conditioning area, with the rectangle as fractions of the image's width and height, so
    the same graph works at any size."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt")
    width: float = Input(1.0, ge=0.0, le=1.0, step=0.01, description="width as a fraction of the image's")
    height: float = Input(1.0, ge=0.0, le=1.0, step=0.01, description="height as a fraction of the image's")
    x: float = Input(0.0, ge=0.0, le=1.0, step=0.01, description="left edge as a fraction of the width")
    y: float = Input(0.0, ge=0.0, le=1.0, step=0.01, description="top edge as a fraction of the height")
    strength: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="weight against the other prompts there")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt, for that area")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(conditioning=_with_area(self.conditioning, ("fraction", self.x, self.y, self.width,
                                                                        self.height), self.strength))


@node("conditioning_set_area_strength", category="conditioning", title="Conditioning strength")
class ConditioningSetAreaStrength(Node):
    """Set a prompt's weight against the other prompts it is combined with (or that cover the same
    area)."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt")
    strength: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="its weight")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt with that weight")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(conditioning=_with_area(self.conditioning, None, self.strength))


@node("conditioning_set_mask", category="conditioning", title="Conditioning mask")
class ConditioningSetMask(Node):
    """Make a prompt apply where a mask is set: its estimate is weighed by the mask (resized to the
    latent) times the strength against the other prompts there (ComfyUI's ConditioningSetMask).
    `mask bounds` runs it on the mask's bounding box only (cheaper, and the model sees the region
    as a whole picture). Combine it with a prompt for the whole image."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt")
    mask: Any = Input(port=ports.MASK, description="where it applies (1), and how much")
    strength: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="weight against the other prompts there")
    set_cond_area: Literal["default", "mask bounds"] = Input("default", description="run it on the whole latent, "
                                                                                    "or on the mask's bounding box")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt, for the masked part")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning

        mask = self.mask if self.mask.ndim == 3 else self.mask.reshape(1, *self.mask.shape[-2:])
        entries = tuple(replace(e, mask=mask, mask_strength=self.strength,
                                mask_bounds=self.set_cond_area == "mask bounds") for e in self.conditioning.entries)
        return self.Outputs(conditioning=Conditioning(entries))


@node("conditioning_set_timestep_range", category="conditioning", title="Conditioning step range")
class ConditioningSetTimestepRange(Node):
    """Make a prompt act only during part of the sampling: from `start` to `end`, as fractions of the
    schedule (0 the first, noisiest step; 1 the end), as ComfyUI measures them. Combine prompts with
    different ranges to switch prompts part-way. A side with no prompt acting at a step gives a
    zero estimate there (ComfyUI's rule)."""

    conditioning: Any = Input(port=ports.CONDITIONING, description="the prompt")
    start: float = Input(0.0, ge=0.0, le=1.0, step=0.001, description="where it starts acting")
    end: float = Input(1.0, ge=0.0, le=1.0, step=0.001, description="where it stops acting")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the prompt, for that range")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        from latentgraph.nodes.sd.handles import Conditioning

        entries = tuple(replace(e, timestep_range=(self.start, self.end)) for e in self.conditioning.entries)
        return self.Outputs(conditioning=Conditioning(entries))


@node("conditioning_concat", category="conditioning", title="Concatenate conditioning")
class ConditioningConcat(Node):
    """Append the tokens of a second prompt to each prompt of the first (ComfyUI's
    ConditioningConcat): both are read in one cross-attention, unlike Combine's two estimates. The
    pooled vector and other settings are the first prompt's; only the second's first prompt is used."""

    conditioning_to: Any = Input(port=ports.CONDITIONING, description="the prompt(s) to extend")
    conditioning_from: Any = Input(port=ports.CONDITIONING, description="the prompt whose tokens are appended")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the longer prompt(s)")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import torch

        from latentgraph.nodes.sd.handles import Conditioning

        source = self.conditioning_from.entries[0].embedding
        entries = []
        for e in self.conditioning_to.entries:
            if e.embedding.shape[-1] != source.shape[-1]:
                raise ValueError(f"the prompts are {e.embedding.shape[-1]} and {source.shape[-1]} channels wide: "
                                 "encode both with the same checkpoint")
            entries.append(replace(e, embedding=torch.cat([e.embedding, source.to(e.embedding)], dim=1)))
        return self.Outputs(conditioning=Conditioning(tuple(entries)))


@node("conditioning_average", category="conditioning", title="Average conditioning")
class ConditioningAverage(Node):
    """Blend two prompts' encodings: to x strength + from x (1 - strength), token by token (the
    `from` prompt cut or padded with zeros to the `to` prompt's length) and the pooled vectors
    alike (ComfyUI's ConditioningAverage). Only the from side's first prompt is used."""

    conditioning_to: Any = Input(port=ports.CONDITIONING, description="the prompt(s) kept at strength 1")
    conditioning_from: Any = Input(port=ports.CONDITIONING, description="the prompt blended in")
    conditioning_to_strength: float = Input(1.0, ge=0.0, le=1.0, step=0.01, description="weight of `to`")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the blend")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import torch

        from latentgraph.nodes.sd.handles import Conditioning

        source = self.conditioning_from.entries[0]
        weight = self.conditioning_to_strength
        entries = []
        for e in self.conditioning_to.entries:
            if e.embedding.shape[-1] != source.embedding.shape[-1]:
                raise ValueError(f"the prompts are {e.embedding.shape[-1]} and {source.embedding.shape[-1]} channels "
                                 "wide: encode both with the same checkpoint")
            other = source.embedding[:, : e.embedding.shape[1]].to(e.embedding)
            if other.shape[1] < e.embedding.shape[1]:
                pad = e.embedding.new_zeros(other.shape[0], e.embedding.shape[1] - other.shape[1], other.shape[2])
                other = torch.cat([other, pad], dim=1)
            pooled = e.pooled
            if source.pooled is not None and pooled is not None:
                pooled = pooled * weight + source.pooled.to(pooled) * (1.0 - weight)
            elif source.pooled is not None:
                pooled = source.pooled
            entries.append(replace(e, embedding=e.embedding * weight + other * (1.0 - weight), pooled=pooled))
        return self.Outputs(conditioning=Conditioning(tuple(entries)))


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
