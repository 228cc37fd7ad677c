"""Saved workflows: the bundled ones (read-only) and the user's, by name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from latentgraph.engine.workflow import WorkflowFormatError
from latentgraph.nodes.folders import UnsafeName
from latentgraph.server.errors import ERROR_RESPONSES, ApiError
from latentgraph.server.schemas import WorkflowInfo, WorkflowList
from latentgraph.server.state import ServerState, get_state
from latentgraph.server.workflow_library import WorkflowEntry, check_name

router = APIRouter(prefix="/api/workflows", tags=["workflows"], responses=ERROR_RESPONSES)


def _info(entry: WorkflowEntry) -> WorkflowInfo:
    return WorkflowInfo(name=entry.name, bundled=entry.bundled, title=entry.title, description=entry.description,
                        modified=entry.modified, size=entry.size)


def _checked(name: str) -> str:
    try:
        return check_name(name)
    except UnsafeName as exc:
        raise ApiError(400, "unsafe_name", f"bad workflow name: {exc}") from None


@router.get("", summary="List saved workflows", response_model=WorkflowList)
def list_workflows(state: ServerState = Depends(get_state)) -> WorkflowList:
    """The user's workflows, then the bundled ones; `title` and `description` come from `meta`."""
    return WorkflowList(workflows=[_info(e) for e in state.workflows.list()])


@router.post("/import", summary="Convert a ComfyUI workflow (JSON or PNG)",
             responses={200: {"description": "{workflow, report}: the converted workflow and what did not carry over"}})
async def import_workflow(request: Request, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The body is the file as it is: a ComfyUI UI-format or API-format workflow (JSON), a PNG
    carrying one, or a Latentgraph workflow (returned as it is). Answers 200 with the converted
    workflow and the import report, also when some nodes could not be mapped (`report.ok` is false
    and the report names them); 400 when the body is no workflow at all."""
    from starlette.concurrency import run_in_threadpool

    from latentgraph.nodes.comfyui import ComfyImportError, import_document

    data = await request.body()
    if len(data) > state.config.max_upload_bytes:
        raise ApiError(413, "too_large", f"the file is {len(data):,} bytes; at most {state.config.max_upload_bytes:,} "
                                         "are accepted")
    try:
        result = await run_in_threadpool(import_document, data, registry=state.registry,
                                         services=state.executor.services)
    except ComfyImportError as exc:
        raise ApiError(400, "not_a_workflow", str(exc)) from None
    return {"workflow": result.workflow, "report": result.report.to_dict()}


@router.get("/{name:path}", summary="One workflow document",
            responses={200: {"description": "the workflow JSON, as saved"}})
def get_workflow(name: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The user's workflow of that name, else the bundled one."""
    entry = state.workflows.find(_checked(name))
    if entry is None:
        raise ApiError(404, "workflow_not_found", f"there is no workflow {name!r}")
    return state.workflows.read(entry)


@router.put("/{name:path}", summary="Save a workflow", response_model=WorkflowInfo,
            responses={201: {"model": WorkflowInfo, "description": "created"}})
def save_workflow(name: str, response: Response, document: dict[str, Any] = Body(..., description="the workflow document"),
                  state: ServerState = Depends(get_state)) -> WorkflowInfo:
    """Create or replace a user workflow. It must be a workflow document (422 otherwise), but it
    need not be valid yet: a graph in progress can be saved. Bundled names are read-only (409)."""
    name = _checked(name)
    if state.workflows.is_bundled(name):
        raise ApiError(409, "workflow_read_only", f"{name!r} is a bundled workflow and read-only; save it under another name")
    try:
        entry, created = state.workflows.save(name, document)
    except WorkflowFormatError as exc:
        errors = [{"node": node, "input": input_name if node is not None else path or None, "path": path or None,
                   "code": code, "message": message}
                  for (path, code, message), (node, input_name) in zip(exc.problems, exc.locations)]
        raise ApiError(422, "invalid_workflow", f"not a workflow document: {exc}", errors) from None
    response.status_code = 201 if created else 200
    return _info(entry)


@router.delete("/{name:path}", status_code=204, summary="Delete a user workflow")
def delete_workflow(name: str, state: ServerState = Depends(get_state)) -> Response:
    name = _checked(name)
    if not state.workflows.delete(name):
        if state.workflows.is_bundled(name):
            raise ApiError(409, "workflow_read_only", f"{name!r} is a bundled workflow and cannot be deleted")
        raise ApiError(404, "workflow_not_found", f"there is no user workflow {name!r}")
    return Response(status_code=204)
