"""GET /api/nodes: the node catalog, the editor's palette."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from latentgraph.server.errors import ApiError, ErrorBody
from latentgraph.server.state import ServerState, get_state

router = APIRouter(prefix="/api/nodes", tags=["nodes"])

CATALOG_EXAMPLE = [{
    "type": "int_math", "version": 1, "category": "primitives", "title": "Integer math",
    "description": "Combine two integers: a (operation) b.", "output_node": False, "cacheable": True,
    "inputs": [{"name": "a", "type": "INT", "required": False, "default": 0, "link_only": False, "description": "left operand"}],
    "outputs": [{"name": "value", "type": "INT", "description": "the result"}],
}]


@router.get("", summary="The node catalog",
            responses={200: {"description": "every node type, by category then type: inputs (port type, default, "
                                            "bounds, choices), outputs, description",
                             "content": {"application/json": {"example": CATALOG_EXAMPLE}}},
                       304: {"description": "unchanged since the ETag sent in If-None-Match"}})
def node_catalog(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Built once and served from memory; inputs whose choices are files (checkpoints, input
    images) are listed again on each request, and the catalog changes only when they do. Send
    the ETag back in If-None-Match to get a 304 when nothing changed."""
    body, etag = state.catalog.get()
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/{node_type}", summary="One node type", responses={404: {"model": ErrorBody}})
def node_type(node_type: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    entry = state.catalog.entry(node_type)
    if entry is None:
        raise ApiError(404, "unknown_node_type", f"there is no node type {node_type!r}")
    return entry
