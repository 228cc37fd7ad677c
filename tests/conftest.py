"""Shared test fixtures.

Model fixtures import torch lazily, so tests that never ask for them (the engine's) start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Torch's OpenMP threads spin while they wait for work by default; on a machine whose cores are
# busy with something else that makes small models 10-100x slower (the suite must pass on a busy
# machine). Set before anything imports torch; servers the tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def tiny_sd15_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny SD1.x-layout .safetensors checkpoint with seeded random weights (tests/sd_tiny.py)."""
    from sd_tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-sd15.safetensors")


@pytest.fixture(scope="session")
def tiny_sd15(tiny_sd15_checkpoint: Path):
    """The tiny checkpoint loaded on CPU (a LoadedCheckpoint). Shared: do not modify its modules."""
    from latentgraph.nodes.sd.checkpoint import load_checkpoint

    return load_checkpoint(tiny_sd15_checkpoint)


DEMO_NAME = "latentgraph-demo.safetensors"  # the checkpoint name the shipped workflows use


@pytest.fixture
def sd_folders(tmp_path: Path, tiny_sd15_checkpoint: Path, monkeypatch: pytest.MonkeyPatch):
    """Folders over a temporary tree whose checkpoints folder holds the tiny checkpoint under the
    shipped workflows' checkpoint name (it comes before the bundled demo model of that name)."""
    import os

    from latentgraph.nodes.folders import Folders

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    os.link(tiny_sd15_checkpoint, models / "checkpoints" / DEMO_NAME)
    (tmp_path / "input").mkdir()
    return Folders(models=models, inputs=tmp_path / "input", outputs=tmp_path / "output", temp=tmp_path / "temp")


@pytest.fixture
def sd_executor(sd_folders):
    """An executor over the real node library, with the tiny checkpoint installed (see sd_folders)."""
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.services import Services

    return Executor(registry, OutputCache(1 << 30), services=Services(folders=sd_folders), events=EventBus())
