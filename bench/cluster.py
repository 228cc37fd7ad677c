"""Scale-out on Ray: throughput of demo-model txt2img with 1, 2 and 4 Ray worker actors against the
in-process worker, and the dispatch overhead per run, all measured in this run.

    .venv/bin/python bench/cluster.py [--runs 24] [--steps 20] [--size 64] [--workers 1,2,4] [--trivial 200]

Each configuration is a `latentgraph serve` process of its own (as a user starts it) over fresh
folders, with the bundled demo model: `in-process` (the single local worker: one executor, torch's
threads as configured, 2 on this machine), then `--ray-workers N` (a Ray cluster started in the
server's process with N CPUs; N actors, each one CPU and one torch thread, each with its own
executor and model cache). The head (HTTP, SQLite, the dispatcher threads) shares the machine's
cores with the workers.

Throughput: `--runs` txt2img runs (distinct seeds, `--size` square, `--steps` steps, one image each) are
submitted at once through the Python client; the clock runs from the first submission until the
queue is empty (polled), after one warm-up run per worker has loaded the model everywhere (so model
loading is not measured). CPU per run: what the server's process, the worker actors and Ray's own
processes (raylet, GCS, agents) used meanwhile, divided by the runs. Dispatch overhead: `--trivial` runs of a one-node workflow (an integer shown) one
after the other; the time per run minus the in-process time per run is what the Ray hand-off adds
(the job to the actor, events streamed back, the outcome). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgraph.client import Client, load_workflow  # noqa: E402

TRIVIAL = {"format": "latentgraph/workflow@1", "nodes": {
    "n": {"type": "int_constant", "inputs": {"value": 1}},
    "show": {"type": "show_value", "inputs": {"value": {"node": "n", "output": "value"}}}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workers: int | None, root: Path) -> tuple[subprocess.Popen, str]:
    """A started server; on a fresh port again when its port was taken meanwhile (Ray's processes,
    started before the server listens, bind ports of their own)."""
    for attempt in range(5):
        try:
            return start_once(workers, root)
        except PortTaken:
            continue
    raise RuntimeError("no free port for the server after 5 attempts")


class PortTaken(Exception):
    pass


def start_once(workers: int | None, root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "latentgraph", "serve", "--port", str(port), "--user-dir", str(root / "user"),
            "--models-dir", str(root / "models"), "--input-dir", str(root / "input"),
            "--output-dir", str(root / "output"), "--temp-dir", str(root / "temp"), "--log-level", "warning",
            "--web-dir", str(root / "no-web"), "--history-max-runs", "100000"]
    if workers is not None:
        args += ["--ray-workers", str(workers)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with Client(url) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                error = process.stderr.read().decode()[-2000:]
                if "address already in use" in error:
                    raise PortTaken(error)
                raise RuntimeError(f"the server exited: {error}")
            try:
                if client.request("GET", "/api/health").status_code == 200:
                    return process, url
            except Exception:
                pass
            time.sleep(0.2)  # polling a starting server, with a deadline
    process.kill()
    raise RuntimeError("the server did not start within 180 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def txt2img(seed: int, steps: int, size: int = 64) -> dict[str, Any]:
    document = load_workflow(ROOT / "workflows" / "txt2img.json")
    document["nodes"]["sampler"]["inputs"].update(seed=seed, steps=steps)
    document["nodes"]["latent"]["inputs"].update(width=size, height=size)
    return document


def measure(workers: int | None, runs: int, steps: int, trivial: int, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lg-cluster-") as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        process, url = start(workers, root)
        try:
            with Client(url) as client:
                warm = [client.submit(txt2img(10_000 + i, steps, size)) for i in range(workers or 1)]  # every worker loads
                for run in warm:
                    assert run.wait(timeout=600)["status"] == "succeeded"
                cpu_before = session_cpu(process.pid)
                started = time.perf_counter()
                submitted = [client.submit(txt2img(seed, steps, size)) for seed in range(runs)]
                deadline = time.monotonic() + 3600
                while True:  # polls the queue (light), not each run's events (its own CPU would count)
                    queue = client.request("GET", "/api/queue").json()
                    if not queue["running"] and not queue["pending_count"]:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the runs did not end within an hour")
                    time.sleep(0.02)
                seconds = time.perf_counter() - started
                cpu = {kind: (after - cpu_before.get(kind, 0.0)) / runs for kind, after in session_cpu(process.pid).items()}
                finished = [client.get_run(run.id) for run in submitted]
                assert all(f["status"] == "succeeded" for f in finished), [f.get("error") for f in finished]
                where = {}
                for f in finished:
                    where[f.get("summary", {}).get("worker", "local")] = where.get(f.get("summary", {}).get("worker", "local"), 0) + 1
                began = time.perf_counter()
                for _ in range(trivial):
                    assert client.run(TRIVIAL, timeout=60).ok
                per_trivial = (time.perf_counter() - began) / trivial
        finally:
            stop(process)
    return {"workers": workers, "seconds": seconds, "runs_per_s": runs / seconds, "per_trivial": per_trivial,
            "spread": where, "cpu": cpu}


def session_cpu(session: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes of the server's session: the server
    itself ("server"), the Ray worker actors ("workers"), and Ray's own processes ("ray")."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"server": 0.0, "workers": 0.0, "ray": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) != session:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        kind = "server" if int(entry.name) == session else "workers" if command.startswith("ray::WorkerActor") else "ray"
        used[kind] += seconds
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="image width and height (a multiple of 8)")
    parser.add_argument("--workers", default="1,2,4", help="Ray worker counts to measure")
    parser.add_argument("--trivial", type=int, default=200, help="one-node runs for the dispatch overhead")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n]
    cpus = os.cpu_count()
    print(f"demo-model txt2img, {args.size}x{args.size}, {args.steps} steps, {args.runs} runs submitted at once; {cpus} CPU cores; "
          f"torch threads: in-process worker {os.environ.get('OMP_NUM_THREADS', 'torch default')}, Ray actors 1 each\n")
    rows = [measure(None, args.runs, args.steps, args.trivial, args.size)]
    rows += [measure(n, args.runs, args.steps, args.trivial, args.size) for n in counts]
    base = rows[0]
    one_ray = next((r for r in rows if r["workers"] == 1), None)
    print("| worker | runs/s | images/s | vs in-process | vs N x one Ray worker | dispatch per run | overhead vs in-process "
          "| CPU per run: server / workers / Ray | runs per worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for row in rows:
        name = "in-process" if row["workers"] is None else f"Ray, {row['workers']} worker(s)"
        scaling = "—" if row["workers"] is None or one_ray is None else \
            f"{row['runs_per_s'] / (row['workers'] * one_ray['runs_per_s']):.2f}"
        overhead = "—" if row["workers"] is None else f"{(row['per_trivial'] - base['per_trivial']) * 1000:+.1f} ms"
        spread = ", ".join(f"{k}: {v}" for k, v in sorted(row["spread"].items()))
        print(f"| {name} | {row['runs_per_s']:.3f} | {row['runs_per_s']:.3f} | {row['runs_per_s'] / base['runs_per_s']:.2f} | "
              f"{scaling} | {row['per_trivial'] * 1000:.1f} ms | {overhead} | "
              f"{row['cpu']['server'] * 1000:.0f} / {row['cpu']['workers'] * 1000:.0f} / {row['cpu']['ray'] * 1000:.0f} ms | {spread} |")


if __name__ == "__main__":
    main()
