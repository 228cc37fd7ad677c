"""A Ray cluster of separate node processes on this machine, for the scale-out tests.

Each node is `ray start --block` in a session of its own (so a test can SIGKILL the node whole:
its raylet, its agents and its worker processes), on its own loopback address (127.0.0.x; Ray
replaces 127.0.0.1 with the machine's main address, so the tests pin others), with explicit
ports, memory and object store, token authentication and usage statistics off. The head takes no
CPUs, so worker actors land on the worker nodes only; each worker node has `cpus` CPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def session_processes(session: int) -> list[int]:
    """The processes whose session id is `session` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[3]) == session:  # after the name: state, ppid, pgrp, session
                found.append(int(entry.name))
    return found


@dataclass
class RayNode:
    ip: str
    process: subprocess.Popen
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class RayNodes:
    def __init__(self, root: Path, token: str, env: dict[str, str] | None = None, startup: float = 300.0) -> None:
        self.root = root
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_worker_niceness": "0", **(env or {})}
        self.startup = startup
        self.port = 0
        self.nodes: list[RayNode] = []

    @property
    def address(self) -> str:
        return f"127.0.0.2:{self.port}"

    def start_head(self) -> RayNode:
        self.port = free_port("127.0.0.2")
        return self._start("127.0.0.2", ["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                                         f"--temp-dir={self.root / 'ray'}",
                                         f"--ray-client-server-port={free_port('127.0.0.2')}"])

    def add_worker(self, ip: str, cpus: int = 1) -> RayNode:
        return self._start(ip, [f"--address={self.address}", f"--num-cpus={cpus}"])

    def _start(self, ip: str, options: list[str]) -> RayNode:
        log = self.root / f"node-{ip}-{len(self.nodes)}.log"
        command = [str(RAY), "start", "--block", f"--node-ip-address={ip}", "--disable-usage-stats",
                   "--object-store-memory=100000000",
                   f"--memory={2 << 30}", f"--dashboard-agent-listen-port={free_port(ip)}",
                   f"--dashboard-agent-grpc-port={free_port(ip)}", f"--metrics-export-port={free_port(ip)}",
                   f"--runtime-env-agent-port={free_port(ip)}", *options]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)
        node = RayNode(ip, process, log)
        self.nodes.append(node)
        deadline = time.monotonic() + self.startup
        while b"Ray runtime started" not in log.read_bytes():
            if not node.alive or time.monotonic() > deadline:
                self.kill(node)
                raise RuntimeError(f"the Ray node on {ip} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)  # polling the node's log, within the deadline
        return node

    def kill(self, node: RayNode) -> None:
        """SIGKILL every process of the node's session (Ray puts each worker process in a process
        group of its own, but they stay in the session): the machine going away, as far as Ray
        can tell."""
        for pid in session_processes(node.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(30)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            self.kill(node)
