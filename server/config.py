"""What a server is started with: where things live, who may talk to it, and its limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from nodes.folders import REPO_ROOT

DEFAULT_PORT = 8188
TOKEN_ENV = "LATENTGRAPH_TOKEN"
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")  # it travels in headers, URLs and a cookie as it is


class ConfigError(ValueError):
    """A configuration the server refuses to start with (e.g. a public address without a token)."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass
class ServerConfig:
    """Everything `latentgraph serve` can set. Paths default to folders in the repository."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # required on every API call and the websocket when set
    allowed_origins: list[str] = field(default_factory=list)  # e.g. the editor's dev server
    allowed_hosts: list[str] = field(default_factory=list)  # extra Host names accepted on loopback

    models_dir: Path | None = None  # None: the process-wide default (./models)
    extra_model_roots: list[Path] = field(default_factory=list)
    input_dir: Path | None = None
    output_dir: Path | None = None
    temp_dir: Path | None = None
    user_dir: Path = REPO_ROOT / "user"  # runs.sqlite and saved workflows
    bundled_workflows_dir: Path = REPO_ROOT / "workflows"
    web_dir: Path = REPO_ROOT / "web" / "dist"

    device: str | None = None
    precision: str | None = None
    allow_pickle: bool = False
    cache_bytes: int = 4 << 30

    max_body_bytes: int = 8 << 20  # any JSON request
    max_upload_bytes: int = 32 << 20  # an uploaded image
    max_image_side: int = 8192  # pixels, either side of an uploaded image
    max_image_pixels: int = 8192 * 8192
    preview_max_side: int = 256  # step previews are scaled down to this
    clear_temp: bool = True  # preview images of the last session are removed at start-up

    def check(self) -> None:
        """Refuse configurations that would expose the server (raises ConfigError)."""
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host!r} without an API token: anyone who can reach that "
                f"address could run workflows and read your images. Pass --token or set {TOKEN_ENV}, "
                "or listen on 127.0.0.1")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError(f"the API token is too short; use at least 8 characters ({TOKEN_HINT})")
        if self.token is not None and not _TOKEN.match(self.token):
            raise ConfigError(f"the API token may hold letters, digits and - _ . ~ + / = only ({TOKEN_HINT})")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not between 0 and 65535")

    @property
    def workflows_dir(self) -> Path:
        return self.user_dir / "workflows"

    @property
    def database_path(self) -> Path:
        return self.user_dir / "runs.sqlite"

    @property
    def thumbnails_dir(self) -> Path:
        return self.user_dir / "cache" / "thumbnails"
