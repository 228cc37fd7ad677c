"""The node model: a node type is a pydantic class whose fields are its inputs.

    @node("add_int", category="math")
    class AddInt(Node):
        '''Add two integers.'''
        a: int = Input(0, description="first term")
        b: int = Input(0, description="second term")

        class Outputs(NodeOutputs):
            value: int = Output(description="a + b")

        def run(self, ctx: RunContext) -> "AddInt.Outputs":
            return self.Outputs(value=self.a + self.b)

Everything the editor, the API and the validator need (port types, defaults, bounds, choices,
descriptions) is read off the class once, when it is registered, into a `NodeInfo`.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Union

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from latentgraph.engine import ports

if TYPE_CHECKING:
    from latentgraph.engine.executor import RunContext

_META_KEY = "latentgraph"
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

Choices = Union[list[Any], tuple[Any, ...], Callable[[], list[Any]]]


def Input(
    default: Any = PydanticUndefined,
    *,
    port: str | None = None,
    description: str = "",
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    step: float | None = None,
    choices: Choices | None = None,
    multiline: bool = False,
    widget: str | None = None,
) -> Any:
    """Declare a node input.

    port: the port type; inferred from int/float/str/bool/Literal annotations, required otherwise.
    ge/le/gt/lt: numeric bounds; min_length/max_length: string length bounds.
    step: the editor's increment for number widgets.
    choices: allowed values, or a function returning them (evaluated at validation and catalog
      time, e.g. the files in a models folder).
    multiline: a text area instead of a one-line field (prompts).
    widget: an editor hint such as "slider" or "seed".
    """
    meta = {"port": port, "step": step, "choices": choices, "multiline": multiline, "widget": widget}
    return Field(
        default,
        description=description,
        ge=ge,
        le=le,
        gt=gt,
        lt=lt,
        min_length=min_length,
        max_length=max_length,
        json_schema_extra={_META_KEY: meta},  # type: ignore[dict-item]
    )


def Output(*, port: str | None = None, description: str = "", depends_on: tuple[str, ...] | None = None) -> Any:
    """Declare a node output; the port type is inferred from primitive annotations.

    depends_on: the inputs this output is computed from, when it is fewer than all of them (a
    LoRA loader's text-encoder output does not depend on its U-Net strength). What reads this
    output is then cached by these inputs only, so changing another input re-runs the node but
    not what reads only this output. None: every input."""
    meta: dict[str, Any] = {"port": port}
    if depends_on is not None:
        meta["depends_on"] = tuple(depends_on)
    return Field(PydanticUndefined, description=description, json_schema_extra={_META_KEY: meta})  # type: ignore[dict-item]


class NodeOutputs(BaseModel):
    """Base of every node's nested `Outputs` class."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True)
class InputInfo:
    name: str
    port: str
    required: bool
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    step: float | None = None
    static_choices: tuple[Any, ...] | None = None
    choices_fn: Callable[[Any], list[Any]] | None = None  # called with the run's services (may be None)
    multiline: bool = False
    widget: str | None = None
    # Validates a primitive value (type, bounds, Literal choices); None for link-only ports.
    adapter: TypeAdapter | None = field(default=None, compare=False, repr=False)

    @property
    def is_primitive(self) -> bool:
        """A widget input: it may hold a literal value in the workflow JSON."""
        return self.adapter is not None

    def choices(self, services: Any = None) -> list[Any] | None:
        """The allowed values; dynamic ones are asked of the choices function with `services`
        (the folders and settings of the CLI or server asking; None: the library's defaults)."""
        if self.static_choices is not None:
            return list(self.static_choices)
        if self.choices_fn is not None:
            return list(self.choices_fn(services))
        return None

    def catalog_entry(self, services: Any = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "type": self.port, "required": self.required}
        if not self.required and self.default is not None:
            entry["default"] = self.default
        for key in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum",
                    "min_length", "max_length", "step", "widget"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = value
        choices = self.choices(services)
        if choices is not None:
            entry["choices"] = choices
        if self.multiline:
            entry["multiline"] = True
        entry["link_only"] = not self.is_primitive
        entry["description"] = self.description
        return entry


@dataclass(frozen=True)
class OutputInfo:
    name: str
    port: str
    description: str
    depends_on: tuple[str, ...] | None = None  # the inputs it is computed from (None: all); see Output


@dataclass(frozen=True)
class NodeInfo:
    """What the registry knows of a node type, read off its class once."""

    type: str
    version: int
    category: str
    title: str
    description: str
    is_output: bool
    cacheable: bool
    inputs: dict[str, InputInfo]
    outputs: dict[str, OutputInfo]
    cls: type["Node"] = field(compare=False, repr=False)

    def catalog_entry(self, services: Any = None) -> dict[str, Any]:
        return {
            "type": self.type,
            "version": self.version,
            "category": self.category,
            "title": self.title,
            "description": self.description,
            "output_node": self.is_output,
            "cacheable": self.cacheable,
            "inputs": [i.catalog_entry(services) for i in self.inputs.values()],
            "outputs": [{"name": o.name, "type": o.port, "description": o.description} for o in self.outputs.values()],
        }


class Node(BaseModel):
    """Base of every node type. Subclass it, declare inputs as fields, implement `run`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    node_info: ClassVar[NodeInfo]

    class Outputs(NodeOutputs):
        pass

    def run(self, ctx: "RunContext") -> NodeOutputs | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    @classmethod
    def fingerprint(cls, literal_inputs: dict[str, Any], services: Any) -> Any:
        """Extra identity for the node's cache signature beyond its inputs.

        Loaders override this to add what identifies their file (path, size, mtime), so an edited
        file is reloaded. It sees literal inputs only; a JSON-able return value is expected.
        """
        return None


def _meta(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        meta = extra.get(_META_KEY)
        if isinstance(meta, dict):
            return meta
    return {}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) != len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def _taking_services(function: Callable[..., list[Any]]) -> Callable[[Any], list[Any]]:
    """A choices function as the engine calls it, with the services: `fn(services)`; one that
    takes no argument (it needs nothing from the caller) is called without them."""
    try:
        takes_services = bool(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        takes_services = True
    return function if takes_services else (lambda services: function())


def _infer_port(owner: str, name: str, annotation: Any, explicit: str | None) -> tuple[str, tuple[Any, ...] | None]:
    """Port type and Literal choices of one field."""
    inner, _ = _strip_optional(annotation)
    literal_choices = None
    if typing.get_origin(inner) is Literal:
        literal_choices = typing.get_args(inner)
        kinds = {type(c) for c in literal_choices}
        inferred = ports.port_for_python_type(kinds.pop()) if len(kinds) == 1 else None
    else:
        inferred = ports.port_for_python_type(inner)
    port = explicit or inferred
    if port is None:
        raise TypeError(f"{owner}.{name}: cannot infer a port type from {annotation!r}; pass port=...")
    if not ports.is_known(port):
        raise TypeError(f"{owner}.{name}: unknown port type {port!r} (register it with engine.ports.register_port_type)")
    if explicit and inferred and explicit != inferred:
        raise TypeError(f"{owner}.{name}: port {explicit} contradicts the annotation {annotation!r} ({inferred})")
    return port, literal_choices


_BOUND_ATTRS = {
    annotated_types.Ge: "ge", annotated_types.Le: "le", annotated_types.Gt: "gt", annotated_types.Lt: "lt",
    annotated_types.MinLen: "min_length", annotated_types.MaxLen: "max_length",
}


def _bound(info: FieldInfo, kind: type) -> Any:
    """One constraint (ge, le, ...) from a field's pydantic metadata, or None."""
    for item in info.metadata:
        if isinstance(item, kind):
            return getattr(item, _BOUND_ATTRS[kind])
    return None


def _input_info(owner: str, name: str, info: FieldInfo) -> InputInfo:
    meta = _meta(info)
    port, literal_choices = _infer_port(owner, name, info.annotation, meta.get("port"))
    choices = meta.get("choices")
    static_choices = literal_choices
    choices_fn = None
    if callable(choices):
        choices_fn = _taking_services(choices)
    elif choices is not None:
        static_choices = tuple(choices)
    adapter = None
    if port in ports.PRIMITIVE_PORTS:
        annotation = info.annotation
        if choices is not None and not callable(choices) and literal_choices is None:
            annotation = Literal[tuple(choices)]  # type: ignore[misc]
        adapter = TypeAdapter(typing.Annotated[annotation, *info.metadata] if info.metadata else annotation)
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    return InputInfo(
        name=name,
        port=port,
        required=required,
        default=default,
        description=info.description or "",
        minimum=_bound(info, annotated_types.Ge),
        maximum=_bound(info, annotated_types.Le),
        exclusive_minimum=_bound(info, annotated_types.Gt),
        exclusive_maximum=_bound(info, annotated_types.Lt),
        min_length=_bound(info, annotated_types.MinLen),
        max_length=_bound(info, annotated_types.MaxLen),
        step=meta.get("step"),
        static_choices=static_choices,
        choices_fn=choices_fn,
        multiline=bool(meta.get("multiline")),
        widget=meta.get("widget"),
        adapter=adapter,
    )


def build_node_info(
    cls: type[Node],
    type_name: str,
    *,
    version: int,
    category: str,
    title: str | None,
    output: bool,
    cacheable: bool,
) -> NodeInfo:
    """Read a node class's inputs and outputs into a NodeInfo, or say what is wrong with it."""
    if not _TYPE_NAME.match(type_name):
        raise ValueError(f"node type names are snake_case, got {type_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{cls!r} must subclass engine.Node")
    outputs_cls = cls.__dict__.get("Outputs", getattr(cls, "Outputs", None))
    if not (isinstance(outputs_cls, type) and issubclass(outputs_cls, NodeOutputs)):
        raise TypeError(f"{cls.__name__}.Outputs must subclass engine.NodeOutputs")
    inputs = {name: _input_info(cls.__name__, name, fi) for name, fi in cls.model_fields.items()}
    outputs = {}
    for name, fi in outputs_cls.model_fields.items():
        port, _ = _infer_port(f"{cls.__name__}.Outputs", name, fi.annotation, _meta(fi).get("port"))
        depends_on = _meta(fi).get("depends_on")
        if depends_on is not None and (unknown := sorted(set(depends_on) - inputs.keys())):
            raise TypeError(f"{cls.__name__}.Outputs.{name} depends on inputs it does not have: {', '.join(unknown)}")
        outputs[name] = OutputInfo(name=name, port=port, description=fi.description or "", depends_on=depends_on)
    doc = inspect.cleandoc(cls.__doc__) if cls.__doc__ and cls.__doc__ is not Node.__doc__ else ""
    return NodeInfo(
        type=type_name,
        version=version,
        category=category,
        title=title or type_name.replace("_", " ").capitalize(),
        description=doc,
        is_output=output,
        cacheable=cacheable,
        inputs=inputs,
        outputs=outputs,
        cls=cls,
    )
