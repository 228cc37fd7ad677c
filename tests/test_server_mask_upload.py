"""The mask painter's server side: POST /api/images/mask merges a painted mask into a copy of an
input image as its alpha (alpha = 255 - mask, ComfyUI's convention), keeping every colour exactly,
so load_image's MASK output is the painted mask again; and the rgb / mask views of an image the
painter opens (GET /api/images/{type}/{name}?channel=...). Checked on a real server, against
numpy arrays of what was painted, and through load_image itself."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from latentgraph.engine import CancelToken, RunContext
from latentgraph.nodes.folders import Folders
from latentgraph.nodes.images import LoadImage
from latentgraph.nodes.services import Services
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)

WIDTH, HEIGHT = 48, 32


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """Noise in every channel: any colour lost or moved shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def painted(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A mask as the painter makes one: a hard stroke (255), a soft edge (a ramp), nothing elsewhere."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[4:20, 6:18] = 255
    mask[4:20, 18:18 + 26] = np.linspace(250, 10, 26).astype(np.uint8)
    return mask


def upload_image(api, data: bytes, filename: str = "photo.png") -> str:
    response = api.post("/api/images", files={"file": (filename, data, "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["name"]


def upload_mask(api, mask: bytes, field: str = "file", **form: str):
    return api.post("/api/images/mask", files={field: ("mask.png", mask, "image/png")}, data=form)


def rgba_of(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        return np.asarray(image)


def load_image(root, name: str):
    """load_image's outputs for `name`, as a run would make them."""
    folders = Folders(models=root / "models", inputs=root / "input", outputs=root / "output", temp=root / "temp")
    services = Services(folders=folders)
    ctx = RunContext("run", "load", "load_image", services, CancelToken(), lambda *_: None)
    outputs = LoadImage.model_construct(image=name).run(ctx)
    return outputs.image[0].numpy(), outputs.mask[0].numpy()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- merging -------------------------------------------------------------------------------------

def test_a_painted_mask_becomes_the_alpha_of_a_copy_and_load_image_reads_it_back(api, tmp_path):
    colours, mask = photo(), painted()
    original_bytes = encode(Image.fromarray(colours))
    name = upload_image(api, original_bytes)
    response = upload_mask(api, encode(Image.fromarray(mask, "L")), original=name)
    assert response.status_code == 201, response.text
    body = response.json()
    stored = tmp_path / "input" / body["name"]
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()[:16]
    assert body == {"name": f"photo-masked-{digest}.png", "filename": f"photo-masked-{digest}.png", "subfolder": "",
                    "type": "input", "width": WIDTH, "height": HEIGHT, "format": "PNG", "size": stored.stat().st_size}
    merged = rgba_of(stored)
    assert np.array_equal(merged[..., :3], colours)  # every colour, also under alpha 0 (mask 255)
    assert np.array_equal(merged[..., 3], 255 - mask)
    assert (mask == 255).sum() == 16 * 12 and (merged[..., 3] == 0).sum() == 16 * 12
    assert (tmp_path / "input" / name).read_bytes() == original_bytes  # the original is left as it was

    image, loaded_mask = load_image(tmp_path, body["name"])
    assert np.array_equal(np.round(image * 255).astype(np.uint8), colours)
    np.testing.assert_allclose(loaded_mask, mask / 255.0, rtol=0, atol=1e-6)
    assert loaded_mask[10, 10] == 1.0 and loaded_mask[0, 0] == 0.0

    again = upload_mask(api, encode(Image.fromarray(mask, "L")), original=name)  # same mask: same file, once
    assert again.json() == body
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == sorted([name, body["name"]])


def test_the_painter_views_are_the_colours_and_the_mask_load_image_sees(api, tmp_path):
    colours, mask = photo(seed=1), painted()
    original_bytes = encode(Image.fromarray(colours))
    name = upload_image(api, original_bytes)
    masked = upload_mask(api, encode(Image.fromarray(mask, "L")), original=name).json()["name"]

    rgb = api.get(f"/api/images/input/{masked}", params={"channel": "rgb"})
    assert rgb.status_code == 200 and rgb.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(rgb.content)) as view:
        assert view.mode == "RGB" and np.array_equal(np.asarray(view), colours)
    grey = api.get(f"/api/images/input/{masked}", params={"channel": "mask"})
    with Image.open(io.BytesIO(grey.content)) as view:
        assert view.mode == "L" and np.array_equal(np.asarray(view), mask)
    unchanged = api.get(f"/api/images/input/{masked}", headers={"If-None-Match": grey.headers["etag"]},
                        params={"channel": "mask"})
    assert unchanged.status_code == 304
    assert api.get(f"/api/images/input/{masked}", headers={"If-None-Match": grey.headers["etag"]},
                   params={"channel": "rgb"}).status_code == 200  # another view, another tag

    # An image without alpha: its rgb view is the file itself, its mask is empty.
    assert api.get(f"/api/images/input/{name}", params={"channel": "rgb"}).content == original_bytes
    with Image.open(io.BytesIO(api.get(f"/api/images/input/{name}", params={"channel": "mask"}).content)) as view:
        assert view.size == (WIDTH, HEIGHT) and not np.asarray(view).any()
    assert api.get(f"/api/images/input/{name}", params={"channel": "alpha"}).status_code == 422
    assert api.get("/api/images/input/missing.png", params={"channel": "mask"}).json()["code"] == "image_not_found"


def test_masking_a_masked_image_again_replaces_its_alpha_and_keeps_its_colours(api, tmp_path):
    colours = photo(seed=2)
    name = upload_image(api, encode(Image.fromarray(colours)), filename="cat.png")
    first = upload_mask(api, encode(Image.fromarray(painted(), "L")), original=name).json()["name"]
    second_mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    second_mask[20:, :] = 200
    response = upload_mask(api, encode(Image.fromarray(second_mask, "L")), original=first)
    assert response.status_code == 201, response.text
    second = response.json()["name"]
    assert second.startswith("cat-masked-") and second != first and "masked-masked" not in second
    merged = rgba_of(tmp_path / "input" / second)
    assert np.array_equal(merged[..., :3], colours)  # the first mask's transparent pixels kept their colour
    assert np.array_equal(merged[..., 3], 255 - second_mask)


def test_comfyui_requests_original_ref_and_the_alpha_channel(api, tmp_path):
    """ComfyUI's mask editor sends the file in `image`, the original as `original_ref` JSON, and
    the new alpha in the mask file's alpha channel (transparent = repaint)."""
    colours = photo(seed=3)
    (tmp_path / "input" / "sub").mkdir(parents=True)
    Image.fromarray(colours).save(tmp_path / "input" / "sub" / "dog.png")
    alpha = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    alpha[:, :10] = 0
    alpha[:, 10:20] = 77
    mask_file = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    mask_file[..., 3] = alpha
    ref = json.dumps({"filename": "dog.png", "subfolder": "sub", "type": "input"})
    response = upload_mask(api, encode(Image.fromarray(mask_file, "RGBA")), field="image", original_ref=ref,
                           channel="alpha")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["subfolder"] == "sub" and body["name"] == f"sub/{body['filename']}"  # next to its original
    assert body["filename"].startswith("dog-masked-")
    merged = rgba_of(tmp_path / "input" / "sub" / body["filename"])
    assert np.array_equal(merged[..., :3], colours) and np.array_equal(merged[..., 3], alpha)
    _, loaded_mask = load_image(tmp_path, body["name"])
    assert loaded_mask[:, :10].min() == 1.0 and loaded_mask[:, 20:].max() == 0.0

    # An output image (a result to touch up) is masked into the input folder's top.
    (tmp_path / "output").mkdir(exist_ok=True)
    Image.fromarray(colours).save(tmp_path / "output" / "result_00001_.png")
    from_output = upload_mask(api, encode(Image.fromarray(painted(), "L")), original="result_00001_.png",
                              type="output").json()
    assert from_output["subfolder"] == "" and from_output["name"].startswith("result_00001_-masked-")
    assert np.array_equal(rgba_of(tmp_path / "input" / from_output["name"])[..., :3], colours)


def test_a_luminance_mask_counts_transparent_parts_as_black_and_reads_grey_exactly(api, tmp_path):
    name = upload_image(api, encode(Image.fromarray(photo(seed=4))))
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere ...
    rgba[:, :24, 3] = 255  # ... but opaque only on the left
    merged = upload_mask(api, encode(Image.fromarray(rgba, "RGBA")), original=name).json()["name"]
    alpha = rgba_of(tmp_path / "input" / merged)[..., 3]
    assert (alpha[:, :24] == 0).all() and (alpha[:, 24:] == 255).all()

    grey = np.tile(np.arange(WIDTH, dtype=np.uint8) * 5, (HEIGHT, 1))
    as_rgb = np.repeat(grey[..., None], 3, axis=-1)  # a grey picture saved as RGB reads the same
    merged = upload_mask(api, encode(Image.fromarray(as_rgb)), original=name).json()["name"]
    assert np.array_equal(rgba_of(tmp_path / "input" / merged)[..., 3], 255 - grey)


def test_the_copy_keeps_the_original_text_chunks(api, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", '{"format": "latentgraph/workflow@1", "nodes": {}}')
    name = upload_image(api, encode(Image.fromarray(photo(seed=5)), pnginfo=info))
    merged = upload_mask(api, encode(Image.fromarray(painted(), "L")), original=name).json()["name"]
    with Image.open(tmp_path / "input" / merged) as image:
        assert image.text["workflow"] == '{"format": "latentgraph/workflow@1", "nodes": {}}'


def test_an_exif_rotated_photo_is_masked_upright_as_load_image_reads_it(api, tmp_path):
    colours = photo(40, 30, seed=6)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x30, shown rotated a quarter turn: 30x40
    name = upload_image(api, encode(Image.fromarray(colours), "JPEG", exif=exif, quality=95), filename="phone.jpg")
    sideways = upload_mask(api, encode(Image.new("L", (40, 30), 255)), original=name)
    assert sideways.status_code == 422 and sideways.json()["code"] == "mask_size_mismatch"
    assert "the mask is 40x30" in sideways.json()["detail"] and "is 30x40" in sideways.json()["detail"]
    assert "EXIF rotation" in sideways.json()["detail"]

    mask = np.zeros((40, 30), dtype=np.uint8)
    mask[:10] = 255
    response = upload_mask(api, encode(Image.fromarray(mask, "L")), original=name)
    assert response.status_code == 201, response.text
    assert (response.json()["width"], response.json()["height"]) == (30, 40)
    with Image.open(tmp_path / "input" / name) as jpeg:
        upright = np.asarray(ImageOps.exif_transpose(jpeg).convert("RGB"))
    with Image.open(tmp_path / "input" / response.json()["name"]) as merged:
        assert merged.getexif().get(0x0112) is None  # no rotation left to apply twice
        assert np.array_equal(np.asarray(merged)[..., :3], upright) and np.array_equal(np.asarray(merged)[..., 3], 255 - mask)
    jpeg_image, _ = load_image(tmp_path, name)
    merged_image, merged_mask = load_image(tmp_path, response.json()["name"])
    assert np.array_equal(merged_image, jpeg_image) and np.array_equal(merged_mask, mask / np.float32(255))


# --- refusals ------------------------------------------------------------------------------------

def test_bad_requests_are_refused_clearly_and_write_nothing(api, tmp_path):
    name = upload_image(api, encode(Image.fromarray(photo(seed=7))))
    (tmp_path / "input" / "notes.png").write_text("not a picture")
    (tmp_path / "input" / "bomb.png").write_bytes(header_only_png(50_000, 50_000))
    (tmp_path / "input" / "cut.png").write_bytes(encode(Image.fromarray(photo()).convert("RGBA"))[:400])  # cut short
    (tmp_path / "secret.png").write_bytes(encode(Image.fromarray(photo())))
    good = encode(Image.fromarray(painted(), "L"))
    before = sorted(p.name for p in (tmp_path / "input").iterdir())
    cases = [
        ({}, good, 422, "invalid_request", "'original'"),
        ({"original": "missing.png"}, good, 404, "image_not_found", "missing.png"),
        ({"original": "../secret.png"}, good, 400, "unsafe_name", "are not allowed in names"),
        ({"original": "/etc/passwd"}, good, 400, "unsafe_name", "absolute"),
        ({"original": name, "type": "models"}, good, 422, "invalid_request", "input, output or temp"),
        ({"original_ref": "{not json"}, good, 422, "invalid_request", "original_ref"),
        ({"original_ref": json.dumps({"subfolder": "x"})}, good, 422, "invalid_request", "filename"),
        ({"original": name, "channel": "red"}, good, 422, "invalid_request", "luminance, alpha"),
        ({"original": name}, b"#!/bin/sh\n", 415, "not_an_image", "not an image"),
        ({"original": name}, b"", 400, "empty_upload", "empty"),
        ({"original": name}, encode(Image.new("RGB", (WIDTH, HEIGHT)), "GIF"), 415, "unsupported_image_type", "GIF"),
        ({"original": name}, header_only_png(20_000, 20_000), 413, "image_too_large", "8192 pixels a side"),
        ({"original": name}, encode(Image.new("L", (WIDTH + 1, HEIGHT))), 422, "mask_size_mismatch",
         f"the mask is {WIDTH + 1}x{HEIGHT} but {name} is {WIDTH}x{HEIGHT}"),
        ({"original": "notes.png"}, good, 415, "not_an_image", "notes.png"),
        ({"original": "bomb.png"}, good, 422, "image_too_large", "bomb.png is too large"),
        ({"original": "cut.png"}, good, 415, "not_an_image", "cut.png could not be decoded"),
    ]
    for form, mask, status, code, words in cases:
        response = upload_mask(api, mask, **form)
        assert response.status_code == status, (form, response.text)
        assert response.json()["code"] == code and words in response.json()["detail"], (form, response.json())
    for view in ("rgb", "mask"):
        cut = api.get("/api/images/input/cut.png", params={"channel": view})
        assert cut.status_code == 415 and "cut.png could not be decoded" in cut.json()["detail"]
        bomb = api.get("/api/images/input/bomb.png", params={"channel": view})
        assert bomb.status_code == 422 and bomb.json()["code"] == "image_too_large"
    no_file = api.post("/api/images/mask", files={"other": ("m.png", good, "image/png")}, data={"original": name})
    assert no_file.status_code == 400 and no_file.json()["code"] == "no_file"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == before


def test_a_mask_is_bounded_as_an_upload_not_as_a_json_body(start_server, tmp_path):
    import httpx

    def noise(side: int, seed: int) -> Image.Image:
        return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8), "L")

    server = start_server(max_body_bytes=20_000, max_upload_bytes=100_000)
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        name = upload_image(api, encode(Image.new("RGB", (250, 250), (30, 60, 90))))
        assert upload_mask(api, encode(noise(250, 1), "BMP"), original=name).status_code == 201  # 63 kB > 20 kB
        too_big = upload_mask(api, encode(noise(350, 2), "BMP"), original=name)  # 123 kB: the multipart slack lets it in
        assert too_big.status_code == 413 and too_big.json()["code"] == "upload_too_large"
        assert "at most 100,000 are accepted" in too_big.json()["detail"]
        far_too_big = upload_mask(api, encode(noise(450, 3), "BMP"), original=name)  # 203 kB: refused unread
        assert far_too_big.status_code == 413 and far_too_big.json()["code"] == "body_too_large"


def test_the_openapi_description_has_the_mask_route(api):
    paths = api.get("/openapi.json").json()["paths"]
    form = paths["/api/images/mask"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "original", "type", "original_ref", "channel"} <= set(form["properties"])
    channel = paths["/api/images/{type}/{name}"]["get"]["parameters"]
    assert any(p["name"] == "channel" for p in channel)
