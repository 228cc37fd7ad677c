"""Latentgraph's engine: typed nodes, workflow JSON, validation, the cached DAG executor, events.

It knows nothing of torch, Stable Diffusion or HTTP; node libraries and the server build on it.
"""

from latentgraph.engine import ports
from latentgraph.engine.cache import OutputCache, register_sizer, sizeof
from latentgraph.engine.errors import Cancelled, NodeFailure, TimeLimitExceeded, ValidationIssue, WorkflowInvalid
from latentgraph.engine.events import Event, EventBus
from latentgraph.engine.executor import CancelToken, Executor, RunContext, RunResult
from latentgraph.engine.graph import Graph, find_issues, validate_workflow
from latentgraph.engine.limits import ExecutionLimits, ValueTooLarge, text_size
from latentgraph.engine.node import Input, Node, NodeInfo, NodeOutputs, Output
from latentgraph.engine.registry import NodeRegistry, node, registry
from latentgraph.engine.workflow import FORMAT, Workflow, link, parse_workflow, workflow_json_schema

__all__ = [
    "FORMAT", "Cancelled", "CancelToken", "Event", "EventBus", "ExecutionLimits", "Executor", "Graph", "Input", "Node",
    "NodeFailure", "NodeInfo", "NodeOutputs", "NodeRegistry", "Output", "OutputCache", "RunContext",
    "RunResult", "ValidationIssue", "Workflow", "WorkflowInvalid", "find_issues", "link", "node",
    "parse_workflow", "ports", "register_sizer", "registry", "sizeof", "text_size", "TimeLimitExceeded",
    "validate_workflow", "ValueTooLarge", "workflow_json_schema",
]
