"""Models on disk by kind (checkpoints, vae, loras), listed fresh on every request."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from latentgraph.nodes.folders import KIND_ALIASES
from latentgraph.server.errors import ERROR_RESPONSES, ApiError
from latentgraph.server.schemas import ModelFile, ModelKinds, ModelList
from latentgraph.server.state import ServerState, get_state

router = APIRouter(prefix="/api/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("", summary="Model names of every kind", response_model=ModelKinds)
def list_all_models(state: ServerState = Depends(get_state)) -> ModelKinds:
    """The folders are scanned on each request, so a file just copied in is listed (and offered
    by the loader nodes' choices in the catalog) without a restart."""
    return ModelKinds(kinds={kind: state.folders.list_models(kind) for kind in KIND_ALIASES})


@router.get("/{kind}", summary="Models of one kind, with sizes", response_model=ModelList)
def list_models(kind: str, state: ServerState = Depends(get_state)) -> ModelList:
    if kind not in KIND_ALIASES:
        raise ApiError(404, "unknown_model_kind", f"there is no model kind {kind!r} (kinds: {', '.join(KIND_ALIASES)})")
    folders = state.folders
    models = []
    for name in folders.list_models(kind):
        try:
            size = folders.model_path(kind, name).stat().st_size
        except OSError:
            continue  # removed while we looked
        models.append(ModelFile(name=name, size=size))
    return ModelList(kind=kind, models=models, folders=[str(d) for d in folders.model_dirs(kind)])
