"""The workflow JSON format: one versioned document for files, the CLI and the API.

    {
      "format": "latentgraph/workflow@1",
      "nodes": {
        "seed": {"type": "int_constant", "inputs": {"value": 7}},
        "show": {"type": "show_value", "inputs": {"value": {"node": "seed", "output": "value"}}}
      },
      "ui": {"seed": {"x": 0, "y": 0}}
    }

An input is either a literal value or a link: an object with exactly the keys "node" and "output".
`ui` (layout) and `meta` (name, description) never change a result.

A node may carry a `mode` (absent: it runs normally); engine.graph.resolve_modes applies it before
validation:

- `"bypass"`: the node does not run; whatever reads one of its outputs gets instead the value of
  the node's first input (in the node type's declaration order) whose port type equals that
  output's, a link or a literal, as if the reader were wired to it directly (so results and cache
  signatures are those of the workflow written without the node). Only inputs set in the workflow
  count; an input of port ANY (or an output of port ANY) matches only when no input matches
  exactly. Chains of bypassed nodes pass through transitively. A read output that nothing can pass
  through to is a validation error naming the node, the output and its port type.
- `"mute"`: the node does not run, nor does any node that needs it through a required input
  (transitively); an optional input linked to a node that does not run is left unset.

Bypassed and muted nodes are not validated (a muted image loader whose file is gone does not fail
the run). The run's result and its `run_started` event list every node that did not run because of
a mode, with the reason ("bypassed", "muted", "needs muted node 'x'").
"""

from __future__ import annotations

import json
from typing import Any, Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from latentgraph.engine.jsonsafe import find_deep_nesting, find_json_problems, format_path, node_input

FORMAT = "latentgraph/workflow@1"

# from-format → function turning a document of that format into the next one. The chain is applied
# until the document reaches FORMAT; add an entry when the format changes.
MIGRATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class Link(NamedTuple):
    """A link to another node's output: in JSON, {"node": id, "output": name}."""

    node: str
    output: str


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="registered node type name, e.g. 'clip_text_encode'")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="input name → literal value, or a link {\"node\": id, \"output\": name}",
    )
    title: str | None = Field(default=None, description="display title; never changes a result")
    mode: Literal["bypass", "mute"] | None = Field(
        default=None,
        description="absent: the node runs. 'bypass': it does not run, and each of its outputs passes on "
                    "the value of its first input of the same port type. 'mute': it does not run, nor does "
                    "any node that needs it through a required input (optional inputs linked to it are left unset)",
    )

    @field_validator("inputs")
    @classmethod
    def _links_as_json(cls, inputs: dict[str, Any]) -> dict[str, Any]:
        """Links built in Python as `Link(...)` are stored in their JSON form."""
        for name, value in inputs.items():
            if isinstance(value, Link):
                inputs[name] = {"node": value.node, "output": value.output}
        return inputs


class Workflow(BaseModel):
    """A graph of nodes, keyed by author-chosen ids."""

    model_config = ConfigDict(extra="forbid")
    format: str = Field(default=FORMAT, description=f"format tag, currently {FORMAT!r}")
    nodes: dict[str, NodeSpec] = Field(description="node id → node")
    ui: dict[str, Any] = Field(default_factory=dict, description="editor layout; never changes a result")
    meta: dict[str, Any] = Field(default_factory=dict, description="name, description and notes")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def as_link(value: Any) -> Link | None:
    """The link an input value denotes, or None for a literal."""
    if isinstance(value, Link):
        return value
    if type(value) is dict and len(value) == 2:
        node, output = value.get("node"), value.get("output")
        if type(node) is str and type(output) is str:
            return Link(node, output)
    return None


def link(node: str, output: str) -> dict[str, str]:
    """The JSON form of a link, for building workflows in Python."""
    return {"node": node, "output": output}


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema of the workflow format, generated from the pydantic model."""
    schema = Workflow.model_json_schema()
    schema["$id"] = "https://latentgraph.dev/schema/workflow-1.json"
    schema["title"] = "Latentgraph workflow"
    return schema


class WorkflowFormatError(ValueError):
    """The document is not a workflow: bad JSON, wrong shape, or an unknown format version.

    `problems` holds (path, code, message) triples, one per problem found; `locations` the
    (node id, input name) each one lies in, (None, None) where it is not in a node's inputs.
    """

    def __init__(self, problems: list[tuple[str, str, str]],
                 locations: list[tuple[str | None, str | None]] | None = None):
        self.problems = problems
        self.locations = locations or [(None, None)] * len(problems)
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, _, message in problems))


def migrate(document: dict[str, Any]) -> dict[str, Any]:
    """Bring a workflow document of an older format up to FORMAT."""
    seen = set()
    fmt = document.get("format", FORMAT)
    while fmt != FORMAT:
        step = MIGRATIONS.get(fmt) if isinstance(fmt, str) else None  # a list or object tag is unhashable
        if step is None or fmt in seen:
            known = ", ".join([FORMAT, *MIGRATIONS]) if MIGRATIONS else FORMAT
            raise WorkflowFormatError([("format", "unknown_format", f"unknown workflow format {fmt!r} (known: {known})")])
        seen.add(fmt)
        document = step(document)
        fmt = document.get("format", FORMAT)
    return document


def check_document(document: Any) -> None:
    """Refuse what could not be stored and read back (engine.jsonsafe): lone surrogates in any
    string or key, NaN and infinities, nesting deeper than MAX_DEPTH. Raises WorkflowFormatError
    naming each place (and the node and input, for a value in a node's inputs)."""
    problems = find_json_problems(document)
    if problems:
        raise WorkflowFormatError([(format_path(p.path), p.code, p.message) for p in problems],
                                  [node_input(p.path) for p in problems])


def parse_workflow(source: str | bytes | dict[str, Any] | Workflow) -> Workflow:
    """Parse a workflow from JSON text or a decoded document, migrating older formats."""
    if isinstance(source, Workflow):
        return source
    if isinstance(source, (str, bytes)):
        deep = find_deep_nesting(source)  # before json.loads, which recurses
        if deep is not None:
            raise WorkflowFormatError([(format_path(deep.path), deep.code, deep.message)])
        try:
            document = json.loads(source)
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError([("", "invalid_json", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) from None
        except (ValueError, RecursionError) as exc:  # e.g. bytes that are not text, an integer of 5,000 digits
            raise WorkflowFormatError([("", "invalid_json", f"malformed JSON: {exc}")]) from None
    else:
        document = source
    if not isinstance(document, dict):
        raise WorkflowFormatError([("", "invalid_workflow", f"a workflow is a JSON object, got {type(document).__name__}")])
    check_document(document)
    document = migrate(document)
    try:
        return Workflow.model_validate(document)
    except PydanticValidationError as exc:
        problems = []
        locations: list[tuple[str | None, str | None]] = []
        for err in exc.errors():
            loc = err["loc"]
            path = ".".join(str(p) for p in loc)
            if len(loc) == 3 and loc[0] == "nodes" and loc[2] == "mode":
                problems.append((path, "invalid_mode", f"node {loc[1]!r}: unknown mode {_short(err['input'])}; "
                                                       f"a node's mode is 'bypass', 'mute' or absent (it runs)"))
                locations.append((str(loc[1]), None))
                continue
            problems.append((path, "invalid_workflow", f"{path or 'workflow'}: {err['msg']}"))
            locations.append((None, None))
        raise WorkflowFormatError(problems, locations) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
