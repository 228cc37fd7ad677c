"""What a server is started with: where things live, who may talk to it, and its limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from latentgraph.engine.limits import DEFAULT_MAX_VALUE_BYTES
from latentgraph.bundled import editor_dir, workflows_dir
from latentgraph.nodes.services import RunLimits

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
    """Everything `latentgraph serve` can set. The user's folders default to folders under the
    current directory; the bundled workflows and the editor come with the package."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # required on every API call and the websocket when set
    allowed_origins: list[str] = field(default_factory=list)  # e.g. the editor's dev server
    allowed_hosts: list[str] = field(default_factory=list)  # extra Host names accepted on loopback

    models_dir: Path | None = None  # None: ./models (each folder's default is under the current directory)
    extra_model_roots: list[Path] = field(default_factory=list)
    input_dir: Path | None = None
    output_dir: Path | None = None
    temp_dir: Path | None = None
    user_dir: Path = field(default_factory=lambda: Path.cwd() / "user")  # runs.sqlite and saved workflows
    bundled_workflows_dir: Path = field(default_factory=workflows_dir)  # shipped with the package
    web_dir: Path = field(default_factory=editor_dir)  # the built editor, shipped with the package

    device: str | None = None
    precision: str | None = None
    compile: bool = False  # torch.compile the U-Net and VAE decoder (`--compile`; nodes/sd/compiled.py)
    preview_method: str = "auto"  # step previews: auto, latent2rgb, taesd, none (nodes/previews.py)
    allow_pickle: bool = False
    follow_symlinks: bool = False  # serve and load links in input/output/temp that lead outside them
    cache_bytes: int = 4 << 30

    max_body_bytes: int = 8 << 20  # any JSON request
    max_upload_bytes: int = 32 << 20  # an uploaded image
    max_image_side: int = 8192  # pixels, either side of an uploaded image
    max_image_pixels: int = 8192 * 8192
    preview_max_side: int = 256  # step previews are scaled down to this

    # What one run may cost (0 switches a bound off); see README "Limits".
    limits: RunLimits = field(default_factory=RunLimits)  # pixels, batch, steps, memory, free disk: the nodes check them
    max_run_seconds: float = 3600.0  # a run still going after this fails (checked at every cancel point)
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES  # text in any one value a node makes, in memory
    max_stored_value: int = 64 << 10  # characters of one string stored with a run (longer: truncated, flagged)
    max_stored_run: int = 1 << 20  # characters of text in one run's stored results (and in its errors)
    max_queued: int = 1000  # runs waiting in all
    max_queued_per_client: int = 200  # runs waiting per client_id (those without one count as one client)
    history_max_runs: int = 10_000  # finished runs kept; the oldest are forgotten first (images stay)
    history_max_days: float = 0.0  # forget finished runs older than this (0: keep by count only)
    shutdown_grace: float = 10.0  # seconds a run has to stop at shutdown before it is recorded as interrupted
    clear_temp: bool = True  # preview images of the last session are removed at start-up

    # The run database's backups (see docs/backups.md): in user_dir/backups, at start-up and every
    # backup_interval minutes (0: only at start-up), the newest `backups` kept (0: no backups).
    backups: int = 5
    backup_interval: float = 60.0  # minutes
    restore_backup: bool = False  # at start-up: move runs.sqlite aside, put the newest good backup in its place
    reset_database: bool = False  # at start-up: move runs.sqlite aside, start with an empty history

    # Scale-out on Ray (server/cluster.py; README "Scale-out on Ray"): runs execute on a pool of Ray
    # actors when either is set. ray_address: "auto" or a cluster head's address (None: a cluster
    # started in this process); ray_workers: how many actors (None: one per GPU, else per CPU).
    ray_address: str | None = None
    ray_workers: int | None = None
    ray_models_dir: Path | None = None  # the models root on the workers' machines (None: the head's paths)
    ray_hang_grace: float = 60.0  # seconds past a cancel or the run's time limit after which a worker is replaced

    @property
    def uses_ray(self) -> bool:
        return self.ray_address is not None or self.ray_workers is not None

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
        if self.backups < 0:
            raise ConfigError(f"--backups must be 0 (no backups) or more, not {self.backups}")
        if self.backup_interval < 0:
            raise ConfigError(f"--backup-interval must be 0 (only at start-up) or more minutes, not {self.backup_interval:g}")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ConfigError(f"--ray-workers must be 1 or more, not {self.ray_workers}")
        if not self.ray_hang_grace > 0:
            raise ConfigError(f"--ray-hang-grace must be more than 0 seconds, not {self.ray_hang_grace:g}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ConfigError("--ray needs `auto` or the address of a Ray cluster's head (host:port)")
        if self.restore_backup and self.reset_database:
            raise ConfigError("--restore-backup and --reset-database exclude each other: restore the newest backup, "
                              "or start with an empty history")

    @property
    def workflows_dir(self) -> Path:
        return self.user_dir / "workflows"

    @property
    def database_path(self) -> Path:
        return self.user_dir / "runs.sqlite"

    @property
    def backups_dir(self) -> Path:
        return self.user_dir / "backups"

    @property
    def thumbnails_dir(self) -> Path:
        return self.user_dir / "cache" / "thumbnails"
