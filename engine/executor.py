"""The executor: plan what the requested outputs need, reuse what is cached, run the rest in order.

Planning walks back from the requested sinks: a sink whose signature is cached needs nothing
upstream; a node that must run makes its inputs needed in turn. So a re-run with only the seed
changed runs noise → sampler → decode → save and does not even look at the checkpoint loader.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from latentgraph.engine.cache import CacheEntry, OutputCache
from latentgraph.engine.errors import Cancelled, NodeFailure, TimeLimitExceeded, WorkflowInvalid
from latentgraph.engine.events import Event, EventBus
from latentgraph.engine.graph import Graph, GraphNode, check_value, validate_workflow
from latentgraph.engine.limits import ExecutionLimits, ValueTooLarge, text_size
from latentgraph.engine.registry import NodeRegistry
from latentgraph.engine.signature import signature_of
from latentgraph.engine.workflow import Workflow


class CancelToken:
    """Set by whoever wants a run to stop; checked between nodes and offered to long-running nodes.

    A token may also carry a deadline: past it, every cancel point raises TimeLimitExceeded."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._deadline: float | None = None
        self._deadline_message = ""

    def cancel(self) -> None:
        self._event.set()

    def set_deadline(self, seconds: float, message: str) -> None:
        """Stop the run `seconds` from now, failing it with `message`."""
        self._deadline = time.monotonic() + seconds
        self._deadline_message = message

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeLimitExceeded(self._deadline_message)


class RunContext:
    """What a running node may use: progress reporting, cancellation, results, shared services."""

    __slots__ = ("run_id", "node_id", "node_type", "services", "workflow", "limits", "_cancel", "_publish", "results",
                 "_listened")

    def __init__(self, run_id: str, node_id: str, node_type: str, services: Any,
                 cancel: CancelToken, publish: Any, workflow: Workflow | None = None,
                 limits: ExecutionLimits | None = None, listened: Callable[[], bool] | None = None) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self.node_type = node_type
        self.services = services
        self.workflow = workflow  # the workflow being run, e.g. to embed in saved images
        self.limits = limits if limits is not None else ExecutionLimits()  # e.g. to refuse a huge value early
        self._cancel = cancel
        self._publish = publish
        self._listened = listened
        self.results: dict[str, Any] = {}

    @property
    def wants_previews(self) -> bool:
        """Whether a preview image would reach anyone (previews cost time: skip them when not)."""
        return self._listened() if self._listened is not None else True

    def check_cancelled(self) -> None:
        """Raise Cancelled if the run was cancelled. Call it inside long loops."""
        self._cancel.raise_if_cancelled()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report progress (e.g. a sampler step) with an optional preview image; also a cancel point."""
        self._cancel.raise_if_cancelled()
        data: dict[str, Any] = {"node": self.node_id, "node_type": self.node_type, "step": step, "total": total}
        if preview is not None:
            data["preview"] = preview
        self._publish("node_progress", data)

    def report(self, **results: Any) -> None:
        """Record JSON-able results of an output node (e.g. saved image names); cached with its outputs."""
        self.results.update(results)


@dataclass(frozen=True)
class Plan:
    order: tuple[str, ...]  # the nodes the requested outputs depend on, dependencies first
    signatures: dict[str, str]
    to_run: tuple[str, ...]
    cached: dict[str, CacheEntry]  # held here so an eviction mid-run cannot take them away
    volatile: frozenset[str]  # nodes whose results are never cached (see plan)


@dataclass
class RunResult:
    run_id: str
    status: str  # "succeeded", "failed" or "cancelled"
    seconds: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # output node → reported results
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # requested node → its outputs
    errors: list[NodeFailure] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not run because a node upstream failed
    disabled: dict[str, str] = field(default_factory=dict)  # not run because of a mode: node → why (see Graph)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def describe_value(value: Any) -> str:
    """A short description of a value for error messages and events (never a whole tensor)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={value.dtype})"
    if isinstance(value, (int, float, str, bool, type(None))):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return type(value).__name__


class Executor:
    """Runs validated workflows against one registry, one output cache and one set of services.

    Runs are serialised: one executes at a time, so the cache and loaded models are shared safely.
    """

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None,
                 services: Any = None, events: EventBus | None = None, limits: ExecutionLimits | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.services = services
        self.events = events if events is not None else EventBus()
        self.limits = limits if limits is not None else ExecutionLimits()
        self._lock = threading.Lock()

    def validate(self, workflow: str | bytes | dict[str, Any] | Workflow, outputs: Iterable[str] | None = None) -> Graph:
        return validate_workflow(workflow, self.registry, outputs, services=self.services)

    def run(self, workflow: str | bytes | dict[str, Any] | Workflow | Graph, *, outputs: Iterable[str] | None = None,
            run_id: str | None = None, cancel: CancelToken | None = None) -> RunResult:
        """Validate and run a workflow. Raises WorkflowInvalid (nothing run) if it is not valid."""
        graph = workflow if isinstance(workflow, Graph) else self.validate(workflow, outputs)
        cancel = cancel or CancelToken()
        with self._lock:
            if self.limits.max_seconds:  # counted from here: waiting for the lock is not the run's time
                cancel.set_deadline(self.limits.max_seconds,
                                    f"the run went over its time limit of {self.limits.max_seconds:g} s")
            return self._execute(graph, run_id or uuid.uuid4().hex, cancel)

    def plan(self, graph: Graph, run_nonce: str) -> Plan:
        nodes = graph.nodes
        needed: set[str] = set()
        stack = list(graph.outputs)
        while stack:
            node_id = stack.pop()
            if node_id not in needed:
                needed.add(node_id)
                stack.extend(ln.node for ln in nodes[node_id].links.values())
        order = tuple(n for n in graph.order if n in needed)

        # A volatile node's signature is unique to this run (it is not cacheable, or something
        # upstream is not): looking it up is pointless and storing it would only crowd the cache.
        signatures: dict[str, str] = {}
        output_signatures: dict[str, str] = {}  # what readers of each output see (see signature_of)
        volatile: set[str] = set()
        for node_id in order:
            node = nodes[node_id]
            signatures[node_id], own = signature_of(node, output_signatures, self.services, run_nonce)
            if own or any(ln.node in volatile for ln in node.links.values()):
                volatile.add(node_id)

        required = set(graph.outputs)
        cached: dict[str, CacheEntry] = {}
        to_run: list[str] = []
        for node_id in reversed(order):
            if node_id not in required:
                continue
            node = nodes[node_id]
            entry = self.cache.get(signatures[node_id]) if node_id not in volatile else None
            if entry is not None:
                cached[node_id] = entry
            else:
                to_run.append(node_id)
                required.update(ln.node for ln in node.links.values())
        to_run.reverse()
        cached = {n: cached[n] for n in order if n in cached}  # dependencies first, like to_run
        return Plan(order, signatures, tuple(to_run), cached, frozenset(volatile))

    def _execute(self, graph: Graph, run_id: str, cancel: CancelToken) -> RunResult:
        started = time.perf_counter()
        publish_bus = self.events.publish

        def publish(kind: str, data: dict[str, Any]) -> None:
            publish_bus(Event(kind, run_id, data))

        plan = self.plan(graph, run_id)
        nodes = graph.nodes
        result = RunResult(run_id, "succeeded", 0.0, disabled=dict(graph.disabled))
        will_run = set(plan.to_run)
        started_data: dict[str, Any] = {
            "outputs": list(graph.outputs),
            "nodes": [n for n in plan.order if n in plan.cached or n in will_run],
            "to_run": list(plan.to_run),
            "cached": list(plan.cached),
        }
        if graph.disabled:
            started_data["disabled"] = dict(graph.disabled)
        publish("run_started", started_data)

        values: dict[str, dict[str, Any]] = {}
        for node_id, entry in plan.cached.items():
            values[node_id] = entry.outputs
            result.cached.append(node_id)
            if entry.results:
                result.results[node_id] = entry.results
            publish("node_cached", {"node": node_id, "node_type": nodes[node_id].info.type})

        # How many nodes still to run read each node's outputs, so values can be let go of early.
        consumers: dict[str, int] = {}
        for node_id in plan.to_run:
            for ln in nodes[node_id].links.values():
                consumers[ln.node] = consumers.get(ln.node, 0) + 1
        keep = set(graph.outputs)

        failed_root: dict[str, str] = {}  # failed or skipped node → the node whose failure caused it
        current: str | None = None
        upcoming = plan.to_run[0] if plan.to_run else ""
        try:
            for node_id in plan.to_run:
                upcoming = node_id
                cancel.raise_if_cancelled()
                node = nodes[node_id]
                upstream_failure = next((failed_root[ln.node] for ln in node.links.values() if ln.node in failed_root), None)
                if upstream_failure is not None:
                    failed_root[node_id] = upstream_failure
                    result.skipped.append(node_id)
                    publish("node_skipped", {"node": node_id, "node_type": node.info.type, "failed": upstream_failure,
                                             "reason": f"upstream node {upstream_failure!r} failed"})
                else:
                    current = node_id
                    outputs, results, failure = self._run_node(node, values, run_id, cancel, publish, graph.workflow)
                    current = None
                    if failure is not None:
                        failed_root[node_id] = node_id
                        result.errors.append(failure)
                    else:
                        values[node_id] = outputs
                        result.executed.append(node_id)
                        if node_id not in plan.volatile:
                            self.cache.put(plan.signatures[node_id], outputs, results)
                        if results:
                            result.results[node_id] = results
                for ln in node.links.values():
                    consumers[ln.node] -= 1
                    if consumers[ln.node] == 0 and ln.node not in keep:
                        values.pop(ln.node, None)
        except TimeLimitExceeded as exc:  # a failure of the node that was running, not a cancel
            culprit = current or upcoming  # the node running, or the next one when it struck between nodes
            failure = NodeFailure(culprit, nodes[culprit].info.type, {}, exc)
            publish("node_failed", failure.to_dict())
            result.errors.append(failure)
        except Cancelled:
            result.status = "cancelled"
            result.seconds = time.perf_counter() - started
            publish("run_cancelled", {"seconds": result.seconds, "node": current})
            return result

        result.values = {n: values[n] for n in graph.outputs if n in values}
        result.status = "failed" if result.errors else "succeeded"
        result.seconds = time.perf_counter() - started
        publish("run_finished", {
            "status": result.status,
            "seconds": result.seconds,
            "results": result.results,
            "errors": [e.to_dict() for e in result.errors],
        })
        return result

    def _run_node(self, node: GraphNode, values: dict[str, dict[str, Any]], run_id: str,
                  cancel: CancelToken, publish: Any, workflow: Workflow) -> tuple[dict[str, Any], dict[str, Any], NodeFailure | None]:
        info = node.info
        inputs = dict(node.literals)
        for name, ln in node.links.items():
            inputs[name] = values[ln.node][ln.output]

        def failure(error: BaseException) -> NodeFailure:
            described = {name: describe_value(value) for name, value in inputs.items()}
            fail = NodeFailure(node.id, info.type, described, error)
            publish("node_failed", fail.to_dict())
            return fail

        publish("node_started", {"node": node.id, "node_type": info.type})
        for name in node.links:
            spec = info.inputs[name]
            if spec.is_primitive:  # a linked widget value still has to meet the input's bounds
                checked, issue = check_value(node.id, info, spec, inputs[name], self.services)
                if issue is not None:
                    return {}, {}, failure(ValueError(issue.message))
                inputs[name] = checked
        ctx = RunContext(run_id, node.id, info.type, self.services, cancel, publish, workflow, self.limits,
                         listened=lambda: self.events.listened)
        begun = time.perf_counter()
        try:
            instance = info.cls.model_construct(**inputs)
            produced = instance.run(ctx)
            outputs = _outputs_of(info.cls, produced)
            self._check_sizes(outputs, ctx.results)
        except Cancelled:
            raise
        except Exception as exc:
            return {}, {}, failure(exc)
        publish("node_finished", {
            "node": node.id,
            "node_type": info.type,
            "seconds": time.perf_counter() - begun,
            "outputs": {name: describe_value(v) for name, v in outputs.items()},
            "results": ctx.results,
        })
        return outputs, ctx.results, None


    def _check_sizes(self, outputs: dict[str, Any], results: dict[str, Any]) -> None:
        """Refuse a node's value that holds more text than `limits.max_value_bytes`: caught here,
        before it is cached, passed on, stored with the run or sent to a client."""
        cap = self.limits.max_value_bytes
        if not cap:
            return
        for kind, values in (("output", outputs), ("result", results)):
            for name, value in values.items():
                if type(value) in _NO_TEXT:  # the common small values: nothing to measure
                    continue
                size = len(value) if type(value) is str else text_size(value, cap)
                if size > cap:
                    raise ValueTooLarge(f"{kind} {name!r} holds more than {cap:,} characters of text "
                                        f"(the limit for one value); it was not kept")


_NO_TEXT = frozenset({int, float, bool, type(None)})


def _outputs_of(cls: type, produced: Any) -> dict[str, Any]:
    expected = cls.Outputs
    if produced is None and not expected.model_fields:
        return {}
    if not isinstance(produced, expected):
        raise TypeError(f"{cls.__name__}.run() returned {type(produced).__name__}, expected {cls.__name__}.Outputs")
    return {name: getattr(produced, name) for name in expected.model_fields}


__all__ = ["CancelToken", "Executor", "Plan", "RunContext", "RunResult", "WorkflowInvalid", "describe_value"]
