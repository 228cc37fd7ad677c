"""The `latentgraph` command: run, validate, import, serve, list nodes, print the workflow schema.

Exit codes: 0 success, 1 validation or run failure, 2 usage (bad arguments, unreadable file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence, TextIO

from latentgraph.engine import EventBus, Event, ExecutionLimits, Executor, NodeRegistry, OutputCache, find_issues, ports, workflow_json_schema
from latentgraph.engine.workflow import WorkflowFormatError, parse_workflow

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit code 2."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4GiB', '512MB', '1000' → bytes (binary units either way)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GiB, 512MiB)")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * 1024 ** " kmgt".index(unit or " "))


def _read_workflow(path: str) -> Any:
    """The workflow document (migrated to the current format where it parses), or its raw text
    when it is not JSON, so that validation reports it like every other problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read workflow {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"workflow {path!r} is not UTF-8 text") from None
    try:
        return parse_workflow(text).to_dict()
    except WorkflowFormatError:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep for json (validation says so)
            return text


def _split_assignment(text: str, option: str) -> tuple[str, str, str]:
    key, sep, value = text.partition("=")
    node_id, dot, input_name = key.rpartition(".")
    if not sep or not dot or not node_id or not input_name:
        raise UsageError(f"{option} expects NODE.INPUT=VALUE, got {text!r}")
    return node_id, input_name, value


def _coerce(document: dict[str, Any], reg: NodeRegistry, node_id: str, input_name: str, text: str, option: str) -> Any:
    """Interpret command-line text as a JSON value, except for STRING inputs, which take it as is."""
    nodes_ = document["nodes"]
    if node_id not in nodes_:
        known = ", ".join(nodes_)
        raise UsageError(f"{option}: the workflow has no node {node_id!r} (its nodes: {known})")
    spec_ = nodes_[node_id]
    if not isinstance(spec_, dict):
        raise UsageError(f"{option}: node {node_id!r} is not a JSON object in the workflow")
    info = reg.get(spec_.get("type", ""))
    spec = info.inputs.get(input_name) if info else None
    if spec is not None and spec.port == ports.STRING:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_input(document: dict[str, Any], node_id: str, input_name: str, value: Any) -> None:
    document["nodes"][node_id].setdefault("inputs", {})[input_name] = value


def _sweep_values(text: str) -> list[str]:
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--sweep list is not valid JSON: {exc.msg}") from None
        return [v if isinstance(v, str) else json.dumps(v) for v in values]
    return text.split(",")


class ProgressDisplay:
    """One live status line on a terminal; on a pipe, one line per finished, failed or skipped node."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.total = 0
        self.done = 0

    def __call__(self, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == "run_started":
            self.total, self.done = len(data["to_run"]), 0
            if self.live:
                self._line(f"{len(data['cached'])} cached, {self.total} to run")
        elif kind == "node_started" and self.live:
            self._line(f"[{self.done + 1}/{self.total}] {data['node']} ({data['node_type']})")
        elif kind == "node_progress" and self.live:
            width = 24
            filled = int(width * data["step"] / max(data["total"], 1))
            bar = "#" * filled + "-" * (width - filled)
            self._line(f"[{self.done + 1}/{self.total}] {data['node']} [{bar}] {data['step']}/{data['total']}")
        elif kind == "node_finished":
            self.done += 1
            if not self.live:
                self.stream.write(f"  {data['node']} ({data['node_type']}) {data['seconds']:.2f} s\n")
        elif kind == "node_failed":
            self.done += 1
            self._end(f"  FAILED {data['node']} ({data['type']}): {data['error_type']}: {data['message']}")
        elif kind == "node_skipped":
            self._end(f"  skipped {data['node']} ({data['node_type']}): {data['reason']}")
        elif kind in ("run_finished", "run_cancelled") and self.live:
            self._line("")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + text)

    def _end(self, text: str) -> None:
        self.stream.write(("\r\x1b[2K" if self.live else "") + text + "\n")


def _print_issues(issues: Sequence[Any], stream: TextIO) -> None:
    stream.write(f"workflow is invalid ({len(issues)} problem{'s' if len(issues) != 1 else ''}):\n")
    for issue in issues:
        stream.write(f"  [{issue.code}] {issue.message}\n")


def _comfyui_document(document: Any, path: str, reg: NodeRegistry, args: argparse.Namespace) -> Any:
    """A ComfyUI workflow (UI or API format) converted to ours, its import report on stderr; anything
    else as it is. None when some node could not be mapped (the report says which)."""
    from latentgraph.nodes.comfyui import ComfyImportError, detect_format, import_document

    try:
        if detect_format(document) == "latentgraph":
            return document
        result = import_document(document, registry=reg, services=_services(args))
    except ComfyImportError:
        return document
    for line in result.report.lines():
        sys.stderr.write(f"{path}: import: {line}\n")
    return result.workflow if result.report.ok else None


def command_run(args: argparse.Namespace, reg: NodeRegistry) -> int:
    document = _comfyui_document(_read_workflow(args.workflow), args.workflow, reg, args)
    if document is None:
        sys.stderr.write(f"{args.workflow}: a ComfyUI workflow with nodes Latentgraph cannot map; see "
                         "`latentgraph import` for the converted rest\n")
        return EXIT_FAILED
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), dict):
        _, issues = find_issues(document, reg, args.output or None)
        _print_issues(issues, sys.stderr)
        return EXIT_FAILED
    for text in args.set:
        node_id, input_name, value = _split_assignment(text, "--set")
        _set_input(document, node_id, input_name, _coerce(document, reg, node_id, input_name, value, "--set"))
    sweeps = []
    for text in args.sweep:
        node_id, input_name, values = _split_assignment(text, "--sweep")
        coerced = [_coerce(document, reg, node_id, input_name, v, "--sweep") for v in _sweep_values(values)]
        sweeps.append([(node_id, input_name, v) for v in coerced])
    combos = list(itertools.product(*sweeps)) if sweeps else [()]

    executor = Executor(reg, OutputCache(args.cache_size), services=_services(args), events=EventBus(),
                        limits=ExecutionLimits(max_value_bytes=args.max_value_size))
    with ExitStack() as stack:
        if args.events:
            try:
                events_file = stack.enter_context(open(args.events, "w", encoding="utf-8"))
            except OSError as exc:
                raise UsageError(f"cannot write events to {args.events!r}: {exc.strerror or exc}") from None
            stack.callback(executor.events.subscribe(lambda e: events_file.write(e.to_json() + "\n")))
        if not args.quiet:
            stack.callback(executor.events.subscribe(ProgressDisplay(sys.stderr)))

        summaries = []
        exit_code = EXIT_OK
        for index, combo in enumerate(combos):
            for node_id, input_name, value in combo:
                _set_input(document, node_id, input_name, value)
            label = ", ".join(f"{n}.{i}={json.dumps(v)}" for n, i, v in combo)
            graph, issues = find_issues(document, reg, args.output or None, services=executor.services)
            if graph is None:
                _print_issues(issues, sys.stderr)
                summaries.append({"sweep": label, "status": "invalid", "errors": [i.to_dict() for i in issues]})
                exit_code = EXIT_FAILED
                break
            try:
                result = executor.run(graph)
            except KeyboardInterrupt:
                sys.stderr.write("\ninterrupted\n")
                return 130
            summaries.append({
                "sweep": label,
                "run_id": result.run_id,
                "status": result.status,
                "seconds": round(result.seconds, 4),
                "executed": result.executed,
                "cached": result.cached,
                "results": result.results,
                "errors": [e.to_dict() for e in result.errors],
            })
            if not args.json:
                head = f"run {index + 1}/{len(combos)}" + (f" ({label})" if label else "")
                print(f"{head}: {result.status} in {result.seconds:.2f} s, "
                      f"{len(result.executed)} ran, {len(result.cached)} cached")
                for node_id, results in result.results.items():
                    print(f"  {node_id}: {json.dumps(results, default=str)}")
                for error in result.errors:
                    print(f"  error in {error}")
            if not result.ok:
                exit_code = EXIT_FAILED
    if args.json:
        print(json.dumps(summaries, indent=2, default=str))
    return exit_code


def _services(args: argparse.Namespace) -> Any:
    """Folders, device, precision and limits for the node library, from the command line."""
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.services import Services

    folders = Folders.from_options(models=args.models_dir, extra_model_roots=args.extra_models_dir,
                                   inputs=args.input_dir, outputs=args.output_dir,
                                   follow_symlinks=args.follow_symlinks)
    return Services(folders=folders, device=args.device, precision=args.precision, allow_pickle=args.allow_pickle,
                    limits=_run_limits(args), compile=args.compile,
                    preview_method=args.preview_method or "none")  # run shows no images: none unless asked


def _run_limits(args: argparse.Namespace) -> Any:
    from latentgraph.nodes.services import RunLimits

    return RunLimits(max_pixels=args.max_pixels, max_batch=args.max_batch, max_steps=args.max_steps,
                     memory_fraction=args.memory_fraction, min_free_disk=args.min_free_disk)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """What one run may cost: checked when a workflow is validated and again by the nodes as they run."""
    from latentgraph.engine.limits import DEFAULT_MAX_VALUE_BYTES
    from latentgraph.nodes.services import RunLimits

    defaults = RunLimits()
    group = parser.add_argument_group("limits (0 switches one off)")
    group.add_argument("--max-pixels", type=int, default=defaults.max_pixels, metavar="N",
                       help=f"width x height of any image or latent a run makes (default {defaults.max_pixels:,} = 2048x2048)")
    group.add_argument("--max-batch", type=int, default=defaults.max_batch, metavar="N",
                       help=f"images in one batch (default {defaults.max_batch})")
    group.add_argument("--max-steps", type=int, default=defaults.max_steps, metavar="N",
                       help=f"sampler steps (default {defaults.max_steps})")
    group.add_argument("--memory-fraction", type=float, default=defaults.memory_fraction, metavar="F",
                       help="refuse sampling or decoding whose estimated memory is over this share of the free "
                            f"memory (default {defaults.memory_fraction})")
    group.add_argument("--min-free-disk", type=parse_size, default=defaults.min_free_disk, metavar="SIZE",
                       help="free space that must remain on the disk images are saved to (default 256MiB)")
    group.add_argument("--max-value-size", type=parse_size, default=DEFAULT_MAX_VALUE_BYTES, metavar="SIZE",
                       help="text in any one value a node makes (default 4MiB); a node over it fails")


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run or validate workflows against the model folders."""
    from latentgraph.nodes.services import PREVIEW_METHODS

    group = parser.add_argument_group("folders and device")
    group.add_argument("--models-dir", type=Path, metavar="DIR", help="models root (default: ./models)")
    group.add_argument("--extra-models-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="another models root to search, e.g. an existing ComfyUI or A1111 models folder")
    group.add_argument("--input-dir", type=Path, metavar="DIR", help="input images (default: ./input)")
    group.add_argument("--output-dir", type=Path, metavar="DIR", help="saved images (default: ./output)")
    group.add_argument("--device", metavar="DEVICE", help="cuda, cuda:1 or cpu (default: cuda when present)")
    group.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                       help="model precision (default: fp16 on CUDA, fp32 on the CPU)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the U-Net and VAE decoder (inductor; on the CPU with frozen weights): the "
                            "first image of each model and size pays the compile (1-2 minutes for SD1.5 on a small "
                            "CPU), later ones run faster; a LoRA change recompiles on the CPU")
    group.add_argument("--preview-method", choices=PREVIEW_METHODS,
                       help="step previews: taesd decodes them at full size with the tiny autoencoder in "
                            "models/vae_approx (taesd_decoder for SD1.x/2.x, taesdxl_decoder for SDXL), "
                            "latent2rgb is a quick 1/8-size colour map, auto takes taesd where its file is "
                            "present (default: auto for serve, none for run, which shows no images)")
    group.add_argument("--allow-pickle", action="store_true",
                       help="also load .ckpt/.pt checkpoints, with torch's weights-only loader")
    group.add_argument("--follow-symlinks", action="store_true",
                       help="follow symbolic links in the input, output and temp folders that lead outside them "
                            "(refused by default; links in model folders are always followed)")


def command_validate(args: argparse.Namespace, reg: NodeRegistry) -> int:
    services = _services(args)  # the folders that choices (checkpoint names, input images) are checked against
    document = _read_workflow(args.workflow)
    graph, issues = find_issues(document, reg, args.output or None, services=services)
    if args.json:
        print(json.dumps({"valid": graph is not None, "errors": [i.to_dict() for i in issues]}, indent=2))
    elif graph is None:
        _print_issues(issues, sys.stdout)
    else:
        print(f"{args.workflow}: valid ({len(graph.nodes)} nodes, outputs: {', '.join(graph.outputs)})")
    return EXIT_OK if graph is not None else EXIT_FAILED


def command_import(args: argparse.Namespace, reg: NodeRegistry) -> int:
    """Convert a ComfyUI workflow (UI or API format, JSON or PNG) and print what could not be carried
    over. Exit 0 when every node mapped (missing files are reported), 1 when some did not (the
    partial workflow is still written), 2 when the file is not a workflow at all."""
    from latentgraph.nodes.comfyui import ComfyImportError, import_document

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file!r}: {exc.strerror or exc}") from None
    try:
        result = import_document(data, registry=reg, services=_services(args))
    except ComfyImportError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    if result.report.format != "latentgraph" and not result.workflow["meta"].get("name"):
        result.workflow["meta"]["name"] = Path(args.file).stem
    text = json.dumps(result.workflow, indent=2, ensure_ascii=False) + "\n"
    report = result.report
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    stream = sys.stdout if args.output else sys.stderr
    if args.json:
        stream.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        nodes = len(result.workflow["nodes"])
        where = f" to {args.output}" if args.output else ""
        stream.write(f"{args.file}: {report.format} workflow, {nodes - len(report.unmapped)} of {nodes} nodes converted{where}"
                     f"{'' if report.ok else f'; {len(report.unmapped)} could not be mapped'}\n")
        for line in report.lines():
            stream.write(f"  {line}\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def command_nodes(args: argparse.Namespace, reg: NodeRegistry) -> int:
    catalog = reg.catalog()
    if args.type:
        catalog = [entry for entry in catalog if entry["type"] in args.type]
        missing = set(args.type) - {entry["type"] for entry in catalog}
        if missing:
            raise UsageError(f"unknown node type(s): {', '.join(sorted(missing))}")
    print(json.dumps(catalog, indent=2, default=str))
    return EXIT_OK


def command_schema(args: argparse.Namespace, reg: NodeRegistry) -> int:
    print(json.dumps(workflow_json_schema(), indent=2))
    return EXIT_OK


def command_serve(args: argparse.Namespace, reg: NodeRegistry) -> int:
    import os

    from latentgraph.server import ConfigError, ServerConfig, serve
    from latentgraph.server.config import TOKEN_ENV

    config = ServerConfig(
        host=args.host, port=args.port, token=args.token or os.environ.get(TOKEN_ENV) or None,
        allowed_origins=args.allow_origin, allowed_hosts=args.allow_host,
        models_dir=args.models_dir, extra_model_roots=args.extra_models_dir, input_dir=args.input_dir,
        output_dir=args.output_dir, temp_dir=args.temp_dir, device=args.device, precision=args.precision, compile=args.compile,
        preview_method=args.preview_method or "auto",
        allow_pickle=args.allow_pickle, follow_symlinks=args.follow_symlinks, cache_bytes=args.cache_size,
        max_upload_bytes=args.max_upload,
        clear_temp=not args.keep_temp,
        limits=_run_limits(args), max_value_bytes=args.max_value_size, max_run_seconds=args.max_run_time,
        max_stored_value=args.max_stored_value, max_queued=args.max_queued,
        max_queued_per_client=args.max_queued_per_client, history_max_runs=args.history_max_runs,
        history_max_days=args.history_max_days,
    )
    if args.user_dir is not None:
        config.user_dir = args.user_dir
    if args.web_dir is not None:
        config.web_dir = args.web_dir
    config.backups, config.backup_interval = args.backups, args.backup_interval
    config.restore_backup, config.reset_database = args.restore_backup, args.reset_database
    config.ray_address, config.ray_workers, config.ray_models_dir = args.ray, args.ray_workers, args.ray_models_dir
    config.ray_hang_grace = args.ray_hang_grace
    if config.uses_ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # not imported: Ray reads its settings when it is
            raise UsageError("--ray and --ray-workers need Ray: pip install 'latentgraph[ray]'")
    try:
        config.check()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    from latentgraph.server.backup import DatabaseProblem

    if config.uses_ray:  # connect (or start the local cluster) first: a refusal is a message, not a traceback
        import logging

        from latentgraph.server.cluster import init_ray

        logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
        try:
            init_ray(config.ray_address, cpus=config.ray_workers)
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
    try:
        serve(config, registry=reg, log_level=args.log_level)
    except DatabaseProblem as exc:  # a damaged run database, or nothing to restore: what to do, no traceback
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _server_defaults() -> Any:
    """The server's defaults, for the help text (imported late: `run` does not load the server)."""
    from latentgraph.server.config import ServerConfig

    return ServerConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentgraph", description="Latentgraph: a node-graph engine for Stable Diffusion.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow JSON file (ours, or ComfyUI's UI or API format)")
    run.add_argument("workflow", help="path to a workflow .json file; a ComfyUI one is converted first (see import)")
    run.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input (JSON value; STRING inputs take the text as is); repeatable")
    run.add_argument("--sweep", action="append", default=[], metavar="NODE.INPUT=V1,V2,...",
                     help="run once per value in one process, so unchanged nodes come from the cache; "
                          "several sweeps run every combination; a JSON list is taken too")
    run.add_argument("--events", metavar="FILE.jsonl", help="write every event as one JSON line")
    run.add_argument("--output", action="append", default=[], metavar="NODE",
                     help="run only what these nodes need (default: every output node)")
    run.add_argument("--cache-size", type=parse_size, default=parse_size("4GiB"), metavar="SIZE",
                     help="bound of the output cache (default 4GiB)")
    run.add_argument("--json", action="store_true", help="print a JSON summary of each run")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    add_folder_options(run)
    add_limit_options(run)
    run.set_defaults(handler=command_run)

    validate = sub.add_parser("validate", help="check a workflow and list every problem (exit 1 if any)")
    validate.add_argument("workflow")
    validate.add_argument("--output", action="append", default=[], metavar="NODE")
    validate.add_argument("--json", action="store_true", help="print the problems as JSON")
    add_folder_options(validate)
    add_limit_options(validate)
    validate.set_defaults(handler=command_validate)

    import_ = sub.add_parser("import", help="convert a ComfyUI workflow (.json or .png) and report what did not map",
                             description="Convert a ComfyUI workflow (UI or API format, or a PNG carrying one) to a "
                                         "Latentgraph workflow. Exit 0 when every node mapped (missing model or "
                                         "image files are reported), 1 when some did not (the partial workflow is "
                                         "still written), 2 when the file is not a workflow.")
    import_.add_argument("file", help="ComfyUI workflow .json or .png")
    import_.add_argument("-o", "--output", metavar="OUT.json", help="write the workflow here (default: standard output, "
                                                                    "with the report on standard error)")
    import_.add_argument("--json", action="store_true", help="print the report as JSON")
    add_folder_options(import_)
    add_limit_options(import_)
    import_.set_defaults(handler=command_import)

    nodes_ = sub.add_parser("nodes", help="print the node catalog as JSON")
    nodes_.add_argument("--type", action="append", metavar="TYPE", help="only these node types")
    nodes_.set_defaults(handler=command_nodes)

    serve = sub.add_parser("serve", help="start the HTTP/websocket server and the editor",
                           description="Serve the API, the websocket and the editor. Listens on 127.0.0.1 unless "
                                       "--host says otherwise; any other address needs an API token.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8188, help="port (default 8188)")
    serve.add_argument("--token", metavar="TOKEN",
                       help="API token required on every request (default: $LATENTGRAPH_TOKEN; "
                            "required when --host is not a loopback address)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="another origin whose pages may use the API, e.g. the editor's dev server "
                            "http://localhost:5173; repeatable")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="another host name requests may use on loopback (default: localhost, 127.0.0.1, ::1)")
    serve.add_argument("--user-dir", type=Path, metavar="DIR",
                       help="run history (runs.sqlite) and saved workflows (default: ./user)")
    serve.add_argument("--temp-dir", type=Path, metavar="DIR", help="preview images, cleared at start-up (default: ./temp)")
    serve.add_argument("--keep-temp", action="store_true", help="do not clear the temp folder at start-up")
    serve.add_argument("--web-dir", type=Path, metavar="DIR", help="the editor's built files (default: the one shipped in the package, latentgraph/web)")
    serve.add_argument("--cache-size", type=parse_size, default=parse_size("4GiB"), metavar="SIZE",
                       help="bound of the output cache (default 4GiB)")
    serve.add_argument("--max-upload", type=parse_size, default=parse_size("32MiB"), metavar="SIZE",
                       help="largest image upload (default 32MiB)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_folder_options(serve)
    add_limit_options(serve)
    server_defaults = _server_defaults()
    group = serve.add_argument_group("server limits and history (0 switches one off)")
    group.add_argument("--max-run-time", type=float, default=server_defaults.max_run_seconds, metavar="SECONDS",
                       help=f"a run still going after this fails (default {server_defaults.max_run_seconds:g})")
    group.add_argument("--max-stored-value", type=parse_size, default=server_defaults.max_stored_value, metavar="SIZE",
                       help="characters of one string stored with a run and returned by the API; longer ones are "
                            "stored truncated and listed in the run's `truncated` (default 64KiB)")
    group.add_argument("--max-queued", type=int, default=server_defaults.max_queued, metavar="N",
                       help=f"runs waiting in the queue in all (default {server_defaults.max_queued})")
    group.add_argument("--max-queued-per-client", type=int, default=server_defaults.max_queued_per_client,
                       metavar="N", help=f"runs waiting per client_id (default {server_defaults.max_queued_per_client})")
    group.add_argument("--history-max-runs", type=int, default=server_defaults.history_max_runs, metavar="N",
                       help=f"finished runs kept in the history, newest first (default {server_defaults.history_max_runs:,}); "
                            "images are never deleted")
    group.add_argument("--history-max-days", type=float, default=server_defaults.history_max_days, metavar="DAYS",
                       help="forget finished runs older than this (default 0: keep by count only)")
    backups = serve.add_argument_group("run database backups (see docs/backups.md)")
    backups.add_argument("--backups", type=int, default=server_defaults.backups, metavar="N",
                         help=f"rolling backups of runs.sqlite kept in <user-dir>/backups (default "
                              f"{server_defaults.backups}; 0: none)")
    backups.add_argument("--backup-interval", type=float, default=server_defaults.backup_interval, metavar="MINUTES",
                         help=f"a backup at start-up, then every MINUTES while it changes (default "
                              f"{server_defaults.backup_interval:g}; 0: only at start-up)")
    recovery = backups.add_mutually_exclusive_group()
    recovery.add_argument("--restore-backup", action="store_true",
                          help="before starting, move runs.sqlite aside (kept, never deleted) and put the newest good "
                               "backup in its place")
    recovery.add_argument("--reset-database", action="store_true",
                          help="before starting, move runs.sqlite aside (kept, never deleted) and start with an empty "
                               "run history")
    cluster = serve.add_argument_group("scale-out on Ray (README: Scale-out on Ray; needs latentgraph[ray])")
    cluster.add_argument("--ray", metavar="ADDRESS",
                         help="run the queue on a Ray cluster: `auto` (the cluster this machine belongs to) or its "
                              "head's address; token authentication on (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    cluster.add_argument("--ray-workers", type=int, metavar="N",
                         help="worker actors, each keeping its models loaded (default: one per GPU in the cluster, "
                              "else one per CPU); without --ray, a Ray cluster of N CPUs starts in this process")
    cluster.add_argument("--ray-models-dir", type=Path, metavar="DIR",
                         help="the models root on the worker machines (default: this server's model folders, "
                              "the same paths on every machine)")
    cluster.add_argument("--ray-hang-grace", type=float, default=server_defaults.ray_hang_grace, metavar="SECONDS",
                         help="a worker still running this long after its run was cancelled, or after the run's time "
                              "limit (--max-run-time), is hung: it is replaced by a fresh one (default %(default)g)")
    serve.set_defaults(handler=command_serve)

    schema = sub.add_parser("schema", help="print the JSON Schema of the workflow format")
    schema.set_defaults(handler=command_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from latentgraph.nodes.library import load_registry

        return args.handler(args, load_registry())
    except UsageError as exc:
        sys.stderr.write(f"latentgraph: error: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
