"""The other resources on a real server: node catalog, images (view, thumbnails, uploads), models,
saved workflows, system and health, the editor's static files, and errors as JSON."""

from __future__ import annotations

import hashlib
import io
import json

from PIL import Image

from latentgraph.engine import Input, Node
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import REGISTRY, ROOT, arithmetic, make_registry, submit

DEMO = "latentgraph-demo.safetensors"  # the bundled demo checkpoint: every model search finds it


def png_bytes(width: int = 32, height: int = 24, color=(200, 30, 30), mode: str = "RGB", format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format=format)
    return buffer.getvalue()


def noise_png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 60).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(api, data: bytes, filename: str = "cat.png", **form: str):
    return api.post("/api/images", files={"file": (filename, data, "image/png")}, data=form)


def catalog_choices(api, node_type: str, input_name: str) -> list:
    entry = next(e for e in api.get("/api/nodes").json() if e["type"] == node_type)
    return next(i for i in entry["inputs"] if i["name"] == input_name)["choices"]


# --- node catalog --------------------------------------------------------------------------------

def test_the_catalog_lists_every_node_type_with_its_inputs_and_answers_304_when_unchanged(api):
    response = api.get("/api/nodes")
    assert response.status_code == 200
    catalog = response.json()
    assert {e["type"] for e in catalog} == {info.type for info in REGISTRY}
    int_math = next(e for e in catalog if e["type"] == "int_math")
    assert [i["name"] for i in int_math["inputs"]] == ["a", "b", "operation"]
    assert int_math["outputs"] == [{"name": "value", "type": "INT", "description": "the result"}]
    assert catalog == sorted(catalog, key=lambda e: (e["category"], e["type"]))
    again = api.get("/api/nodes", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert api.get("/api/nodes/int_math").json() == int_math
    assert api.get("/api/nodes/nope").json()["code"] == "unknown_node_type"


def test_the_catalog_follows_files_appearing_in_the_model_and_input_folders(api, tmp_path):
    etag = api.get("/api/nodes").headers["etag"]
    assert catalog_choices(api, "checkpoint_loader", "checkpoint") == [DEMO]  # the bundled model, always found
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "new.safetensors").write_bytes(b"x")
    name = upload(api, png_bytes()).json()["name"]
    response = api.get("/api/nodes", headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.headers["etag"] != etag
    assert catalog_choices(api, "checkpoint_loader", "checkpoint") == ["new.safetensors", DEMO]
    assert catalog_choices(api, "load_image", "image") == [name]


def test_the_catalog_of_hundreds_of_nodes_is_built_once_and_served_from_memory(start_server):
    registry = make_registry()
    for index in range(300):
        cls = type(f"Extra{index}", (Node,), {"__annotations__": {"x": int}, "x": Input(0), "__doc__": "extra"})
        registry.register(cls, f"extra_{index}", category="extra")
    server = start_server(registry=registry)
    catalog = server.state.catalog
    first, etag = catalog.get()
    second, again = catalog.get()
    assert second is first and again == etag  # the same bytes, not rebuilt
    assert len(json.loads(first)) == len(registry)


# --- images --------------------------------------------------------------------------------------

def test_an_uploaded_image_is_checked_stored_under_its_content_hash_and_served_back(api, tmp_path):
    data = png_bytes(40, 30)
    response = upload(api, data, filename="../../My Cat!.png")
    assert response.status_code == 201, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()[:16]
    assert body["name"] == body["filename"] == f"My_Cat-{digest}.png"
    assert (body["width"], body["height"], body["format"], body["type"]) == (40, 30, "PNG", "input")
    assert (tmp_path / "input" / body["name"]).read_bytes() == data  # stored unchanged, inside the folder
    assert not any(p.name.endswith(".png") for p in tmp_path.glob("*.png"))
    assert upload(api, data, filename="other.png").json()["name"] == f"other-{digest}.png"
    served = api.get(f"/api/images/input/{body['name']}")
    assert served.status_code == 200 and served.content == data and served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"

    mask = upload(api, png_bytes(40, 30, 128, mode="L"), filename="mask.png", kind="mask").json()
    assert mask["subfolder"] == "masks" and mask["name"] == f"masks/{mask['filename']}"
    assert (tmp_path / "input" / "masks" / mask["filename"]).is_file()

    raw = api.post("/api/images?filename=raw.jpg", content=png_bytes(format="JPEG"), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 201 and raw.json()["name"].endswith(".jpg") and raw.json()["format"] == "JPEG"


BAD_UPLOADS = [
    (b"#!/bin/sh\nrm -rf /\n", 415, "not_an_image"),
    (noise_png()[:3000], 400, "corrupt_image"),  # cut off half-way
    (png_bytes(format="GIF"), 415, "unsupported_image_type"),
    (b"", 400, "empty_upload"),
]


def test_an_upload_that_is_not_a_readable_image_is_refused(api, tmp_path):
    for data, status, code in BAD_UPLOADS:
        response = upload(api, data, filename="evil.png")
        assert response.status_code == status, response.text
        assert response.json()["code"] == code and response.json()["detail"]
    assert not any((tmp_path / "input").iterdir())
    text = api.post("/api/images", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and "multipart/form-data" in text.json()["detail"]
    no_file = api.post("/api/images", files={"other": ("a.png", png_bytes(), "image/png")})
    assert no_file.status_code == 400 and no_file.json()["code"] == "no_file"


def test_oversized_uploads_and_images_are_refused(start_server, tmp_path):
    import httpx

    server = start_server(max_upload_bytes=50_000, max_image_side=1000)
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        noise = Image.frombytes("RGB", (200, 200), bytes(range(256)) * 468 + bytes(192))
        buffer = io.BytesIO()
        noise.save(buffer, format="BMP")  # 120 kB
        response = upload(api, buffer.getvalue(), filename="big.bmp")
        assert response.status_code == 413 and response.json()["code"] == "body_too_large"

        def chunks():  # no Content-Length: the bound holds while streaming too
            for _ in range(100):
                yield b"\0" * 10_000

        streamed = api.post("/api/images", content=chunks(), headers={"content-type": "image/png"})
        assert streamed.status_code == 413 and streamed.json()["code"] == "body_too_large"

        wide = upload(api, png_bytes(1001, 2), filename="wide.png")
        assert wide.status_code == 413 and wide.json()["code"] == "image_too_large" and "1001x2" in wide.json()["detail"]
        assert upload(api, png_bytes(1000, 2)).status_code == 201

        big_json = api.post("/api/runs", content=b"{" + b" " * (9 << 20) + b"}", headers={"content-type": "application/json"})
        assert big_json.status_code == 413 and big_json.json()["code"] == "body_too_large"


TRAVERSALS = [
    "/api/images/output/..%2F..%2Fsecret.png",
    "/api/images/output/%2Fetc%2Fpasswd.png",
    "/api/images/input/sub/..%2F..%2F..%2Fsecret.png",
    "/api/thumbnails/output/..%2Fsecret.png",
    "/api/images/output/a%5C..%5Csecret.png",
]


def test_image_names_cannot_leave_their_folder(api, tmp_path):
    (tmp_path / "secret.png").write_bytes(png_bytes())
    for path in TRAVERSALS:
        response = api.get(path)
        assert response.status_code == 400 and response.json()["code"] == "unsafe_name", path


def test_images_are_served_only_from_the_three_folders_and_only_images(api, tmp_path):
    (tmp_path / "output").mkdir(exist_ok=True)
    (tmp_path / "output" / "notes.txt").write_text("secret")
    assert api.get("/api/images/output/notes.txt").json()["code"] == "image_not_found"
    assert api.get("/api/images/models/x.png").status_code == 422
    assert api.get("/api/images/output/missing.png").status_code == 404


def test_thumbnails_are_small_jpegs_or_webps_made_once(api, server, tmp_path):
    (tmp_path / "output" / "sub").mkdir(parents=True)
    (tmp_path / "output" / "sub" / "big.png").write_bytes(png_bytes(800, 400))
    response = api.get("/api/thumbnails/output/sub/big.png", params={"size": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (128, 64)
    assert api.get("/api/thumbnails/output/sub/big.png", params={"size": 128}).content == response.content
    assert server.state.thumbnails.stats()["files"] == 1
    webp = api.get("/api/thumbnails/output/sub/big.png", params={"format": "webp"})
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    assert api.get("/api/thumbnails/output/sub/big.png", params={"size": 10_000}).status_code == 422
    listed = api.get("/api/images", params={"type": "output"}).json()
    assert listed == {"images": [{"filename": "big.png", "subfolder": "sub", "type": "output"}], "total": 1}


# --- models --------------------------------------------------------------------------------------

def test_models_are_listed_by_kind_and_rescanned_on_every_request(api, tmp_path):
    assert api.get("/api/models").json() == {"kinds": {"checkpoints": [DEMO], "vae": [], "loras": [], "embeddings": [],
                                                       "controlnet": [], "upscale_models": [], "vae_approx": []}}
    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "a.safetensors").write_bytes(b"12345")
    (tmp_path / "models" / "vae" / "readme.txt").write_text("not a model")
    assert api.get("/api/models").json()["kinds"]["vae"] == ["a.safetensors"]
    listed = api.get("/api/models/vae").json()
    assert listed["models"] == [{"name": "a.safetensors", "size": 5}] and listed["kind"] == "vae"
    assert api.get("/api/models/unicorns").json()["code"] == "unknown_model_kind"
    (tmp_path / "models" / "vae_approx").mkdir()
    (tmp_path / "models" / "vae_approx" / "taesd_decoder.pth").write_bytes(b"123")
    assert api.get("/api/models/vae_approx").json()["models"] == [{"name": "taesd_decoder.pth", "size": 3}]


# --- saved workflows -----------------------------------------------------------------------------

def test_workflows_are_saved_listed_loaded_and_deleted_and_bundled_ones_are_read_only(api, tmp_path):
    listed = api.get("/api/workflows").json()["workflows"]
    bundled = {w["name"] for w in listed if w["bundled"]}
    assert {"arithmetic", "txt2img"} <= bundled
    assert api.get("/api/workflows/arithmetic").json() == json.loads((ROOT / "workflows" / "arithmetic.json").read_text())

    document = arithmetic(seed=3)
    document["meta"] = {"name": "Mine", "description": "my numbers"}
    created = api.put("/api/workflows/my stuff/numbers", json=document)
    assert created.status_code == 201 and created.json()["name"] == "my stuff/numbers"
    assert (tmp_path / "user" / "workflows" / "my stuff" / "numbers.json").is_file()
    assert api.put("/api/workflows/my stuff/numbers.json", json=document).status_code == 200  # replaced
    entry = next(w for w in api.get("/api/workflows").json()["workflows"] if w["name"] == "my stuff/numbers")
    assert (entry["bundled"], entry["title"], entry["description"]) == (False, "Mine", "my numbers")
    assert api.get("/api/workflows/my stuff/numbers").json()["nodes"]["seed"]["inputs"]["seed"] == 3

    work_in_progress = {"format": "latentgraph/workflow@1", "nodes": {"x": {"type": "no_such_node"}}}
    assert api.put("/api/workflows/draft", json=work_in_progress).status_code == 201  # saved even if it would not run
    not_a_workflow = api.put("/api/workflows/junk", json={"nodes": 5})
    assert not_a_workflow.status_code == 422 and not_a_workflow.json()["code"] == "invalid_workflow"

    assert api.put("/api/workflows/txt2img", json=document).json()["code"] == "workflow_read_only"
    assert api.delete("/api/workflows/txt2img").json()["code"] == "workflow_read_only"
    assert api.delete("/api/workflows/my stuff/numbers").status_code == 204
    assert api.get("/api/workflows/my stuff/numbers").json()["code"] == "workflow_not_found"
    assert (ROOT / "workflows" / "txt2img.json").is_file()


def test_workflow_names_cannot_leave_their_folder(api, tmp_path):
    for name in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%2F..%2F..%2Fx", ".hidden", "a%5Cb", "x" * 201, "%00"):
        for method in ("GET", "PUT", "DELETE"):
            response = api.request(method, f"/api/workflows/{name}", json=arithmetic() if method == "PUT" else None)
            assert response.status_code == 400, (method, name, response.text)
            assert response.json()["code"] == "unsafe_name"
    assert not (tmp_path / "etc").exists() and not (tmp_path / "user" / "x.json").exists()


# --- system, static files, errors ----------------------------------------------------------------

def test_system_reports_versions_memory_and_caches_without_loading_torch(api):
    submit(api, arithmetic())
    info = api.get("/api/system").json()
    assert info["versions"]["python"] and info["versions"]["latentgraph"]
    assert info["memory"]["process_rss"] > 0 and info["memory"]["total"] > 0
    assert {"outputs", "thumbnails", "database_bytes"} <= set(info["caches"])
    assert info["device"]["requested"] == "auto"
    assert api.get("/api/health").json()["status"] == "ok"


def test_the_root_serves_a_placeholder_until_the_editor_is_built(start_server, tmp_path):
    import httpx

    server = start_server()
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        page = api.get("/")
        assert page.status_code == 200 and "npm run build" in page.text
    server.stop()
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>editor</title>")
    (web / "assets" / "app.js").write_text("console.log(1)")
    server = start_server(web_dir=web)
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        assert api.get("/").text == "<!doctype html><title>editor</title>"
        assert api.get("/assets/app.js").text == "console.log(1)"
        assert api.get("/api/health").json()["status"] == "ok"  # the API still wins
        assert api.get("/nope").json()["code"] == "not_found"


def test_unexpected_errors_are_json_without_a_traceback(api, server, monkeypatch):
    def broken() -> dict:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(server.state.store, "counts", broken)
    response = api.get("/api/system")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error" and "RuntimeError" in body["detail"]
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert api.get("/api/nope").json() == {"detail": "no such resource: GET /api/nope", "code": "not_found"}
    assert api.post("/api/health").json()["code"] == "method_not_allowed"


def test_the_openapi_description_has_every_resource(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/nodes", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/cancel", "/api/queue",
                 "/api/queue/order", "/api/images", "/api/images/{type}/{name}", "/api/thumbnails/{type}/{name}",
                 "/api/models", "/api/models/{kind}", "/api/workflows", "/api/workflows/{name}", "/api/system",
                 "/api/health"):
        assert path in paths, path
    assert paths["/api/runs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")

