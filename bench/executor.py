"""Executor overhead: validate + plan + execute for graphs of trivial nodes, and a fully cached re-run.

    .venv/bin/python bench/executor.py [--sizes 10,100,1000,10000] [--repeat 3]

Two shapes: a chain (each node adds 1 to the previous) and a wide graph (one source fanned out
to N/2 nodes, then reduced pairwise to one sink). The reference is the same arithmetic as plain
Python calls in the same run; per-node overhead is (ours - reference) / nodes. An event subscriber
is attached, as the CLI and server attach one. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any


from latentgraph.engine import EventBus, Executor, Input, Node, NodeOutputs, NodeRegistry, Output, OutputCache, RunContext  # noqa: E402
from latentgraph.engine.graph import validate_workflow  # noqa: E402

registry = NodeRegistry()


@registry.node("bench_source")
class Source(Node):
    value: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.value)


@registry.node("bench_add")
class Add(Node):
    a: int = Input(0)
    b: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.a + self.b)


@registry.node("bench_sink", output=True)
class Sink(Node):
    value: int = Input(0)

    def run(self, ctx: RunContext) -> None:
        ctx.report(value=self.value)


def link(node: str) -> dict[str, str]:
    return {"node": node, "output": "value"}


def chain(n: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"n0": {"type": "bench_source", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        nodes[f"n{i}"] = {"type": "bench_add", "inputs": {"a": link(f"n{i - 1}"), "b": 1}}
    nodes["sink"] = {"type": "bench_sink", "inputs": {"value": link(f"n{n - 2}")}}
    return {"format": "latentgraph/workflow@1", "nodes": nodes}


def wide(n: int) -> dict[str, Any]:
    """One source, a fan-out layer, then a pairwise reduction to one sink: about n nodes."""
    nodes: dict[str, Any] = {"src": {"type": "bench_source", "inputs": {"value": 1}}}
    width = max(1, (n - 2) // 2)
    layer = []
    for i in range(width):
        nodes[f"f{i}"] = {"type": "bench_add", "inputs": {"a": link("src"), "b": i}}
        layer.append(f"f{i}")
    level = 0
    while len(layer) > 1:
        nxt = []
        for j in range(0, len(layer) - 1, 2):
            name = f"r{level}_{j}"
            nodes[name] = {"type": "bench_add", "inputs": {"a": link(layer[j]), "b": link(layer[j + 1])}}
            nxt.append(name)
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer, level = nxt, level + 1
    nodes["sink"] = {"type": "bench_sink", "inputs": {"value": link(layer[0])}}
    return {"format": "latentgraph/workflow@1", "nodes": nodes}


def reference(document: dict[str, Any]) -> int:
    """The same arithmetic as plain Python calls, in the workflow's (already topological) order."""
    values: dict[str, int] = {}
    result = 0
    for node_id, spec in document["nodes"].items():
        inputs = {k: values[v["node"]] if isinstance(v, dict) else v for k, v in spec["inputs"].items()}
        if spec["type"] == "bench_source":
            values[node_id] = inputs["value"]
        elif spec["type"] == "bench_add":
            values[node_id] = inputs["a"] + inputs["b"]
        else:
            result = inputs["value"]
    return result


def best_of(repeat: int, fn: Any) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def measure(shape: str, n: int, repeat: int) -> dict[str, Any]:
    document = chain(n) if shape == "chain" else wide(n)
    count = len(document["nodes"])
    ref_s, expected = best_of(repeat, lambda: reference(document))
    validate_s, _ = best_of(repeat, lambda: validate_workflow(document, registry))

    def cold() -> Any:
        bus = EventBus()
        bus.subscribe(lambda event: None)
        executor = Executor(registry, OutputCache(1 << 30), events=bus)
        return executor, executor.run(document)

    cold_s, (executor, result) = best_of(repeat, cold)
    assert result.ok and result.results["sink"]["value"] == expected, (result.status, result.errors)
    cached_s, again = best_of(repeat, lambda: executor.run(document))
    assert again.executed == [] and again.results["sink"]["value"] == expected
    return {
        "shape": shape,
        "nodes": count,
        "reference_ms": ref_s * 1e3,
        "validate_ms": validate_s * 1e3,
        "total_ms": cold_s * 1e3,
        "per_node_us": (cold_s - ref_s) / count * 1e6,
        "ratio": cold_s / ref_s,
        "cached_ms": cached_s * 1e3,
        "cached_per_node_us": cached_s / count * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(shape, int(n), args.repeat) for shape in ("chain", "wide") for n in args.sizes.split(",")]
    print("| shape | nodes | plain Python (ms) | validate (ms) | validate+plan+execute (ms) | overhead per node (µs) | ours / plain | cached re-run (ms) | cached per node (µs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['nodes']} | {r['reference_ms']:.3f} | {r['validate_ms']:.2f} | {r['total_ms']:.2f} | "
              f"{r['per_node_us']:.1f} | {r['ratio']:.0f}x | {r['cached_ms']:.2f} | {r['cached_per_node_us']:.1f} |")


if __name__ == "__main__":
    main()
