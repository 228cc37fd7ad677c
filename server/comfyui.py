"""ComfyUI's HTTP and websocket API on our server, so its clients (scripts, bots, painting-program
plug-ins) work unchanged: the routes are in `server/routes/comfyui.py`, the work here.

A prompt (ComfyUI's API format) is converted to our workflow by `latentgraph.nodes.comfyui`, which
keeps ComfyUI's node ids as ours (a ComfyUI node that becomes two of ours adds helpers named
"<id>:<part>"), validated, and queued as an ordinary run whose id is the prompt id: the same queue,
worker, store and events as our own API. What ComfyUI's answers need besides the run (the prompt as
sent, its number, extra_data, the outputs it executes) is kept with the run in the store (extra
"comfyui"), so history survives a restart as our runs do, and goes when the run is deleted or pruned.

The websocket (`/ws?clientId=...`) is a tap on the event hub: each run event becomes ComfyUI's
messages (`execution_start`, `execution_cached`, `executing`, `progress`, `executed`,
`execution_success`, `execution_error`, `execution_interrupted`, `executing` with node null at the
end) for the connections of the client that queued the run (every connection when it gave no
client_id), and a sampler's step preview becomes a binary frame in ComfyUI's framing: 4 bytes
big-endian event type (1, PREVIEW_IMAGE), 4 bytes big-endian image type (1, JPEG), the JPEG. Every
connection gets `status` (queue_remaining) when the queue changes. Node ids are the client's ids.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sqlite3
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from latentgraph.engine import WorkflowInvalid, find_issues
from latentgraph.server.errors import ApiError
from latentgraph.server.messages import dumps
from latentgraph.server.run_queue import NotPending
from latentgraph.server.store import FINISHED, SUCCEEDED, RunRecord

log = logging.getLogger(__name__)

EXTRA = "comfyui"  # the store's extra kept with each run queued through POST /prompt
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")  # never stored (ComfyUI drops them too)
PROMPT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # a prompt id is our run id: it travels in URLs
MAX_CLIENT_ID = 256
PREVIEW_IMAGE, JPEG = 1, 1  # ComfyUI's binary event type and image type
STATUS_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                           "execution_interrupted"})  # the messages a history entry's status keeps
OUTBOX_SIZE = 2048  # messages waiting for one client; progress and previews dropped past half, the client past full
CLOSE_GOING_AWAY, CLOSE_TOO_SLOW = 1001, 1013

# Our validation codes as ComfyUI's error types, with ComfyUI's short titles (our message is the details).
ERROR_TYPES = {
    "missing_input": ("required_input_missing", "Required input is missing"),
    "missing_node": ("bad_linked_input", "Bad linked input"),
    "missing_output": ("bad_linked_input", "Bad linked input"),
    "type_mismatch": ("return_type_mismatch", "Return type mismatch between linked nodes"),
    "link_required": ("invalid_input_type", "Input must be linked"),
    "invalid_value": ("invalid_input_type", "Invalid input value"),
    "not_in_choices": ("value_not_in_list", "Value not in list"),
    "unknown_input": ("invalid_input", "Unknown input"),
    "over_limit": ("custom_validation_failed", "Value over this server's limit"),
    "cycle": ("dependency_cycle", "Dependency cycle detected"),
    "unknown_node_type": ("missing_node_type", "Node type not found"),
}
TOO_SMALL = ("value_smaller_than_min", "Value smaller than min")
TOO_LARGE = ("value_bigger_than_max", "Value bigger than max")


class ComfyError(Exception):
    """A prompt refused: answered 400 with ComfyUI's body {"error": {...}, "node_errors": {...}}."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> None:
        super().__init__(error.get("message"))
        self.body = {"error": error, "node_errors": node_errors or {}}


def comfy_error(kind: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def client_node(node: str | None, classes: dict[str, str] | None) -> str | None:
    """The client's id of one of our nodes: itself, or the ComfyUI node a helper "<id>:<part>" came from."""
    if node is None or classes is None or node in classes:
        return node
    head = node
    while ":" in head:  # the converter's helpers; ids of expanded subgraphs hold colons themselves
        head = head.rsplit(":", 1)[0]
        if head in classes:
            return head
    return node


def comfy_output(results: Any) -> dict[str, Any]:
    """A node's reported results as ComfyUI's `output` (its UI output): the images it saved or previewed."""
    images = results.get("images") if isinstance(results, dict) else None
    if not isinstance(images, list):
        return {}
    shown = [{"filename": str(i.get("filename", "")), "subfolder": str(i.get("subfolder") or ""),
              "type": i.get("type") if i.get("type") in ("output", "temp", "input") else "output"}
             for i in images if isinstance(i, dict)]
    return {"images": shown} if shown else {}


def _ms(timestamp: Any) -> int:
    try:
        return int(float(timestamp) * 1000)
    except (TypeError, ValueError):
        return 0


class Translator:
    """One run's events as ComfyUI's websocket messages, in order. Also reads a finished run's stored
    events back into its history entry's status messages."""

    def __init__(self, run_id: str, classes: dict[str, str] | None, owner: str | None = None) -> None:
        self.run_id = run_id
        self.classes = classes  # ComfyUI id -> class_type for a prompt; None for runs from our own API
        self.owner = owner
        self.cached: set[str] = set()
        self.executed: list[str] = []
        self.current: str | None = None  # the node running (our id)
        self.failed = False
        self.types: dict[str, str] = {}  # our node types, as the events name them

    def node(self, node: str | None) -> str | None:
        return client_node(node, self.classes)

    def node_type(self, node: str | None, ours: Any = None) -> Any:
        """ComfyUI's class_type of a node of a prompt; our node type for runs of our own API."""
        shown = self.node(node)
        if self.classes is not None and shown in self.classes:
            return self.classes[shown]
        return ours or self.types.get(node or "")

    def _executed(self, node: str | None) -> None:
        shown = self.node(node)
        if shown is not None and shown not in self.executed:
            self.executed.append(shown)

    def _done(self) -> tuple[str, dict[str, Any]]:
        return "executing", {"node": None, "display_node": None, "prompt_id": self.run_id}

    def translate(self, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        kind, data, pid = record["type"], record.get("data") or {}, self.run_id
        stamp = _ms(record.get("timestamp"))
        node = data.get("node")
        if isinstance(node, str) and isinstance(data.get("node_type"), str):
            self.types[node] = data["node_type"]
        out: list[tuple[str, dict[str, Any]]] = []
        if kind == "run_started":
            cached = [n for n in data.get("cached") or [] if isinstance(n, str)]
            self.cached.update(cached)
            shown = list(dict.fromkeys(self.node(n) for n in cached))
            out.append(("execution_start", {"prompt_id": pid, "timestamp": stamp}))
            out.append(("execution_cached", {"nodes": shown, "prompt_id": pid, "timestamp": stamp}))
        elif kind == "node_cached":
            self._executed(node)
        elif kind == "node_started":
            self.current = node
            shown = self.node(node)
            out.append(("executing", {"node": shown, "display_node": shown, "prompt_id": pid}))
        elif kind == "node_progress":
            out.append(("progress", {"value": data.get("step"), "max": data.get("total"), "prompt_id": pid,
                                     "node": self.node(node)}))
        elif kind == "node_finished":
            self._executed(node)
            if self.current == node:
                self.current = None
            output = comfy_output(data.get("results"))
            if output:
                shown = self.node(node)
                out.append(("executed", {"node": shown, "display_node": shown, "output": output, "prompt_id": pid}))
        elif kind == "node_failed":
            if self.current == node:
                self.current = None
            if not self.failed:
                self.failed = True
                out.append(("execution_error", self._error(node, data.get("type"), data.get("error_type"),
                                                           data.get("message"), data.get("inputs"), stamp)))
        elif kind == "run_finished":
            if data.get("status") == SUCCEEDED:
                for ours, results in (data.get("results") or {}).items():
                    output = comfy_output(results)
                    if ours in self.cached and output:  # ComfyUI shows a cached output node's images again
                        shown = self.node(ours)
                        out.append(("executed", {"node": shown, "display_node": shown, "output": output,
                                                 "prompt_id": pid}))
                out.append(("execution_success", {"prompt_id": pid, "timestamp": stamp}))
            elif not self.failed:  # failed before any node ran: the workflow was no longer valid
                self.failed = True
                errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
                first = errors[0] if errors else {}
                message = "; ".join(str(e.get("message", "")) for e in errors[:5]) or "the run failed"
                out.append(("execution_error", self._error(first.get("node"), first.get("type"),
                                                           first.get("error_type") or first.get("code"), message,
                                                           first.get("inputs"), stamp)))
            out.append(self._done())
        elif kind in ("run_cancelled", "run_interrupted"):
            if kind == "run_cancelled" and data.get("queued"):
                return out  # taken out of the queue before it started: ComfyUI says nothing either
            stopped = node or self.current
            out.append(("execution_interrupted", {"prompt_id": pid, "node_id": self.node(stopped),
                                                  "node_type": self.node_type(stopped), "executed": list(self.executed),
                                                  "timestamp": stamp}))
            out.append(self._done())
        return out

    def _error(self, node: Any, ours: Any, error_type: Any, message: Any, inputs: Any, stamp: int) -> dict[str, Any]:
        return {"prompt_id": self.run_id, "node_id": self.node(node), "node_type": self.node_type(node, ours),
                "executed": list(self.executed), "exception_message": str(message or ""),
                "exception_type": str(error_type or "Exception"), "traceback": [],
                "current_inputs": inputs if isinstance(inputs, dict) else {}, "current_outputs": {},
                "timestamp": stamp}


class ComfyConnection:
    """One websocket client of ComfyUI's protocol, with its own bounded outbox (a slow client never
    holds up the loop or the others)."""

    def __init__(self, websocket: Any, sid: str) -> None:
        self.websocket = websocket
        self.sid = sid
        self.outbox: asyncio.Queue[str | bytes | int] = asyncio.Queue(OUTBOX_SIZE)
        self.closing = False

    def send(self, item: str | bytes, droppable: bool = False) -> None:
        if self.closing or (droppable and self.outbox.qsize() > OUTBOX_SIZE // 2):
            return
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW)

    def close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(code)

    async def pump(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, int):
                await self.websocket.close(item)
                return
            if isinstance(item, bytes):
                await self.websocket.send_bytes(item)
            else:
                await self.websocket.send_text(item)


@dataclass
class _Prompt:
    """What submit gathers for the store's extra."""

    number: float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str] = field(default_factory=list)

    def extra(self) -> dict[str, Any]:
        return {"number": self.number, "prompt": self.prompt, "extra_data": self.extra_data, "outputs": self.outputs}


def _classes(prompt: Any) -> dict[str, str] | None:
    if not isinstance(prompt, dict):
        return None
    return {str(k): v["class_type"] for k, v in prompt.items()
            if isinstance(v, dict) and isinstance(v.get("class_type"), str)}


class ComfyBridge:
    """ComfyUI's API over the server's runs (see the module's description)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.classes: dict[str, dict[str, str]] = {}  # prompt id -> its node classes, while queued or running
        self.live: dict[str, Translator] = {}  # run id -> translator, while the run is active (on the loop)
        self.connections: set[ComfyConnection] = set()
        self._number_lock = threading.Lock()
        self._number: int | None = None

    # --- start-up ---------------------------------------------------------------------------------

    def load(self) -> None:
        """The node classes of prompts queued before a restart, which are about to run again."""
        _, pending = self.state.queue.snapshot()
        for run_id, extra in self.state.store.extras(EXTRA, [r.id for r in pending]).items():
            classes = _classes(extra.get("prompt"))
            if classes is not None:
                self.classes[run_id] = classes

    def _next_number(self) -> int:
        with self._number_lock:
            if self._number is None:
                largest = self.state.store.extra_max(EXTRA, "number")
                self._number = max(0, int(largest) + 1) if isinstance(largest, (int, float)) else 0
            number, self._number = self._number, self._number + 1
            return number

    # --- POST /prompt -----------------------------------------------------------------------------

    def submit(self, body: Any) -> dict[str, Any]:
        """Convert, validate and queue a prompt. Raises ComfyError (400 in ComfyUI's shape), or
        ApiError 429 when the queue is full."""
        from latentgraph.nodes.comfyui import ComfyImportError, import_document

        if not isinstance(body, dict):
            raise ComfyError(comfy_error("invalid_prompt", "the request body must be a JSON object: "
                                         '{"prompt": {...}, "client_id": "..."}'))
        if "prompt" not in body:
            raise ComfyError(comfy_error("no_prompt", "No prompt provided", "the body has no 'prompt'"))
        prompt = body["prompt"]
        _check_prompt(prompt)
        client_id = _optional_text(body, "client_id", MAX_CLIENT_ID)
        prompt_id = _optional_text(body, "prompt_id", 64)
        if prompt_id is not None and not PROMPT_ID.match(prompt_id):
            raise ComfyError(comfy_error("invalid_prompt", "prompt_id must be 1 to 64 letters, digits or _ . : -",
                                         f"got {prompt_id!r}"))
        extra_data = body.get("extra_data", {})
        if extra_data is None:
            extra_data = {}
        if not isinstance(extra_data, dict):
            raise ComfyError(comfy_error("invalid_prompt", "extra_data must be a JSON object"))
        targets = body.get("partial_execution_targets")
        if targets is not None:
            if not isinstance(targets, list) or not all(isinstance(t, str) and t in prompt for t in targets):
                raise ComfyError(comfy_error("invalid_prompt", "partial_execution_targets must list node ids of "
                                             "the prompt", f"got {targets!r}"))
            targets = list(dict.fromkeys(targets)) or None
        number = body.get("number")
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
            raise ComfyError(comfy_error("invalid_prompt", "number must be a number", f"got {number!r}"))

        try:
            result = import_document(prompt, registry=self.state.registry, services=self.state.executor.services)
        except ComfyImportError as exc:
            raise ComfyError(comfy_error("invalid_prompt", f"the prompt cannot be read: {exc}")) from None
        report = result.report
        graph_links = _prompt_graph(prompt)
        if report.unmapped:
            raise ComfyError(*_unmapped_errors(report.unmapped, prompt, graph_links))
        workflow = result.workflow
        if report.values:  # refused even where our validation would let the value through
            _, issues = find_issues(workflow, self.state.registry, targets, services=self.state.executor.services)
            raise ComfyError(*self._validation_errors(issues, report, workflow, prompt, graph_links))

        if number is None:
            counted = self._next_number()
            number = -counted if body.get("front") else counted
        run_id = prompt_id or str(uuid.uuid4())
        if self.state.store.get(run_id) is not None:
            raise ComfyError(comfy_error("invalid_prompt", f"prompt_id {run_id!r} is already used by another prompt"))
        stored_data = {k: v for k, v in extra_data.items() if k not in SENSITIVE_EXTRA_DATA}
        if client_id is not None:
            stored_data["client_id"] = client_id
        record = _Prompt(number, prompt, stored_data)
        classes = _classes(prompt) or {}

        def extras(graph: Any) -> dict[str, Any]:
            record.outputs = list(dict.fromkeys(client_node(n, classes) for n in graph.outputs))
            return {EXTRA: record.extra()}

        self.classes[run_id] = classes  # before it is queued: the worker may take it at once
        try:
            run, _ = self.state.runs.submit(workflow, client_id=client_id, outputs=targets, run_id=run_id,
                                            extras=extras)
        except WorkflowInvalid as exc:
            self.classes.pop(run_id, None)
            raise ComfyError(*self._validation_errors(exc.issues, report, workflow, prompt, graph_links)) from None
        except sqlite3.IntegrityError:
            self.classes.pop(run_id, None)
            raise ComfyError(comfy_error("invalid_prompt", f"prompt_id {run_id!r} is already used by another "
                                                           "prompt")) from None
        except BaseException:
            self.classes.pop(run_id, None)
            raise
        if body.get("front"):
            try:
                self.state.queue.reorder([run.id])
            except NotPending:  # it started already
                pass
        return {"prompt_id": run_id, "number": number, "node_errors": {}}

    def _validation_errors(self, issues: list[Any], report: Any, workflow: dict[str, Any], prompt: dict[str, Any],
                           links: dict[str, set[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """ComfyUI's error and node_errors for what validation found, by the client's node ids and
        ComfyUI's input names; also every value the converter could not carry over (kept as it was,
        it would not mean what the client meant, even where our validation lets it through)."""
        from latentgraph.nodes.comfyui import BY_TYPE

        classes = _classes(prompt) or {}
        better = {(str(v.get("id")), v.get("input")): v.get("message") for v in report.values}  # the converter's words
        outputs = [i for i, c in classes.items() if getattr(BY_TYPE.get(c), "output_node", False)]
        node_errors: dict[str, Any] = {}
        general: list[str] = []
        covered: set[tuple[str, Any]] = set()

        def add(shown: str, error: dict[str, Any]) -> None:
            entry = node_errors.setdefault(shown, {"errors": [], "class_type": classes.get(shown),
                                                   "dependent_outputs": _dependents(shown, outputs, links)})
            entry["errors"].append(error)

        for issue in issues:
            shown = client_node(issue.node, classes)
            if shown is None or shown not in classes:
                general.append(issue.message)
                continue
            ours = workflow["nodes"].get(issue.node, {})
            mapping = BY_TYPE.get(classes[shown])
            names = {i.ours: i.name for i in mapping.inputs if i.ours} if mapping is not None else {}
            input_name = names.get(issue.input, issue.input)
            received = (prompt[shown].get("inputs") or {}).get(input_name) if input_name else None
            kind, title = ERROR_TYPES.get(issue.code, (issue.code, "Invalid prompt"))
            if issue.code == "out_of_bounds":
                kind, title = self._bound_kind(ours, issue.input)
            message = better.get((shown, input_name))
            if message is None or message == issue.message:
                message = _in_comfy_terms(issue.message, issue.node, ours.get("type"), issue.input, input_name)
            covered.add((shown, input_name))
            extra_info: dict[str, Any] = {}
            if input_name:
                extra_info = {"input_name": input_name, "received_value": received if not _is_link(received) else None}
            add(shown, comfy_error(kind, title, message, extra_info))
        for value in report.values:
            shown = str(value.get("id"))
            if (shown, value.get("input")) not in covered and shown in classes:
                add(shown, comfy_error("value_not_in_list", "Value not supported", str(value.get("message")),
                                       {"input_name": value.get("input"), "received_value": value.get("value")}))
        lines = [f"node {n} ({e['class_type']}): {err['details']}"
                 for n, e in node_errors.items() for err in e["errors"]]
        if general and not node_errors and all(i.code == "no_output_node" for i in issues):
            return comfy_error("prompt_no_outputs", "Prompt has no outputs", "; ".join(general)), {}
        details = "\n".join([*general, *lines])
        return comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), node_errors

    def _bound_kind(self, ours: dict[str, Any], input_name: str | None) -> tuple[str, str]:
        """Below the minimum or above the maximum: our value against our input's bounds."""
        info = self.state.registry.get(ours.get("type")) if ours else None
        spec = info.inputs.get(input_name) if info is not None and input_name else None
        value = (ours.get("inputs") or {}).get(input_name) if input_name else None
        if spec is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return TOO_LARGE
        below = ((spec.minimum is not None and value < spec.minimum)
                 or (spec.exclusive_minimum is not None and value <= spec.exclusive_minimum))
        return TOO_SMALL if below else TOO_LARGE

    # --- history, queue, interrupt ------------------------------------------------------------------

    def history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        store = self.state.store
        if prompt_id is not None:
            run = store.get(prompt_id) if PROMPT_ID.match(prompt_id) else None
            if run is None or run.status not in FINISHED or run.started is None:
                return {}
            return {run.id: self.entry(run, store.extras(EXTRA, [run.id]).get(run.id))}
        if offset < 0:
            if max_items is None:
                offset = 0
            else:
                _, total = store.finished_with(EXTRA, limit=0)
                offset = max(0, total - max_items)
        rows, _ = store.finished_with(EXTRA, limit=max_items, offset=offset)
        return {run.id: self.entry(run, extra) for run, extra in rows}

    def entry(self, run: RunRecord, extra: dict[str, Any] | None) -> dict[str, Any]:
        """A finished run as ComfyUI's history entry."""
        classes = _classes(extra.get("prompt")) if extra else None
        translator = Translator(run.id, classes)
        messages = []
        for record in self.state.store.events(run.id, exclude=("node_progress",)):
            for event, data in translator.translate(record):
                if event in STATUS_EVENTS:
                    messages.append([event, data])
        outputs: dict[str, Any] = {}
        for node, results in run.results.items():
            output = comfy_output(results)
            if output:
                outputs.setdefault(client_node(node, classes), {"images": []})["images"].extend(output["images"])
        succeeded = run.status == SUCCEEDED
        return {"prompt": self.queue_item(run, extra, list(outputs)), "outputs": outputs,
                "status": {"status_str": "success" if succeeded else "error", "completed": succeeded,
                           "messages": messages},
                "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}

    @staticmethod
    def queue_item(run: RunRecord, extra: dict[str, Any] | None, outputs: list[str] | None = None) -> list[Any]:
        """[number, prompt_id, prompt, extra_data, outputs_to_execute]; a run queued through our own API
        has number -1 and an empty prompt."""
        if extra:
            return [extra.get("number"), run.id, extra.get("prompt"), extra.get("extra_data") or {},
                    extra.get("outputs") or []]
        return [-1, run.id, {}, {"client_id": run.client_id} if run.client_id else {}, outputs or []]

    def queue(self) -> dict[str, Any]:
        running, pending = self.state.queue.snapshot()
        extras = self.state.store.extras(EXTRA, [r.id for r in [*running, *pending]])
        return {"queue_running": [self.queue_item(r, extras.get(r.id)) for r in running],
                "queue_pending": [self.queue_item(r, extras.get(r.id)) for r in pending]}

    def queue_remaining(self) -> int:
        running, pending = self.state.queue.snapshot()
        return len(running) + len(pending)

    def change_queue(self, clear: bool, delete: Iterable[str]) -> None:
        runs = self.state.runs
        if clear:
            runs.clear_queue()
        for run_id in delete:
            try:
                runs.remove_queued(run_id)
            except ApiError:  # unknown, running or finished: ComfyUI ignores those too
                pass

    def change_history(self, clear: bool, delete: Iterable[str]) -> None:
        store = self.state.store
        if clear:
            store.delete_finished_with(EXTRA)
        delete = [d for d in delete if PROMPT_ID.match(d)]
        if delete:
            store.delete_finished_with(EXTRA, delete)

    def interrupt(self, prompt_id: str | None = None, client_id: str | None = None) -> list[str]:
        """Stop the running prompt named, else the one running, else (several workers) the calling
        client's, else every running one (ComfyUI's interrupt). Returns the run ids asked to stop."""
        running, _ = self.state.queue.snapshot()
        if prompt_id is not None:
            targets = [r for r in running if r.id == prompt_id]
        elif len(running) <= 1:
            targets = running
        else:
            targets = [r for r in running if client_id is not None and r.client_id == client_id] or running
        stopped = []
        for run in targets:
            if self.state.queue.cancel_running(run.id):
                stopped.append(run.id)
        return stopped

    # --- the websocket (on the event loop) ----------------------------------------------------------

    def connect(self, websocket: Any, sid: str) -> ComfyConnection:
        conn = ComfyConnection(websocket, sid)
        self.connections.add(conn)
        conn.send(dumps({"type": "status", "data": {"status": self._exec_info(), "sid": sid}}))
        for translator in self.live.values():  # a client back mid-run: the node running now
            if translator.owner == sid and translator.current is not None:
                shown = translator.node(translator.current)
                conn.send(dumps({"type": "executing", "data": {"node": shown, "display_node": shown,
                                                               "prompt_id": translator.run_id}}))
        return conn

    def disconnect(self, conn: ComfyConnection) -> None:
        self.connections.discard(conn)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY)

    def _exec_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    def queue_changed(self) -> None:
        if not self.connections:
            return
        text = dumps({"type": "status", "data": {"status": self._exec_info()}})
        for conn in self.connections:
            conn.send(text)

    def run_event(self, message: Any, owner: str | None) -> None:
        translator = self.live.get(message.run_id)
        if translator is None:
            translator = self.live[message.run_id] = Translator(message.run_id, self.classes.get(message.run_id), owner)
        translated = translator.translate(message.record)
        if message.terminal:
            self.live.pop(message.run_id, None)
            self.classes.pop(message.run_id, None)
        preview = message.preview if message.type == "node_progress" else None
        if not translated and preview is None:
            return
        targets = [c for c in self.connections if owner is None or c.sid == owner]
        if not targets:
            return
        texts = [(dumps({"type": event, "data": data}), event == "progress") for event, data in translated]
        frame = None
        if preview is not None and preview.get("mime") == "image/jpeg":
            frame = struct.pack(">II", PREVIEW_IMAGE, JPEG) + base64.b64decode(preview["data"])
        for conn in targets:
            for text, droppable in texts:
                conn.send(text, droppable)
            if frame is not None:
                conn.send(frame, droppable=True)


# --- checking a prompt ----------------------------------------------------------------------------------

def _optional_text(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ComfyError(comfy_error("invalid_prompt", f"{key} must be a string of 1 to {limit} characters",
                                     f"got {value!r}"[:200]))
    return value


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, dict):
        raise ComfyError(comfy_error("invalid_prompt", "the prompt must be a JSON object of node id -> "
                                     "{\"class_type\": ..., \"inputs\": {...}} (ComfyUI's API format; save it from "
                                     "ComfyUI with 'Export (API)')", f"got {type(prompt).__name__}"))
    if not prompt:
        raise ComfyError(comfy_error("prompt_no_outputs", "Prompt has no outputs", "the prompt has no nodes"))
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ComfyError(comfy_error(
                "missing_node_type", f"Node '#{node_id}' has no class_type: the prompt is not in ComfyUI's API "
                "format, or is damaged", f"Node ID '#{node_id}'", {"node_id": str(node_id)}))
        if not isinstance(node.get("inputs", {}), dict):
            raise ComfyError(comfy_error("invalid_prompt", f"node {node_id} ({node['class_type']}): inputs must be a "
                                         "JSON object", f"Node ID '#{node_id}'", {"node_id": str(node_id)}))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def _prompt_graph(prompt: dict[str, Any]) -> dict[str, set[str]]:
    """Each node's direct inputs' source nodes, from the prompt's links [node_id, output_index]."""
    return {str(k): {str(v[0]) for v in (n.get("inputs") or {}).values() if _is_link(v)} for k, n in prompt.items()}


def _dependents(node: str, outputs: list[str], links: dict[str, set[str]]) -> list[str]:
    """The output nodes that need `node` (itself included, when it is one)."""
    found = []
    for output in outputs:
        seen, todo = set(), [output]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(links.get(current, ()))
        if node in seen:
            found.append(output)
    return found


def _in_comfy_terms(message: str, node: str | None, node_type: Any, ours: str | None, comfy: str | None) -> str:
    """Our message without our node's name (a node error is filed under it already), and with
    ComfyUI's input name for ours: "sampler_name must be one of ..., got 'x'"."""
    who = f"node {node!r} ({node_type})"
    if ours and comfy and message.startswith(f"{who} input {ours!r}"):
        return comfy + message[len(f"{who} input {ours!r}"):]
    if message.startswith(who):
        return message[len(who):].lstrip(" :") or message
    return message


def _unmapped_errors(unmapped: list[dict[str, Any]], prompt: dict[str, Any], links: dict[str, set[str]]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    from latentgraph.nodes.comfyui import BY_TYPE

    classes = _classes(prompt) or {}
    read = set().union(*links.values()) if links else set()
    # Output nodes: the mapped ones that are, and unknown ones nothing reads (they may be).
    outputs = [i for i, c in classes.items()
               if getattr(BY_TYPE.get(c), "output_node", False) or (c not in BY_TYPE and i not in read)]
    node_errors = {}
    for item in unmapped:
        node_id, kind = str(item["id"]), item["type"]
        node_errors[node_id] = {
            "errors": [comfy_error("missing_node_type", f"Node type '{kind}' not found",
                                   f"node {node_id} ({kind}): {item['reason']}",
                                   {"node_id": node_id, "class_type": kind})],
            "dependent_outputs": _dependents(node_id, outputs, links), "class_type": kind}
    first = unmapped[0]
    title = ((prompt.get(str(first["id"])) or {}).get("_meta") or {}).get("title") or first["type"]
    named = ", ".join(f"{u['id']} ({u['type']})" for u in unmapped)
    plural = "s" if len(unmapped) > 1 else ""
    message = f"Node{plural} {named} cannot run on Latentgraph: {first['reason']}{' ...' if plural else ''}"
    error = comfy_error("missing_node_type", message, f"Node ID '#{first['id']}'",
                        {"node_id": str(first["id"]), "class_type": first["type"], "node_title": title})
    return error, node_errors


__all__ = ["ComfyBridge", "ComfyConnection", "ComfyError", "EXTRA", "Translator", "client_node", "comfy_error",
           "comfy_output"]
