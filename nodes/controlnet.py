"""ControlNet nodes: load a ControlNet, and apply it to a prompt with a hint image (as ComfyUI does:
the ControlNet travels with the conditioning to the sampler)."""

from __future__ import annotations

from typing import Any

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports
from latentgraph.nodes.folders import file_identity
from latentgraph.nodes.services import services_of


def _controlnet_choices(services: Any) -> list[str]:
    return services_of(services).folders.list_models("controlnet")



def _fingerprint(literal_inputs: dict[str, Any], services: Any) -> Any:
    return file_identity(services_of(services).folders.model_path("controlnet", literal_inputs["controlnet_name"]))


def _load(ctx: RunContext, name: str, base: Any = None) -> Any:
    """The ControlNet file `name` from the controlnet folder, loaded once and kept in the model cache
    (by file identity and placement; a difference ControlNet also by the model it was added to)."""
    import weakref

    from latentgraph.nodes.sd.controlnet import ControlNetHandle, load_controlnet

    services = services_of(ctx)
    path = services.folders.model_path("controlnet", name)
    placement = services.placement
    key: tuple = ("controlnet", *file_identity(path).values(), placement.key())

    def load(base_unet: Any = None) -> Any:
        return load_controlnet(path, placement.device, placement.unet_dtype, allow_pickle=services.allow_pickle,
                               memory_fraction=services.limits.memory_fraction or None, base_unet=base_unet)

    if base is None:
        return ControlNetHandle(services.models.get_or_load(key, load), name)
    # A difference ControlNet is its deltas plus this model's weights: keyed by the U-Net too, and
    # checked to be that very U-Net (an id can be reused once a model is dropped from the cache).
    unet = base.unet

    def load_difference() -> Any:
        from latentgraph.nodes.sd.patches import patched

        with patched(unet, ()):  # the loaded weights, whatever LoRA a run left on the shared U-Net
            return load(unet)

    entry = services.models.get_or_load(key + ("difference", id(unet)), lambda: (weakref.ref(unet), load_difference()))
    ref, model = entry
    if ref() is not unet:
        model = load_difference()
    return ControlNetHandle(model, name)


@node("controlnet_loader", category="loaders", title="Load ControlNet")
class ControlNetLoader(Node):
    """Load a ControlNet from the controlnet folder, for SD1.x, SD2.x or SDXL: single files as
    people download them (control_v11p_sd15_canny.safetensors and other LDM-layout files, with or
    without the control_model. prefix; diffusers-layout files such as most SDXL ControlNets;
    .pth files only when pickle files are allowed). Connect it to Apply ControlNet. Difference
    ControlNets need the model they were made from: load those with Load ControlNet (difference)."""

    controlnet_name: str = Input(choices=_controlnet_choices, description="file in models/controlnet")

    class Outputs(NodeOutputs):
        controlnet: Any = Output(port=ports.CONTROL_NET, description="the ControlNet")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _fingerprint(literal_inputs, services)

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(controlnet=_load(ctx, self.controlnet_name))


@node("diff_controlnet_loader", category="loaders", title="Load ControlNet (difference)")
class DiffControlNetLoader(Node):
    """Load a "difference" ControlNet (a file with a `difference` key, whose weights are changes to
    a base model's): its weights are the file's plus the model's U-Net weights of the same name.
    Give it the checkpoint it was made from (usually SD1.5); LoRAs on the model are not included.
    An ordinary ControlNet file loads here too, as with Load ControlNet."""

    model: Any = Input(port=ports.MODEL, description="the model whose weights the differences are added to")
    controlnet_name: str = Input(choices=_controlnet_choices, description="file in models/controlnet")

    class Outputs(NodeOutputs):
        controlnet: Any = Output(port=ports.CONTROL_NET, description="the ControlNet")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        return _fingerprint(literal_inputs, services)

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(controlnet=_load(ctx, self.controlnet_name, base=self.model))


@node("apply_controlnet", category="conditioning", title="Apply ControlNet")
class ApplyControlNet(Node):
    """Steer sampling with a hint image (edges, depth, pose...) through a ControlNet, on both the
    prompt and the negative prompt. Apply several in a row to combine them: their effects add up.

    strength multiplies what the ControlNet adds to the U-Net (0 leaves the prompts as they are).
    start_percent and end_percent choose the part of sampling it acts in, as in ComfyUI: a percent
    p is the noise level of training timestep (1 - p) x 999 of the model's schedule (0 = from the
    very start, 1 = to the very end), and the ControlNet acts on every step whose noise level lies
    between the two: 0 to 0.5 shapes the composition and leaves the details free.

    The hint image is used at the generated image's size: one of another size is cropped to the
    same aspect ratio around its centre and resized (nearest neighbour, which keeps edge maps
    sharp). One hint image serves every image of a batch; or give one per image.

    The negative prompt is optional (ComfyUI's older Apply ControlNet steers the prompt alone):
    without it, only the prompt gets the ControlNet, and the negative output cannot be used (a
    node reading it fails, saying so)."""

    positive: Any = Input(port=ports.CONDITIONING, description="the prompt")
    negative: Any = Input(None, port=ports.CONDITIONING, description="the negative prompt (optional: without it "
                                                                     "only the prompt is steered)")
    controlnet: Any = Input(port=ports.CONTROL_NET, description="the ControlNet")
    image: Any = Input(port=ports.IMAGE, description="the hint image (e.g. from a preprocessor such as Canny edges)")
    strength: float = Input(1.0, ge=0.0, le=10.0, step=0.01, description="how strongly it steers")
    start_percent: float = Input(0.0, ge=0.0, le=1.0, step=0.001, description="where in sampling it starts acting (0: the start)")
    end_percent: float = Input(1.0, ge=0.0, le=1.0, step=0.001, description="where it stops acting (1: the end)")

    class Outputs(NodeOutputs):
        positive: Any = Output(port=ports.CONDITIONING, description="the prompt with the ControlNet")
        negative: Any = Output(port=ports.CONDITIONING, description="the negative prompt with the ControlNet (only "
                                                                   "when a negative prompt is connected)")

    def run(self, ctx: RunContext) -> Outputs:
        from dataclasses import replace

        import torch

        from latentgraph.nodes.sd.controlnet import ControlApplication
        from latentgraph.nodes.sd.handles import Conditioning

        if self.start_percent > self.end_percent:
            raise ValueError(f"start_percent ({self.start_percent}) is after end_percent ({self.end_percent}): "
                             "the ControlNet would never act")
        image = self.image
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
            shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be an IMAGE [batch, height, width, 3], got {shape}")
        controlnet = self.controlnet
        expected = controlnet.config.unet.context_dim
        sides = (("positive", self.positive), ("negative", self.negative))
        for name, conditioning in sides:
            if conditioning is None:
                continue
            for entry in conditioning.entries:
                width = entry.embedding.shape[-1]
                if width != expected:
                    raise ValueError(
                        f"the {name} prompt is {width} channels wide but the ControlNet {controlnet.source} "
                        f"({controlnet.family.label}) reads {expected}: use a ControlNet made for the "
                        "checkpoint's family")
        negative = self.negative if self.negative is not None else NoNegative()
        if self.strength == 0:
            return self.Outputs(positive=self.positive, negative=negative)
        application = ControlApplication(controlnet, image.detach().float().cpu(), self.strength,
                                         self.start_percent, self.end_percent)

        def attach(conditioning: Any) -> Any:
            return Conditioning(tuple(replace(e, control=(*e.control, application)) for e in conditioning.entries))

        return self.Outputs(positive=attach(self.positive),
                            negative=attach(self.negative) if self.negative is not None else negative)


class NoNegative:
    """Apply ControlNet's negative output when its negative input is not connected: there is no
    negative prompt to pass on, and a node that reads this one fails with a message saying why."""

    @property
    def entries(self) -> Any:
        raise ValueError("this negative prompt comes from Apply ControlNet's negative output, but that node's negative "
                         "input is not connected: connect a negative prompt to Apply ControlNet, or take the negative "
                         "prompt from its own node")

    def cache_nbytes(self) -> int:
        return 64

    def __repr__(self) -> str:
        return "NoNegative()"
