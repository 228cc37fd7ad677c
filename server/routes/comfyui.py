"""ComfyUI's HTTP API at the root paths ComfyUI uses, so its clients work unchanged (the work is in
`server/comfyui.py`; the websocket is `/ws?clientId=...`, see `comfy_socket`). Not in the OpenAPI
description: these follow ComfyUI's protocol, not ours.

Routes: POST/GET /prompt, GET /history[/{prompt_id}], POST /history, GET /view, POST /upload/image,
POST /upload/mask, GET /object_info[/{class}], GET/POST /queue, POST /interrupt, GET /system_stats,
GET /embeddings, GET /extensions, GET /models[/{folder}]. The security checks of our own API
(loopback host, origin, token as `Authorization: Bearer` or `?token=`) apply to every one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import sys
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from latentgraph.nodes.folders import IMAGE_EXTENSIONS, KIND_ALIASES, LinkOutside, UnsafeName
from latentgraph.server import masks
from latentgraph.server.comfyui import MAX_CLIENT_ID, ComfyError
from latentgraph.server.errors import ApiError
from latentgraph.server.routes.events import refuse_socket, serve_connection
from latentgraph.server.routes.images import MEDIA_TYPES, _folder, _write, image_path
from latentgraph.server.routes.system import _meminfo, _version
from latentgraph.server.security import CHECK_ON_LOOP_BYTES, check_json_body
from latentgraph.server.state import ServerState, get_state
from latentgraph.server.uploads import check_image, parse_multipart

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)
TYPES = ("output", "input", "temp")


async def _json_body(request: Request, default: Any = None) -> Any:
    """The body as JSON, whatever its Content-Type says (ComfyUI's own example client posts JSON as a
    form); checked as the security middleware checks JSON bodies."""
    body = await request.body()  # bounded by the security middleware
    if not body.strip():
        return default
    refusal = check_json_body(body) if len(body) <= CHECK_ON_LOOP_BYTES else \
        await run_in_threadpool(check_json_body, body)
    if refusal is not None:
        raise ApiError(refusal.status, refusal.code, refusal.detail, refusal.errors)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not JSON: {exc}") from None


# --- prompts ---------------------------------------------------------------------------------------

@router.post("/prompt")
async def post_prompt(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Queue a prompt (ComfyUI's API format): 200 {prompt_id, number, node_errors: {}}, or 400
    {"error": {type, message, details, extra_info}, "node_errors": {id: {errors, dependent_outputs,
    class_type}}} naming what cannot run here and why."""
    try:
        body = await _json_body(request)
        answer = await run_in_threadpool(state.comfy.submit, body)
    except ComfyError as exc:
        return JSONResponse(exc.body, status_code=400)
    except ApiError as exc:
        if exc.status_code != 400:
            raise
        return JSONResponse({"error": {"type": "invalid_prompt", "message": exc.detail, "details": "",
                                       "extra_info": {}}, "node_errors": {}}, status_code=400)
    return JSONResponse(answer)


@router.get("/prompt")
def get_prompt(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": state.comfy.queue_remaining()}}


@router.get("/history")
def get_history(max_items: int | None = None, offset: int = -1, state: ServerState = Depends(get_state)) -> Response:
    if max_items is not None and max_items < 0:
        raise ApiError(400, "invalid_request", "max_items must be 0 or more")
    return _json(state.comfy.history(max_items=max_items, offset=offset))


@router.get("/history/{prompt_id}")
def get_history_item(prompt_id: str, state: ServerState = Depends(get_state)) -> Response:
    return _json(state.comfy.history(prompt_id))


@router.post("/history")
async def post_history(request: Request, state: ServerState = Depends(get_state)) -> Response:
    clear, delete = _clear_delete(await _json_body(request, {}))
    await run_in_threadpool(state.comfy.change_history, clear, delete)
    return Response(status_code=200)


@router.get("/queue")
def get_queue(state: ServerState = Depends(get_state)) -> Response:
    return _json(state.comfy.queue())


@router.post("/queue")
async def post_queue(request: Request, state: ServerState = Depends(get_state)) -> Response:
    clear, delete = _clear_delete(await _json_body(request, {}))
    await run_in_threadpool(state.comfy.change_queue, clear, delete)
    return Response(status_code=200)


@router.post("/interrupt")
async def post_interrupt(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Stop the running prompt: the one named by `prompt_id` (body) if given (nothing when it is not
    running), else the one running; with several running, the calling client's (`client_id` in the
    body, or `clientId` in the query), else all of them."""
    body = await _json_body(request, {})
    body = body if isinstance(body, dict) else {}
    prompt_id = body.get("prompt_id") if isinstance(body.get("prompt_id"), str) else None
    client_id = body.get("client_id")
    client_id = client_id if isinstance(client_id, str) else request.query_params.get("clientId")
    state.comfy.interrupt(prompt_id, client_id)
    return Response(status_code=200)


def _clear_delete(body: Any) -> tuple[bool, list[str]]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", 'the body must be a JSON object: {"clear": true} or {"delete": [ids]}')
    delete = body.get("delete", [])
    if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
        raise ApiError(400, "invalid_request", "delete must be a list of prompt ids")
    return bool(body.get("clear")), delete


def _json(value: Any) -> Response:
    return Response(json.dumps(value, separators=(",", ":"), default=str), media_type="application/json")


# --- images ----------------------------------------------------------------------------------------

def _annotated(filename: str, kind: str | None) -> tuple[str, str | None]:
    """ComfyUI's "name.png [output]" names say their folder."""
    for folder in TYPES:
        suffix = f" [{folder}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], folder
    return filename, kind


def _name(subfolder: str, filename: str) -> str:
    subfolder = subfolder.replace("\\", "/").strip("/")
    return f"{subfolder}/{filename}" if subfolder else filename


@router.get("/view")
def view(request: Request, filename: str | None = None, subfolder: str = "", type: str | None = None,
         preview: str | None = None, channel: str | None = None, state: ServerState = Depends(get_state)) -> Response:
    """An image of the output (default), input or temp folder. `channel=rgb`: its colours without
    alpha; `preview=jpeg;90` or `webp;90`: re-encoded (smaller)."""
    if not filename:
        raise ApiError(404, "image_not_found", "no filename given")
    filename, kind = _annotated(filename, type)
    kind = kind or "output"
    if kind not in TYPES:
        raise ApiError(400, "invalid_request", f"type must be output, input or temp, got {kind!r}")
    name = _name(subfolder, filename)
    path = image_path(state, kind, name)
    config = state.config
    if preview:
        return _preview(path, name, preview, channel, config.max_image_side, config.max_image_pixels)
    if channel == "rgb":
        data = masks.view(path, name, "rgb", config.max_image_side, config.max_image_pixels)
        if data is not None:
            return Response(data, media_type="image/png", headers={"Content-Disposition": f'filename="{path.name}"'})
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()), content_disposition_type="inline",
                        filename=path.name, headers={"Cache-Control": "no-cache"})


def _preview(path: Path, name: str, preview: str, channel: str | None, max_side: int, max_pixels: int) -> Response:
    kind, _, quality = preview.partition(";")
    kind = kind if kind in ("webp", "jpeg") and "a" not in (channel or "") else "webp"
    level = int(quality) if quality.isdigit() and 1 <= int(quality) <= 100 else 90
    with masks.open_bounded(path, name, max_side, max_pixels) as image:
        try:
            picture = image.convert("RGB") if kind == "jpeg" or channel == "rgb" else image.convert("RGBA")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ApiError(415, "not_an_image", f"{name!r} could not be decoded: {exc}") from None
    buffer = io.BytesIO()
    picture.save(buffer, format=kind.upper(), quality=level)
    return Response(buffer.getvalue(), media_type=f"image/{kind}",
                    headers={"Content-Disposition": f'filename="{PurePosixPath(name).stem}.{kind}"'})


def _form(body: bytes, content_type: str) -> tuple[tuple[str, bytes] | None, dict[str, str]]:
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send a multipart/form-data form with the file in 'image'")
    upload, fields = None, {}
    for disposition, content in parse_multipart(body, content_type):
        if disposition.get("name") == "image" and "filename" in disposition:
            upload = (disposition["filename"], content)
        elif disposition.get("name") and len(content) <= 10_000:
            fields[disposition["name"]] = content.decode("utf-8", "replace")
    return upload, fields


def _store(state: ServerState, data: bytes, filename: str, subfolder: str, kind: str, overwrite: bool,
           extension: str) -> dict[str, str]:
    """Write an upload as ComfyUI does: under its own name in `subfolder` of the folder; an existing
    file of that name is replaced with `overwrite`, kept when it holds the same bytes, else the new
    one is named "name (1).png", "name (2).png", ..."""
    if kind not in TYPES:
        raise ApiError(400, "invalid_request", f"type must be input, temp or output, got {kind!r}")
    base = PurePosixPath(filename.replace("\\", "/")).name.strip()
    if not base or base.startswith("."):
        raise ApiError(400, "unsafe_name", f"bad file name {filename!r}")
    stem, suffix = PurePosixPath(base).stem, PurePosixPath(base).suffix
    if suffix.lower() not in IMAGE_EXTENSIONS:  # load_image reads images by their extension
        stem, suffix = base, extension
    subfolder = subfolder.replace("\\", "/").strip("/")
    folder = _folder(state, kind)
    candidate, index = f"{stem}{suffix}", 0
    while True:
        try:
            path = state.folders.image_path(folder, _name(subfolder, candidate))
        except LinkOutside as exc:
            raise ApiError(403, "link_outside_folder", str(exc)) from None
        except UnsafeName as exc:
            raise ApiError(400, "unsafe_name", f"bad file name: {exc}") from None
        if overwrite or not path.exists():
            _write(path, data)
            break
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            break  # the same image again: stored once
        index += 1
        candidate = f"{stem} ({index}){suffix}"
    return {"name": candidate, "subfolder": subfolder, "type": kind}


@router.post("/upload/image")
async def upload_image(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Multipart `image` (the file), `type` (input, default; temp; output), `subfolder`, `overwrite`
    ("true" or "1"). Answers {name, subfolder, type}: a LoadImage takes "subfolder/name" (or name)."""
    body = await request.body()  # bounded by the security middleware
    upload, fields = _form(body, request.headers.get("content-type", ""))
    if upload is None:
        raise ApiError(400, "no_file", "the form has no file field named 'image'")
    config = state.config
    filename, data = upload
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"the file is {len(data):,} bytes; at most {config.max_upload_bytes:,} are accepted")
    checked = await run_in_threadpool(check_image, data, config.max_image_side, config.max_image_pixels)
    stored = await run_in_threadpool(_store, state, data, filename, fields.get("subfolder", ""),
                                     fields.get("type") or "input", fields.get("overwrite") in ("true", "1"),
                                     checked.extension)
    return JSONResponse(stored)


@router.post("/upload/mask")
async def upload_mask(request: Request, state: ServerState = Depends(get_state)) -> Response:
    """Multipart `image` (the mask: its alpha becomes the original's alpha, as ComfyUI's mask editor
    sends it), `original_ref` (JSON {filename, subfolder, type}: the image masked; type defaults to
    output), and `type`, `subfolder`, `overwrite` for where the result is stored, as /upload/image."""
    body = await request.body()
    upload, fields = _form(body, request.headers.get("content-type", ""))
    if upload is None:
        raise ApiError(400, "no_file", "the form has no file field named 'image'")
    try:
        ref = json.loads(fields.get("original_ref", ""))
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
        raise ApiError(400, "invalid_request", 'original_ref must be JSON like {"filename": "photo.png", '
                                               '"subfolder": "", "type": "input"}')
    ref_name, ref_kind = _annotated(ref["filename"], ref.get("type") if isinstance(ref.get("type"), str) else None)
    ref_kind = ref_kind or "output"
    if ref_kind not in TYPES:
        raise ApiError(400, "invalid_request", f"original_ref's type must be output, input or temp, got {ref_kind!r}")
    subfolder = ref.get("subfolder") if isinstance(ref.get("subfolder"), str) else ""
    original_name = _name(subfolder, ref_name)
    original = image_path(state, ref_kind, original_name)
    config = state.config
    filename, data = upload
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"the file is {len(data):,} bytes; at most {config.max_upload_bytes:,} are accepted")
    await run_in_threadpool(check_image, data, config.max_image_side, config.max_image_pixels)
    merged = await run_in_threadpool(masks.merge_mask, original, original_name, data, "alpha", config.max_image_side,
                                     config.max_image_pixels)
    target = f"{PurePosixPath(filename.replace(chr(92), '/')).stem or 'mask'}.png"
    stored = await run_in_threadpool(_store, state, merged.data, target, fields.get("subfolder", ""),
                                     fields.get("type") or "input", fields.get("overwrite") in ("true", "1"), ".png")
    return JSONResponse(stored)


# --- node types, models, system --------------------------------------------------------------------

@router.get("/object_info")
def get_object_info(state: ServerState = Depends(get_state)) -> Response:
    from latentgraph.nodes.comfyui import object_info

    return _json(object_info(state.registry, state.executor.services))


@router.get("/object_info/{node_class}")
def get_object_info_node(node_class: str, state: ServerState = Depends(get_state)) -> Response:
    from latentgraph.nodes.comfyui import object_info

    info = object_info(state.registry, state.executor.services)
    return _json({node_class: info[node_class]} if node_class in info else {})


@router.get("/embeddings")
def get_embeddings(state: ServerState = Depends(get_state)) -> list[str]:
    return [str(PurePosixPath(name).with_suffix("")) for name in state.folders.list_models("embeddings")]


@router.get("/extensions")
def get_extensions() -> list[str]:
    return []  # no ComfyUI front-end extensions here


@router.get("/models")
def get_model_folders() -> list[str]:
    return list(KIND_ALIASES)


@router.get("/models/{folder}")
def get_models(folder: str, state: ServerState = Depends(get_state)) -> list[str]:
    kind = next((k for k, aliases in KIND_ALIASES.items() if folder == k or folder in aliases), None)
    if kind is None:
        raise ApiError(404, "unknown_model_kind", f"there is no model folder {folder!r} (folders: "
                                                  f"{', '.join(KIND_ALIASES)})")
    return state.folders.list_models(kind)


@router.get("/system_stats")
def system_stats(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """ComfyUI's system facts: the machine's memory and the device models run on, with its memory."""
    memory = _meminfo()
    ram_total, ram_free = memory.get("MemTotal", 0), memory.get("MemAvailable", 0)
    system = {"os": os.name, "ram_total": ram_total, "ram_free": ram_free, "python_version": sys.version,
              "pytorch_version": _version("torch"), "embedded_python": False, "latentgraph_version": state.version,
              "platform": platform.platform()}
    return {"system": system, "devices": [_device(state, ram_total, ram_free)]}


def _device(state: ServerState, ram_total: int, ram_free: int) -> dict[str, Any]:
    try:
        device = state.executor.services.placement.device  # imports torch once: what models run on
    except (ImportError, RuntimeError, ValueError) as exc:
        log.warning("system_stats: no device: %s", exc)
        return {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                "torch_vram_total": ram_total, "torch_vram_free": ram_free}
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        reserved, allocated = torch.cuda.memory_reserved(index), torch.cuda.memory_allocated(index)
        name = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        return {"name": name, "type": "cuda", "index": index, "vram_total": total, "vram_free": free,
                "torch_vram_total": reserved, "torch_vram_free": reserved - allocated}
    return {"name": str(device), "type": device.type, "index": device.index, "vram_total": ram_total,
            "vram_free": ram_free, "torch_vram_total": ram_total, "torch_vram_free": ram_free}


# --- the websocket ---------------------------------------------------------------------------------

async def comfy_socket(websocket: WebSocket) -> None:
    """/ws?clientId=...: ComfyUI's messages (see server/comfyui.py). Messages from the client are read
    and ignored, as ComfyUI does."""
    sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
    if len(sid) > MAX_CLIENT_ID:
        await refuse_socket(websocket, "invalid_client_id", f"clientId must be at most {MAX_CLIENT_ID} characters")
        return
    bridge = get_state(websocket).comfy
    await websocket.accept()
    await serve_connection(websocket, bridge.connect(websocket, sid), bridge.disconnect)

