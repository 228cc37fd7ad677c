"""Scale-out on Ray: the queue's runs executed by a pool of Ray actors that keep their models loaded.

The head (the `latentgraph serve` process) keeps what it keeps without Ray: the SQLite queue and
history, the API and the websockets, the input, output and temp folders. `RayWorkerPool` takes the
place of the one dispatcher: one `Dispatcher` thread per worker actor, all taking from the one
`RunQueue`, each with a `RayWorker` that sends the job to its actor and turns what comes back into
the events and outcome a local run would have produced (plus a `worker` field in every event).

What runs where:

- `WorkerActor` (one per GPU, or per CPU core) holds its own `Services` (models read from its
  machine's models folders: the head's paths unless told otherwise, so a shared volume or the same
  files on every machine), `Executor`, output cache and model cache; its input, output and temp
  folders are scratch folders of its own. `run(job)` is a Ray streaming generator: every event in
  order (step previews encoded there, as the wire's JPEG objects), each message carrying all the
  events produced since the last one, the last message the outcome too. `cancel(run_id)` is served while `run`
  streams (the actor runs calls in threads), `inventory()` says which checkpoints it has loaded
  and which model files it has.
- Files travel with the events: the PNGs a node saved (or previewed) come back in the
  `node_finished` event that reports them, and the head writes them into its own output (or temp)
  folder under fresh names (same prefix and sub-folder, the head's counter, the bytes and so the
  PNG metadata unchanged), rewriting the names in the events and results, so clients only ever see
  the head's names. Input images named by `load_image` nodes travel with the job by content hash
  (sha256): put in Ray's object store once by the head, fetched by a worker only when its cache by
  hash lacks them, and placed under the same names in its input folder.
- Model affinity: a free dispatcher takes the first queued run (of the highest waiting priority)
  whose checkpoint its actor has loaded, else the first one no other worker has loaded or is
  loading, else one whose checkpoint fewer other workers hold than runs wait for it
  (`RayWorkerPool.choose`): a sweep of N seeds over W workers loads the model W times, not N.
- Faults: Ray restarts a dead actor (`max_restarts=-1`) but never re-runs a call
  (`max_task_retries=0`): the dispatcher owns re-runs. A run whose actor died mid-run (the process,
  or its machine) goes back to the front of the queue (`WorkerLost`), for any worker to take, at
  most `MAX_ATTEMPTS` times; then it is `interrupted` with the reason. A worker that has not
  stopped `hang_grace` seconds after a cancel, or after the run's time limit, is killed (Ray starts
  a fresh process in its place) and its run ends cancelled (or failed), not re-run.

Ray is imported only here, and this module only when the server is started with a pool.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import queue as queues
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from latentgraph.engine import CancelToken, Event, EventBus, ExecutionLimits, Executor, NodeRegistry, OutputCache
from latentgraph.nodes.folders import Folders, check_within, resolve_inside
from latentgraph.nodes.services import RunLimits, Services
from latentgraph.server.bounds import StoredBounds
from latentgraph.server.event_log import EventWriter
from latentgraph.server.hub import EventHub
from latentgraph.server.messages import preview_object
from latentgraph.server.run_queue import RunQueue
from latentgraph.server.store import CANCELLED, FAILED, RunRecord, RunStore
from latentgraph.server.worker import Dispatcher, Job, LocalWorker, Outcome, WorkerLost

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "latentgraph.nodes.library:load_registry"  # what each actor builds its node registry with
POLL = 0.05  # seconds between looks at a run's cancel token while its worker is quiet
CANCEL_REPEAT = 1.0  # seconds after which a cancel not yet acknowledged is sent again
INPUT_OBJECTS_BYTES = 256 << 20  # input images the head keeps in Ray's object store, by hash (LRU)
KNOWN_FILES = 65_536  # content hashes of files received → the head's name (LRU), for cached results
WORKER_KEEPS_FILES = 1_000  # images a worker keeps in its scratch output and temp folders (newest)
WORKER_INPUT_CACHE_BYTES = 1 << 30  # input images a worker keeps by hash
HANG_GRACE = 60.0  # seconds a worker may go on past a cancel, or past the run's time limit, before it is replaced (ServerConfig.ray_hang_grace)
REFRESH_TIMEOUT = 10.0  # seconds to wait for workers' inventories before failing a run no worker can serve


# --- what a workflow needs -------------------------------------------------------------------------

def _literal_inputs(workflow: Any, registry: NodeRegistry, choices: Callable[..., Any]) -> Iterator[tuple[str, str, str]]:
    """(node id, input name, value) of every literal string input whose choices come from `choices`
    (e.g. the checkpoint files): the names a workflow reads, as far as they can be known before it runs."""
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    if not isinstance(nodes, dict):
        return
    for node_id, spec in nodes.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("inputs"), dict):
            continue
        info = registry.get(spec.get("type")) if isinstance(spec.get("type"), str) else None
        if info is None:
            continue
        for name, value in spec["inputs"].items():
            entry = info.inputs.get(name)
            if entry is not None and entry.choices_fn is choices and isinstance(value, str):
                yield node_id, name, value


def checkpoints_of(workflow: Any, registry: NodeRegistry) -> frozenset[str]:
    """The checkpoint files a workflow's loader nodes name."""
    from latentgraph.nodes.loaders import _checkpoint_choices

    return frozenset(value for _, _, value in _literal_inputs(workflow, registry, _checkpoint_choices))


def input_images_of(workflow: Any, registry: NodeRegistry) -> list[str]:
    """The input-folder images a workflow's load_image / load_image_mask nodes name."""
    from latentgraph.nodes.images import _input_choices

    return sorted({value for _, _, value in _literal_inputs(workflow, registry, _input_choices)})


def image_refs(value: Any) -> Iterator[dict[str, Any]]:
    """Every image reference ({filename, subfolder, type}) in a node's results, however nested."""
    if isinstance(value, dict):
        if isinstance(value.get("filename"), str) and value.get("type") in ("output", "temp"):
            yield value
            return
        for item in value.values():
            yield from image_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from image_refs(item)


def _ref_key(ref: dict[str, Any]) -> tuple[str, str, str]:
    return ref.get("type", ""), ref.get("subfolder") or "", ref["filename"]


def rewrite_refs(value: Any, names: dict[tuple[str, str, str], dict[str, Any]]) -> Any:
    """`value` with each image reference that `names` maps replaced by the head's (a copy)."""
    if isinstance(value, dict):
        if isinstance(value.get("filename"), str) and value.get("type") in ("output", "temp"):
            mapped = names.get(_ref_key(value))
            return {**value, **mapped} if mapped is not None else value
        return {key: rewrite_refs(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [rewrite_refs(item, names) for item in value]
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the worker side ---------------------------------------------------------------------------------

@dataclass
class WorkerSettings:
    """What every worker actor is built from (it travels to the actor: plain values only). Paths are
    paths on the worker's machine."""

    models_dir: Path
    extra_model_roots: list[Path] = field(default_factory=list)
    device: str | None = None
    precision: str | None = None
    allow_pickle: bool = False
    compile: bool = False
    preview_method: str = "auto"
    cache_bytes: int = 4 << 30
    limits: RunLimits = field(default_factory=RunLimits)
    max_value_bytes: int | None = None
    max_run_seconds: float = 3600.0
    preview_max_side: int = 256
    threads: int = 1  # torch's CPU threads in the actor
    registry: str = DEFAULT_REGISTRY  # "module:function" returning the NodeRegistry
    scratch_root: Path | None = None  # None: <temp dir>/latentgraph-ray on the worker's machine
    pool: str = ""  # the pool's id: scratch folders of two heads on one machine never meet
    keep_files: int = WORKER_KEEPS_FILES
    input_cache_bytes: int = WORKER_INPUT_CACHE_BYTES


def _load_registry(spec: str) -> NodeRegistry:
    module, _, function = spec.partition(":")
    registry = getattr(importlib.import_module(module), function or "load_registry")()
    if not isinstance(registry, NodeRegistry):
        raise TypeError(f"{spec} returned {type(registry).__name__}, not a NodeRegistry")
    return registry


class WorkerActor:
    """One worker: an executor with its own caches, run by Ray as an actor (see the module doc).

    Calls are served in threads (`max_concurrency` >= 2) so `cancel` and `inventory` answer while
    `run` streams; runs themselves go one at a time (the executor's lock)."""

    def __init__(self, name: str, settings: WorkerSettings) -> None:
        self.name = name
        self.settings = settings
        root = settings.scratch_root or Path(tempfile.gettempdir()) / "latentgraph-ray"
        self.scratch = root / f"{settings.pool or 'pool'}-{name}"
        shutil.rmtree(self.scratch, ignore_errors=True)  # what this worker left before a restart
        self.by_hash = self.scratch / "by-hash"
        self.folders = Folders(models=Path(settings.models_dir), extra_model_roots=[Path(p) for p in settings.extra_model_roots],
                               inputs=self.scratch / "input", outputs=self.scratch / "output", temp=self.scratch / "temp")
        for folder in (self.by_hash, self.folders.inputs, self.folders.outputs, self.folders.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.services = Services(folders=self.folders, device=settings.device, precision=settings.precision,
                                 allow_pickle=settings.allow_pickle, limits=settings.limits, compile=settings.compile,
                                 preview_method=settings.preview_method)
        self.registry = _load_registry(settings.registry)
        limits = ExecutionLimits(max_seconds=settings.max_run_seconds)
        if settings.max_value_bytes is not None:
            limits = replace(limits, max_value_bytes=settings.max_value_bytes)
        self.executor = Executor(self.registry, OutputCache(settings.cache_bytes), services=self.services,
                                 events=EventBus(), limits=limits)
        import torch

        torch.set_num_threads(max(1, settings.threads))
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()  # cancels that came before their run
        self._hashes: OrderedDict[tuple[str, str, str], str] = OrderedDict()  # file it saved → sha256
        self.runs = 0

    # --- calls ---------------------------------------------------------------------------------

    def inventory(self) -> dict[str, Any]:
        """Who it is, the checkpoints it has loaded (names in its checkpoints folders) and has on disk."""
        import ray
        import torch

        models = self.services._models
        return {
            "worker": self.name, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
            "loaded": self._loaded_checkpoints(), "checkpoints": self.folders.list_models("checkpoints"),
            "model_loads": models.loads if models is not None else 0, "runs": self.runs,
            "threads": torch.get_num_threads(), "device": self.services.placement_info(),
            "node_ip": ray.util.get_node_ip_address(), "niceness": os.nice(0),
        }

    def cancel(self, run_id: str) -> bool:
        """Stop the run at its next cancel point (also when the cancel arrives before the run)."""
        with self._lock:
            token = self._tokens.get(run_id)
            if token is None:
                self._cancelled_early[run_id] = None
                while len(self._cancelled_early) > 1000:
                    self._cancelled_early.popitem(last=False)
                return False
        token.cancel()
        return True

    def run(self, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Execute one job: yields {events: [...]} with the events produced since the last message,
        each as {type, run_id, timestamp, data[, files]}, in order; the last message also has
        `outcome` and `inventory`. Saved images come along in `files` of the event that reports
        them: [{type, subfolder, filename, sha256, data}]."""
        run_id = job["run_id"]
        token = CancelToken()
        with self._lock:
            self._tokens[run_id] = token
            if self._cancelled_early.pop(run_id, "no") is None:
                token.cancel()
        items: queues.SimpleQueue[tuple[str, Any]] = queues.SimpleQueue()
        sent: set[tuple[str, str, str]] = set()
        try:
            try:
                self._place_inputs(job.get("inputs") or {})
            except Exception as exc:
                error = {"node": None, "error_type": type(exc).__name__,
                         "message": f"the input images could not be placed on worker {self.name}: {exc}"}
                finished = {"type": "run_finished", "run_id": run_id, "timestamp": time.time(),
                            "data": {"status": FAILED, "seconds": 0.0, "results": {}, "errors": [error]}}
                yield {"events": [finished], "outcome": {"status": FAILED, "results": {}, "errors": [error], "summary": {}},
                       "inventory": self.inventory()}
                return

            def publish(event: Event) -> None:  # in the executor's thread, so in order
                items.put(("event", self._item(event, sent)))

            def work() -> None:
                try:
                    outcome = LocalWorker(self.executor).execute(Job(run_id, job["workflow"], job.get("outputs")),
                                                                 token, publish)
                    items.put(("outcome", outcome))
                except BaseException as exc:  # a bug: the head records the run as failed, with this
                    items.put(("error", exc))

            threading.Thread(target=work, name=f"latentgraph-run-{run_id}", daemon=True).start()
            while True:  # each message carries every event there is by then (one object, not one per event)
                batch = [items.get()]
                while batch[-1][0] == "event":
                    try:
                        batch.append(items.get_nowait())
                    except queues.Empty:
                        break
                events = [value for kind, value in batch if kind == "event"]
                kind, value = batch[-1]
                if kind == "error":
                    if events:
                        yield {"events": events}
                    raise value
                if kind == "event":
                    yield {"events": events}
                    continue
                self.runs += 1
                yield {"events": events, "outcome": {"status": value.status, "results": value.results,
                                                     "errors": value.errors, "summary": value.summary},
                       "inventory": self.inventory()}
                return
        finally:
            with self._lock:
                self._tokens.pop(run_id, None)
            self._prune()

    def close(self) -> None:
        """Remove the scratch folders (the pool calls it before letting the actor go)."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- inside ----------------------------------------------------------------------------------

    def _loaded_checkpoints(self) -> list[str]:
        models = self.services._models
        if models is None:
            return []
        dirs = self.folders.model_dirs("checkpoints")
        names = []
        for key in models.keys():
            if isinstance(key, tuple) and len(key) > 1 and key[0] == "checkpoint":
                path = str(key[1])
                for folder in dirs:
                    base = str(folder.resolve())
                    if path.startswith(base + os.sep):
                        names.append(path[len(base) + 1:].replace(os.sep, "/"))
                        break
        return sorted(set(names))

    def _item(self, event: Event, sent: set[tuple[str, str, str]]) -> dict[str, Any]:
        data = event.data
        item: dict[str, Any] = {"type": event.type, "run_id": event.run_id, "timestamp": event.timestamp}
        if data.get("preview") is not None:  # encoded here: the head passes it on as it is
            data = {**data, "preview": preview_object(data["preview"], self.settings.preview_max_side)}
        if event.type in ("node_finished", "run_finished"):
            files = []
            for ref in image_refs(data.get("results")):
                key = _ref_key(ref)
                if key not in sent:
                    sent.add(key)
                    files.append(self._file(key))
            if files:
                item["files"] = files
        item["data"] = data
        return item

    def _file(self, key: tuple[str, str, str]) -> dict[str, Any]:
        kind, subfolder, filename = key
        folder = self.folders.outputs if kind == "output" else self.folders.temp
        entry: dict[str, Any] = {"type": kind, "subfolder": subfolder, "filename": filename, "data": None,
                                 "sha256": self._hashes.get(key)}
        try:
            data = resolve_inside(folder, f"{subfolder}/{filename}" if subfolder else filename).read_bytes()
        except (OSError, ValueError):  # pruned long ago: the head may know it by hash
            return entry
        entry["data"], entry["sha256"] = data, _sha256(data)
        self._hashes[key] = entry["sha256"]
        while len(self._hashes) > 4 * self.settings.keep_files:
            self._hashes.popitem(last=False)
        return entry

    def _place_inputs(self, inputs: dict[str, dict[str, Any]]) -> None:
        """Put each input image under its name in the input folder, from the cache by hash (fetched
        from the object store only when missing there)."""
        import ray

        for name, entry in inputs.items():
            sha = entry["sha256"]
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ValueError(f"{name!r}: not a sha256 hash: {sha!r}")
            cached = self.by_hash / sha
            if not cached.is_file():
                data = ray.get(entry["data"])
                if _sha256(data) != sha:
                    raise ValueError(f"{name!r} arrived damaged (its sha256 differs from the head's)")
                partial = cached.with_name(f"{sha}.{secrets.token_hex(4)}.part")
                partial.write_bytes(data)
                os.replace(partial, cached)
            target = resolve_inside(self.folders.inputs, name)
            try:
                if os.path.samefile(target, cached):
                    os.utime(cached)  # recently used (the cache is pruned oldest first)
                    continue
            except OSError:
                pass
            target.parent.mkdir(parents=True, exist_ok=True)
            linked = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            os.link(cached, linked)
            os.replace(linked, target)
            os.utime(cached)

    def _prune(self) -> None:
        """Keep the newest saved images and input cache entries, within their bounds."""
        try:
            images = [p for folder in (self.folders.outputs, self.folders.temp) for p in folder.rglob("*") if p.is_file()]
            images.sort(key=lambda p: p.stat().st_mtime_ns)
            for path in images[: max(0, len(images) - self.settings.keep_files)]:
                path.unlink(missing_ok=True)
            cached = sorted((p for p in self.by_hash.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
            total = sum(p.stat().st_size for p in cached)
            for path in cached:
                if total <= self.settings.input_cache_bytes:
                    break
                total -= path.stat().st_size
                path.unlink(missing_ok=True)
        except OSError:
            log.exception("worker %s could not prune its scratch folders", self.name)


# --- the head side -----------------------------------------------------------------------------------

_NUMBERED = re.compile(r"^(?P<stem>.*)_(?P<counter>\d{5,})(?P<suffix>_?\.[A-Za-z0-9]+)$")


class HeadFiles:
    """Writes the files workers send into the head's output and temp folders, under fresh names:
    the worker's prefix and sub-folder, the head's counter (as save_image counts: after the
    highest number there), the bytes unchanged (PNG text chunks, the workflow among them, kept)."""

    def __init__(self, folders: Folders, min_free_disk: int = 0) -> None:
        self.folders = folders
        self.min_free_disk = min_free_disk
        self._lock = threading.Lock()  # one counter per prefix across all dispatchers
        self._known: OrderedDict[str, dict[str, str]] = OrderedDict()  # sha256 → the head's ref

    def receive(self, entry: dict[str, Any], fresh: bool) -> dict[str, str] | None:
        """The head's {filename, subfolder, type} for a file a worker reported. `fresh`: saved by
        the run now (always a new file); else a cached result's, which keeps the name it got before
        when that file is still there. None when its bytes are gone and the head never had them."""
        sha, data = entry.get("sha256"), entry.get("data")
        if not fresh and sha is not None:
            with self._lock:
                known = self._known.get(sha)
            if known is not None and self._path(known).is_file():
                return known
        if data is None:
            log.warning("a worker reported %s/%s, whose bytes neither it nor the head has any longer",
                        entry.get("subfolder"), entry.get("filename"))
            return None
        ref = self.write(entry["type"], entry.get("subfolder") or "", entry["filename"], data)
        with self._lock:
            self._known[sha or _sha256(data)] = ref
            while len(self._known) > KNOWN_FILES:
                self._known.popitem(last=False)
        return ref

    def write(self, kind: str, subfolder: str, filename: str, data: bytes) -> dict[str, str]:
        from latentgraph.nodes.images import check_free_space, glob_escape

        folder = self._folder(kind)
        match = _NUMBERED.match(filename)
        stem, suffix = (match["stem"], match["suffix"]) if match else (Path(filename).stem, "_" + (Path(filename).suffix or ".png"))
        prefix = f"{subfolder}/{stem}" if subfolder else stem
        target = resolve_inside(folder, f"{prefix}_00000{suffix}")  # UnsafeName for a name climbing out
        directory = target.parent
        if not self.folders.follow_symlinks:
            check_within(folder, directory, prefix)
        check_free_space(directory, len(data), self.min_free_disk)
        directory.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(stem) + r"_(\d{5,})" + re.escape(suffix) + "$")
        with self._lock:
            used = [int(m.group(1)) for p in directory.glob(f"{glob_escape(stem)}_*{glob_escape(suffix)}")
                    if (m := pattern.match(p.name))]
            counter = max(used, default=0) + 1
            while True:
                name = f"{stem}_{counter:05}{suffix}"
                try:
                    with open(directory / name, "xb") as file:
                        file.write(data)
                    break
                except FileExistsError:
                    counter += 1
        relative = directory.relative_to(folder.resolve()).as_posix()
        return {"filename": name, "subfolder": "" if relative == "." else relative, "type": kind}

    def _folder(self, kind: str) -> Path:
        if kind == "output":
            return self.folders.outputs
        if kind == "temp":
            return self.folders.temp
        raise ValueError(f"a worker sent a file of type {kind!r}; only output and temp files come back")

    def _path(self, ref: dict[str, str]) -> Path:
        folder = self._folder(ref["type"])
        return folder / ref["subfolder"] / ref["filename"] if ref["subfolder"] else folder / ref["filename"]


class InputObjects:
    """Input images the head put in Ray's object store, by content hash (LRU within a byte budget),
    and the hash of each input file by its identity, so an unchanged file is read and hashed once."""

    def __init__(self, max_bytes: int = INPUT_OBJECTS_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._objects: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # sha256 → (ObjectRef, bytes)
        self._hashes: OrderedDict[tuple[str, int, int], str] = OrderedDict()  # (path, size, mtime_ns) → sha256

    def entry(self, path: Path) -> dict[str, Any]:
        import ray

        stat = path.stat()
        identity = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            sha = self._hashes.get(identity)
            held = self._objects.get(sha) if sha is not None else None
            if held is not None:
                self._objects.move_to_end(sha)
                return {"sha256": sha, "data": held[0]}
        data = path.read_bytes()
        sha = _sha256(data)
        ref = ray.put(data)
        with self._lock:
            self._hashes[identity] = sha
            while len(self._hashes) > 4096:
                self._hashes.popitem(last=False)
            self._objects[sha] = (ref, len(data))
            self._objects.move_to_end(sha)
            while len(self._objects) > 1 and sum(size for _, size in self._objects.values()) > self.max_bytes:
                self._objects.popitem(last=False)
        return {"sha256": sha, "data": ref}


def _actor_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the actor (its process or its machine) is gone or restarting."""
    import ray.exceptions as errors

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "WorkerCrashedError",
             "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError", "RaySystemError")
    return tuple(getattr(errors, name) for name in names if hasattr(errors, name))


class RayWorker:
    """The `Worker` a pool dispatcher uses: sends a job to its actor, streams its events back."""

    def __init__(self, pool: "RayWorkerPool", name: str, actor: Any) -> None:
        self.pool = pool
        self.name = name
        self.actor = actor
        # What the pool's choice reads (under its lock): the checkpoints the actor has loaded, those
        # a run it took will load, and the checkpoint files it has (None until it first reported).
        self.loaded: frozenset[str] = frozenset()
        self.loading: frozenset[str] = frozenset()
        self.files: frozenset[str] | None = None
        self.inventory: dict[str, Any] | None = None
        self.ready = False
        self.runs = 0  # runs it executed to their end (any status)
        self._ping: Any = None
        self._killed: int | None = None  # the process of the actor it killed as hung

    # --- the dispatcher's hooks ----------------------------------------------------------------

    def wait_ready(self, timeout: float) -> bool:
        """True once the actor answers (after its start, or its restart after a death)."""
        if self.ready:
            return True
        import ray

        if self._ping is None:
            self._ping = self.actor.inventory.remote()
        done, _ = ray.wait([self._ping], timeout=timeout)
        if not done:
            return False
        ping, self._ping = self._ping, None
        try:
            inventory = ray.get(ping)
        except _actor_errors():  # restarting: asked again on the next call, not at once
            time.sleep(min(timeout, 0.25))
            return False
        if inventory.get("pid") == self._killed:  # the process it killed answered before it died
            time.sleep(min(timeout, 0.25))
            return False
        self.pool.update(self, inventory)
        self.ready = True
        return True

    def prefer(self, runs: Sequence[RunRecord]) -> int | None:
        return self.pool.choose(self, runs)

    # --- a run -----------------------------------------------------------------------------------

    def execute(self, job: Job, cancel: CancelToken, publish: Callable[[Event], None]) -> Outcome:
        import ray

        problem = self.pool.unservable(job)
        if problem is not None:
            error = {"node": problem[0], "error_type": "FileNotFoundError", "message": problem[1]}
            publish(Event("run_finished", job.run_id, {"status": FAILED, "seconds": 0.0, "results": {}, "errors": [error],
                                                       "worker": self.name}))
            self.pool.finished(self, None)
            return Outcome(FAILED, errors=[error])
        names: dict[tuple[str, str, str], dict[str, Any]] = {}
        inventory = None
        try:
            payload = {"run_id": job.run_id, "workflow": job.workflow, "outputs": job.outputs,
                       "inputs": self.pool.input_entries(job.workflow)}
            stream = self.actor.run.options(num_returns="streaming").remote(payload)
            started, cancelled_at, cancel_sent = time.monotonic(), None, 0.0
            while True:
                now = time.monotonic()
                if cancel.cancelled:
                    cancelled_at = now if cancelled_at is None else cancelled_at
                    if now - cancel_sent > CANCEL_REPEAT:
                        self.actor.cancel.remote(job.run_id)
                        cancel_sent = now
                hung = self._hung(now - started, None if cancelled_at is None else now - cancelled_at)
                if hung is not None:
                    return self._replace(job, hung, cancelled_at is not None, publish)
                ready, _ = ray.wait([stream], timeout=POLL)
                if not ready:
                    continue
                try:
                    message = ray.get(next(stream))
                except StopIteration:
                    message = None
                if not isinstance(message, dict):  # what Ray gives for a call whose process was killed, at times
                    raise WorkerLost(f"worker {self.name} ended the run without its outcome", self.name)
                for item in message.get("events", ()):
                    publish(self._event(item, names))
                if "outcome" in message:
                    inventory = message.get("inventory")
                    outcome = message["outcome"]
                    break
        except _actor_errors() as exc:
            self.ready = False
            self.pool.lost(self)
            raise WorkerLost(f"worker {self.name} was lost mid-run ({type(exc).__name__}: {_first_line(exc)})",
                             self.name) from exc
        except WorkerLost:
            self.ready = False  # asked again before it takes another run
            self.pool.lost(self)
            raise
        except BaseException:  # e.g. the head could not write a file: the run fails here, so stop it there
            self.actor.cancel.remote(job.run_id)
            self.pool.finished(self, None)
            raise
        self.pool.finished(self, inventory)
        return Outcome(outcome["status"], rewrite_refs(outcome["results"], names), outcome["errors"],
                       {**outcome["summary"], "worker": self.name})

    def _hung(self, running: float, since_cancel: float | None) -> str | None:
        """Why the worker counts as hung (None: it does not): it has not stopped `hang_grace`
        seconds after the run was cancelled, or after the run's time limit passed (a node stuck
        where it never reaches a cancel point, or the actor's process stuck whole)."""
        grace = self.pool.hang_grace
        if since_cancel is not None and since_cancel > grace:
            return f"worker {self.name} did not stop within {grace:g} s of the cancel"
        limit = self.pool.settings.max_run_seconds
        if limit > 0 and running > limit + grace:  # 0: no time limit
            return f"worker {self.name} ran past the run's time limit ({limit:g} s) by {grace:g} s"
        return None

    def _replace(self, job: Job, reason: str, cancelled: bool, publish: Callable[[Event], None]) -> Outcome:
        """Kill the hung actor (Ray starts a fresh one in its place, which the dispatcher waits
        for) and end the run: cancelled when it was, else failed (re-running it would hang again)."""
        import ray

        log.warning("run %s: %s; replacing it", job.run_id, reason)
        self._killed = (self.inventory or {}).get("pid")
        self.ready = False
        self.pool.lost(self)
        try:
            ray.kill(self.actor, no_restart=False)
        except Exception:  # already gone: Ray restarts it anyway
            log.debug("could not kill worker %s", self.name, exc_info=True)
        message = f"{reason}; it was replaced by a fresh worker"
        if cancelled:
            publish(Event("run_cancelled", job.run_id, {"seconds": 0.0, "node": None, "reason": message,
                                                        "worker": self.name}))
            return Outcome(CANCELLED, summary={"worker": self.name})
        error = {"node": None, "error_type": "WorkerHung", "message": message}
        publish(Event("run_finished", job.run_id, {"status": FAILED, "seconds": 0.0, "results": {}, "errors": [error],
                                                   "worker": self.name}))
        return Outcome(FAILED, errors=[error], summary={"worker": self.name})

    def _event(self, item: dict[str, Any], names: dict[tuple[str, str, str], dict[str, Any]]) -> Event:
        data = dict(item["data"])
        files = item.get("files")
        if files:
            fresh = item["type"] == "node_finished"
            for entry in files:
                ref = self.pool.files.receive(entry, fresh)
                if ref is not None:
                    names[(entry["type"], entry.get("subfolder") or "", entry["filename"])] = ref
        if "results" in data:
            data["results"] = rewrite_refs(data["results"], names)
        data["worker"] = self.name
        return Event(item["type"], item["run_id"], data, item["timestamp"])


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


class RayWorkerPool:
    """N dispatchers, one per worker actor, all taking from the one queue; in the server's state in
    the place of the single dispatcher (`start`, `stop`, `alive`).

    `count` actors are made when the pool starts: with GPUs in the cluster each takes one
    (`num_gpus=1`), else one CPU core (`num_cpus=1`, and so one torch thread). None: one per GPU
    in the cluster, else one per CPU. `address` connects to a running cluster ("auto", or the
    head's address); None starts a cluster in this process with `count` CPUs (when Ray is not
    already initialised, as tests do it)."""

    def __init__(self, queue: RunQueue, store: RunStore, hub: EventHub, registry: NodeRegistry, folders: Folders,
                 settings: WorkerSettings, *, count: int | None = None, address: str | None = None,
                 preview_max_side: int = 256, bounds: StoredBounds | None = None,
                 after_run: Callable[[], None] = lambda: None, min_free_disk: int = 0,
                 ray_temp_dir: Path | None = None, hang_grace: float = HANG_GRACE) -> None:
        self.queue = queue
        self.store = store
        self.hub = hub
        self.registry = registry
        self.settings = replace(settings, pool=settings.pool or secrets.token_hex(4))
        self.count = count
        self.address = address
        self.preview_max_side = preview_max_side
        self.bounds = bounds
        self.after_run = after_run
        self.ray_temp_dir = ray_temp_dir
        self.hang_grace = hang_grace
        self.files = HeadFiles(folders, min_free_disk)
        self.inputs = InputObjects()
        self.folders = folders
        self.workers: list[RayWorker] = []
        self.dispatchers: list[Dispatcher] = []
        self._lock = threading.Lock()
        self._started_ray = False
        queue.needs_of = self.needs_of

    # --- the server's dispatcher interface -------------------------------------------------------

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            self._started_ray = True
            init_ray(self.address, cpus=self.count, temp_dir=self.ray_temp_dir)
        count = self.count or default_worker_count()
        gpus = worker_gpus(ray.cluster_resources().get("GPU", 0), count, self.settings.device)
        remote = ray.remote(WorkerActor)
        for index in range(count):
            name = f"worker-{index}"
            actor = remote.options(max_restarts=-1, max_task_retries=0, max_concurrency=4, num_cpus=1,
                                   num_gpus=gpus).remote(name, self.settings)
            worker = RayWorker(self, name, actor)
            self.workers.append(worker)
            self.dispatchers.append(Dispatcher(self.queue, self.store, self.hub, worker, self.preview_max_side,
                                               name=f"latentgraph-{name}", events=EventWriter(self.store),
                                               bounds=self.bounds, after_run=self.after_run))
        log.info("Ray worker pool: %d worker(s) (%s each)", count, f"{gpus:g} GPU" if gpus else "1 CPU core, 1 thread")
        for dispatcher in self.dispatchers:
            dispatcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the runs in progress (recorded as interrupted), leave queued runs queued, let the
        actors go (and Ray, when the pool started it)."""
        import ray

        self.queue.close()
        self.queue.cancel_all_running()
        for dispatcher in self.dispatchers:
            dispatcher.stop(timeout)
        closing = [worker.actor.close.remote() for worker in self.workers]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=5.0)
        except Exception:  # an actor that is gone has nothing to clean
            pass
        for worker in self.workers:
            try:
                ray.kill(worker.actor, no_restart=True)
            except Exception:
                pass
        if self._started_ray:
            ray.shutdown()

    @property
    def alive(self) -> bool:
        return bool(self.dispatchers) and all(d.alive for d in self.dispatchers)

    # --- placement -------------------------------------------------------------------------------

    def needs_of(self, workflow: dict[str, Any]) -> frozenset[str]:
        return checkpoints_of(workflow, self.registry)

    def choose(self, worker: RayWorker, runs: Sequence[RunRecord]) -> int | None:
        """Which of `runs` (the leading queued runs of one priority) `worker` takes:

        1. the first whose checkpoints it has loaded (or is loading);
        2. else the first whose checkpoints no other worker has loaded or is loading, if it has the files;
        3. else the first it has the files for whose checkpoints are held by fewer other workers than
           there are runs waiting for them (so a sweep spreads over all workers, each loading the
           model once, but the last run of a model waits for the worker that has it loaded rather
           than be loaded a second time); runs that need no checkpoint any worker takes;
        4. else, when no worker has the files of the first run, that run (it fails, naming them).

        None: leave them to workers that suit them better (the dispatcher waits for a change)."""
        needs = [self.queue.needs.get(run.id, frozenset()) for run in runs]
        with self._lock:
            mine = worker.loaded | worker.loading
            holders: dict[str, int] = {}
            for other in self.workers:
                if other is not worker:
                    for name in other.loaded | other.loading:
                        holders[name] = holders.get(name, 0) + 1
            demand: dict[str, int] = {}
            for need in needs:
                for name in need:
                    demand[name] = demand.get(name, 0) + 1

            def can(need: frozenset[str], who: RayWorker = worker) -> bool:
                return who.files is None or need <= who.files

            def worth_loading(need: frozenset[str]) -> bool:
                return all(demand[name] > holders.get(name, 0) for name in need - mine)

            choice = next((i for i, need in enumerate(needs) if need and need <= mine), None)
            if choice is None:
                choice = next((i for i, need in enumerate(needs) if need and not any(n in holders for n in need)
                               and can(need)), None)
            if choice is None:
                choice = next((i for i, need in enumerate(needs) if can(need) and worth_loading(need)), None)
            if choice is None and not any(can(needs[0], w) for w in self.workers):
                choice = 0
            if choice is not None:
                worker.loading = needs[choice]
            return choice

    def update(self, worker: RayWorker, inventory: dict[str, Any] | None) -> None:
        """A worker's inventory arrived (when it came up, and after each run)."""
        if inventory is not None:
            if inventory.get("niceness") and (worker.inventory or {}).get("niceness") != inventory["niceness"]:
                log.warning("worker %s runs at niceness %s: on a busy machine it gets little CPU; start its Ray node "
                            "with RAY_worker_niceness=0", worker.name, inventory["niceness"])
            with self._lock:
                worker.inventory = inventory
                worker.loaded = frozenset(inventory.get("loaded") or ())
                worker.files = frozenset(inventory.get("checkpoints") or ())
        self.queue.wake()  # a worker that left runs to this one may now take them, or the other way

    def finished(self, worker: RayWorker, inventory: dict[str, Any] | None) -> None:
        with self._lock:
            worker.loading = frozenset()
            worker.runs += 1
        self.update(worker, inventory)

    def lost(self, worker: RayWorker) -> None:
        """Its actor died: Ray restarts it with nothing loaded."""
        with self._lock:
            worker.loaded = worker.loading = frozenset()
            worker.inventory = None
        self.queue.wake()

    def unservable(self, job: Job) -> tuple[str | None, str] | None:
        """(node, message) when a checkpoint the job names is on no worker's disk (after asking
        them again), else None."""
        needs = self.needs_of(job.workflow)
        if not needs:
            return None
        missing = self._missing(needs)
        if not missing:
            return None
        self.refresh()
        missing = self._missing(needs)
        if not missing:
            return None
        name = sorted(missing)[0]
        from latentgraph.nodes.loaders import _checkpoint_choices

        node = next((n for n, _, value in _literal_inputs(job.workflow, self.registry, _checkpoint_choices) if value == name), None)
        with self._lock:
            have = "; ".join(f"{w.name}: {', '.join(sorted(w.files)) or 'none'}" if w.files is not None
                             else f"{w.name}: not reporting" for w in self.workers)
        return node, (f"no worker has the checkpoint {name!r} in its checkpoints folders (checkpoints on each "
                      f"worker: {have}); put the file on the workers' models folders (a shared volume, or the "
                      "same files on every machine)")

    def _missing(self, needs: frozenset[str]) -> frozenset[str]:
        with self._lock:
            if any(w.files is None for w in self.workers):
                reported = [w.files for w in self.workers if w.files is not None]
                if not reported:
                    return frozenset()  # nobody reported yet: let the worker try
            else:
                reported = [w.files for w in self.workers]
            return frozenset(n for n in needs if not any(n in files for files in reported))

    def refresh(self, timeout: float = REFRESH_TIMEOUT) -> None:
        """Ask every worker for its inventory again (e.g. files were added to their folders)."""
        import ray

        asked = {worker.actor.inventory.remote(): worker for worker in self.workers}
        done, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout)
        for ref in done:
            try:
                self.update(asked[ref], ray.get(ref))
            except _actor_errors():
                pass

    def input_entries(self, workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """name → {sha256, data (an ObjectRef)} for each input image the workflow names that the
        head has (one it lacks is left to the worker's check, which names it)."""
        entries = {}
        for name in input_images_of(workflow, self.registry):
            try:
                path = self.folders.input_path(name)
                if path.is_file():
                    entries[name] = self.inputs.entry(path)
            except (OSError, ValueError):
                continue
        return entries

    def status(self) -> list[dict[str, Any]]:
        """Each worker as the pool sees it (for /api/system and tests)."""
        with self._lock:
            return [{"worker": w.name, "ready": w.ready, "runs": w.runs, "loaded": sorted(w.loaded),
                     "loading": sorted(w.loading), "inventory": w.inventory} for w in self.workers]


# --- connecting ----------------------------------------------------------------------------------------

def _ray_environment() -> None:
    """No usage statistics sent; token authentication on; worker processes (the actors) at normal
    priority: Ray starts them `nice`d by 15 to keep its own processes responsive, which on a busy
    machine starves the actors (a run there took 30x its time beside two busy processes). Ray reads
    these when it is first imported (the last when a node starts), so this runs when this module
    is imported too (import it before Ray)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_worker_niceness", "0")


_ray_environment()


def _refresh_ray_config() -> None:
    """Make Ray read the environment again, when it was imported before it was set (Ray itself
    does this when it turns token authentication on)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: it read the environment at import
        log.debug("could not refresh Ray's configuration", exc_info=True)


def init_ray(address: str | None, *, cpus: int | None = None, temp_dir: Path | None = None,
             object_store_memory: int | None = None) -> None:
    """Connect to a Ray cluster (`address`: "auto" or the head's address) or, with None, start one
    in this process with `cpus` CPUs. Token authentication is on: a started cluster gets a fresh
    token (in this process's environment only); connecting needs the cluster's token, from
    RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token."""
    _ray_environment()
    if address is None:
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    _refresh_ray_config()
    if address is None:
        options: dict[str, Any] = {"num_cpus": cpus or os.cpu_count() or 1, "include_dashboard": False,
                                   "namespace": "latentgraph"}
        if temp_dir is not None:
            options["_temp_dir"] = str(temp_dir)
        if object_store_memory is not None:
            options["object_store_memory"] = object_store_memory
        ray.init(**options)
        return
    try:
        ray.init(address=address, namespace="latentgraph")
    except Exception as exc:
        raise ConnectionError(
            f"could not connect to the Ray cluster at {address!r}: {_first_line(exc, 2000)} Start it with "
            "`ray start --head` (and `ray start --address=HEAD:6379` on each worker machine), every node and this "
            "process with RAY_AUTH_MODE=token and the same token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or "
            "~/.ray/auth_token)") from exc


def worker_gpus(cluster_gpus: float, count: int, device: str | None) -> float:
    """The GPUs each worker actor asks Ray for: none on a CPU cluster (or with a CPU device), one
    each when there are as many GPUs as workers, else an equal share (more workers than GPUs share
    them rather than wait for ever for a GPU of their own)."""
    if cluster_gpus < 1 or not (device or "cuda").startswith("cuda"):
        return 0
    return min(1.0, int(cluster_gpus) / count)


def default_worker_count() -> int:
    """One worker per GPU in the cluster, else one per CPU."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return gpus if gpus else max(1, int(resources.get("CPU", 1)))


def settings_for(config: Any, folders: Folders) -> WorkerSettings:
    """Worker settings from a ServerConfig: the head's model folders (absolute) unless the config
    names the workers' own, and the head's device, precision, caches and limits."""
    models = getattr(config, "ray_models_dir", None)
    return WorkerSettings(
        models_dir=Path(models).absolute() if models is not None else folders.models,
        extra_model_roots=[] if models is not None else list(folders.extra_model_roots),
        device=config.device, precision=config.precision, allow_pickle=config.allow_pickle, compile=config.compile,
        preview_method=config.preview_method, cache_bytes=config.cache_bytes, limits=config.limits, max_value_bytes=config.max_value_bytes,
        max_run_seconds=config.max_run_seconds, preview_max_side=config.preview_max_side)


__all__ = ["HeadFiles", "InputObjects", "RayWorker", "RayWorkerPool", "WorkerActor", "WorkerSettings",
           "checkpoints_of", "default_worker_count", "image_refs", "init_ray", "input_images_of", "rewrite_refs",
           "settings_for"]
