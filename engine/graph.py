"""Validation: turn a workflow document into a checked graph, reporting every problem in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import networkx as nx
from pydantic import ValidationError as PydanticValidationError

from latentgraph.engine import ports
from latentgraph.engine.errors import ValidationIssue, WorkflowInvalid
from latentgraph.engine.jsonsafe import number_problem, text_problem
from latentgraph.engine.node import InputInfo, NodeInfo
from latentgraph.engine.registry import NodeRegistry
from latentgraph.engine.workflow import Link, Workflow, WorkflowFormatError, as_link, parse_workflow

_BOUND_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
_CHOICE_ERRORS = {"literal_error", "enum"}


@dataclass(frozen=True)
class GraphNode:
    """A validated node: its type, its literal inputs (defaults filled in) and its links."""

    id: str
    info: NodeInfo
    literals: dict[str, Any]
    links: dict[str, Link]


@dataclass(frozen=True)
class Graph:
    """A workflow that passed validation."""

    workflow: Workflow
    nodes: dict[str, GraphNode]
    outputs: tuple[str, ...]  # the requested sink nodes
    order: tuple[str, ...]  # every node, dependencies first


def _describe(node_id: str, info: NodeInfo | None) -> str:
    return f"node {node_id!r} ({info.type})" if info else f"node {node_id!r}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounds_text(spec: InputInfo) -> str:
    parts = []
    if spec.minimum is not None:
        parts.append(f">= {spec.minimum}")
    if spec.exclusive_minimum is not None:
        parts.append(f"> {spec.exclusive_minimum}")
    if spec.maximum is not None:
        parts.append(f"<= {spec.maximum}")
    if spec.exclusive_maximum is not None:
        parts.append(f"< {spec.exclusive_maximum}")
    return " and ".join(parts)


def _choices_text(choices: list[Any], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in choices[:limit])
    return shown + (f", ... ({len(choices)} in all)" if len(choices) > limit else "")


def check_value(node_id: str, info: NodeInfo, spec: InputInfo, value: Any,
                services: Any = None) -> tuple[Any, ValidationIssue | None]:
    """Validate one primitive value against its input's type, bounds and choices.

    Returns the value as the node will see it (e.g. an INT widened to float for a FLOAT input),
    or the issue that says what is wrong.
    """
    where = f"{_describe(node_id, info)} input {spec.name!r}"
    assert spec.adapter is not None
    try:
        value = spec.adapter.validate_python(value, strict=True)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        kind = err["type"]
        if kind in _BOUND_ERRORS:
            return value, ValidationIssue(node_id, spec.name, "out_of_bounds",
                                          f"{where} must be {_bounds_text(spec)}, got {_short(value)}")
        if kind in _CHOICE_ERRORS:
            return value, ValidationIssue(node_id, spec.name, "not_in_choices",
                                          f"{where} must be one of {_choices_text(spec.choices(services) or [])}, got {_short(value)}")
        return value, ValidationIssue(node_id, spec.name, "invalid_value",
                                      f"{where}: {err['msg'][0].lower()}{err['msg'][1:]} ({spec.port}), got {_short(value)}")
    problem = number_problem(value) or (text_problem(value) if isinstance(value, str) else None)
    if problem:  # NaN, an infinity, or a lone surrogate: valid Python, but it could not be stored or sent
        return value, ValidationIssue(node_id, spec.name, "invalid_value", f"{where}: {problem}")
    if spec.choices_fn is not None:
        choices = spec.choices(services)
        if value not in choices:  # type: ignore[operator]
            return value, ValidationIssue(node_id, spec.name, "not_in_choices",
                                          f"{where} must be one of {_choices_text(choices or []) or '(none available)'}, got {_short(value)}")
    return value, None


def find_issues(
    source: str | bytes | dict[str, Any] | Workflow,
    registry: NodeRegistry,
    outputs: Iterable[str] | None = None,
    *,
    services: Any = None,
) -> tuple[Graph | None, list[ValidationIssue]]:
    """Validate a workflow. Returns (graph, []) when it is valid, (None, issues) otherwise.

    With `services`, a node class that defines `check_limits(inputs, services)` (a classmethod
    yielding `(input name or None, message)` pairs) is also asked whether its literal inputs stay
    within the limits those services carry (image size, steps...): each pair is an `over_limit`
    issue. Linked inputs are not known before the run; the node checks them again when it runs.

    A node class that defines `check_inputs(inputs, services)` (a classmethod yielding `(input
    name or None, message)` pairs) is asked whether its literal inputs make sense (a low threshold
    above the high one, a prompt naming an embedding that is not there; `services` may be None):
    each pair is an `invalid_value` issue. It gets only the literal inputs (defaults filled in),
    so it must skip what a link gives."""
    try:
        workflow = parse_workflow(source)
    except WorkflowFormatError as exc:
        return None, [ValidationIssue(node, input_name, code, message)
                      for (_, code, message), (node, input_name) in zip(exc.problems, exc.locations)]

    issues: list[ValidationIssue] = []
    nodes: dict[str, GraphNode] = {}
    digraph = nx.DiGraph()
    digraph.add_nodes_from(workflow.nodes)
    infos = {node_id: registry.get(spec.type) for node_id, spec in workflow.nodes.items()}

    for node_id, spec in workflow.nodes.items():
        info = infos[node_id]
        if info is None:
            issues.append(ValidationIssue(node_id, None, "unknown_node_type",
                                          f"node {node_id!r}: unknown node type {spec.type!r}"))
            for value in spec.inputs.values():
                target = as_link(value)
                if target is not None and target.node in workflow.nodes:
                    digraph.add_edge(target.node, node_id)
            continue
        where = _describe(node_id, info)
        literals: dict[str, Any] = {}
        links: dict[str, Link] = {}
        for name in spec.inputs:
            if name not in info.inputs:
                known = ", ".join(info.inputs) or "none"
                issues.append(ValidationIssue(node_id, name, "unknown_input",
                                              f"{where} has no input {name!r} (its inputs: {known})"))
        for name, input_spec in info.inputs.items():
            if name not in spec.inputs:
                if input_spec.required:
                    issues.append(ValidationIssue(node_id, name, "missing_input",
                                                  f"{where} is missing required input {name!r} ({input_spec.port})"))
                else:
                    literals[name] = input_spec.default
                continue
            value = spec.inputs[name]
            target = as_link(value)
            if target is not None:
                if target.node not in workflow.nodes:
                    issues.append(ValidationIssue(node_id, name, "missing_node",
                                                  f"{where} input {name!r} links to node {target.node!r}, which does not exist"))
                    continue
                digraph.add_edge(target.node, node_id)
                source_info = infos[target.node]
                if source_info is None:
                    continue  # already reported as an unknown node type
                out = source_info.outputs.get(target.output)
                if out is None:
                    known = ", ".join(source_info.outputs) or "none"
                    issues.append(ValidationIssue(node_id, name, "missing_output",
                                                  f"{where} input {name!r} links to output {target.output!r} of "
                                                  f"{_describe(target.node, source_info)}, which has no such output (its outputs: {known})"))
                    continue
                if not ports.accepts(input_spec.port, out.port):
                    issues.append(ValidationIssue(node_id, name, "type_mismatch",
                                                  f"{where} input {name!r} expects {input_spec.port}, but "
                                                  f"{_describe(target.node, source_info)} output {target.output!r} gives {out.port}"))
                    continue
                links[name] = target
            elif not input_spec.is_primitive:
                issues.append(ValidationIssue(node_id, name, "link_required",
                                              f"{where} input {name!r} ({input_spec.port}) must be a link "
                                              f"{{\"node\": ..., \"output\": ...}}, got the value {_short(value)}"))
            else:
                checked, issue = check_value(node_id, info, input_spec, value, services)
                if issue is not None:
                    issues.append(issue)
                else:
                    literals[name] = checked
        nodes[node_id] = GraphNode(node_id, info, literals, links)
        check_inputs = getattr(info.cls, "check_inputs", None)
        if check_inputs is not None:
            for name, message in check_inputs(dict(literals), services):
                subject = f"{where} input {name!r}" if name else where
                issues.append(ValidationIssue(node_id, name, "invalid_value", f"{subject}: {message}"))
        check_limits = getattr(info.cls, "check_limits", None) if services is not None else None
        if check_limits is not None:
            for name, message in check_limits(dict(literals), services):
                subject = f"{where} input {name!r}" if name else where
                issues.append(ValidationIssue(node_id, name, "over_limit", f"{subject}: {message}"))

    if outputs is None:
        requested = [n for n, info in infos.items() if info is not None and info.is_output]
        if not requested and not any(info is None for info in infos.values()):
            issues.append(ValidationIssue(None, None, "no_output_node",
                                          "the workflow has no output node (such as save_image or show_value), so nothing would run"))
    else:
        requested = []
        for node_id in outputs:
            if node_id in workflow.nodes:
                requested.append(node_id)
            else:
                issues.append(ValidationIssue(node_id, None, "missing_node", f"requested output node {node_id!r} does not exist"))
        if not requested and not issues:
            issues.append(ValidationIssue(None, None, "no_output_node", "no output node was requested"))

    for component in nx.strongly_connected_components(digraph):
        if len(component) == 1 and not digraph.has_edge(next(iter(component)), next(iter(component))):
            continue
        cycle = [edge[0] for edge in nx.find_cycle(digraph.subgraph(component))]
        start = min(range(len(cycle)), key=lambda i: cycle[i])  # name the cycle the same way every time
        cycle = cycle[start:] + cycle[:start]
        path = " -> ".join(repr(n) for n in [*cycle, cycle[0]])
        issues.append(ValidationIssue(cycle[0], None, "cycle", f"the workflow has a cycle: {path}"))

    if issues:
        order = {node_id: index for index, node_id in enumerate(workflow.nodes)}
        issues.sort(key=lambda i: (i.node is not None, order.get(i.node, len(order)) if i.node else 0))
        return None, issues
    return Graph(workflow, nodes, tuple(requested), tuple(nx.topological_sort(digraph))), []


def validate_workflow(
    source: str | bytes | dict[str, Any] | Workflow,
    registry: NodeRegistry,
    outputs: Iterable[str] | None = None,
    *,
    services: Any = None,
) -> Graph:
    """Validate a workflow, raising WorkflowInvalid with every problem found."""
    graph, issues = find_issues(source, registry, outputs, services=services)
    if graph is None:
        raise WorkflowInvalid(issues)
    return graph
