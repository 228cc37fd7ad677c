"""Torch's CPU threads fitted to the cores other processes leave free.

torch runs one thread per core. With every core free that is fastest; but beside a busy process
(a browser, a compile, another job) one of those threads is descheduled at every moment, and the
others wait for it at each operation's end: on 2 cores the demo model's image took 3.2x its quiet
time beside one CPU-bound process (bench/busy.py), while one thread took 1.0x. So, on the CPU,
each model-running node asks `fit_threads()` first, and the sampler again every few steps: it sets
torch's thread count to the cores not kept busy by other processes (at least one, at most torch's
default), as measured by a daemon thread that reads /proc/stat and this process's own CPU time
every half second (an average over about two seconds). Where /proc is missing (not Linux) nothing
changes. `LATENTGRAPH_THREADS=N` fixes the count instead (0: torch's default, never fitted).
Compiled models (`--compile`) are not fitted: dynamo guards on the thread count, so another count
would compile them again; inside `full_threads()` they run at the full count.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

INTERVAL = 0.5  # seconds between samples
SMOOTHING = 0.25  # weight of the newest sample in the average (about 2 s of memory at INTERVAL)
BUSY_CORE = 0.6  # another process using this much of a core takes that core


class CpuLoad:
    """Cores kept busy by other processes (a moving average), sampled by a daemon thread."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.cores = os.cpu_count() or 1
        self.others: float | None = None  # None until two samples were read
        self._last = self._sample()
        if self._last is not None:
            threading.Thread(target=self._loop, name="latentgraph-cpu-load", daemon=True).start()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(seconds of wall time, CPU seconds all processes used, CPU seconds this process used)."""
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()[1:]
            with open("/proc/self/stat") as own:
                mine = own.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        values = [int(v) for v in fields]
        busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)  # all but idle and iowait
        return time.monotonic(), busy / ticks, (int(mine[11]) + int(mine[12])) / ticks

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)  # a sampling period, not a wait for a result
            sample = self._sample()
            if sample is None or self._last is None:
                return
            elapsed = sample[0] - self._last[0]
            if elapsed > 0:
                others = max(0.0, ((sample[1] - self._last[1]) - (sample[2] - self._last[2])) / elapsed)
                self.others = others if self.others is None else (1 - SMOOTHING) * self.others + SMOOTHING * others
            self._last = sample

    def free_cores(self) -> int | None:
        """Cores other processes leave free (at least 1), or None while unknown."""
        if self.others is None:
            return None
        busy = int(self.others + (1 - BUSY_CORE))  # 0.6 of a core or more counts as a core
        return max(1, self.cores - busy)


_monitor: CpuLoad | None = None
_lock = threading.Lock()
_default_threads: int | None = None


def monitor() -> CpuLoad:
    global _monitor
    with _lock:
        if _monitor is None:
            _monitor = CpuLoad()
        return _monitor


_fitting: ContextVar[bool] = ContextVar("latentgraph_fit_threads", default=True)


def _wanted(fit: bool) -> int:
    import torch

    global _default_threads
    with _lock:
        if _default_threads is None:
            _default_threads = torch.get_num_threads()
    fixed = os.environ.get("LATENTGRAPH_THREADS", "").strip()
    if fixed:  # a count; 0: torch's own, never fitted
        return int(fixed) if int(fixed) > 0 else _default_threads
    free = monitor().free_cores() if fit else None
    return _default_threads if free is None else min(_default_threads, free)


def fit_threads() -> int:
    """Set torch's CPU thread count to the free cores (see the module doc); returns the count.
    Inside `full_threads()` it leaves the count alone."""
    import torch

    if not _fitting.get():
        return torch.get_num_threads()
    wanted = _wanted(fit=True)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


@contextmanager
def full_threads() -> Iterator[int]:
    """Within the block torch runs the full thread count (`LATENTGRAPH_THREADS`, else torch's
    default) and `fit_threads` changes nothing: for compiled models, which would compile again
    at another count."""
    import torch

    wanted = _wanted(fit=False)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    token = _fitting.set(False)
    try:
        yield wanted
    finally:
        _fitting.reset(token)


def fit_threads_for(device) -> None:
    """`fit_threads()` when `device` (a torch.device) is the CPU; nothing for a GPU."""
    if device.type == "cpu":
        fit_threads()


__all__ = ["CpuLoad", "fit_threads", "fit_threads_for", "full_threads", "monitor"]
