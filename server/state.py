"""The server's parts, built once from its config, and how a route reaches them (`get_state`)."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection

from latentgraph.engine import EventBus, ExecutionLimits, Executor, NodeRegistry, OutputCache
from latentgraph.nodes.folders import IMAGE_EXTENSIONS, Folders
from latentgraph.nodes.services import Services
from latentgraph.server.backup import BackupScheduler, damaged_message, is_damage, prepare_database
from latentgraph.server.bounds import StoredBounds
from latentgraph.server.catalog import CatalogCache
from latentgraph.server.config import ServerConfig
from latentgraph.server.event_log import EventWriter
from latentgraph.server.hub import EventHub
from latentgraph.server.run_queue import RunQueue
from latentgraph.server.runs import RunService
from latentgraph.server.schemas import queue_state
from latentgraph.server.store import RunStore
from latentgraph.server.thumbnails import Thumbnails
from latentgraph.server.worker import Dispatcher, LocalWorker, Worker
from latentgraph.server.workflow_library import WorkflowLibrary

log = logging.getLogger(__name__)

QUEUE_MESSAGE_LIMIT = 200  # pending runs listed in a websocket `queue` message


@dataclass
class ServerState:
    config: ServerConfig
    registry: NodeRegistry
    folders: Folders
    executor: Executor
    store: RunStore
    queue: RunQueue
    hub: EventHub
    runs: RunService
    dispatcher: Any  # a Dispatcher, or a RayWorkerPool (server/cluster.py): start(), stop(timeout), alive
    catalog: CatalogCache
    workflows: WorkflowLibrary
    thumbnails: Thumbnails
    retention: "Retention"
    version: str
    started: float = field(default_factory=time.time)
    backups: BackupScheduler | None = None  # rolling backups of the run database
    comfy: Any = None  # ComfyUI's API (server/comfyui.py ComfyBridge)

    def start(self) -> None:
        """Clear the temporary images, recover the queue, start the worker."""
        if self.config.clear_temp:
            clear_temp_images(self.folders.temp)
        for folder in (self.folders.inputs, self.folders.outputs, self.folders.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.retention.prune()
        interrupted, queued = self.runs.recover()
        if self.backups is not None:
            self.backups.start()  # the first backup now, in its thread
        if interrupted:
            log.warning("%d run(s) were cut off by the last shutdown and are marked interrupted", len(interrupted))
        if queued:
            log.info("resuming %d queued run(s)", queued)
        if self.comfy is not None:
            self.comfy.load()  # what the ComfyUI API needs of the resumed runs, before any starts
        self.dispatcher.start()

    def stop(self) -> None:
        """Stop the worker (a run in progress is interrupted; queued runs stay queued), close the store."""
        if self.backups is not None:
            self.backups.stop()
        self.dispatcher.stop(self.config.shutdown_grace)
        self.store.close()


def build_state(config: ServerConfig, registry: NodeRegistry, worker: Worker | None = None) -> ServerState:
    from latentgraph import __version__

    folders = Folders.from_options(models=config.models_dir, extra_model_roots=list(config.extra_model_roots),
                                   inputs=config.input_dir, outputs=config.output_dir, temp=config.temp_dir,
                                   follow_symlinks=config.follow_symlinks)
    services = Services(folders=folders, device=config.device, precision=config.precision,
                        allow_pickle=config.allow_pickle, limits=config.limits, compile=config.compile,
                        preview_method=config.preview_method)
    executor = Executor(registry, OutputCache(config.cache_bytes), services=services, events=EventBus(),
                        limits=ExecutionLimits(max_value_bytes=config.max_value_bytes,
                                               max_seconds=config.max_run_seconds))
    prepare_database(config)  # restore or reset when asked; a damaged file stops here (DatabaseDamaged)
    try:
        store = RunStore(config.database_path)
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        raise damaged_message(config, f"SQLite says: {exc}") from None
    backups = BackupScheduler(config.database_path, config.backups_dir, config.backups, config.backup_interval * 60,
                              on_damage=store.mark_damaged)
    queue = RunQueue(store)
    hub = EventHub(store, lambda: queue_state(*queue.snapshot(), limit=QUEUE_MESSAGE_LIMIT), version=__version__)
    queue.on_change = hub.queue_changed
    runs = RunService(store, queue, hub, registry, services=services, max_queued=config.max_queued,
                      max_queued_per_client=config.max_queued_per_client)
    retention = Retention(store, config.history_max_runs, config.history_max_days)
    bounds = StoredBounds(max_string=config.max_stored_value, budget=config.max_stored_run)
    dispatcher: Any
    if config.uses_ray and worker is None:
        from latentgraph.server.cluster import RayWorkerPool, settings_for

        dispatcher = RayWorkerPool(queue, store, hub, registry, folders, settings_for(config, folders),
                                   count=config.ray_workers, address=config.ray_address,
                                   preview_max_side=config.preview_max_side, bounds=bounds,
                                   after_run=retention.maybe_prune, min_free_disk=config.limits.min_free_disk,
                                   hang_grace=config.ray_hang_grace)
    else:
        dispatcher = Dispatcher(queue, store, hub, worker or LocalWorker(executor), config.preview_max_side,
                                events=EventWriter(store), bounds=bounds, after_run=retention.maybe_prune)
    state = ServerState(
        config=config, registry=registry, folders=folders, executor=executor, store=store, queue=queue, hub=hub,
        runs=runs, dispatcher=dispatcher, retention=retention, backups=backups, catalog=CatalogCache(registry, services),
        workflows=WorkflowLibrary(config.bundled_workflows_dir, config.workflows_dir),
        thumbnails=Thumbnails(config.thumbnails_dir, max_pixels=config.max_image_pixels), version=__version__)
    from latentgraph.server.comfyui import ComfyBridge

    state.comfy = ComfyBridge(state)
    hub.taps.append(state.comfy)
    return state


class Retention:
    """History retention: the oldest finished runs beyond `max_runs`, and those older than
    `max_days`, are forgotten at start-up and then at most once a minute after a run ends."""

    INTERVAL = 60.0  # seconds between prunes while runs finish

    def __init__(self, store: RunStore, max_runs: int, max_days: float) -> None:
        self.store = store
        self.max_runs = max_runs
        self.max_age = max_days * 86400.0
        self._last = 0.0

    def prune(self) -> int:
        self._last = time.monotonic()
        if not self.max_runs and not self.max_age:
            return 0
        removed = self.store.prune(max_runs=self.max_runs, max_age=self.max_age)
        if removed:
            log.info("history retention: forgot %d finished run(s)", removed)
        return removed

    def maybe_prune(self) -> None:
        if time.monotonic() - self._last >= self.INTERVAL:
            self.prune()


def clear_temp_images(folder: Path) -> int:
    """Remove the images a previous session left in the temporary folder (only images, so a
    temp folder pointed somewhere by mistake loses nothing else), then empty sub-folders."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            path.unlink(missing_ok=True)
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def get_state(connection: HTTPConnection) -> ServerState:
    """FastAPI dependency: the state of the app serving this request or websocket."""
    return connection.app.state.latentgraph


__all__ = ["Retention", "ServerState", "build_state", "clear_temp_images", "get_state"]
