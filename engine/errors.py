"""Errors a user can act on: which node, which input, what was expected, what came."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found in a workflow. `node` and `input` are None where they do not apply."""

    node: str | None
    input: str | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.message


class WorkflowInvalid(ValueError):
    """A workflow failed validation; nothing was run. `issues` lists every problem found."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = issues
        count = len(issues)
        head = f"workflow is invalid ({count} problem{'s' if count != 1 else ''})"
        super().__init__(head + ":\n" + "\n".join(f"  - {issue.message}" for issue in issues))


class Cancelled(BaseException):
    """Raised inside a run when its cancel token is set.

    A BaseException, like KeyboardInterrupt, so that a node's `except Exception` cannot swallow it.
    """


class TimeLimitExceeded(Cancelled):
    """Raised at a cancel point once a run has gone past its deadline (`CancelToken.set_deadline`).
    The executor records it as the failure of the node that was running, not as a cancel."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NodeFailure(Exception):
    """A node raised while running. Carries what the user needs to find the fault."""

    def __init__(self, node_id: str, node_type: str, inputs: dict[str, str], error: BaseException):
        self.node_id = node_id
        self.node_type = node_type
        self.inputs = inputs
        self.error = error
        self.error_type = type(error).__name__
        super().__init__(f"node {node_id!r} ({node_type}) failed: {self.error_type}: {error}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "type": self.node_type,
            "error_type": self.error_type,
            "message": str(self.error),
            "inputs": self.inputs,
        }
