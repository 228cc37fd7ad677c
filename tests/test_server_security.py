"""Who may use the server: loopback by default, a token beyond it, no other site's pages, no
rebound DNS names. Each refusal has the right status and a JSON body that says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from latentgraph.server import ConfigError, ServerConfig, create_app
from latentgraph.server.config import is_loopback
from test_server_support import *  # noqa: F401,F403  (fixtures and helpers)
from test_server_support import ROOT, open_ws, receive, show, submit

TOKEN = "correct-horse-battery-staple"


def test_only_loopback_addresses_count_as_private():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", ""))


def test_listening_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ConfigError, match="without an API token"):
        ServerConfig(host="0.0.0.0").check()
    with pytest.raises(ConfigError, match="without an API token"):
        create_app(ServerConfig(host="192.168.1.20"))
    with pytest.raises(ConfigError, match="too short"):
        ServerConfig(host="0.0.0.0", token="abc").check()
    with pytest.raises(ConfigError, match="letters, digits"):
        ServerConfig(token="semi;colon token").check()
    ServerConfig(host="0.0.0.0", token=TOKEN).check()

    env = {k: v for k, v in os.environ.items() if k != "LATENTGRAPH_TOKEN"}
    cli = subprocess.run([sys.executable, "-m", "latentgraph", "serve", "--host", "0.0.0.0", "--port", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2
    assert "refusing to listen on '0.0.0.0' without an API token" in cli.stderr and "LATENTGRAPH_TOKEN" in cli.stderr


def test_with_a_token_every_api_call_and_the_websocket_need_it(start_server):
    server = start_server(token=TOKEN)
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        missing = api.get("/api/queue")
        assert missing.status_code == 401 and missing.json()["code"] == "missing_token"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = api.get("/api/queue", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json() == {"detail": "the API token is wrong", "code": "invalid_token"}
        assert api.post("/api/runs", json={"workflow": show(1)}).status_code == 401
        assert api.get("/ws").status_code == 401
        assert api.get("/api/queue", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert api.get("/api/queue", params={"token": TOKEN}).status_code == 200
        assert api.get("/api/health").status_code == 200  # for monitors: says nothing private

        # A browser opens the page once with ?token=...; an HttpOnly cookie carries it from then on.
        api.cookies.clear()
        assert api.get("/api/queue").status_code == 401
        page = api.get("/", params={"token": TOKEN})
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("latentgraph_token=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert api.get("/api/queue").status_code == 200
        api.cookies.clear()
        assert api.get("/", params={"token": "wrong"}).headers.get("set-cookie") is None

    with pytest.raises(InvalidStatus) as refused:
        open_ws(server)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["code"] == "missing_token"
    with open_ws(server, Authorization=f"Bearer {TOKEN}") as socket:
        assert receive(socket)["type"] == "snapshot"

    from latentgraph.client import ApiError, Client

    with Client(server.url, token=TOKEN) as client:
        assert client.run(show(4)).results == {"show": {"value": 4}}
    with Client(server.url, token="wrong-token-value") as client:
        with pytest.raises(ApiError, match="invalid_token"):
            client.queue()
        with pytest.raises(ApiError, match="invalid_token"):
            next(client.events("some-run"))


def test_pages_of_other_sites_can_neither_call_the_api_nor_open_the_websocket(server, api):
    evil = {"Origin": "https://evil.example"}
    refused = api.post("/api/runs", json={"workflow": show(1)}, headers=evil)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden_origin" and "https://evil.example" in refused.json()["detail"]
    assert api.get("/api/runs", headers=evil).status_code == 403
    assert api.delete("/api/queue", headers={"Origin": "null"}).status_code == 403
    no_origin = api.post("/api/runs", json={"workflow": show(1)}, headers={"Sec-Fetch-Site": "cross-site"})
    assert no_origin.status_code == 403
    assert api.get("/api/runs").json()["total"] == 0

    same = api.post("/api/runs", json={"workflow": show(1)}, headers={"Origin": server.url})
    assert same.status_code == 201
    assert api.get("/api/queue", headers={"Origin": f"http://localhost:{server.port}",
                                          "Host": f"localhost:{server.port}"}).status_code == 200

    with pytest.raises(InvalidStatus) as socket_refused:
        open_ws(server, Origin="https://evil.example")
    assert socket_refused.value.response.status_code == 403
    assert json.loads(socket_refused.value.response.body)["code"] == "forbidden_origin"
    with open_ws(server, Origin=server.url) as socket:
        assert receive(socket)["type"] == "snapshot"


def test_an_allowed_dev_server_origin_may_call_the_api_with_cors(start_server):
    server = start_server(allowed_origins=["http://localhost:5173"])
    dev = {"Origin": "http://localhost:5173"}
    with httpx.Client(base_url=server.url, trust_env=False) as api:
        response = api.post("/api/runs", json={"workflow": show(1)}, headers=dev)
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
        preflight = api.options("/api/runs", headers={**dev, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        assert api.post("/api/runs", json={"workflow": show(1)}, headers={"Origin": "http://localhost:5174"}).status_code == 403
    with open_ws(server, Origin="http://localhost:5173") as socket:
        assert receive(socket)["type"] == "snapshot"


def test_a_dns_name_rebound_to_loopback_is_refused(server, api):
    rebound = api.get("/api/queue", headers={"Host": f"attacker.example:{server.port}"})
    assert rebound.status_code == 403 and rebound.json()["code"] == "forbidden_host"
    same_site = api.post("/api/runs", json={"workflow": show(1)},  # its own origin, but not our name
                         headers={"Host": f"attacker.example:{server.port}", "Origin": f"http://attacker.example:{server.port}"})
    assert same_site.status_code == 403
    with pytest.raises(InvalidStatus):
        open_ws(server, Host=f"attacker.example:{server.port}")
    assert api.get("/api/queue", headers={"Host": f"localhost:{server.port}"}).status_code == 200


def test_responses_carry_headers_that_keep_them_out_of_other_pages(api):
    response = api.get("/api/queue")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    submit(api, show(1))
