"""The package layout holds: the folders install only as `latentgraph.*`, and layers point down
(CLI and server → node library → model code and engine). Every module's imports are read from
its source (lazy imports inside functions included), so a wrong import fails here even when no
test happens to run it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {  # installed name -> folder (pyproject's package-dir)
    "latentgraph": ROOT / "latentgraph",
    "latentgraph.engine": ROOT / "engine",
    "latentgraph.nodes": ROOT / "nodes",
    "latentgraph.server": ROOT / "server",
    "latentgraph.training": ROOT / "training",
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            if "web" in path.relative_to(folder).parts[:1]:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


MODULES = modules()


def offenders(prefix: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name, path in sorted(MODULES.items()):
        if name != prefix and not name.startswith(prefix + "."):
            continue
        for imported in sorted(imports_of(name, path)):
            if imported.startswith(allowed):
                continue
            if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                found.append(f"{name} imports {imported}")
    return found


def test_no_module_imports_the_folders_as_top_level_packages():
    bare = ("engine", "nodes", "server", "training")
    found = [f"{name} imports {imported}" for name, path in sorted(MODULES.items())
             for imported in sorted(imports_of(name, path)) if imported.split(".")[0] in bare]
    assert found == []


def test_the_engine_imports_neither_torch_nor_anything_above_it():
    assert offenders("latentgraph.engine", ("torch", "latentgraph.nodes", "latentgraph.server", "latentgraph.cli",
                                            "latentgraph.client", "latentgraph.training", "fastapi")) == []


def test_model_code_imports_neither_the_node_library_nor_the_engine_nor_anything_above():
    assert offenders("latentgraph.nodes.sd", ("latentgraph",), allowed=("latentgraph.nodes.sd",)) == []


def test_the_node_library_imports_neither_the_server_nor_the_cli():
    assert offenders("latentgraph.nodes", ("latentgraph.server", "latentgraph.cli", "latentgraph.client",
                                           "latentgraph.training", "fastapi", "uvicorn")) == []


def test_the_server_does_not_import_the_cli():
    assert offenders("latentgraph.server", ("latentgraph.cli", "latentgraph.training")) == []


def test_the_client_imports_no_server_code():
    assert offenders("latentgraph.client", ("latentgraph.server", "latentgraph.nodes", "latentgraph.engine",
                                            "fastapi", "uvicorn", "torch")) == []


def test_the_layout_seen_from_outside_the_repository(tmp_path):
    """In a fresh interpreter started elsewhere: the top-level names are gone, the engine loads no
    torch, the client no fastapi, the model code no node module."""
    probe = """
import importlib, json, sys
result = {}
for name in ("engine", "nodes", "server"):
    try:
        importlib.import_module(name)
        result[name] = "imported"
    except ModuleNotFoundError:
        result[name] = "missing"
import latentgraph.engine
result["engine_torch"] = "torch" in sys.modules
import latentgraph.client
result["client_fastapi"] = "fastapi" in sys.modules or "uvicorn" in sys.modules
import latentgraph.nodes.sd.unet, latentgraph.nodes.sd.checkpoint
result["sd_nodes"] = sorted(m for m in sys.modules if m.startswith("latentgraph.nodes.") and not m.startswith("latentgraph.nodes.sd"))
import latentgraph.bundled as bundled
result["bundled"] = [bundled.workflows_dir().joinpath("txt2img.json").is_file(), bundled.demo_checkpoint().is_file()]
print(json.dumps(result))
"""
    out = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"engine": "missing", "nodes": "missing", "server": "missing", "engine_torch": False,
                      "client_fastapi": False, "sd_nodes": [], "bundled": [True, True]}


def test_this_test_run_cannot_import_the_folders_as_top_level_packages():
    for name in ("engine", "nodes", "server"):
        with pytest.raises(ModuleNotFoundError):
            __import__(name)
    assert not any(Path(p or ".").resolve() == ROOT for p in sys.path)


def test_every_package_folder_is_installed():
    """pyproject lists each package (setuptools does not find mapped sub-packages by itself)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert folders <= listed, sorted(folders - listed)
    assert json.dumps(config["package-dir"], sort_keys=True) == json.dumps(
        {**{k: str(v.relative_to(ROOT)) for k, v in PACKAGE_DIRS.items()},
         "latentgraph.workflows": "workflows", "latentgraph.bundled_models": "models/checkpoints"}, sort_keys=True)
