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
# The nodes fit torch's thread count to the cores other processes leave free (nodes/cpu_load.py),
# and another count can change an image's last bits (a few pixels by 1 in 255): tests that compare
# two runs bit for bit need one count throughout. 0: torch's own, never fitted (test_cpu_load.py
# tests the fitting). Servers the tests start inherit it.
os.environ.setdefault("LATENTGRAPH_THREADS", "0")


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


# The checkpoint names the shipped family workflows use (workflows/sd2_txt2img.json, sdxl_*.json):
# the files people download under these names; the tests install tiny ones of the same families.
SD2_NAME = "v2-1_768-ema-pruned.safetensors"
SD2_BASE_NAME = "v2-1_512-ema-pruned.safetensors"
SDXL_NAME = "sd_xl_base_1.0.safetensors"
SDXL_REFINER_NAME = "sd_xl_refiner_1.0.safetensors"


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints of every family beyond SD1.x, by the names the shipped workflows use:
    SD2.x 768-v (its weights say v-prediction), SD2.x 512 (epsilon), SDXL base and refiner."""
    from sd_tiny import write_tiny_sd2_checkpoint, write_tiny_sdxl_checkpoint

    folder = tmp_path_factory.mktemp("family-models")
    return {
        SD2_NAME: write_tiny_sd2_checkpoint(folder / SD2_NAME, v_prediction=True),
        SD2_BASE_NAME: write_tiny_sd2_checkpoint(folder / SD2_BASE_NAME, v_prediction=False),
        SDXL_NAME: write_tiny_sdxl_checkpoint(folder / SDXL_NAME),
        SDXL_REFINER_NAME: write_tiny_sdxl_checkpoint(folder / SDXL_REFINER_NAME, refiner=True),
    }


@pytest.fixture
def family_executor(tmp_path: Path, family_checkpoints: dict[str, Path]):
    """An executor over the real node library whose checkpoints folder holds the tiny SD2.x, SDXL
    and SDXL refiner checkpoints under the shipped workflows' names (see family_checkpoints)."""
    import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
    from latentgraph.engine import EventBus, Executor, OutputCache, registry
    from latentgraph.nodes.folders import Folders
    from latentgraph.nodes.services import Services

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    for name, path in family_checkpoints.items():
        os.link(path, models / "checkpoints" / name)
    (tmp_path / "input").mkdir()
    folders = Folders(models=models, inputs=tmp_path / "input", outputs=tmp_path / "output", temp=tmp_path / "temp")
    return Executor(registry, OutputCache(1 << 30), services=Services(folders=folders), events=EventBus())
