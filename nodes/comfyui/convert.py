"""ComfyUI workflows (UI and API format, also inside PNGs) to Latentgraph workflows, with a report.

Both formats are first read into one list of `_CNode`s (id, ComfyUI type, inputs as links or
values by ComfyUI input name, layout), then each is mapped through `mapping.MAPPINGS`. The result
keeps ComfyUI's node ids (as strings), so messages and results name the nodes the user knows; a
ComfyUI node that becomes two of ours keeps its id on the one giving the outputs, the other gets
`id:part`. Nothing here raises on a strange workflow except for a document that is neither format
(`ComfyImportError`): what cannot be mapped is reported, and the rest converted.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from latentgraph.engine.workflow import FORMAT
from latentgraph.nodes.comfyui.mapping import (BY_TYPE, CONTROL_VALUES, FILE_INPUTS, NOT_SUPPORTED, NOTE_TYPES,
                                               PRIMITIVE, REROUTE, BadValue, NodeMap, Socket, Widget)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_PIXELS = 16384 * 16384  # a PNG whose text chunks follow the pixels is decoded; never a bigger one
UI_MODES = {2: "mute", 4: "bypass"}


class ComfyImportError(ValueError):
    """The document is neither a ComfyUI workflow (UI or API format) nor a Latentgraph one."""


@dataclass
class ImportReport:
    """What an import could not carry over, by node id and ComfyUI type."""

    format: str
    unmapped: list[dict[str, Any]] = field(default_factory=list)  # {id, type, reason, links}
    values: list[dict[str, Any]] = field(default_factory=list)  # {id, type, input, value, message}
    missing_files: list[dict[str, Any]] = field(default_factory=list)  # {id, type, input, kind, name}
    problems: list[dict[str, Any]] = field(default_factory=list)  # other validation issues: {id, input, message}
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every node was mapped (missing files and odd values are reported, not fatal)."""
        return not self.unmapped

    @property
    def empty(self) -> bool:
        return not (self.unmapped or self.values or self.missing_files or self.problems or self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "ok": self.ok, "unmapped": self.unmapped, "values": self.values,
                "missing_files": self.missing_files, "problems": self.problems, "notes": self.notes}

    def lines(self) -> list[str]:
        """The report as text, one finding a line (for the command line)."""
        out = [f"unmapped node {u['id']} ({u['type']}): {u['reason']}" for u in self.unmapped]
        out += [f"node {v['id']} ({v['type']}) {v['input']}: {v['message']}" for v in self.values]
        out += [f"missing {m['kind']} file {m['name']!r} (node {m['id']} ({m['type']}) {m['input']})"
                for m in self.missing_files]
        out += [f"node {p['id']}: {p['message']}" if p.get("id") else p["message"] for p in self.problems]
        return out + self.notes


@dataclass
class ImportResult:
    workflow: dict[str, Any]
    report: ImportReport

    @property
    def source_format(self) -> str:
        return self.report.format


@dataclass
class _Link:
    source: str
    slot: int
    points: list[list[float]] = field(default_factory=list)  # reroute points, source to target


@dataclass
class _CNode:
    id: str
    type: str
    inputs: dict[str, Any]  # ComfyUI input name -> _Link or a value
    widgets: list[Any] | None = None  # UI format: widgets_values in order (None: inputs already by name)
    title: str | None = None
    mode: str | None = None
    ui: dict[str, Any] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=list)
    unmapped_reason: str = ""  # why it cannot be mapped whatever its type (e.g. a subgraph left unexpanded)


# ---------------------------------------------------------------- reading documents

def read_png_chunks(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt) by key. Chunks before the pixels are read without
    decoding them; chunks after are found by decoding, refused above MAX_PNG_PIXELS."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ComfyImportError(f"not a PNG image ({image.format})")
            chunks = {k: v for k, v in image.info.items() if isinstance(v, str)}
            if not chunks:
                width, height = image.size
                if width * height <= MAX_PNG_PIXELS:
                    image.load()
                    chunks = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
            return chunks
    except ComfyImportError:
        raise
    except Exception as exc:  # Pillow raises many kinds for a broken file
        raise ComfyImportError(f"the PNG could not be read: {exc}") from None


def _parse_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ComfyImportError(f"{what} is not valid JSON: {exc}") from None


def detect_format(document: Any) -> str:
    """'latentgraph', 'comfyui-ui' or 'comfyui-api'; ComfyImportError for anything else."""
    if not isinstance(document, dict):
        raise ComfyImportError(f"a workflow is a JSON object, got {type(document).__name__}")
    if isinstance(document.get("format"), str) and document["format"].startswith("latentgraph/"):
        return "latentgraph"
    if isinstance(document.get("nodes"), list):
        return "comfyui-ui"
    if document and all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in document.values()):
        return "comfyui-api"
    if isinstance(document.get("nodes"), dict):  # ours without a format tag
        return "latentgraph"
    raise ComfyImportError("neither a Latentgraph workflow nor a ComfyUI one: a ComfyUI UI-format workflow has a "
                           "`nodes` list and `links`; an API-format one maps node ids to {class_type, inputs}")


def load_document(source: Any) -> Any:
    """A decoded document from a dict, JSON text/bytes or PNG bytes (its workflow, else its prompt)."""
    if isinstance(source, (bytes, bytearray)) and bytes(source[:8]) == PNG_SIGNATURE:
        chunks = read_png_chunks(bytes(source))
        found = []
        for key in ("workflow", "prompt"):
            if key in chunks:
                document = _parse_json(chunks[key], f"the PNG's {key!r} text")
                try:
                    detect_format(document)
                except ComfyImportError:
                    continue
                found.append(document)
        if not found:
            raise ComfyImportError("the PNG carries no workflow (no `workflow` or `prompt` text chunk with one)")
        return found[0]
    if isinstance(source, (str, bytes, bytearray)):
        document = _parse_json(source, "the file")
    else:
        document = source
    if isinstance(document, dict) and "prompt" in document and isinstance(document["prompt"], dict) \
            and "class_type" not in document["prompt"]:
        document = document["prompt"]  # a saved POST /prompt body
    return document


# ---------------------------------------------------------------- UI format

def _xy(value: Any) -> list[float] | None:
    if isinstance(value, dict):
        value = [value.get("0", value.get(0)), value.get("1", value.get(1))]
    if isinstance(value, (list, tuple)) and len(value) >= 2 and all(isinstance(v, (int, float)) for v in value[:2]):
        return [float(value[0]), float(value[1])]
    return None


LINK_FIELDS = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")


def _link(entry: Any) -> dict[str, Any] | None:
    """A UI-format link (an array in schema 0.4, an object in schema 1) as a dict, or None when it
    is not one (missing ends, slots that are not integers, an id that is not a key)."""
    if isinstance(entry, list) and len(entry) >= 5:
        link = dict(zip(LINK_FIELDS, entry))
    elif isinstance(entry, dict):
        link = dict(entry)
    else:
        return None
    if not all(k in link for k in LINK_FIELDS[:5]) or not isinstance(link["id"], (int, str)):
        return None
    if not all(isinstance(link[k], int) and not isinstance(link[k], bool) for k in ("origin_slot", "target_slot")):
        return None
    if not all(isinstance(link[k], (int, str)) for k in ("origin_id", "target_id")):
        return None
    return link


def _ui_links(document: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    links: dict[Any, dict[str, Any]] = {}
    for entry in document.get("links") if isinstance(document.get("links"), list) else []:
        link = _link(entry)
        if link is not None:
            links[link["id"]] = link
    extra = document.get("extra") if isinstance(document.get("extra"), dict) else {}
    for ext in extra.get("linkExtensions") or []:  # schema 0.4 keeps native reroute parents here
        if isinstance(ext, dict) and ext.get("id") in links:
            links[ext["id"]]["parentId"] = ext.get("parentId")
    return links


def _native_reroutes(document: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    extra = document.get("extra") if isinstance(document.get("extra"), dict) else {}
    entries = document.get("reroutes") or extra.get("reroutes") or []
    return {r["id"]: r for r in entries if isinstance(r, dict) and "id" in r}


def _reroute_points(link: dict[str, Any], reroutes: dict[Any, dict[str, Any]]) -> list[list[float]]:
    points: list[list[float]] = []
    seen = set()
    parent = link.get("parentId")
    while parent is not None and parent in reroutes and parent not in seen:
        seen.add(parent)
        pos = _xy(reroutes[parent].get("pos"))
        if pos:
            points.append(pos)
        parent = reroutes[parent].get("parentId")
    return points[::-1]


SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20  # the ids of a subgraph's input and output nodes in its links
MAX_SUBGRAPH_DEPTH = 16


def _flatten_subgraphs(nodes: list[dict[str, Any]], links: dict[Any, dict[str, Any]],
                       definitions: dict[str, dict[str, Any]], report: ImportReport,
                       depth: int = 0) -> tuple[list[dict[str, Any]], dict[Any, dict[str, Any]]]:
    """Replace each instance of a subgraph (ComfyUI's new frontend: a node whose type is the id of a
    `definitions.subgraphs` entry) by its nodes, ids `instance:inner` as ComfyUI spells them, and
    rewire the links through its input and output slots. A bypassed instance stays (reported)."""
    instances = [n for n in nodes if n.get("type") in definitions and n.get("mode", 0) != 4]
    if not instances:
        return nodes, links
    if depth >= MAX_SUBGRAPH_DEPTH:
        report.notes.append(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels were not expanded")
        return nodes, links
    links = {k: dict(v) for k, v in links.items()}
    expanded = {n["id"] for n in instances}
    out_nodes = [n for n in nodes if n["id"] not in expanded]
    outputs_of: dict[Any, dict[int, tuple[Any, int]]] = {}  # instance -> output slot -> inner (node, slot)
    pending_inputs: list[tuple[Any, dict[str, Any], int]] = []  # (instance, inner link, input slot)
    for instance in instances:
        definition = definitions[instance["type"]]
        inner_links = {}
        for raw in definition.get("links") if isinstance(definition.get("links"), list) else []:
            link = _link(raw)
            if link is not None:
                inner_links[link["id"]] = link
        inner_nodes = [dict(n) for n in (definition.get("nodes") if isinstance(definition.get("nodes"), list) else [])
                       if isinstance(n, dict) and "id" in n and isinstance(n.get("type"), str)]
        inner_nodes, inner_links = _flatten_subgraphs(inner_nodes, inner_links, definitions, report, depth + 1)
        prefix = f"{instance['id']}:"
        base = _xy(instance.get("pos")) or [0.0, 0.0]
        corner = [min((p[0] for n in inner_nodes if (p := _xy(n.get("pos")))), default=0.0),
                  min((p[1] for n in inner_nodes if (p := _xy(n.get("pos")))), default=0.0)]
        for node in inner_nodes:
            node = dict(node, id=prefix + str(node["id"]))
            if (pos := _xy(node.get("pos"))) is not None:
                node["pos"] = [base[0] + pos[0] - corner[0], base[1] + pos[1] - corner[1]]
            if instance.get("mode") == 2:
                node["mode"] = 2
            node["inputs"] = [dict(i, link=None if i.get("link") is None else prefix + str(i["link"]))
                              for i in node.get("inputs") or [] if isinstance(i, dict)]
            out_nodes.append(node)
        for link in inner_links.values():
            link = dict(link, id=prefix + str(link["id"]))
            if link.get("parentId") is not None:
                link.pop("parentId")  # reroutes inside a subgraph are not carried over
            if link["target_id"] == SUBGRAPH_OUTPUT:
                outputs_of.setdefault(instance["id"], {})[int(link["target_slot"])] = (
                    prefix + str(link["origin_id"]), int(link["origin_slot"]))
                continue
            link["target_id"] = prefix + str(link["target_id"])
            if link["origin_id"] == SUBGRAPH_INPUT:
                pending_inputs.append((instance, link, int(link["origin_slot"])))
                continue
            link["origin_id"] = prefix + str(link["origin_id"])
            links[link["id"]] = link
        if instance.get("widgets_values"):
            report.notes.append(f"node {instance['id']} (subgraph {definition.get('name', instance['type'])!r}): "
                                "values promoted to the subgraph node were not applied; its inner nodes' own "
                                "values are used")
    for link in links.values():  # links out of an instance now start at the inner node feeding that output
        seen = 0
        while link.get("origin_id") in outputs_of and seen < MAX_SUBGRAPH_DEPTH:
            source = outputs_of[link["origin_id"]].get(int(link.get("origin_slot") or 0))
            if source is None:
                break
            link["origin_id"], link["origin_slot"] = source
            seen += 1
    for instance, link, slot in pending_inputs:  # links into an instance continue to the inner nodes
        entries = [i for i in instance.get("inputs") or [] if isinstance(i, dict)]
        outer = links.get(entries[slot].get("link")) if slot < len(entries) else None
        if outer is not None:
            links[link["id"]] = dict(link, origin_id=outer["origin_id"], origin_slot=outer["origin_slot"])
    for link_id in [k for k, v in links.items() if v.get("target_id") in expanded]:
        del links[link_id]
    return out_nodes, links


def _read_ui(document: dict[str, Any], report: ImportReport) -> tuple[list[_CNode], dict[str, Any]]:
    raw_nodes = [n for n in document["nodes"] if isinstance(n, dict) and isinstance(n.get("id"), (int, str))
                 and isinstance(n.get("type"), str)]
    links = _ui_links(document)
    found = document.get("definitions") if isinstance(document.get("definitions"), dict) else {}
    definitions = {s["id"]: s for s in (found.get("subgraphs") if isinstance(found.get("subgraphs"), list) else [])
                   if isinstance(s, dict) and isinstance(s.get("id"), str)}
    raw_nodes, links = _flatten_subgraphs(raw_nodes, links, definitions, report)
    by_id = {n["id"]: n for n in raw_nodes}
    reroutes = _native_reroutes(document)
    meta: dict[str, Any] = {}
    subgraphs = set(definitions)

    def resolve(link_id: Any) -> tuple[_Link | None, Any]:
        """Follow a link back through Reroute nodes: (link to a real node, None), or (None, primitive
        node) for a value from a PrimitiveNode, or (None, None) for a broken link."""
        points: list[list[float]] = []
        seen = set()
        while link_id in links and link_id not in seen:
            seen.add(link_id)
            link = links[link_id]
            points[:0] = _reroute_points(link, reroutes)
            source = by_id.get(link["origin_id"])
            if source is None:
                return None, None
            if source["type"] == REROUTE:
                pos, size = _xy(source.get("pos")), _xy(source.get("size")) or [75.0, 26.0]
                if pos:
                    points.insert(0, [pos[0] + size[0] / 2, pos[1] + size[1] / 2])
                upstream = next((i.get("link") for i in source.get("inputs") or [] if isinstance(i, dict)), None)
                link_id = upstream
                continue
            if source["type"] == PRIMITIVE:
                return None, source
            return _Link(str(source["id"]), int(link.get("origin_slot") or 0), points), None
        return None, None

    nodes: list[_CNode] = []
    notes: list[dict[str, Any]] = []
    for raw in raw_nodes:
        kind = raw["type"]
        pos, size = _xy(raw.get("pos")), _xy(raw.get("size"))
        layout: dict[str, Any] = {}
        if pos:
            layout.update(x=pos[0], y=pos[1])
        if size:
            layout.update(width=size[0], height=size[1])
        if isinstance(raw.get("color"), str):
            layout["color"] = raw["color"]
        if isinstance(raw.get("flags"), dict) and raw["flags"].get("collapsed"):
            layout["collapsed"] = True
        if kind in NOTE_TYPES:
            values = raw.get("widgets_values") or [""]
            text = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""
            note = {"id": f"note-{raw['id']}", "text": text, "x": layout.get("x", 0.0), "y": layout.get("y", 0.0),
                    "width": layout.get("width", 300.0), "height": layout.get("height", 120.0)}
            if isinstance(raw.get("bgcolor") or raw.get("color"), str):
                note["color"] = raw.get("bgcolor") or raw.get("color")
            notes.append(note)
            continue
        if kind in (REROUTE, PRIMITIVE):
            continue
        mode = raw.get("mode", 0) if isinstance(raw.get("mode"), int) else 0
        inputs: dict[str, Any] = {}
        widget_values = raw.get("widgets_values")
        named_widgets = widget_values if isinstance(widget_values, dict) else None
        if not isinstance(widget_values, (list, dict)):
            widget_values = None
        for entry in raw.get("inputs") if isinstance(raw.get("inputs"), list) else []:
            if not isinstance(entry, dict) or entry.get("link") is None or not isinstance(entry.get("name"), str):
                continue
            name = entry["widget"]["name"] if isinstance(entry.get("widget"), dict) and "name" in entry["widget"] \
                else entry["name"]
            link, primitive = resolve(entry["link"])
            if link is not None:
                inputs[name] = link
            elif primitive is None:
                report.notes.append(f"node {raw['id']} ({kind}): the link into {name!r} leads nowhere and was dropped")
        cnode = _CNode(str(raw["id"]), kind, inputs,
                       widgets=None if named_widgets is not None else list(widget_values or []),
                       title=raw.get("title") if isinstance(raw.get("title"), str) else None,
                       mode=UI_MODES.get(mode), ui=layout,
                       output_names=[str(o.get("name", "")) for o in
                                     (raw.get("outputs") if isinstance(raw.get("outputs"), list) else [])
                                     if isinstance(o, dict)])
        if named_widgets is not None:
            cnode.inputs.update({k: v for k, v in named_widgets.items() if k not in cnode.inputs})
        if mode in (1, 3):
            report.notes.append(f"node {raw['id']} ({kind}): ComfyUI mode {'on event' if mode == 1 else 'on trigger'} "
                                "is run like a normal node")
        if kind in subgraphs:  # an instance left after expansion
            cnode.unmapped_reason = ("a bypassed subgraph: bypass its inner nodes instead, or unpack it in ComfyUI first"
                                     if mode == 4 else f"a subgraph nested more than {MAX_SUBGRAPH_DEPTH} levels deep")
        nodes.append(cnode)
    groups = []
    for index, group in enumerate(document.get("groups") or []):
        if not isinstance(group, dict):
            continue
        box = group.get("bounding")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            continue
        entry = {"id": f"group-{group.get('id', index + 1)}", "title": str(group.get("title") or "Group"),
                 "x": float(box[0]), "y": float(box[1]), "width": float(box[2]), "height": float(box[3])}
        if isinstance(group.get("color"), str):
            entry["color"] = group["color"]
        groups.append(entry)
    if notes:
        meta["notes"] = notes
    if groups:
        meta["groups"] = groups
    return nodes, meta


# ---------------------------------------------------------------- API format

def _is_api_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _read_api(document: dict[str, Any]) -> list[_CNode]:
    nodes = []
    for node_id, raw in document.items():
        inputs = {}
        given = raw.get("inputs")
        for name, value in (given.items() if isinstance(given, dict) else ()):
            inputs[name] = _Link(str(value[0]), value[1]) if _is_api_link(value) else value
        meta = raw.get("_meta") if isinstance(raw.get("_meta"), dict) else {}
        nodes.append(_CNode(str(node_id), raw["class_type"], inputs,
                            title=meta.get("title") if isinstance(meta.get("title"), str) else None))
    return nodes


# ---------------------------------------------------------------- mapping

def _take_widgets(cnode: _CNode, mapping: NodeMap, report: ImportReport) -> dict[str, Any]:
    """UI format: the widget values by ComfyUI input name, read off widgets_values in widget order."""
    values = cnode.widgets or []
    out: dict[str, Any] = {}
    index = 0
    for widget in mapping.widget_inputs():
        if index >= len(values):
            if not widget.optional:
                report.notes.append(f"node {cnode.id} ({cnode.type}): no value for widget {widget.name!r}; "
                                    "the Latentgraph default is used")
            continue
        out[widget.name] = values[index]
        index += 1
        if widget.control and index < len(values) and values[index] in CONTROL_VALUES:
            index += 1
        for _ in range(widget.trailing):
            if index < len(values) and isinstance(values[index], str) and values[index] in ("image", "upload"):
                index += 1
    if index < len(values):
        report.notes.append(f"node {cnode.id} ({cnode.type}): {len(values) - index} widget value(s) more than "
                            f"this node type has were ignored ({json.dumps(values[index:])[:80]})")
    return out


def _links_of(cnode: _CNode, readers: dict[str, list[tuple[str, str, int]]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{"input": name, "from": v.source, "output": v.slot}
                                   for name, v in cnode.inputs.items() if isinstance(v, _Link)]
    found += [{"output": slot, "to": target, "input": name} for target, name, slot in readers.get(cnode.id, [])]
    return found


def _normalise_name(value: Any) -> Any:
    return value.replace("\\", "/") if isinstance(value, str) else value


def import_document(source: Any, *, registry: Any, services: Any = None) -> ImportResult:
    """Convert a ComfyUI workflow (UI or API format, a dict, JSON text or PNG bytes) to ours.

    A Latentgraph document comes back as it is. `services` (the nodes' services: model folders)
    lets the report name model and image files that are not here; without it files are not checked.
    """
    document = load_document(source)
    kind = detect_format(document)
    report = ImportReport(kind)
    if kind == "latentgraph":
        return ImportResult(document, report)
    if kind == "comfyui-ui":
        cnodes, meta = _read_ui(document, report)
        extra = document.get("extra") if isinstance(document.get("extra"), dict) else {}
        if extra.get("groupNodes"):
            report.notes.append("the workflow defines group nodes (ComfyUI's legacy group nodes); their "
                                "instances are reported as unmapped")
    else:
        cnodes, meta = _read_api(document), {}
    meta = {"description": f"Imported from a ComfyUI workflow ({'UI' if kind == 'comfyui-ui' else 'API'} format).", **meta}

    readers: dict[str, list[tuple[str, str, int]]] = {}
    for cnode in cnodes:
        for name, value in cnode.inputs.items():
            if isinstance(value, _Link):
                readers.setdefault(value.source, []).append((cnode.id, name, value.slot))
    mapped = {c.id: None if c.unmapped_reason else BY_TYPE.get(c.type) for c in cnodes}
    output_names = {c.id: c.output_names for c in cnodes}

    nodes: dict[str, dict[str, Any]] = {}
    ui: dict[str, Any] = {}
    origin: dict[str, tuple[str, str, dict[str, str]]] = {}  # our id -> (comfy id, comfy type, our input -> comfy input)

    def link_value(link: _Link, target: _CNode, name: str) -> dict[str, str] | None:
        source_map = mapped.get(link.source)
        if source_map is not None:
            if link.slot >= len(source_map.outputs) or source_map.outputs[link.slot][1] is None:
                report.notes.append(f"node {target.id} ({target.type}): input {name!r} reads output {link.slot} of "
                                    f"node {link.source} ({source_map.comfy}), which Latentgraph does not have")
                return None
            return {"node": link.source, "output": source_map.outputs[link.slot][1]}
        names = output_names.get(link.source) or []
        output = names[link.slot] if link.slot < len(names) and names[link.slot] else str(link.slot)
        return {"node": link.source, "output": output}

    for cnode in cnodes:
        mapping = mapped[cnode.id]
        layout = dict(cnode.ui)
        if mapping is None:
            if cnode.unmapped_reason:
                reason = cnode.unmapped_reason
            elif cnode.type.startswith("workflow/") or cnode.type.startswith("workflow>"):
                reason = "a ComfyUI group node: not expanded by the importer; convert it to nodes in ComfyUI first"
            else:
                reason = NOT_SUPPORTED.get(cnode.type, "no Latentgraph node does this (a custom node, or a ComfyUI "
                                                       "node not mapped yet)")
            report.unmapped.append({"id": cnode.id, "type": cnode.type, "reason": reason,
                                    "links": _links_of(cnode, readers)})
            # Kept as a node of the unknown type, so the editor shows where it was and its links stay.
            inputs = {}
            for name, value in cnode.inputs.items():
                if isinstance(value, _Link):
                    target = link_value(value, cnode, name)
                    if target is not None:
                        inputs[name] = target
                elif cnode.widgets is None:
                    inputs[name] = value
            nodes[cnode.id] = {"type": cnode.type, "inputs": inputs}
            if cnode.title:
                nodes[cnode.id]["title"] = cnode.title
            if cnode.mode:  # a muted custom node (and what only it feeds) does not keep the rest from running
                nodes[cnode.id]["mode"] = cnode.mode
            if layout:
                ui[cnode.id] = layout
            continue

        given = dict(cnode.inputs)
        if cnode.widgets is not None:
            for name, value in _take_widgets(cnode, mapping, report).items():
                if not isinstance(given.get(name), _Link):
                    given[name] = value
        ours: dict[str, Any] = dict(mapping.fixed)
        names: dict[str, str] = {}
        known = {i.name for i in mapping.inputs}
        for spec in mapping.inputs:
            if spec.name not in given:
                continue
            value = given[spec.name]
            if spec.ours is None:
                if isinstance(value, _Link) or cnode.widgets is None:
                    report.notes.append(f"node {cnode.id} ({cnode.type}): input {spec.name!r} is not needed by "
                                        "Latentgraph and was dropped")
                continue
            names[spec.ours] = spec.name
            if isinstance(value, _Link) and isinstance(spec, Widget) and spec.literal_only:
                report.values.append({"id": cnode.id, "type": cnode.type, "input": spec.name, "value": None,
                                      "message": "comes from a link, which the importer cannot follow here (it "
                                                 "decides which Latentgraph nodes this becomes); the default is used: "
                                                 "set the value on the node"})
                continue
            if isinstance(value, _Link):
                target = link_value(value, cnode, spec.name)
                if target is not None:
                    ours[spec.ours] = target
                    if value.points:
                        layout.setdefault("reroutes", {})[spec.ours] = value.points
                continue
            if isinstance(spec, Socket):
                report.values.append({"id": cnode.id, "type": cnode.type, "input": spec.name, "value": value,
                                      "message": "expects a link, got a value"})
                continue
            value = _normalise_name(value) if (mapping.ours, spec.ours) in FILE_INPUTS else value
            if spec.convert is not None:
                try:
                    value = spec.convert(value)
                except BadValue as exc:
                    report.values.append({"id": cnode.id, "type": cnode.type, "input": spec.name,
                                          "value": value, "message": str(exc)})
            ours[spec.ours] = value
        for name in given:
            if name not in known and name not in ("upload", "control_after_generate"):
                report.notes.append(f"node {cnode.id} ({cnode.type}): input {name!r} is unknown to the importer "
                                    "and was ignored")
        built = (mapping.expand(cnode.id, ours) if mapping.expand is not None
                 else {cnode.id: {"type": mapping.ours, "inputs": ours}})
        for node_id, spec_ in built.items():
            nodes[node_id] = spec_
            origin[node_id] = (cnode.id, cnode.type, names)
            if node_id != cnode.id and "x" in layout:
                ui[node_id] = {"x": layout["x"] - 260.0, "y": layout["y"] + 40.0}
        main = nodes[cnode.id]
        if cnode.title and cnode.title not in (mapping.display, mapping.comfy):
            main["title"] = cnode.title
        if cnode.mode:
            main["mode"] = cnode.mode
        if layout:
            ui[cnode.id] = layout

    _infer_vae_latent_space(nodes, services, report)
    workflow = {"format": FORMAT, "meta": meta, "nodes": nodes, "ui": ui}
    _check(workflow, registry, services, origin, report)
    return ImportResult(workflow, report)


# ---------------------------------------------------------------- after mapping

def _checkpoint_latent_space(path: Any) -> str | None:
    """'sdxl' when the checkpoint's keys are SDXL's (base or refiner), else 'sd1'; None if unreadable."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            keys = handle.keys()
    except Exception:
        return None
    return "sdxl" if any(k.startswith("conditioner.embedders.") for k in keys) else "sd1"


def _infer_vae_latent_space(nodes: dict[str, dict[str, Any]], services: Any, report: ImportReport) -> None:
    vae_loaders = [i for i, n in nodes.items() if n["type"] == "vae_loader" and "latent_space" not in n["inputs"]]
    if not vae_loaders:
        return
    spaces = set()
    folders = getattr(services, "folders", None)
    for spec in nodes.values():
        name = spec["inputs"].get("checkpoint") if spec["type"] == "checkpoint_loader" else None
        if folders is not None and isinstance(name, str):
            try:
                space = _checkpoint_latent_space(folders.model_path("checkpoints", name))
            except (OSError, ValueError):
                space = None
            if space:
                spaces.add(space)
    space = spaces.pop() if len(spaces) == 1 else None
    for node_id in vae_loaders:
        nodes[node_id]["inputs"]["latent_space"] = space or "sd1"
        if space is None:
            report.notes.append(f"node {node_id} (VAELoader): ComfyUI reads the latent scale from the model, "
                                "Latentgraph from the VAE loader's latent_space, set to sd1 (SD1.x/SD2.x); set "
                                "it to sdxl for an SDXL VAE")


_EMBEDDING = re.compile(r"embedding:")


def _check(workflow: dict[str, Any], registry: Any, services: Any,
           origin: dict[str, tuple[str, str, dict[str, str]]], report: ImportReport) -> None:
    """Validate the converted workflow and sort what is wrong into the report's lists."""
    from latentgraph.engine.graph import find_issues

    unmapped = {u["id"] for u in report.unmapped}
    reported = {(v["id"], v["input"]) for v in report.values}
    _, issues = find_issues(workflow, registry, services=services)
    for issue in issues:
        if issue.node in unmapped:
            continue
        comfy_id, comfy_type, names = origin.get(issue.node or "", (issue.node, None, {}))
        spec = workflow["nodes"].get(issue.node or "", {})
        comfy_input = names.get(issue.input or "", issue.input)
        value = spec.get("inputs", {}).get(issue.input) if issue.input else None
        kind = FILE_INPUTS.get((spec.get("type"), issue.input or ""))
        if kind and issue.code == "not_in_choices" and isinstance(value, str):
            report.missing_files.append({"id": comfy_id, "type": comfy_type, "input": comfy_input,
                                         "kind": kind, "name": value})
        elif isinstance(value, str) and _EMBEDDING.search(value) and issue.code == "invalid_value" \
                and "embedding" in issue.message:
            for name in _missing_embeddings(registry, spec["type"], value, services):
                report.missing_files.append({"id": comfy_id, "type": comfy_type, "input": comfy_input,
                                             "kind": "embeddings", "name": name})
        elif issue.code in ("out_of_bounds", "not_in_choices", "invalid_value") and issue.input:
            if (comfy_id, comfy_input) not in reported:
                report.values.append({"id": comfy_id, "type": comfy_type, "input": comfy_input, "value": value,
                                      "message": issue.message})
        elif issue.code != "unknown_node_type":
            report.problems.append({"id": comfy_id, "input": comfy_input, "message": issue.message})


def _missing_embeddings(registry: Any, node_type: str, text: str, services: Any) -> list[str]:
    from latentgraph.nodes.sd.prompt import embedding_names

    info = registry.get(node_type)
    check = getattr(info.cls, "check_inputs", None) if info else None
    if check is None:
        return []
    return [name for name in embedding_names(text)
            if any(True for _ in check({"text": f"embedding:{name}"}, services))]
