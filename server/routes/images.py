"""Images: saved outputs, previews and inputs by name; thumbnails; uploads into the input folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from latentgraph.nodes.folders import IMAGE_EXTENSIONS, LinkOutside, UnsafeName
from latentgraph.server import masks
from latentgraph.server.errors import ERROR_RESPONSES, ApiError
from latentgraph.server.schemas import ImageList, ImageRef, UploadedImage
from latentgraph.server.state import ServerState, get_state
from latentgraph.server.thumbnails import FORMATS, SIZES, ImageTooLarge
from latentgraph.server.uploads import MASK_FOLDER, check_image, read_upload, stored_name

router = APIRouter(prefix="/api", tags=["images"], responses=ERROR_RESPONSES)

ImageType = Literal["output", "temp", "input"]
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}


def _folder(state: ServerState, kind: str) -> Path:
    folders = state.folders
    return {"output": folders.outputs, "temp": folders.temp, "input": folders.inputs}[kind]


def image_path(state: ServerState, kind: str, name: str) -> Path:
    """The file of an image name inside its folder; 400 for a name that would leave it, 403 for a
    symbolic link that leads out of it (unless --follow-symlinks), 404 if absent."""
    try:
        path = state.folders.image_path(_folder(state, kind), name)
    except LinkOutside as exc:
        raise ApiError(403, "link_outside_folder", str(exc)) from None
    except UnsafeName as exc:
        raise ApiError(400, "unsafe_name", f"bad image name: {exc}") from None
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ApiError(404, "image_not_found", f"{name!r} is not an image ({', '.join(IMAGE_EXTENSIONS)})")
    if not path.is_file():
        raise ApiError(404, "image_not_found", f"there is no {kind} image {name!r}")
    return path


@router.get("/images", summary="List images of a folder", response_model=ImageList)
def list_images(type: ImageType = "output", limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                state: ServerState = Depends(get_state)) -> ImageList:
    """Images in the output (default), temp or input folder, newest first."""
    folder = _folder(state, type)
    files = []
    for name in state.folders.list_images(folder):  # links leading out of the folder left out
        try:
            files.append((folder / name, (folder / name).stat().st_mtime))
        except OSError:
            continue  # removed while we looked
    files = [path for path, _ in sorted(files, key=lambda item: item[1], reverse=True)]
    refs = []
    for path in files[offset:offset + limit]:
        relative = path.relative_to(folder)
        subfolder = relative.parent.as_posix()
        refs.append(ImageRef(filename=relative.name, subfolder="" if subfolder == "." else subfolder, type=type))
    return ImageList(images=refs, total=len(files))


@router.get("/images/{type}/{name:path}", summary="An image file", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                             "description": "the file as saved; PNGs the server made carry their workflow "
                                            "(text chunk 'workflow')"}})
def get_image(request: Request, type: ImageType, name: str,
              download: bool = Query(False, description="as an attachment"),
              channel: Literal["rgba", "rgb", "mask"] = Query(
                  "rgba", description="rgba: the file as saved; rgb: its colours without the alpha channel (PNG); "
                                      "mask: what load_image's MASK output is, as a greyscale PNG (white = repaint, "
                                      "255 - alpha)"),
              state: ServerState = Depends(get_state)) -> Response:
    """`name` is `subfolder/filename` as a run's results give them. Conditional requests (ETag,
    If-Modified-Since) are answered with 304. The `rgb` and `mask` views (EXIF rotation applied,
    as load_image applies it) are what the editor's mask painter opens."""
    path = image_path(state, type, name)
    if channel != "rgba":
        return _channel_view(request, state, path, name, channel)
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()), content_disposition_type="attachment"
                        if download else "inline", filename=path.name, headers={"Cache-Control": "no-cache"})


@router.get("/thumbnails/{type}/{name:path}", summary="A small version of an image", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}, "image/webp": {}}}})
def get_thumbnail(type: ImageType, name: str,
                  size: int = Query(256, ge=SIZES[0], le=SIZES[1], description="longer side in pixels"),
                  format: Literal["jpeg", "webp"] = "jpeg", state: ServerState = Depends(get_state)) -> FileResponse:
    """Made on first request and kept on disk (a changed source gets a new one)."""
    path = image_path(state, type, name)
    try:
        thumbnail = state.thumbnails.get(path, size, format)
    except ImageTooLarge as exc:
        raise ApiError(422, "image_too_large", f"no thumbnail of {name!r}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(415, "not_an_image", f"{name!r} could not be read as an image: {exc}") from None
    return FileResponse(thumbnail, media_type=FORMATS[format][2], headers={"Cache-Control": "max-age=86400"})


@router.post("/images", status_code=201, summary="Upload an input image or mask", response_model=UploadedImage,
             openapi_extra={"requestBody": {"content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"},
                     "kind": {"type": "string", "enum": ["image", "mask"], "default": "image"}}}},
                 "image/png": {"schema": {"type": "string", "format": "binary"}},
                 "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={413: {"description": "file or image dimensions too large"},
                        415: {"description": "not a PNG, JPEG, WebP or BMP image"}})
async def upload_image(request: Request, kind: Literal["image", "mask"] | None = Query(None),
                       filename: str | None = Query(None, max_length=255),
                       state: ServerState = Depends(get_state)) -> UploadedImage:
    """Send a multipart form with the file in `file` (and optionally `kind=mask`), or the raw
    image as the body with an image/* Content-Type. The image is decoded in full to check it; it
    is stored unchanged under `<name>-<content hash>.<ext>` in the input folder (masks under
    `masks/`), so uploading the same file twice stores it once. Answers the name a load_image
    node takes."""
    config = state.config
    body = await request.body()  # bounded by the security middleware
    upload = await _in_thread(read_upload, body, request.headers.get("content-type", ""), filename)
    if len(upload.data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"the file is {len(upload.data):,} bytes; at most {config.max_upload_bytes:,} are accepted")
    kind = kind or upload.fields.get("kind", "image")
    if kind not in ("image", "mask"):
        raise ApiError(422, "invalid_request", f"kind must be 'image' or 'mask', got {kind!r}")
    checked = await _in_thread(check_image, upload.data, config.max_image_side, config.max_image_pixels)
    name = stored_name(upload.filename, upload.data, checked.extension)
    subfolder = MASK_FOLDER if kind == "mask" else ""
    try:
        target = state.folders.input_path(f"{subfolder}/{name}" if subfolder else name)
    except LinkOutside as exc:
        raise ApiError(403, "link_outside_folder", str(exc)) from None
    if not target.exists():
        await _in_thread(_write, target, upload.data)
    return UploadedImage(name=f"{subfolder}/{name}" if subfolder else name, filename=name, subfolder=subfolder,
                         type="input", width=checked.width, height=checked.height, format=checked.format,
                         size=len(upload.data))


def _channel_view(request: Request, state: ServerState, path: Path, name: str, channel: str) -> Response:
    stat = path.stat()
    etag = f'"{channel}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    config = state.config
    data = masks.view(path, name, channel, config.max_image_side, config.max_image_pixels)
    if data is None:  # the file is its own rgb view
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()), headers={"Cache-Control": "no-cache"})
    return Response(data, media_type="image/png", headers=headers)


@router.post("/images/mask", status_code=201, summary="Merge a painted mask into an input image's alpha",
             response_model=UploadedImage,
             openapi_extra={"requestBody": {"content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary", "description": "the mask, at the image's size"},
                     "original": {"type": "string", "description": "the image's name, as load_image takes it"},
                     "type": {"type": "string", "enum": ["input", "output", "temp"], "default": "input"},
                     "original_ref": {"type": "string", "description":
                                      'instead of original and type, as ComfyUI sends it: JSON '
                                      '{"filename", "subfolder", "type"}'},
                     "channel": {"type": "string", "enum": list(masks.CHANNELS), "default": "luminance"}}}}}}},
             responses={413: {"description": "file or image dimensions too large"},
                        415: {"description": "the mask is not a PNG, JPEG, WebP or BMP image"},
                        422: {"description": "no original named, or the mask's size is not the image's"}})
async def upload_mask(request: Request, state: ServerState = Depends(get_state)) -> UploadedImage:
    """Write a mask into a copy of an image as its alpha channel (alpha = 255 - mask: transparent
    is the area to repaint, load_image's MASK output is the mask again), saved as a new PNG in the
    input folder next to the original (an output or temp image: at the input folder's top) under
    `<stem>-masked-<content hash>.png`. The colours are the original's, exactly, even where the
    mask makes the image fully transparent, which a browser canvas cannot keep.

    `channel=luminance` (default): the mask is a greyscale picture, white = repaint.
    `channel=alpha`: the mask file's alpha becomes the image's alpha as it is, as ComfyUI's
    `/upload/mask` does. Answers the name a load_image node takes."""
    config = state.config
    body = await request.body()  # bounded by the security middleware
    upload = await _in_thread(read_upload, body, request.headers.get("content-type", ""), None)
    if len(upload.data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"the file is {len(upload.data):,} bytes; at most {config.max_upload_bytes:,} are accepted")
    fields = {**upload.fields, **{k: v for k, v in request.query_params.items() if k in ("original", "type", "channel")}}
    kind, original_name = masks.parse_original(fields)
    if kind not in ("input", "output", "temp"):
        raise ApiError(422, "invalid_request", f"type must be input, output or temp, got {kind!r}")
    channel = fields.get("channel") or "luminance"
    if channel not in masks.CHANNELS:
        raise ApiError(422, "invalid_request", f"channel must be one of {', '.join(masks.CHANNELS)}, got {channel!r}")
    original = image_path(state, kind, original_name)
    await _in_thread(check_image, upload.data, config.max_image_side, config.max_image_pixels)
    merged = await _in_thread(masks.merge_mask, original, original_name, upload.data, channel, config.max_image_side,
                              config.max_image_pixels)
    subfolder = original.parent.relative_to(_folder(state, kind).resolve()).as_posix() if kind == "input" else ""
    subfolder = "" if subfolder == "." else subfolder
    filename = masks.masked_name(original.name, merged.data)
    name = f"{subfolder}/{filename}" if subfolder else filename
    try:
        target = state.folders.input_path(name)
    except LinkOutside as exc:
        raise ApiError(403, "link_outside_folder", str(exc)) from None
    if not target.exists():
        await _in_thread(_write, target, merged.data)
    return UploadedImage(name=name, filename=filename, subfolder=subfolder, type="input", width=merged.width,
                         height=merged.height, format="PNG", size=len(merged.data))


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.part")
    temporary.write_bytes(data)
    temporary.replace(target)


async def _in_thread(function, *args):  # type: ignore[no-untyped-def]
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)
