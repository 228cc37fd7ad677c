"""Plain-Python node types for the engine tests, in their own registry (the global one is untouched).

Every node that runs records itself: `CALLS[node_id]` counts its runs and `EXECUTED` lists node ids
in the order they ran. Call `reset()` between tests (the `fresh` fixtures in the test files do).
"""

import time
from collections import Counter
from typing import Any, Literal, Optional

from latentgraph.engine import Input, Node, NodeOutputs, NodeRegistry, Output, RunContext, link, ports

MODEL = ports.register_port_type("MODEL")  # the engine knows only primitives: a test library's own kinds
LATENT = ports.register_port_type("LATENT")

registry = NodeRegistry()
node = registry.node

CALLS: Counter = Counter()  # node id → how many times it ran
EXECUTED: list = []  # node ids, in the order they ran
SLOW_STEPS: list = []  # (node id, step) for every step a `slow` node completed
AVAILABLE_SAMPLERS = ["euler", "ddim"]  # the dynamic choices of `pick.sampler`


def reset() -> None:
    CALLS.clear()
    EXECUTED.clear()
    SLOW_STEPS.clear()
    AVAILABLE_SAMPLERS[:] = ["euler", "ddim"]


def _record(ctx: RunContext) -> None:
    CALLS[ctx.node_id] += 1
    EXECUTED.append(ctx.node_id)


# --- workflow building helpers ---------------------------------------------------------------------

def n(type_name: str, **inputs: Any) -> dict:
    """One node of a workflow document."""
    return {"type": type_name, "inputs": inputs}


def wf(**nodes: dict) -> dict:
    """A workflow document from keyword node ids."""
    return {"format": "latentgraph/workflow@1", "nodes": nodes}


L = link  # L("a", "value") == {"node": "a", "output": "value"}


# --- primitives ----------------------------------------------------------------------------------

@node("constant", category="test")
class Constant(Node):
    """An integer constant."""

    value: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.value)


@node("number", category="test")
class Number(Node):
    """A float constant."""

    value: float = Input(0.0)

    class Outputs(NodeOutputs):
        value: float = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.value)


@node("text", category="test")
class Text(Node):
    value: str = Input("")

    class Outputs(NodeOutputs):
        value: str = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.value)


@node("add", category="test")
class Add(Node):
    """a + b, counting its calls."""

    a: int = Input(0)
    b: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.a + self.b)


@node("add_float", category="test")
class AddFloat(Node):
    """a + b on floats; reports the Python types it received."""

    a: float = Input(0.0)
    b: float = Input(0.0)

    class Outputs(NodeOutputs):
        value: float = Output()
        types: str = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.a + self.b, types=f"{type(self.a).__name__},{type(self.b).__name__}")


@node("split", category="test")
class Split(Node):
    """Two outputs, each computed from one of the inputs (declared with depends_on)."""

    a: int = Input(0)
    b: int = Input(0)

    class Outputs(NodeOutputs):
        double_a: int = Output(depends_on=("a",))
        double_b: int = Output(depends_on=("b",))
        total: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(double_a=2 * self.a, double_b=2 * self.b, total=self.a + self.b)


@node("fail", category="test")
class Fail(Node):
    """Always raises RuntimeError(message)."""

    value: int = Input(0)
    message: str = Input("boom")

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        raise RuntimeError(self.message)


@node("slow", category="test")
class Slow(Node):
    """Loops `steps` times, reporting progress and checking for cancellation each step."""

    value: int = Input(0)
    steps: int = Input(3, ge=1, le=10_000)
    delay: float = Input(0.0, ge=0.0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        for step in range(self.steps):
            ctx.progress(step, self.steps)
            ctx.check_cancelled()
            SLOW_STEPS.append((ctx.node_id, step))
            if self.delay:
                time.sleep(self.delay)
        return self.Outputs(value=self.value)


@node("random_value", category="test", cacheable=False)
class RandomValue(Node):
    """Uncacheable: its output is how many times this node id has run, plus salt."""

    salt: int = Input(0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=CALLS[ctx.node_id] + self.salt)


@node("sink", category="test", output=True)
class Sink(Node):
    """An output node: reports the value it receives."""

    value: Any = Input(port=ports.ANY)

    def run(self, ctx: RunContext) -> None:
        _record(ctx)
        ctx.report(value=self.value)
        return None


@node("bad_output", category="test")
class BadOutput(Node):
    """Returns a dict instead of its Outputs."""

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Any:
        _record(ctx)
        return {"value": 1}


# --- typed, non-primitive ports ------------------------------------------------------------------

class FakeModel:
    def __init__(self, name: str) -> None:
        self.name = name


@node("make_model", category="test")
class MakeModel(Node):
    name: str = Input("m")

    class Outputs(NodeOutputs):
        model: Any = Output(port=MODEL)

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(model=FakeModel(self.name))


@node("make_latent", category="test")
class MakeLatent(Node):
    width: int = Input(8, ge=1)

    class Outputs(NodeOutputs):
        latent: Any = Output(port=LATENT)

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(latent=[0.0] * self.width)


@node("use_model", category="test")
class UseModel(Node):
    """Takes a MODEL (link only) and a LATENT (link only)."""

    model: Any = Input(port=MODEL)
    latent: Any = Input(port=LATENT)

    class Outputs(NodeOutputs):
        latent: Any = Output(port=LATENT)

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(latent=self.latent)


# --- bounds and choices --------------------------------------------------------------------------

@node("bounded", category="test")
class Bounded(Node):
    value: int = Input(5, ge=0, le=10)
    ratio: float = Input(0.5, gt=0.0, lt=1.0)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=self.value)


def available_samplers() -> list:
    return list(AVAILABLE_SAMPLERS)


@node("pick", category="test")
class Pick(Node):
    mode: Literal["fast", "slow"] = Input("fast")
    sampler: str = Input("euler", choices=available_samplers)
    size: int = Input(512, choices=[256, 512, 768])
    maybe: Optional[int] = Input(None)

    class Outputs(NodeOutputs):
        value: str = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        return self.Outputs(value=f"{self.mode}/{self.sampler}/{self.size}/{self.maybe}")


@node("swallow", category="test")
class Swallow(Node):
    """Catches every Exception around its progress calls (a careless node): a cancel must still stop it."""

    steps: int = Input(2000, ge=1)

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        _record(ctx)
        for step in range(self.steps):
            try:
                ctx.progress(step, self.steps)
            except Exception:
                pass
            SLOW_STEPS.append((ctx.node_id, step))
            time.sleep(0.002)
        return self.Outputs(value=self.steps)
