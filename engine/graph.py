"""Validation: turn a workflow document into a checked graph, reporting every problem in one pass."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
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

    workflow: Workflow  # as written, modes included (what a saved image embeds, what a run records)
    nodes: dict[str, GraphNode]  # the nodes that run: bypassed and muted ones left out, links rewired
    outputs: tuple[str, ...]  # the requested sink nodes
    order: tuple[str, ...]  # every node, dependencies first
    disabled: dict[str, str] = field(default_factory=dict)  # node → why its mode keeps it from running


# --- node modes: bypass and mute ----------------------------------------------------------------

BYPASSED, MUTED = "bypassed", "muted"


def needs_muted(node_id: str) -> str:
    """The reason a node that needs muted node `node_id` through a required input does not run."""
    return f"needs muted node {node_id!r}"


@dataclass(frozen=True)
class ModeResolution:
    """A workflow with its node modes applied (see resolve_modes)."""

    workflow: Workflow  # the nodes that run, links to bypassed nodes rewired to what they pass through
    disabled: dict[str, str]  # node → BYPASSED, MUTED or needs_muted(root), in workflow order
    through: dict[tuple[str, str], tuple[str, ...]]  # (node, input) → the bypassed nodes its value came through
    unresolved: frozenset[tuple[str, str]]  # (node, input) reading a bypassed output nothing passes through
    issues: list[ValidationIssue]


def _pass_through_input(info: NodeInfo, inputs: dict[str, Any], port: str) -> str | None:
    """The input of a bypassed node whose value its output of type `port` passes on: the first set
    input (declaration order) of exactly that type, else the first set input where either side is ANY."""
    given = [spec for name, spec in info.inputs.items() if name in inputs]
    exact = next((spec.name for spec in given if spec.port == port), None)
    if exact is not None:
        return exact
    return next((spec.name for spec in given if spec.port == ports.ANY or port == ports.ANY), None)


def _names(node_ids: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in node_ids)


def resolve_modes(workflow: Workflow, registry: NodeRegistry) -> ModeResolution:
    """Apply the nodes' modes (engine.workflow describes them): the workflow that runs, without its
    bypassed and muted nodes and what needs the muted ones, readers of a bypassed node's output
    wired to what passes through it. Problems come back as issues: a read output of a bypassed node
    that no input can pass through to (on the bypassed node), a cycle among bypassed nodes, a
    bypassed node of unknown type whose output is read. Only readers that still run are reported."""
    bypassed = {n for n, spec in workflow.nodes.items() if spec.mode == "bypass"}
    muted = {n for n, spec in workflow.nodes.items() if spec.mode == "mute"}
    if not bypassed and not muted:
        return ModeResolution(workflow, {}, {}, frozenset(), [])

    inputs: dict[str, dict[str, Any]] = {}
    through: dict[tuple[str, str], tuple[str, ...]] = {}
    unresolved: set[tuple[str, str]] = set()
    # issue key → (issue parts, readers): built once the readers that still run are known
    pending: dict[tuple[Any, ...], tuple[tuple[str | None, str | None, str, str], list[str]]] = {}

    def follow(reader: str, name: str, value: Link) -> tuple[Any, tuple[str, ...], tuple[Any, ...] | None]:
        """What input `name` of `reader`, a link to a bypassed node's output, stands for:
        (value, bypassed nodes, None), or (None, bypassed nodes, issue key) when nothing passes through."""
        chain: list[str] = []
        holder, current = (reader, name), value  # the input holding the link followed, and the link
        while True:
            if current.node in chain:
                cycle = chain[chain.index(current.node):]
                start = min(range(len(cycle)), key=lambda i: cycle[i])
                cycle = cycle[start:] + cycle[:start]
                path = " -> ".join(repr(n) for n in [*cycle, cycle[0]])
                key = ("cycle", cycle[0])
                pending.setdefault(key, ((cycle[0], None, "cycle", f"the workflow has a cycle through bypassed nodes: {path}"), []))
                return None, tuple(chain), key
            chain.append(current.node)
            spec = workflow.nodes[current.node]
            info = registry.get(spec.type)
            if info is None:
                key = ("unknown", current.node)
                pending.setdefault(key, ((current.node, None, "unknown_node_type",
                                          f"node {current.node!r}: unknown node type {spec.type!r} (it is bypassed, but "
                                          f"what passes through it cannot be known)"), []))
                return None, tuple(chain), key
            out = info.outputs.get(current.output)
            if out is None:
                known = ", ".join(info.outputs) or "none"
                key = ("output", *holder)
                holder_info = registry.get(workflow.nodes[holder[0]].type)
                pending.setdefault(key, ((*holder, "missing_output",
                                          f"{_describe(holder[0], holder_info)} input {holder[1]!r} links to output "
                                          f"{current.output!r} of bypassed {_describe(current.node, info)}, which has no "
                                          f"such output (its outputs: {known})"), []))
                return None, tuple(chain), key
            source = _pass_through_input(info, spec.inputs, out.port)
            if source is None:
                key = ("no_input", current.node, out.name)
                pending.setdefault(key, ((current.node, None, "bypass_no_input",
                                          f"{_describe(current.node, info)} is bypassed, but has no {out.port} input set to pass "
                                          f"through to its output {out.name!r} ({out.port}), which"), []))
                return None, tuple(chain), key
            passed = spec.inputs[source]
            target = as_link(passed)
            if target is None or target.node not in bypassed:
                return passed, tuple(chain), None
            holder, current = (current.node, source), target

    failed: dict[tuple[str, str], tuple[Any, ...]] = {}
    for node_id, spec in workflow.nodes.items():
        if node_id in bypassed or node_id in muted:
            continue
        own = dict(spec.inputs)
        for name, value in spec.inputs.items():
            target = as_link(value)
            if target is None or target.node not in bypassed:
                continue
            passed, chain, key = follow(node_id, name, target)
            through[(node_id, name)] = chain
            if key is None:
                own[name] = passed
            else:
                del own[name]
                unresolved.add((node_id, name))
                failed[(node_id, name)] = key
        inputs[node_id] = own

    # Mute: what needs a muted node does not run, transitively; optional links to it are unset.
    readers: dict[str, list[tuple[str, str]]] = {}
    for node_id, own in inputs.items():
        for name, value in own.items():
            target = as_link(value)
            if target is not None:
                readers.setdefault(target.node, []).append((node_id, name))
    root = {m: m for m in muted}  # node that does not run → the muted node it needs
    position = {n: i for i, n in enumerate(workflow.nodes)}
    queue = deque(sorted(muted, key=position.__getitem__))
    while queue:
        gone = queue.popleft()
        for reader, name in readers.get(gone, ()):
            if reader in root:
                continue
            info = registry.get(workflow.nodes[reader].type)
            spec = info.inputs.get(name) if info is not None else None
            if spec is not None and not spec.required:
                inputs[reader].pop(name, None)
                through.pop((reader, name), None)
            elif info is None or spec is not None:  # an unknown input stays, for validation to report
                root[reader] = root[gone]
                queue.append(reader)

    disabled: dict[str, str] = {}
    for node_id in workflow.nodes:
        if node_id in bypassed:
            disabled[node_id] = BYPASSED
        elif node_id in muted:
            disabled[node_id] = MUTED
        elif node_id in root:
            disabled[node_id] = needs_muted(root[node_id])

    for (reader, name), key in failed.items():
        if reader not in disabled:
            pending[key][1].append(reader)
    issues = []
    for key, ((node, input_name, code, message), who) in pending.items():
        if not who:
            continue
        if code == "bypass_no_input":
            message += f" node{'s' if len(who) > 1 else ''} {_names(dict.fromkeys(who))} read{'' if len(who) > 1 else 's'}"
        issues.append(ValidationIssue(node, input_name, code, message))

    nodes = {n: spec.model_copy(update={"inputs": inputs[n]}) for n, spec in workflow.nodes.items() if n not in disabled}
    resolved = workflow.model_copy(update={"nodes": nodes})
    return ModeResolution(resolved, disabled, {k: v for k, v in through.items() if k[0] not in disabled},
                          frozenset(k for k in unresolved if k[0] not in disabled), issues)


def _through_text(resolution: ModeResolution, node_id: str, name: str) -> str:
    chain = resolution.through.get((node_id, name))
    if not chain:
        return ""
    return f" (passed through bypassed node{'s' if len(chain) > 1 else ''} {_names(chain)})"


def _disabled_text(reason: str) -> str:
    return f"it {reason}" if reason.startswith("needs") else f"it is {reason}"


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
    so it must skip what a link gives.

    Node modes are applied first (resolve_modes): bypassed and muted nodes, and the nodes that need
    a muted one, are not validated, and the graph holds only the nodes that run (`Graph.disabled`
    says why the others do not)."""
    try:
        written = parse_workflow(source)
    except WorkflowFormatError as exc:
        return None, [ValidationIssue(node, input_name, code, message)
                      for (_, code, message), (node, input_name) in zip(exc.problems, exc.locations)]

    modes = resolve_modes(written, registry)
    workflow = modes.workflow  # the nodes that run: what is validated below
    issues: list[ValidationIssue] = list(modes.issues)
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
            via = _through_text(modes, node_id, name)
            if name not in spec.inputs:
                if (node_id, name) in modes.unresolved:
                    continue  # reported on the bypassed node
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
                                                  f"{where} input {name!r} links to node {target.node!r}, which does not exist{via}"))
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
                                                  f"{_describe(target.node, source_info)}, which has no such output (its outputs: {known}){via}"))
                    continue
                if not ports.accepts(input_spec.port, out.port):
                    issues.append(ValidationIssue(node_id, name, "type_mismatch",
                                                  f"{where} input {name!r} expects {input_spec.port}, but "
                                                  f"{_describe(target.node, source_info)} output {target.output!r} gives {out.port}{via}"))
                    continue
                links[name] = target
            elif input_spec.port == ports.ANY and via:  # a bypassed node passes a widget value on
                literals[name] = value
            elif not input_spec.is_primitive:
                issues.append(ValidationIssue(node_id, name, "link_required",
                                              f"{where} input {name!r} ({input_spec.port}) must be a link "
                                              f"{{\"node\": ..., \"output\": ...}}, got the value {_short(value)}{via}"))
            else:
                checked, issue = check_value(node_id, info, input_spec, value, services)
                if issue is not None:
                    issues.append(ValidationIssue(issue.node, issue.input, issue.code, issue.message + via) if via else issue)
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
            off = [(n, reason) for n, reason in modes.disabled.items()
                   if (off_info := registry.get(written.nodes[n].type)) is not None and off_info.is_output]
            if off:
                listed = ", ".join(f"{n!r} ({reason})" for n, reason in off)
                issues.append(ValidationIssue(None, None, "no_output_node",
                                              f"nothing to run: every output node is muted, bypassed or needs a muted node: {listed}"))
            else:
                issues.append(ValidationIssue(None, None, "no_output_node",
                                              "the workflow has no output node (such as save_image or show_value), so nothing would run"))
    else:
        requested = []
        for node_id in outputs:
            if node_id in workflow.nodes:
                requested.append(node_id)
            elif node_id in modes.disabled:
                issues.append(ValidationIssue(node_id, None, "output_not_run",
                                              f"requested output node {node_id!r} does not run: {_disabled_text(modes.disabled[node_id])}"))
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
        order = {node_id: index for index, node_id in enumerate(written.nodes)}
        issues.sort(key=lambda i: (i.node is not None, order.get(i.node, len(order)) if i.node else 0))
        return None, issues
    return Graph(written, nodes, tuple(requested), tuple(nx.topological_sort(digraph)), dict(modes.disabled)), []


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
