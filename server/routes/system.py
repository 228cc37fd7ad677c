"""System: versions, device, memory and cache sizes; a health check for scripts and monitors."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from latentgraph.server.schemas import Health
from latentgraph.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["system"])


class SystemInfo(BaseModel):
    versions: dict[str, str | None] = Field(description="python, latentgraph, torch (from its metadata: importing "
                                                        "it is not free), fastapi, pydantic, uvicorn")
    device: dict[str, Any] = Field(description="what was asked for and, once a model ran, what is used")
    memory: dict[str, Any] = Field(description="bytes: this process, the machine, the GPU when torch uses one")
    caches: dict[str, Any] = Field(description="output cache, loaded models, thumbnails, run database and its backups")
    runs: dict[str, int] = Field(description="runs by status")
    uptime: float = Field(description="seconds since start-up")
    workers: list[dict[str, Any]] | None = Field(None, description="with a Ray worker pool: each worker, whether it "
                                                 "answers, runs done, checkpoints loaded, its inventory")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def _process_rss() -> int | None:
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return None


def _torch_device(state: ServerState) -> tuple[dict[str, Any], dict[str, Any]]:
    """Device facts only when torch is already loaded (a model ran): importing it costs seconds."""
    device: dict[str, Any] = {"requested": state.config.device or "auto", "precision": state.config.precision or "auto",
                              "torch_loaded": "torch" in sys.modules}
    gpu: dict[str, Any] = {}
    placement = state.executor.services.placement_info()
    if placement is not None:
        device.update(placement)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        index = torch.cuda.current_device()
        device["cuda"] = torch.cuda.get_device_name(index)
        free, total = torch.cuda.mem_get_info(index)
        gpu = {"total": total, "free": free, "allocated": torch.cuda.memory_allocated(index),
               "reserved": torch.cuda.memory_reserved(index)}
    return device, gpu


@router.get("/system", summary="Versions, device, memory and caches", response_model=SystemInfo)
def system_info(state: ServerState = Depends(get_state)) -> SystemInfo:
    device, gpu = _torch_device(state)
    machine = _meminfo()
    memory: dict[str, Any] = {"process_rss": _process_rss(), "total": machine.get("MemTotal"),
                              "available": machine.get("MemAvailable"), "cpus": os.cpu_count()}
    if gpu:
        memory["gpu"] = gpu
    cache = state.executor.cache.stats()
    caches: dict[str, Any] = {"outputs": {"entries": cache.entries, "bytes": cache.nbytes, "max_bytes": cache.max_bytes,
                                          "hits": cache.hits, "misses": cache.misses, "evictions": cache.evictions}}
    models = state.executor.services.loaded_models()
    if models is not None:  # the model cache exists once a model was loaded
        caches["models"] = models
    caches["thumbnails"] = state.thumbnails.stats()
    caches["database_bytes"] = state.store.size_bytes()
    if state.backups is not None:
        caches["database_backups"] = state.backups.stats()
    versions = {"python": platform.python_version(), "latentgraph": state.version, "torch": _version("torch"),
                "fastapi": _version("fastapi"), "pydantic": _version("pydantic"), "uvicorn": _version("uvicorn")}
    pool_status = getattr(state.dispatcher, "status", None)  # a Ray worker pool (server/cluster.py)
    return SystemInfo(versions=versions, device=device, memory=memory, caches=caches, runs=state.store.counts(),
                      uptime=time.time() - state.started, workers=pool_status() if pool_status is not None else None)


@router.get("/health", summary="Is the server up and its worker alive", response_model=Health)
def health(state: ServerState = Depends(get_state)) -> Health:
    """Needs no token. `degraded` when the worker thread is gone (runs would wait forever) or the run
    database is damaged (`store` says what SQLite found; restart with --restore-backup)."""
    running, pending = state.queue.snapshot()
    alive = state.dispatcher.alive
    damage = state.store.damage
    store = "ok" if damage is None else (f"damaged: {damage}; stop the server and start it again with "
                                         "`latentgraph serve --restore-backup`")
    return Health(status="ok" if alive and damage is None else "degraded", worker=alive, queued=len(pending),
                  running=len(running), store=store)
