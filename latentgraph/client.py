"""The Python client: submit workflows, follow their events, fetch their images. Synchronous
(httpx and the websockets sync client), so it works the same in a script and in a notebook.

    from latentgraph.client import Client

    with Client("http://127.0.0.1:8188") as client:          # token: token=... or $LATENTGRAPH_TOKEN
        run = client.submit("workflows/txt2img.json", set={"sampler.seed": 7})
        for event in run.events():                            # live, in order, from the first event
            if event["type"] == "node_progress":
                print(event["data"]["node"], event["data"]["step"], "/", event["data"]["total"])
        run.raise_for_status()
        for path in run.save_images("out/"):
            print(path)

`client.run(workflow)` submits and waits. A dropped websocket is reopened and the events resume
after the last one received, so a server restart mid-run loses nothing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

import httpx

TERMINAL_EVENTS = frozenset({"run_finished", "run_cancelled", "run_interrupted"})
FINISHED = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
TOKEN_ENV = "LATENTGRAPH_TOKEN"
IDLE_TIMEOUT = 30.0  # seconds without a message before `events` asks the server how the run stands

WorkflowSource = dict[str, Any] | str | Path | Any


class ApiError(Exception):
    """The server refused a request. `status` (HTTP), `code` (stable), `detail` (for people) and,
    for an invalid workflow, `errors`: every problem as {node, input, code, message}."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.status, self.code, self.detail, self.errors = status, code, detail, errors or []
        lines = [f"{detail} (HTTP {status}, {code})"] + [f"  - {e.get('message')}" for e in self.errors]
        super().__init__("\n".join(lines))


class RunFailed(Exception):
    """A run ended without succeeding; `run` holds its details (status, errors, events)."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        super().__init__(f"run {run['id']} {run['status']}: {run.get('error') or 'no details'}")


def load_workflow(source: WorkflowSource) -> dict[str, Any]:
    """A workflow document from a dict, JSON text, a file path, or an engine Workflow."""
    if isinstance(source, dict):
        return source
    if hasattr(source, "to_dict"):
        return source.to_dict()
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        return json.loads(Path(source).read_text(encoding="utf-8"))
    return json.loads(source)


def with_inputs(workflow: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `workflow` with inputs set: {"sampler.seed": 7, "positive.text": "a cat"}."""
    document = json.loads(json.dumps(workflow))
    for key, value in values.items():
        node_id, _, input_name = key.rpartition(".")
        if node_id not in document.get("nodes", {}):
            raise KeyError(f"the workflow has no node {node_id!r} (its nodes: {', '.join(document.get('nodes', {}))})")
        document["nodes"][node_id].setdefault("inputs", {})[input_name] = value
    return document


def preview_image(event: dict[str, Any]) -> Any:
    """The step preview of a node_progress event as a PIL image, or None."""
    preview = event.get("data", {}).get("preview")
    if not isinstance(preview, dict) or not preview.get("data"):
        return None
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(preview["data"])))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8188", *, token: str | None = None, client_id: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # Loopback never goes through a proxy from the environment.
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=not _is_loopback(self.url))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if "json" in kwargs:  # encoded here, as json.dumps does: a NaN or a lone surrogate reaches the
            # server, which answers 422 naming the node and input, where httpx would raise a bare ValueError
            kwargs["content"] = json.dumps(kwargs.pop("json"), separators=(",", ":")).encode()
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text or response.reason_phrase}
            raise ApiError(response.status_code, body.get("code", "error"), body.get("detail", ""), body.get("errors"))
        return response

    def submit(self, workflow: WorkflowSource, *, set: dict[str, Any] | None = None, priority: int = 0,
               outputs: list[str] | None = None) -> "Run":
        """Queue a workflow (a dict, JSON text, a file path or an engine Workflow), with inputs
        overridden by `set` ({"node.input": value}). Raises ApiError (422, `errors`) if invalid."""
        document = load_workflow(workflow)
        if set:
            document = with_inputs(document, set)
        body = {"workflow": document, "client_id": self.client_id, "priority": priority, "outputs": outputs}
        summary = self.request("POST", "/api/runs", json=body).json()
        return Run(self, summary["id"], summary)

    def run(self, workflow: WorkflowSource, *, timeout: float | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> "Run":
        """Submit and wait until the run ends; `on_event` sees each event on the way."""
        run = self.submit(workflow, **options)
        run.wait(timeout=timeout, on_event=on_event)
        return run

    def get_run(self, run_id: str, events: bool = True) -> dict[str, Any]:
        return self.request("GET", f"/api/runs/{quote(run_id)}", params={"events": events}).json()

    def runs(self, *, limit: int = 50, offset: int = 0, status: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self.request("GET", "/api/runs", params=params).json()

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{quote(run_id)}/cancel").json()

    def queue(self) -> dict[str, Any]:
        return self.request("GET", "/api/queue").json()

    def nodes(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/nodes").json()

    def models(self, kind: str | None = None) -> Any:
        if kind is None:
            return self.request("GET", "/api/models").json()["kinds"]
        return [m["name"] for m in self.request("GET", f"/api/models/{quote(kind)}").json()["models"]]

    def workflows(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/workflows").json()["workflows"]

    def load_workflow(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/workflows/{quote(name)}").json()

    def save_workflow(self, name: str, workflow: WorkflowSource) -> dict[str, Any]:
        return self.request("PUT", f"/api/workflows/{quote(name)}", json=load_workflow(workflow)).json()

    def import_workflow(self, source: str | Path | bytes | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Convert a ComfyUI workflow (a .json or .png path, its bytes, or a decoded UI- or API-format
        document) on the server: (our workflow, the import report). The report's `ok` is False when
        some node could not be mapped; the workflow then holds the rest."""
        if isinstance(source, dict):
            data, kind = json.dumps(source).encode(), "application/json"
        else:
            data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
            kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "application/json"
        answer = self.request("POST", "/api/workflows/import", content=data, headers={"Content-Type": kind}).json()
        return answer["workflow"], answer["report"]

    def delete_workflow(self, name: str) -> None:
        self.request("DELETE", f"/api/workflows/{quote(name)}")

    def upload_image(self, image: str | Path | bytes | Any, *, kind: str = "image", filename: str | None = None) -> str:
        """Put an image (a path, bytes or a PIL image) in the input folder; returns the name a
        load_image node takes."""
        if isinstance(image, (str, Path)):
            filename = filename or Path(image).name
            data = Path(image).read_bytes()
        elif isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        else:  # a PIL image
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
        files = {"file": (filename or "image.png", data, "application/octet-stream")}
        return self.request("POST", "/api/images", files=files, data={"kind": kind}).json()["name"]

    def download(self, image: dict[str, Any], to: str | Path | None = None) -> bytes | Path:
        """An image a run reported ({filename, subfolder, type}): its bytes, or saved into folder `to`."""
        name = "/".join(quote(p) for p in (image.get("subfolder"), image["filename"]) if p)
        data = self.request("GET", f"/api/images/{image.get('type', 'output')}/{name}").content
        if to is None:
            return data
        folder = Path(to)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / image["filename"]
        path.write_bytes(data)
        return path

    def image(self, image: dict[str, Any]) -> Any:
        """An image a run reported, as a PIL image (its `info["workflow"]` is the workflow JSON)."""
        from PIL import Image

        return Image.open(io.BytesIO(self.download(image)))

    # --- websocket -------------------------------------------------------------------------------

    def connect(self, as_client: bool = False) -> Any:
        """A websocket connection to the event stream (websockets' sync client). `as_client`: with
        this client's id, so the events of every run it submitted arrive unasked."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        uri = f"{scheme}://{parts.netloc}{parts.path}/ws" + (f"?client_id={quote(self.client_id)}" if as_client else "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            return connect(uri, additional_headers=headers, open_timeout=self.timeout, max_size=64 << 20,
                           proxy=None if _is_loopback(self.url) else True)
        except InvalidStatus as exc:  # refused at the handshake: the body says why, as JSON
            response = exc.response
            try:
                body = json.loads(bytes(response.body or b""))
            except ValueError:
                body = {}
            raise ApiError(response.status_code, body.get("code", "error"), body.get("detail", str(exc))) from None

    def events(self, run_id: str, *, after: int = 0, timeout: float | None = None,
               reconnect_for: float = 30.0, idle_timeout: float = IDLE_TIMEOUT) -> Iterator[dict[str, Any]]:
        """A run's events in order, from the one after `after` (0: all of them, including those
        sent before this call), ending with its terminal event.

        A dropped connection is reopened for up to `reconnect_for` seconds and resumes where it
        stopped; then ConnectionError says the server went away. When nothing arrives for
        `idle_timeout` seconds, the run is looked up over HTTP: if it has ended, its remaining
        events come from its stored history; if it is still going (a long step sends nothing), the
        wait goes on, so a long run is never cut short. Raises TimeoutError after `timeout` seconds
        (None: no limit) without the run ending."""
        from websockets.exceptions import ConnectionClosed

        deadline = None if timeout is None else time.monotonic() + timeout
        last = after
        lost_since: float | None = None
        while True:
            try:
                with self.connect() as socket:
                    lost_since = None
                    socket.send(json.dumps({"type": "subscribe", "runs": [run_id], "after": last}))
                    while True:
                        wait = idle_timeout if deadline is None else max(min(deadline - time.monotonic(), idle_timeout), 0)
                        try:
                            message = json.loads(socket.recv(timeout=wait))
                        except TimeoutError:
                            if deadline is not None and time.monotonic() >= deadline:
                                raise TimeoutError(f"run {run_id} did not end within {timeout} s") from None
                            ended = self._ended_events(run_id, last)
                            if ended is None:
                                continue  # still running, and the server answers: keep waiting
                            yield from ended
                            return
                        if message.get("type") == "error" and message.get("data", {}).get("run_id") == run_id:
                            data = message["data"]
                            raise ApiError(404, data.get("code", "error"), data.get("message", ""))
                        if message.get("run_id") != run_id or message.get("seq", 0) <= last:
                            continue
                        last = message["seq"]
                        yield message
                        if message["type"] in TERMINAL_EVENTS:
                            return
            except (ConnectionClosed, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > reconnect_for or (deadline is not None and now > deadline):
                    raise ConnectionError(f"lost the event stream of run {run_id}: the server at {self.url} has not "
                                          f"answered for {now - lost_since:.0f} s ({exc})") from exc
                time.sleep(0.5)

    def _ended_events(self, run_id: str, after: int) -> list[dict[str, Any]] | None:
        """The stored events after `after` of a run that has ended, or None while it is queued or
        running. A server that does not answer raises ConnectionError (reconnected like a drop)."""
        try:
            run = self.get_run(run_id)
        except httpx.TransportError as exc:
            raise ConnectionError(f"the server at {self.url} does not answer: {exc}") from exc
        if run["status"] not in FINISHED:
            return None
        return [e for e in run.get("events", []) if e["seq"] > after]

    def wait(self, run_id: str, *, timeout: float | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Wait for a run to end; returns its details (status, results, errors, events)."""
        for event in self.events(run_id, timeout=timeout):
            if on_event is not None:
                on_event(event)
        return self.get_run(run_id)


class Run:
    """A submitted run. `wait()` ends when it does; `images()` are what its output nodes saved."""

    def __init__(self, client: Client, run_id: str, summary: dict[str, Any]) -> None:
        self.client = client
        self.id = run_id
        self.details = summary

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status}>"

    @property
    def status(self) -> str:
        return self.details["status"]

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def refresh(self) -> dict[str, Any]:
        self.details = self.client.get_run(self.id)
        return self.details

    def events(self, after: int = 0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        yield from self.client.events(self.id, after=after, timeout=timeout)
        self.refresh()

    def wait(self, timeout: float | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        if self.status not in FINISHED:
            self.details = self.client.wait(self.id, timeout=timeout, on_event=on_event)
        return self.details

    def cancel(self) -> None:
        self.details = {**self.details, **self.client.cancel(self.id)}

    def raise_for_status(self) -> "Run":
        if self.wait()["status"] != "succeeded":
            raise RunFailed(self.details)
        return self

    @property
    def results(self) -> dict[str, Any]:
        return self.wait().get("results", {})

    def image_refs(self) -> list[dict[str, Any]]:
        return list(self.wait().get("images", []))

    def images(self) -> list[Any]:
        """The run's images as PIL images (waits for the run)."""
        return [self.client.image(ref) for ref in self.image_refs()]

    def save_images(self, folder: str | Path) -> list[Path]:
        return [self.client.download(ref, folder) for ref in self.image_refs()]  # type: ignore[misc]


__all__ = ["ApiError", "Client", "Run", "RunFailed", "load_workflow", "preview_image", "with_inputs"]
