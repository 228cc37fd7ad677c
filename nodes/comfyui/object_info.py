"""ComfyUI's `/object_info`: the mapped node types described as ComfyUI describes its own, so its
clients (and editors built on that description) can build prompts for Latentgraph."""

from __future__ import annotations

from typing import Any

from latentgraph.nodes.comfyui.mapping import MAPPINGS, NodeMap, Widget

_PORT_TYPES = {"INT": "INT", "FLOAT": "FLOAT", "STRING": "STRING", "BOOLEAN": "BOOLEAN"}


def _widget_spec(mapping: NodeMap, widget: Widget, registry: Any, services: Any) -> list[Any]:
    """[type or choices, options] for one widget, from ComfyUI's own spec where it differs from ours,
    else from our input's type, bounds, choices and default."""
    if widget.comfy is not None:
        return list(widget.comfy)
    info = registry.get(mapping.ours)
    spec = info.inputs.get(widget.ours) if info is not None and widget.ours else None
    if spec is None:
        return ["STRING", {}]
    options: dict[str, Any] = {}
    if spec.default is not None:
        options["default"] = spec.default
    choices = spec.choices(services)
    if choices is not None:
        return [list(choices), options] if options else [list(choices)]
    kind = _PORT_TYPES.get(spec.port, "STRING")
    low = spec.minimum if spec.minimum is not None else spec.exclusive_minimum
    high = spec.maximum if spec.maximum is not None else spec.exclusive_maximum
    if low is not None:
        options["min"] = low
    if high is not None:
        options["max"] = high
    if spec.step is not None:
        options["step"] = spec.step
    if spec.multiline:
        options["multiline"] = True
    if widget.control:
        options["control_after_generate"] = True
    return [kind, options]


def describe(mapping: NodeMap, registry: Any, services: Any = None) -> dict[str, Any]:
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for item in mapping.inputs:
        target = optional if item.optional else required
        target[item.name] = _widget_spec(mapping, item, registry, services) if isinstance(item, Widget) else [item.type]
    if mapping.comfy in ("LoadImage", "LoadImageMask"):
        required["image"] = [required["image"][0], {**(required["image"][1] if len(required["image"]) > 1 else {}),
                                                    "image_upload": True}]
    info = registry.get(mapping.ours)
    types = [t for t, _ in mapping.outputs]
    entry: dict[str, Any] = {
        "input": {"required": required, **({"optional": optional} if optional else {})},
        "input_order": {"required": list(required), **({"optional": list(optional)} if optional else {})},
        "output": types,
        "output_is_list": [False] * len(types),
        "output_name": list(mapping.output_names or types),
        "name": mapping.comfy,
        "display_name": mapping.display or mapping.comfy,
        "description": info.description if info is not None else "",
        "python_module": "latentgraph",
        "category": mapping.category,
        "output_node": mapping.output_node,
    }
    return entry


def object_info(registry: Any, services: Any = None) -> dict[str, Any]:
    """Every mapped ComfyUI node type whose Latentgraph node is registered, in ComfyUI's shape."""
    return {m.comfy: describe(m, registry, services) for m in MAPPINGS if registry.get(m.ours) is not None}
