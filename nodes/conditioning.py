"""Conditioning nodes: prompts encoded by CLIP, and combinations of them."""

from __future__ import annotations

from typing import Any

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports


@node("clip_text_encode", category="conditioning", title="Encode prompt")
class ClipTextEncode(Node):
    """Encode a prompt with the checkpoint's text encoders, as its family conditions on them.
    Emphasis works as in A1111 and ComfyUI: (word:1.3), (word) for x1.1, [word] for /1.1. Prompts
    longer than 75 tokens are split into 75-token windows whose encodings are concatenated; BREAK
    starts a new window."""

    clip: Any = Input(port=ports.CLIP, description="text encoder from a checkpoint")
    text: str = Input("", multiline=True, description="the prompt")
    clip_skip: int = Input(0, ge=0, le=12, description="CLIP layer: 0 the one the model was trained with "
                                                          "(SD1.x: the last); 1 the last; 2 the one before it "
                                                          "(some anime models)...")

    class Outputs(NodeOutputs):
        conditioning: Any = Output(port=ports.CONDITIONING, description="the encoded prompt")

    def run(self, ctx: RunContext) -> Outputs:
        import torch

        from latentgraph.nodes.sd.handles import Conditioning, ConditioningEntry
        from latentgraph.nodes.sd.prompt import encode_text

        with torch.inference_mode():
            embedding, pooled = encode_text(self.clip.encoders, self.clip.spec, self.text, self.clip_skip or None)
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
