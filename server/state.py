"""The server's parts, built once from its config, and how a route reaches them (`get_state`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection

from engine import EventBus, Executor, NodeRegistry, OutputCache
from nodes.folders import IMAGE_EXTENSIONS, Folders, configure
from nodes.services import Services
from server.catalog import CatalogCache
from server.config import ServerConfig
from server.hub import EventHub
from server.run_queue import RunQueue
from server.runs import RunService
from server.schemas import queue_state
from server.store import RunStore
from server.thumbnails import Thumbnails
from server.worker import Dispatcher, LocalWorker, Worker
from server.workflow_library import WorkflowLibrary

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
    dispatcher: Dispatcher
    catalog: CatalogCache
    workflows: WorkflowLibrary
    thumbnails: Thumbnails
    version: str
    started: float = field(default_factory=time.time)

    def start(self) -> None:
        """Clear the temporary images, recover the queue, start the worker."""
        if self.config.clear_temp:
            clear_temp_images(self.folders.temp)
        for folder in (self.folders.inputs, self.folders.outputs, self.folders.temp):
            folder.mkdir(parents=True, exist_ok=True)
        interrupted, queued = self.runs.recover()
        if interrupted:
            log.warning("%d run(s) were cut off by the last shutdown and are marked interrupted", len(interrupted))
        if queued:
            log.info("resuming %d queued run(s)", queued)
        self.dispatcher.start()

    def stop(self) -> None:
        """Stop the worker (a run in progress is interrupted; queued runs stay queued), close the store."""
        self.dispatcher.stop()
        self.store.close()


def build_state(config: ServerConfig, registry: NodeRegistry, worker: Worker | None = None) -> ServerState:
    from latentgraph import __version__

    folders = configure(models=config.models_dir, extra_model_roots=list(config.extra_model_roots),
                        inputs=config.input_dir, outputs=config.output_dir, temp=config.temp_dir)
    services = Services(folders=folders, device=config.device, precision=config.precision,
                        allow_pickle=config.allow_pickle)
    executor = Executor(registry, OutputCache(config.cache_bytes), services=services, events=EventBus())
    store = RunStore(config.database_path)
    queue = RunQueue(store)
    hub = EventHub(store, lambda: queue_state(*queue.snapshot(), limit=QUEUE_MESSAGE_LIMIT), version=__version__)
    queue.on_change = hub.queue_changed
    runs = RunService(store, queue, hub, registry)
    dispatcher = Dispatcher(queue, store, hub, worker or LocalWorker(executor), config.preview_max_side)
    return ServerState(
        config=config, registry=registry, folders=folders, executor=executor, store=store, queue=queue, hub=hub,
        runs=runs, dispatcher=dispatcher, catalog=CatalogCache(registry),
        workflows=WorkflowLibrary(config.bundled_workflows_dir, config.workflows_dir),
        thumbnails=Thumbnails(config.thumbnails_dir), version=__version__)


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


__all__ = ["ServerState", "build_state", "clear_temp_images", "get_state"]
