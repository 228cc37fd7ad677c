"""Shared test fixtures.

Model fixtures import torch lazily, so tests that never ask for them (the engine's) start fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd15_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny SD1.x-layout .safetensors checkpoint with seeded random weights (tests/sd_tiny.py)."""
    from sd_tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-sd15.safetensors")


@pytest.fixture(scope="session")
def tiny_sd15(tiny_sd15_checkpoint: Path):
    """The tiny checkpoint loaded on CPU (a LoadedCheckpoint). Shared: do not modify its modules."""
    from nodes.sd.checkpoint import load_checkpoint

    return load_checkpoint(tiny_sd15_checkpoint)
