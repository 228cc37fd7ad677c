"""ComfyUI core node types and the Latentgraph nodes they become: one table, read by the importer
(UI and API formats), by `/object_info` and by the README's mapping table.

Each entry lists the ComfyUI node's inputs in ComfyUI's declaration order, which is also the order
of `widgets_values` in its UI format (widget inputs only; a seed-like integer is followed there by
its `control_after_generate` value, LoadImage's file name by the `upload` slot), with the name of
our input each one feeds and, where ComfyUI spells a value differently, how it becomes ours.
Outputs are listed by index (ComfyUI links name an output by its index) with our output name.

Facts about ComfyUI's nodes (names, widget orders, defaults, value spellings) were read from its
node definitions (`nodes.py`, `comfy_extras/nodes_*.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# The values ComfyUI's editor stores after a seed widget (what to do with it after each run).
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
MAX_RESOLUTION = 16384  # ComfyUI's MAX_RESOLUTION (nodes.py)


class BadValue(ValueError):
    """A ComfyUI value that has no Latentgraph equivalent (the message says what it was)."""


@dataclass(frozen=True)
class Widget:
    """A ComfyUI widget input (a value typed on the node; in the UI format, one `widgets_values` slot)."""

    name: str
    ours: str | None  # our input it sets (None: has no effect here, dropped)
    convert: Callable[[Any], Any] | None = None  # ComfyUI's value -> ours; raises BadValue
    comfy: tuple[Any, ...] | None = None  # ComfyUI's spec for /object_info when it differs from ours
    control: bool = False  # followed in widgets_values by a control_after_generate value
    trailing: int = 0  # UI-only slots after it (the `upload` button ComfyUI adds after an image node's last widget)
    optional: bool = False
    literal_only: bool = False  # decides which of our nodes it becomes: a link into it cannot be followed

    socket = False


@dataclass(frozen=True)
class Socket:
    """A ComfyUI link-only input of type `type`."""

    name: str
    ours: str | None
    type: str
    optional: bool = False

    socket = True


@dataclass(frozen=True)
class NodeMap:
    """How one ComfyUI node type becomes Latentgraph nodes."""

    comfy: str
    ours: str
    inputs: tuple[Widget | Socket, ...]
    outputs: tuple[tuple[str, str | None], ...]  # by index: (ComfyUI type, our output name)
    output_names: tuple[str, ...] | None = None  # ComfyUI's RETURN_NAMES where they are not the types
    fixed: dict[str, Any] = field(default_factory=dict)  # our inputs set to these values
    display: str = ""
    category: str = ""
    output_node: bool = False
    # A mapping that is more than one node: (node id, our inputs by our name) -> {id: node spec}. The
    # node keeping `id` provides the outputs; helpers get ids "id:part".
    expand: Callable[[str, dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    note: str = ""  # for the README table: what differs

    def widget_inputs(self) -> list[Widget]:
        return [i for i in self.inputs if isinstance(i, Widget)]


def _enable(value: Any) -> bool:
    if value in ("enable", True):
        return True
    if value in ("disable", False):
        return False
    raise BadValue(f"expected 'enable' or 'disable', got {value!r}")


def _prediction(value: Any) -> str:
    table = {"eps": "epsilon", "v_prediction": "v_prediction"}
    if value not in table:
        raise BadValue(f"sampling {value!r} has no Latentgraph equivalent (eps and v_prediction are supported)")
    return table[value]


def _sampler_name(value: Any) -> Any:
    """ComfyUI's `_gpu` SDE samplers are the same solvers with the noise drawn on the GPU."""
    if isinstance(value, str) and value.endswith("_gpu"):
        return value[: -len("_gpu")]
    return value


def _canny_threshold(value: Any) -> int:
    """ComfyUI's Canny takes thresholds as fractions of full scale (kornia); ours are 8-bit (OpenCV)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadValue(f"expected a number, got {value!r}")
    return max(0, min(255, round(float(value) * 255)))


def _mask_channel(value: Any) -> Any:
    if value == "alpha":
        raise BadValue("channel 'alpha': Latentgraph images have no alpha channel here (load the file with "
                       "LoadImage, whose MASK output is its alpha)")
    return value


def _latent_method(value: Any) -> Any:
    if value == "bislerp":
        raise BadValue("upscale_method 'bislerp' is not supported (nearest-exact, bilinear, bicubic and area are)")
    return value


# ---- expansions: ComfyUI nodes that are two of ours ----

def _expand_sampler_custom(node_id: str, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    add_noise = inputs.pop("add_noise", True)
    seed = inputs.pop("seed", 0)
    noise_id = f"{node_id}:noise"
    # With add_noise off ComfyUI still seeds the noise ancestral and SDE samplers add at each step.
    noise = {"type": "noise" if add_noise else "disable_noise", "inputs": {"seed": seed}}
    inputs["noise"] = {"node": noise_id, "output": "noise"}
    return {noise_id: noise, node_id: {"type": "guided_sampler", "inputs": inputs}}


def _expand_refiner_encode(node_id: str, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    encode_id = f"{node_id}:encode"
    encode = {"type": "clip_text_encode", "inputs": {k: inputs.pop(k) for k in ("clip", "text") if k in inputs}}
    inputs["conditioning"] = {"node": encode_id, "output": "conditioning"}
    return {encode_id: encode, node_id: {"type": "sdxl_conditioning", "inputs": inputs}}


def _expand_latent_upscale(node_id: str, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # ComfyUI: width and height both 0 leave the latent as it is; ours would use scale_by.
    if inputs.get("width") == 0 and inputs.get("height") == 0:
        inputs["scale_by"] = 1.0
    return {node_id: {"type": "latent_upscale", "inputs": inputs}}


SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})
ENABLE = (["enable", "disable"],)
COMFY_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

M = NodeMap
MAPPINGS: tuple[NodeMap, ...] = (
    # ---- loaders ----
    M("CheckpointLoaderSimple", "checkpoint_loader", (Widget("ckpt_name", "checkpoint"),),
      (("MODEL", "model"), ("CLIP", "clip"), ("VAE", "vae")), display="Load Checkpoint", category="loaders"),
    M("VAELoader", "vae_loader", (Widget("vae_name", "vae_name"),), (("VAE", "vae"),),
      display="Load VAE", category="loaders",
      note="`latent_space` is set from the workflow's checkpoint (SDXL or not) when that file is here, else sd1"),
    M("LoraLoader", "lora_loader",
      (Socket("model", "model", "MODEL"), Socket("clip", "clip", "CLIP"), Widget("lora_name", "lora_name"),
       Widget("strength_model", "strength_model"), Widget("strength_clip", "strength_clip")),
      (("MODEL", "model"), ("CLIP", "clip")), display="Load LoRA", category="loaders"),
    M("LoraLoaderModelOnly", "lora_loader_model_only",
      (Socket("model", "model", "MODEL"), Widget("lora_name", "lora_name"), Widget("strength_model", "strength_model")),
      (("MODEL", "model"),), display="LoraLoaderModelOnly", category="loaders"),
    M("ControlNetLoader", "controlnet_loader", (Widget("control_net_name", "controlnet_name"),),
      (("CONTROL_NET", "controlnet"),), display="Load ControlNet Model", category="loaders"),
    M("DiffControlNetLoader", "diff_controlnet_loader",
      (Socket("model", "model", "MODEL"), Widget("control_net_name", "controlnet_name")),
      (("CONTROL_NET", "controlnet"),), display="Load ControlNet Model (diff)", category="loaders"),
    M("UpscaleModelLoader", "upscale_model_loader", (Widget("model_name", "model_name"),),
      (("UPSCALE_MODEL", "upscale_model"),), display="Load Upscale Model", category="loaders"),
    M("CLIPSetLastLayer", "clip_set_last_layer",
      (Socket("clip", "clip", "CLIP"), Widget("stop_at_clip_layer", "stop_at_clip_layer")),
      (("CLIP", "clip"),), display="CLIP Set Last Layer", category="conditioning"),
    # ---- conditioning ----
    M("CLIPTextEncode", "clip_text_encode", (Widget("text", "text"), Socket("clip", "clip", "CLIP")),
      (("CONDITIONING", "conditioning"),), display="CLIP Text Encode (Prompt)", category="conditioning"),
    M("CLIPTextEncodeSDXL", "clip_text_encode_sdxl",
      (Socket("clip", "clip", "CLIP"), Widget("width", "width"), Widget("height", "height"),
       Widget("crop_w", "crop_w"), Widget("crop_h", "crop_h"), Widget("target_width", "target_width"),
       Widget("target_height", "target_height"), Widget("text_g", "text_g"), Widget("text_l", "text_l")),
      (("CONDITIONING", "conditioning"),), display="CLIPTextEncodeSDXL", category="advanced/conditioning"),
    M("CLIPTextEncodeSDXLRefiner", "sdxl_conditioning",
      (Widget("ascore", "aesthetic_score"), Widget("width", "original_width"), Widget("height", "original_height"),
       Widget("text", "text"), Socket("clip", "clip", "CLIP")),
      (("CONDITIONING", "conditioning"),), display="CLIPTextEncodeSDXLRefiner", category="advanced/conditioning",
      expand=_expand_refiner_encode, note="clip_text_encode, then sdxl_conditioning (aesthetic score, original size)"),
    M("ConditioningCombine", "conditioning_combine",
      (Socket("conditioning_1", "a", "CONDITIONING"), Socket("conditioning_2", "b", "CONDITIONING")),
      (("CONDITIONING", "conditioning"),), display="Conditioning (Combine)", category="conditioning"),
    M("ConditioningSetArea", "conditioning_set_area",
      (Socket("conditioning", "conditioning", "CONDITIONING"), Widget("width", "width"), Widget("height", "height"),
       Widget("x", "x"), Widget("y", "y"), Widget("strength", "strength")),
      (("CONDITIONING", "conditioning"),), display="Conditioning (Set Area)", category="conditioning"),
    M("ConditioningSetAreaPercentage", "conditioning_set_area_percentage",
      (Socket("conditioning", "conditioning", "CONDITIONING"), Widget("width", "width"), Widget("height", "height"),
       Widget("x", "x"), Widget("y", "y"), Widget("strength", "strength")),
      (("CONDITIONING", "conditioning"),), display="Conditioning (Set Area with Percentage)",
      category="conditioning"),
    M("ConditioningSetAreaStrength", "conditioning_set_area_strength",
      (Socket("conditioning", "conditioning", "CONDITIONING"), Widget("strength", "strength")),
      (("CONDITIONING", "conditioning"),), display="ConditioningSetAreaStrength", category="conditioning"),
    M("ConditioningSetMask", "conditioning_set_mask",
      (Socket("conditioning", "conditioning", "CONDITIONING"), Socket("mask", "mask", "MASK"),
       Widget("strength", "strength"), Widget("set_cond_area", "set_cond_area")),
      (("CONDITIONING", "conditioning"),), display="Conditioning (Set Mask)", category="conditioning"),
    M("ConditioningSetTimestepRange", "conditioning_set_timestep_range",
      (Socket("conditioning", "conditioning", "CONDITIONING"), Widget("start", "start"), Widget("end", "end")),
      (("CONDITIONING", "conditioning"),), display="ConditioningSetTimestepRange", category="advanced/conditioning"),
    M("ConditioningConcat", "conditioning_concat",
      (Socket("conditioning_to", "conditioning_to", "CONDITIONING"),
       Socket("conditioning_from", "conditioning_from", "CONDITIONING")),
      (("CONDITIONING", "conditioning"),), display="Conditioning (Concat)", category="conditioning"),
    M("ConditioningAverage", "conditioning_average",
      (Socket("conditioning_to", "conditioning_to", "CONDITIONING"),
       Socket("conditioning_from", "conditioning_from", "CONDITIONING"),
       Widget("conditioning_to_strength", "conditioning_to_strength")),
      (("CONDITIONING", "conditioning"),), display="ConditioningAverage", category="conditioning"),
    M("ConditioningZeroOut", "conditioning_zero_out", (Socket("conditioning", "conditioning", "CONDITIONING"),),
      (("CONDITIONING", "conditioning"),), display="ConditioningZeroOut", category="advanced/conditioning"),
    M("ControlNetApply", "apply_controlnet",
      (Socket("conditioning", "positive", "CONDITIONING"), Socket("control_net", "controlnet", "CONTROL_NET"),
       Socket("image", "image", "IMAGE"), Widget("strength", "strength")),
      (("CONDITIONING", "positive"),), display="Apply ControlNet (OLD)", category="conditioning/controlnet",
      note="applies to the one conditioning given, as ComfyUI's old node"),
    M("ControlNetApplyAdvanced", "apply_controlnet",
      (Socket("positive", "positive", "CONDITIONING"), Socket("negative", "negative", "CONDITIONING"),
       Socket("control_net", "controlnet", "CONTROL_NET"), Socket("image", "image", "IMAGE"),
       Widget("strength", "strength"), Widget("start_percent", "start_percent"),
       Widget("end_percent", "end_percent"), Socket("vae", None, "VAE", optional=True)),
      (("CONDITIONING", "positive"), ("CONDITIONING", "negative")), output_names=("positive", "negative"),
      display="Apply ControlNet", category="conditioning/controlnet",
      note="the optional `vae` input (for other model families' ControlNets) is not needed and dropped"),
    M("InpaintModelConditioning", "inpaint_model_conditioning",
      (Socket("positive", "positive", "CONDITIONING"), Socket("negative", "negative", "CONDITIONING"),
       Socket("vae", "vae", "VAE"), Socket("pixels", "pixels", "IMAGE"), Socket("mask", "mask", "MASK"),
       Widget("noise_mask", "noise_mask", optional=True)),
      (("CONDITIONING", "positive"), ("CONDITIONING", "negative"), ("LATENT", "latent")),
      output_names=("positive", "negative", "latent"), display="InpaintModelConditioning",
      category="conditioning/inpaint"),
    # ---- sampling ----
    M("KSampler", "ksampler",
      (Socket("model", "model", "MODEL"), Widget("seed", "seed", control=True, comfy=SEED),
       Widget("steps", "steps"), Widget("cfg", "cfg"), Widget("sampler_name", "sampler", _sampler_name),
       Widget("scheduler", "scheduler"), Socket("positive", "positive", "CONDITIONING"),
       Socket("negative", "negative", "CONDITIONING"), Socket("latent_image", "latent", "LATENT"),
       Widget("denoise", "denoise")),
      (("LATENT", "latent"),), display="KSampler", category="sampling",
      note="`dpmpp_*_sde_gpu` samplers become their CPU-noise names"),
    M("KSamplerAdvanced", "ksampler_advanced",
      (Socket("model", "model", "MODEL"), Widget("add_noise", "add_noise", _enable, ENABLE),
       Widget("noise_seed", "seed", control=True, comfy=SEED), Widget("steps", "steps"), Widget("cfg", "cfg"),
       Widget("sampler_name", "sampler", _sampler_name), Widget("scheduler", "scheduler"),
       Socket("positive", "positive", "CONDITIONING"), Socket("negative", "negative", "CONDITIONING"),
       Socket("latent_image", "latent", "LATENT"), Widget("start_at_step", "start_step"),
       Widget("end_at_step", "end_step"),
       Widget("return_with_leftover_noise", "return_with_leftover_noise", _enable, (["disable", "enable"],))),
      (("LATENT", "latent"),), display="KSampler (Advanced)", category="sampling"),
    M("RandomNoise", "noise", (Widget("noise_seed", "seed", control=True, comfy=SEED),), (("NOISE", "noise"),),
      display="RandomNoise", category="sampling/custom_sampling/noise"),
    M("DisableNoise", "disable_noise", (), (("NOISE", "noise"),), display="DisableNoise",
      category="sampling/custom_sampling/noise"),
    M("KSamplerSelect", "sampler_select", (Widget("sampler_name", "sampler", _sampler_name),), (("SAMPLER", "sampler"),),
      display="KSamplerSelect", category="sampling/custom_sampling/samplers"),
    M("BasicScheduler", "scheduler",
      (Socket("model", "model", "MODEL"), Widget("scheduler", "schedule"), Widget("steps", "steps"),
       Widget("denoise", "denoise")),
      (("SIGMAS", "sigmas"),), display="BasicScheduler", category="sampling/custom_sampling/schedulers"),
    M("KarrasScheduler", "karras_scheduler",
      (Widget("steps", "steps"), Widget("sigma_max", "sigma_max"), Widget("sigma_min", "sigma_min"),
       Widget("rho", "rho")),
      (("SIGMAS", "sigmas"),), display="KarrasScheduler", category="sampling/custom_sampling/schedulers"),
    M("ExponentialScheduler", "exponential_scheduler",
      (Widget("steps", "steps"), Widget("sigma_max", "sigma_max"), Widget("sigma_min", "sigma_min")),
      (("SIGMAS", "sigmas"),), display="ExponentialScheduler", category="sampling/custom_sampling/schedulers"),
    M("SplitSigmas", "split_sigmas", (Socket("sigmas", "sigmas", "SIGMAS"), Widget("step", "step")),
      (("SIGMAS", "high_sigmas"), ("SIGMAS", "low_sigmas")), output_names=("high_sigmas", "low_sigmas"),
      display="SplitSigmas", category="sampling/custom_sampling/sigmas"),
    M("BasicGuider", "basic_guider",
      (Socket("model", "model", "MODEL"), Socket("conditioning", "conditioning", "CONDITIONING")),
      (("GUIDER", "guider"),), display="BasicGuider", category="sampling/custom_sampling/guiders"),
    M("CFGGuider", "cfg_guider",
      (Socket("model", "model", "MODEL"), Socket("positive", "positive", "CONDITIONING"),
       Socket("negative", "negative", "CONDITIONING"), Widget("cfg", "cfg")),
      (("GUIDER", "guider"),), display="CFGGuider", category="sampling/custom_sampling/guiders"),
    M("SamplerCustom", "guided_sampler",
      (Socket("model", "model", "MODEL"), Widget("add_noise", "add_noise", comfy=("BOOLEAN", {"default": True}), literal_only=True),
       Widget("noise_seed", "seed", control=True, comfy=SEED), Widget("cfg", "cfg"),
       Socket("positive", "positive", "CONDITIONING"), Socket("negative", "negative", "CONDITIONING"),
       Socket("sampler", "sampler", "SAMPLER"), Socket("sigmas", "sigmas", "SIGMAS"),
       Socket("latent_image", "latent", "LATENT")),
      (("LATENT", "latent"), ("LATENT", "denoised")), output_names=("output", "denoised_output"),
      display="SamplerCustom", category="sampling/custom_sampling", expand=_expand_sampler_custom,
      note="a noise node (or disable_noise when add_noise is off), then guided_sampler"),
    M("SamplerCustomAdvanced", "sampler_custom_advanced",
      (Socket("noise", "noise", "NOISE"), Socket("guider", "guider", "GUIDER"), Socket("sampler", "sampler", "SAMPLER"),
       Socket("sigmas", "sigmas", "SIGMAS"), Socket("latent_image", "latent", "LATENT")),
      (("LATENT", "latent"), ("LATENT", "denoised")), output_names=("output", "denoised_output"),
      display="SamplerCustomAdvanced", category="sampling/custom_sampling"),
    M("ModelSamplingDiscrete", "model_sampling",
      (Socket("model", "model", "MODEL"),
       Widget("sampling", "prediction", _prediction, (["eps", "v_prediction", "lcm", "x0"],)),
       Widget("zsnr", "zero_terminal_snr", comfy=("BOOLEAN", {"default": False}))),
      (("MODEL", "model"),), display="ModelSamplingDiscrete", category="advanced/model",
      note="sampling eps and v_prediction (lcm and x0 are reported)"),
    M("RescaleCFG", "rescale_cfg", (Socket("model", "model", "MODEL"), Widget("multiplier", "multiplier")),
      (("MODEL", "model"),), display="RescaleCFG", category="advanced/model"),
    # ---- latents ----
    M("EmptyLatentImage", "empty_latent",
      (Widget("width", "width"), Widget("height", "height"), Widget("batch_size", "batch_size")),
      (("LATENT", "latent"),), display="Empty Latent Image", category="latent"),
    M("VAEDecode", "vae_decode", (Socket("samples", "latent", "LATENT"), Socket("vae", "vae", "VAE")),
      (("IMAGE", "image"),), display="VAE Decode", category="latent"),
    M("VAEEncode", "vae_encode", (Socket("pixels", "image", "IMAGE"), Socket("vae", "vae", "VAE")),
      (("LATENT", "latent"),), display="VAE Encode", category="latent"),
    M("VAEEncodeForInpaint", "vae_encode_for_inpaint",
      (Socket("pixels", "pixels", "IMAGE"), Socket("vae", "vae", "VAE"), Socket("mask", "mask", "MASK"),
       Widget("grow_mask_by", "grow_mask_by")),
      (("LATENT", "latent"),), display="VAE Encode (for Inpainting)", category="latent/inpaint"),
    M("SetLatentNoiseMask", "set_latent_noise_mask",
      (Socket("samples", "latent", "LATENT"), Socket("mask", "mask", "MASK")),
      (("LATENT", "latent"),), display="Set Latent Noise Mask", category="latent/inpaint"),
    M("LatentUpscale", "latent_upscale",
      (Socket("samples", "latent", "LATENT"),
       Widget("upscale_method", "method", _latent_method,
              (["nearest-exact", "bilinear", "area", "bicubic", "bislerp"],)),
       Widget("width", "width"), Widget("height", "height"), Widget("crop", "crop")),
      (("LATENT", "latent"),), display="Upscale Latent", category="latent", expand=_expand_latent_upscale),
    M("LatentUpscaleBy", "latent_upscale",
      (Socket("samples", "latent", "LATENT"),
       Widget("upscale_method", "method", _latent_method,
              (["nearest-exact", "bilinear", "area", "bicubic", "bislerp"],)),
       Widget("scale_by", "scale_by")),
      (("LATENT", "latent"),), fixed={"width": 0, "height": 0}, display="Upscale Latent By", category="latent"),
    # ---- images ----
    M("LoadImage", "load_image", (Widget("image", "image", trailing=1),), (("IMAGE", "image"), ("MASK", "mask")),
      display="Load Image", category="image"),
    M("LoadImageMask", "load_image_mask", (Widget("image", "image"), Widget("channel", "channel", trailing=1)),
      (("MASK", "mask"),), display="Load Image (as Mask)", category="mask"),
    M("SaveImage", "save_image", (Socket("images", "images", "IMAGE"), Widget("filename_prefix", "filename_prefix")),
      (), display="Save Image", category="image", output_node=True),
    M("PreviewImage", "preview_image", (Socket("images", "images", "IMAGE"),), (),
      display="Preview Image", category="image", output_node=True),
    M("ImageScale", "image_scale",
      (Socket("image", "image", "IMAGE"), Widget("upscale_method", "upscale_method"), Widget("width", "width"),
       Widget("height", "height"), Widget("crop", "crop")),
      (("IMAGE", "image"),), display="Upscale Image", category="image/upscaling"),
    M("ImageScaleBy", "image_scale_by",
      (Socket("image", "image", "IMAGE"), Widget("upscale_method", "upscale_method"), Widget("scale_by", "scale_by")),
      (("IMAGE", "image"),), display="Upscale Image By", category="image/upscaling"),
    M("ImageScaleToTotalPixels", "image_scale_to_total_pixels",
      (Socket("image", "image", "IMAGE"), Widget("upscale_method", "upscale_method"),
       Widget("megapixels", "megapixels"), Widget("resolution_steps", "resolution_steps", optional=True)),
      (("IMAGE", "image"),), display="Scale Image to Total Pixels", category="image/upscaling"),
    M("ImagePadForOutpaint", "image_pad",
      (Socket("image", "image", "IMAGE"), Widget("left", "left"), Widget("top", "top"), Widget("right", "right"),
       Widget("bottom", "bottom"), Widget("feathering", "feathering")),
      (("IMAGE", "image"), ("MASK", "mask")), display="Pad Image for Outpainting", category="image"),
    M("ImageCompositeMasked", "image_composite_masked",
      (Socket("destination", "destination", "IMAGE"), Socket("source", "source", "IMAGE"), Widget("x", "x"),
       Widget("y", "y"), Widget("resize_source", "resize_source"), Socket("mask", "mask", "MASK", optional=True)),
      (("IMAGE", "image"),), display="ImageCompositeMasked", category="image"),
    M("ImageUpscaleWithModel", "image_upscale_with_model",
      (Socket("upscale_model", "upscale_model", "UPSCALE_MODEL"), Socket("image", "image", "IMAGE")),
      (("IMAGE", "image"),), display="Upscale Image (using Model)", category="image/upscaling"),
    M("Canny", "canny",
      (Socket("image", "image", "IMAGE"),
       Widget("low_threshold", "low_threshold", _canny_threshold,
              ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01})),
       Widget("high_threshold", "high_threshold", _canny_threshold,
              ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01}))),
      (("IMAGE", "image"),), display="Canny", category="image/preprocessors",
      note="thresholds x255 onto OpenCV's 8-bit Canny; ComfyUI's runs kornia's, so edges differ slightly"),
    M("ImageInvert", "invert_image", (Socket("image", "image", "IMAGE"),), (("IMAGE", "image"),),
      display="Invert Image", category="image"),
    M("ImageBatch", "image_batch", (Socket("image1", "image1", "IMAGE"), Socket("image2", "image2", "IMAGE")),
      (("IMAGE", "image"),), display="Batch Images", category="image"),
    M("ImageBlend", "image_blend",
      (Socket("image1", "image1", "IMAGE"), Socket("image2", "image2", "IMAGE"), Widget("blend_factor", "blend_factor"),
       Widget("blend_mode", "blend_mode")),
      (("IMAGE", "image"),), display="Image Blend", category="image/postprocessing"),
    M("ImageCrop", "image_crop",
      (Socket("image", "image", "IMAGE"), Widget("width", "width"), Widget("height", "height"), Widget("x", "x"),
       Widget("y", "y")),
      (("IMAGE", "image"),), display="Image Crop", category="image/transform"),
    M("ImageFlip", "image_flip", (Socket("image", "image", "IMAGE"), Widget("flip_method", "flip_method")),
      (("IMAGE", "image"),), display="Image Flip", category="image/transform"),
    M("ImageRotate", "image_rotate", (Socket("image", "image", "IMAGE"), Widget("rotation", "rotation")),
      (("IMAGE", "image"),), display="Image Rotate", category="image/transform"),
    M("VAEDecodeTiled", "vae_decode",
      (Socket("samples", "latent", "LATENT"), Socket("vae", "vae", "VAE"), Widget("tile_size", None),
       Widget("overlap", None, optional=True), Widget("temporal_size", None, optional=True),
       Widget("temporal_overlap", None, optional=True)),
      (("IMAGE", "image"),), fixed={"tiling": "always"}, display="VAE Decode (Tiled)", category="_for_testing",
      note="decoded in tiles of Latentgraph's own size; the tile widgets are dropped"),
    M("VAEEncodeTiled", "vae_encode",
      (Socket("pixels", "image", "IMAGE"), Socket("vae", "vae", "VAE"), Widget("tile_size", None),
       Widget("overlap", None, optional=True), Widget("temporal_size", None, optional=True),
       Widget("temporal_overlap", None, optional=True)),
      (("LATENT", "latent"),), display="VAE Encode (Tiled)", category="_for_testing",
      note="encoded whole; the tile widgets are dropped"),
    # ---- masks ----
    M("SolidMask", "solid_mask", (Widget("value", "value"), Widget("width", "width"), Widget("height", "height")),
      (("MASK", "mask"),), display="SolidMask", category="mask"),
    M("CropMask", "crop_mask",
      (Socket("mask", "mask", "MASK"), Widget("x", "x"), Widget("y", "y"), Widget("width", "width"),
       Widget("height", "height")),
      (("MASK", "mask"),), display="CropMask", category="mask"),
    M("FeatherMask", "feather_mask",
      (Socket("mask", "mask", "MASK"), Widget("left", "left"), Widget("top", "top"), Widget("right", "right"),
       Widget("bottom", "bottom")),
      (("MASK", "mask"),), display="FeatherMask", category="mask"),
    M("ThresholdMask", "threshold_mask", (Socket("mask", "mask", "MASK"), Widget("value", "value")),
      (("MASK", "mask"),), display="ThresholdMask", category="mask"),
    M("MaskComposite", "mask_composite",
      (Socket("destination", "destination", "MASK"), Socket("source", "source", "MASK"), Widget("x", "x"),
       Widget("y", "y"), Widget("operation", "operation")),
      (("MASK", "mask"),), display="MaskComposite", category="mask"),
    M("ImageColorToMask", "mask_from_color", (Socket("image", "image", "IMAGE"), Widget("color", "color")),
      (("MASK", "mask"),), display="ImageColorToMask", category="mask"),
    M("ImageToMask", "image_to_mask",
      (Socket("image", "image", "IMAGE"),
       Widget("channel", "channel", _mask_channel, (["red", "green", "blue", "alpha"],))),
      (("MASK", "mask"),), display="Convert Image to Mask", category="mask", note="channel alpha is reported"),
    M("MaskToImage", "mask_to_image", (Socket("mask", "mask", "MASK"),), (("IMAGE", "image"),),
      display="Convert Mask to Image", category="mask"),
    M("InvertMask", "invert_mask", (Socket("mask", "mask", "MASK"),), (("MASK", "mask"),),
      display="InvertMask", category="mask"),
    M("GrowMask", "grow_mask",
      (Socket("mask", "mask", "MASK"), Widget("expand", "expand"), Widget("tapered_corners", "tapered_corners")),
      (("MASK", "mask"),), display="GrowMask", category="mask"),
    # ---- primitives (ComfyUI's newer value nodes; the UI-only PrimitiveNode is folded into its targets) ----
    M("PrimitiveInt", "int_constant", (Widget("value", "value", control=True),), (("INT", "value"),),
      display="Int", category="utils/primitive"),
    M("PrimitiveFloat", "float_constant", (Widget("value", "value"),), (("FLOAT", "value"),),
      display="Float", category="utils/primitive"),
    M("PrimitiveString", "string_constant", (Widget("value", "value"),), (("STRING", "value"),),
      display="String", category="utils/primitive"),
    M("PrimitiveStringMultiline", "string_constant", (Widget("value", "value"),), (("STRING", "value"),),
      display="String (Multiline)", category="utils/primitive"),
    M("PrimitiveBoolean", "boolean_constant", (Widget("value", "value"),), (("BOOLEAN", "value"),),
      display="Boolean", category="utils/primitive"),
)

BY_TYPE: dict[str, NodeMap] = {m.comfy: m for m in MAPPINGS}

# ComfyUI core nodes with no Latentgraph equivalent yet, and why (reported by name).
NOT_SUPPORTED: dict[str, str] = {
    "CheckpointLoader": "checkpoints with a separate YAML config are not supported; use CheckpointLoaderSimple",
    "unCLIPCheckpointLoader": "unCLIP models are not supported",
    "unCLIPConditioning": "unCLIP models are not supported",
    "CLIPLoader": "loading a text encoder alone is not supported",
    "UNETLoader": "loading a diffusion model alone is not supported",
    "StyleModelLoader": "style models are not supported",
    "CLIPVisionLoader": "CLIP vision models are not supported",
    "GLIGENLoader": "GLIGEN is not supported",
}

# ComfyUI model folders by the inputs that name files (our input -> folder kind), for the report.
FILE_INPUTS: dict[tuple[str, str], str] = {
    ("checkpoint_loader", "checkpoint"): "checkpoints",
    ("vae_loader", "vae_name"): "vae",
    ("lora_loader", "lora_name"): "loras",
    ("lora_loader_model_only", "lora_name"): "loras",
    ("controlnet_loader", "controlnet_name"): "controlnet",
    ("diff_controlnet_loader", "controlnet_name"): "controlnet",
    ("upscale_model_loader", "model_name"): "upscale_models",
    ("load_image", "image"): "input",
    ("load_image_mask", "image"): "input",
}

# UI-format node types that are not computation: folded into the graph's links, notes or layout.
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
NOTE_TYPES = ("Note", "MarkdownNote")
