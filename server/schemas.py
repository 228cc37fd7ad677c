"""Request and response bodies of the HTTP API (pydantic), and their construction from records."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from latentgraph.server.store import RunRecord

CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


class ImageRef(BaseModel):
    """An image the server can send: GET /api/images/{type}/{subfolder/}{filename}."""

    filename: str
    subfolder: str = ""
    type: Literal["output", "temp", "input"] = "output"


class SubmitRun(BaseModel):
    workflow: dict[str, Any] = Field(description="the workflow document (format latentgraph/workflow@1)")
    client_id: str | None = Field(default=None, pattern=CLIENT_ID_PATTERN,
                                  description="who submits: that client's websocket gets this run's events")
    priority: int = Field(default=0, ge=-100, le=100,
                          description="higher runs sooner; equal priorities run in submission order")
    outputs: list[str] | None = Field(default=None, max_length=1000,
                                      description="run only what these output nodes need (default: every output node)")


class RunSummary(BaseModel):
    id: str
    status: RunStatus
    priority: int = 0
    client_id: str | None = None
    name: str | None = Field(default=None, description="the workflow's meta.name")
    created: float = Field(description="seconds since the epoch")
    started: float | None = None
    finished: float | None = None
    position: int | None = Field(default=None, description="queued runs ahead of this one (0: next); null unless queued")
    error: str | None = Field(default=None, description="why it failed, was cancelled or was interrupted")
    images: list[ImageRef] = Field(default_factory=list, description="images its output nodes saved or previewed")

    @classmethod
    def of(cls, run: RunRecord, position: int | None = None) -> "RunSummary":
        return cls(id=run.id, status=run.status, priority=run.priority, client_id=run.client_id, name=run.name,
                   created=run.created, started=run.started, finished=run.finished, position=position,
                   error=run.error, images=[ImageRef(**_image(i)) for i in run.images])


class RunEvent(BaseModel):
    type: str = Field(description="run_queued, run_started, node_started, node_progress, node_cached, node_finished, "
                                  "node_failed, node_skipped, run_finished, run_cancelled or run_interrupted")
    run_id: str
    seq: int = Field(description="1, 2, 3... in the order the events happened")
    timestamp: float
    data: dict[str, Any]


class RunDetail(RunSummary):
    workflow: dict[str, Any]
    outputs: list[str] | None = None
    results: dict[str, dict[str, Any]] = Field(default_factory=dict, description="output node → what it reported")
    errors: list[dict[str, Any]] = Field(default_factory=list, description="node failures or validation problems")
    summary: dict[str, Any] = Field(default_factory=dict, description="executed, cached and skipped nodes; seconds")
    truncated: list[dict[str, Any]] = Field(
        default_factory=list, description="values stored shortened (see --max-stored-value): each "
                                          "{path, length, kept}, e.g. {\"path\": \"results.show.value\", ...}")
    events: list[RunEvent] = Field(default_factory=list)

    @classmethod
    def of_run(cls, run: RunRecord, position: int | None, events: list[dict[str, Any]]) -> "RunDetail":
        summary = RunSummary.of(run, position).model_dump()
        return cls(**summary, workflow=run.workflow, outputs=run.outputs, results=run.results, errors=run.errors,
                   summary=run.summary, truncated=run.summary.get("truncated") or [],
                   events=[RunEvent(**e) for e in events])


class RunList(BaseModel):
    runs: list[RunSummary]
    total: int = Field(description="runs matching the filter, on every page")
    limit: int
    offset: int


class Deleted(BaseModel):
    deleted: int


class QueueState(BaseModel):
    running: list[RunSummary]
    pending: list[RunSummary] = Field(description="queued runs in the order they will run")
    pending_count: int = Field(description="how many runs are queued (the websocket's list stops at 200)")


class QueueOrder(BaseModel):
    run_ids: list[str] = Field(min_length=1, max_length=10000,
                               description="queued runs to move to the front, in this order; the others keep theirs")


class Removed(BaseModel):
    removed: list[str] = Field(description="ids of the runs taken out of the queue (now cancelled)")


class UploadedImage(ImageRef):
    name: str = Field(description="the name a load_image node takes (subfolder/filename)")
    width: int
    height: int
    format: str
    size: int = Field(description="bytes")


class ImageList(BaseModel):
    images: list[ImageRef]
    total: int


class ModelFile(BaseModel):
    name: str
    size: int = Field(description="bytes")


class ModelList(BaseModel):
    kind: str
    models: list[ModelFile]
    folders: list[str] = Field(description="the folders searched, ours first")


class ModelKinds(BaseModel):
    kinds: dict[str, list[str]] = Field(description="kind (checkpoints, vae, loras) → model names")


class WorkflowInfo(BaseModel):
    name: str = Field(description="the name to GET, PUT or DELETE it by (no .json)")
    bundled: bool = Field(description="shipped with Latentgraph: read-only")
    title: str | None = None
    description: str | None = None
    modified: float
    size: int


class WorkflowList(BaseModel):
    workflows: list[WorkflowInfo]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    worker: bool = Field(description="the worker thread is alive")
    queued: int
    running: int
    store: str = Field("ok", description="'ok', or what is wrong with the run database (e.g. damaged: then "
                                        "restart with --restore-backup)")


def _image(image: dict[str, Any]) -> dict[str, Any]:
    return {"filename": str(image.get("filename", "")), "subfolder": str(image.get("subfolder", "") or ""),
            "type": image.get("type") if image.get("type") in ("output", "temp", "input") else "output"}


def queue_state(running: list[RunRecord], pending: list[RunRecord], limit: int | None = None) -> dict[str, Any]:
    """The queue as JSON (the websocket's `queue` message and GET /api/queue), pending in run order."""
    shown = pending if limit is None else pending[:limit]
    return {
        "running": [RunSummary.of(r).model_dump(mode="json") for r in running],
        "pending": [RunSummary.of(r, i).model_dump(mode="json") for i, r in enumerate(shown)],
        "pending_count": len(pending),
    }


__all__ = ["CLIENT_ID_PATTERN", "Deleted", "Health", "ImageList", "ImageRef", "ModelFile", "ModelKinds", "ModelList",
           "QueueOrder", "QueueState", "Removed", "RunDetail", "RunEvent", "RunList", "RunStatus", "RunSummary",
           "SubmitRun", "UploadedImage", "WorkflowInfo", "WorkflowList", "queue_state"]
