"""The demo model on a busy machine: quiet, and beside one and two CPU-bound processes, with the
thread settings we now default to against the old ones and the alternatives, all in this run.

    .venv/bin/python bench/busy.py [--runs 5] [--steps 20]

Each row is a fresh process (OpenMP reads its settings when torch loads) that loads the bundled
demo model through the graph (workflows/txt2img.json, 64x64), starts the CPU-load monitor and
gives it 1.5 s of history (as a server that has been up a while has), makes one image to warm up,
then `--runs` images changing only the seed (sampler, decode and PNG save run; a listener
subscribed, as the server has, so step previews are made); the median and the best
are printed. The busy processes are Python loops (`while True: pass`), started before the row and
stopped after it.

Settings:
- old: torch's defaults (one thread per core; OpenMP's idle threads spin a while before sleeping);
- passive: OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once), one thread per core;
- fitted: what the nodes do now (nodes/cpu_load.py): as many threads as other processes leave
  cores free, measured from /proc/stat, refitted every 2 s during sampling;
- one thread: LATENTGRAPH_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("old", "passive", "fitted", "one thread")

WORKER = r"""
import json, os, statistics, sys, time
settings, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.environ["LATENTGRAPH_THREADS"] = {"old": "0", "passive": "0", "fitted": "", "one thread": "1"}[settings]
if settings == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import torch
from latentgraph.nodes.cpu_load import monitor
monitor()  # sampling from the start, as in a server that has been up a while
time.sleep(1.5)  # two seconds of load history before the first image (a sampling window, not a wait for a result)
import latentgraph.nodes.library
from latentgraph.bundled import demo_models_dir
from latentgraph.engine import EventBus, Executor, OutputCache, registry
from latentgraph.nodes.services import Services
from latentgraph.training.evaluate import demo_folders, load_workflow, with_inputs
with demo_folders(demo_models_dir() / "latentgraph-demo.safetensors") as folders:
    events = EventBus()
    events.subscribe(lambda event: None)
    executor = Executor(registry, OutputCache(1 << 30), services=Services(folders=folders, device="cpu"), events=events)
    workflow = load_workflow()
    def image(seed):
        started = time.perf_counter()
        result = executor.run(with_inputs(workflow, {"sampler.seed": seed, "sampler.steps": steps}))
        assert result.ok, result.errors
        return time.perf_counter() - started
    image(0)
    times = [image(seed) for seed in range(1, runs + 1)]
print(json.dumps({"median": statistics.median(times), "best": min(times), "threads": torch.get_num_threads(),
                  "others": monitor().others,
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)")}))
"""


def busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(settings: str, load: int, runs: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    hogs = busy(load)
    try:
        time.sleep(0.5)  # let the busy processes get going before the row starts (not a wait for a result)
        done = subprocess.run([sys.executable, "-c", WORKER, settings, str(runs), str(steps)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        raise RuntimeError(f"{settings}, {load} busy: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = {}
    for load in (0, 1, 2):
        for settings in SETTINGS:
            rows[settings, load] = measure(settings, load, args.runs, args.steps)
            print(f"  {settings}, {load} busy: median {rows[settings, load]['median']:.3f} s", flush=True)
    print(f"\ndemo model, 64x64, {args.steps} steps, median (best) of {args.runs} seed-only re-runs; "
          f"{os.cpu_count()} cores\n")
    print("| settings | OMP_WAIT_POLICY | quiet | 1 busy process | vs quiet | 2 busy processes | vs quiet |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for settings in SETTINGS:
        quiet, one, two = (rows[settings, load] for load in (0, 1, 2))
        print(f"| {settings} | {quiet['wait_policy']} | {quiet['median']:.3f} s ({quiet['best']:.3f}) | "
              f"{one['median']:.3f} s ({one['best']:.3f}) | {one['median'] / quiet['median']:.2f} | "
              f"{two['median']:.3f} s ({two['best']:.3f}) | {two['median'] / quiet['median']:.2f} |")
    base = rows["old", 0]["median"]
    print(f"\nfitted quiet vs old quiet: {rows['fitted', 0]['median'] / base:.2f}; fitted with 1 busy vs old with 1 busy: "
          f"{rows['fitted', 1]['median'] / rows['old', 1]['median']:.2f}; threads fitted with 0 / 1 / 2 busy: "
          + " / ".join(str(rows['fitted', load]['threads']) for load in (0, 1, 2)))


if __name__ == "__main__":
    main()
