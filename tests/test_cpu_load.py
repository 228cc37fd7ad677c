"""Torch's CPU threads fitted to the cores other processes leave free (nodes/cpu_load.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from latentgraph.nodes import cpu_load
from latentgraph.nodes.cpu_load import CpuLoad, fit_threads

DEADLINE = 60.0


def test_busy_cores_count_from_six_tenths_of_a_core() -> None:
    load = CpuLoad.__new__(CpuLoad)
    load.cores = 4
    for others, free in [(None, None), (0.0, 4), (0.55, 4), (0.6, 3), (1.5, 3), (1.65, 2), (9.0, 1)]:
        load.others = others
        assert load.free_cores() == free, (others, free)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_fit_threads_takes_the_free_cores_never_more_than_torchs_default(monkeypatch, restore_threads) -> None:
    fake = CpuLoad.__new__(CpuLoad)
    fake.cores, fake.others = 8, 5.0
    monkeypatch.setattr(cpu_load, "_monitor", fake)
    monkeypatch.setattr(cpu_load, "_default_threads", 6)
    monkeypatch.delenv("LATENTGRAPH_THREADS", raising=False)
    assert fit_threads() == 3 and torch.get_num_threads() == 3  # 8 cores, 5 busy elsewhere
    fake.others = 0.0
    assert fit_threads() == 6  # a quiet machine: torch's own count, not all 8 cores
    fake.others = None
    assert fit_threads() == 6  # not measured yet: torch's own count
    monkeypatch.setenv("LATENTGRAPH_THREADS", "1")
    fake.others = 0.0
    assert fit_threads() == 1 and torch.get_num_threads() == 1  # fixed by the user
    monkeypatch.setenv("LATENTGRAPH_THREADS", "0")
    fake.others = 7.0
    assert fit_threads() == 6  # 0: torch's own count, never fitted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_busy_process_beside_this_one_is_seen_as_a_busy_core() -> None:
    load = CpuLoad(interval=0.1)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + DEADLINE
        while load.others is None or load.others < 0.6:  # the average climbs within a second or so
            assert time.monotonic() < deadline, f"others stayed at {load.others}"
            time.sleep(0.05)
        assert load.free_cores() <= max(1, load.cores - 1)
    finally:
        hog.kill()
        hog.wait()
