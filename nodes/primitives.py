"""Primitive nodes: constants, a seed, arithmetic, string formatting and a value display.

They make the engine usable before any model is loaded, and feed widgets of other nodes by link.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Literal

from latentgraph.engine import Input, Node, NodeOutputs, Output, RunContext, node
from latentgraph.nodes import ports

MAX_SEED = 2**64 - 1
MAX_INT_BITS = 4096  # an integer power beyond this would take unbounded time and memory


@node("int_constant", category="primitives", title="Integer")
class IntConstant(Node):
    """An integer value, to link into any INT input."""

    value: int = Input(0, description="the integer")

    class Outputs(NodeOutputs):
        value: int = Output(description="the integer")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.value)


@node("float_constant", category="primitives", title="Float")
class FloatConstant(Node):
    """A floating-point value, to link into any FLOAT input."""

    value: float = Input(0.0, step=0.01, description="the number")

    class Outputs(NodeOutputs):
        value: float = Output(description="the number")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.value)


@node("string_constant", category="primitives", title="String")
class StringConstant(Node):
    """A text value, to link into any STRING input (for example one prompt shared by several nodes)."""

    value: str = Input("", multiline=True, description="the text")

    class Outputs(NodeOutputs):
        value: str = Output(description="the text")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.value)


@node("boolean_constant", category="primitives", title="Boolean")
class BooleanConstant(Node):
    """A true/false value, to link into any BOOLEAN input."""

    value: bool = Input(False, description="the flag")

    class Outputs(NodeOutputs):
        value: bool = Output(description="the flag")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=self.value)


@node("seed", category="primitives", title="Seed")
class Seed(Node):
    """A random seed. The editor can randomize or increment it after each run; one seed node can
    drive several samplers so they stay in step."""

    seed: int = Input(0, ge=0, le=MAX_SEED, widget="seed", description="the seed, 0 to 2^64-1")

    class Outputs(NodeOutputs):
        seed: int = Output(description="the seed")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(seed=self.seed)


IntOperation = Literal["add", "subtract", "multiply", "floor_divide", "modulo", "power", "min", "max"]
FloatOperation = Literal["add", "subtract", "multiply", "divide", "power", "min", "max"]

_OPERATIONS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "floor_divide": lambda a, b: a // b,
    "modulo": lambda a, b: a % b,
    "power": lambda a, b: a**b,
    "min": min,
    "max": max,
}


def _apply(operation: str, a: float, b: float) -> Any:
    if operation in ("divide", "floor_divide", "modulo") and b == 0:
        raise ValueError(f"cannot {operation.replace('_', ' ')} by zero (b is 0)")
    return _OPERATIONS[operation](a, b)


@node("int_math", category="primitives", title="Integer math")
class IntMath(Node):
    """Combine two integers: a (operation) b."""

    a: int = Input(0, description="left operand")
    b: int = Input(0, description="right operand")
    operation: IntOperation = Input("add", description="what to compute")

    class Outputs(NodeOutputs):
        value: int = Output(description="the result")

    def run(self, ctx: RunContext) -> Outputs:
        if self.operation == "power":
            if self.b < 0:
                raise ValueError(f"integer power needs b >= 0, got {self.b}")
            if abs(self.a) > 1 and self.b * math.log2(abs(self.a)) > MAX_INT_BITS:
                raise ValueError(f"{self.a} ** {self.b} has more than {MAX_INT_BITS} bits; refusing to compute it")
        return self.Outputs(value=_apply(self.operation, self.a, self.b))


@node("float_math", category="primitives", title="Float math")
class FloatMath(Node):
    """Combine two numbers: a (operation) b."""

    a: float = Input(0.0, step=0.01, description="left operand")
    b: float = Input(0.0, step=0.01, description="right operand")
    operation: FloatOperation = Input("add", description="what to compute")

    class Outputs(NodeOutputs):
        value: float = Output(description="the result")

    def run(self, ctx: RunContext) -> Outputs:
        try:
            value = float(_apply(self.operation, self.a, self.b))
        except OverflowError:  # float ** float raises instead of giving inf
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f"{self.a} {self.operation} {self.b} is not a finite number")
        return self.Outputs(value=value)


@node("string_format", category="primitives", title="Format text")
class StringFormat(Node):
    """Fill a template such as "a photo of {a}, seed {b}" with up to four linked values."""

    template: str = Input("{a}", multiline=True, description="text with {a} {b} {c} {d} placeholders")
    a: Any = Input(None, port=ports.ANY, description="value for {a}")
    b: Any = Input(None, port=ports.ANY, description="value for {b}")
    c: Any = Input(None, port=ports.ANY, description="value for {c}")
    d: Any = Input(None, port=ports.ANY, description="value for {d}")

    class Outputs(NodeOutputs):
        value: str = Output(description="the filled-in text")

    def run(self, ctx: RunContext) -> Outputs:
        values = {k: "" if v is None else v for k, v in {"a": self.a, "b": self.b, "c": self.c, "d": self.d}.items()}
        formatter = string.Formatter()
        estimate = 0
        for literal, field, spec, conversion in formatter.parse(self.template):
            estimate += len(literal)
            if field is None:
                continue
            # Only the bare names: attribute or index access ({a.__class__}) would reach into objects.
            if field not in values:
                raise ValueError(f"template placeholder {{{field}}} is not one of {{a}}, {{b}}, {{c}}, {{d}}")
            estimate += _field_size(values[field], formatter.vformat(spec or "", (), values) if spec else "", conversion)
        cap = ctx.limits.max_value_bytes
        if cap and estimate > cap:  # refused before the text is made, not after it filled the memory
            raise ValueError(f"the template would make about {estimate:,} characters, over the limit of "
                             f"{cap:,} for one value (a width or precision in a placeholder is too large?)")
        return self.Outputs(value=self.template.format(**values))


_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?$", re.S)


def _field_size(value: Any, spec: str, conversion: str | None) -> int:
    """An upper bound, roughly, on the characters `format(value, spec)` makes: the padded width or
    the value's own text, plus room for a precision (a float prints up to ~310 digits before the
    point, and grouping separators)."""
    shown = repr(value) if conversion in ("r", "a") else value
    if isinstance(shown, str):
        own = len(shown) * (6 if conversion == "a" else 1)
    elif isinstance(shown, (int, float, bool)):
        own = len(str(shown)) * 2 + 320
    else:
        own = len(str(shown))
    match = _FORMAT_SPEC.match(spec)
    if match is None:
        return own  # format() will refuse the spec itself
    width = int(match["width"] or 0)
    precision = int(match["precision"] or 0)
    return max(width, own + precision + precision // 3)


@node("show_value", category="primitives", title="Show value", output=True)
class ShowValue(Node):
    """Show a value in the run's results (an output node: requesting it runs what it needs)."""

    value: Any = Input(port=ports.ANY, description="the value to show")

    def run(self, ctx: RunContext) -> None:
        value = self.value
        ctx.report(value=value if isinstance(value, (int, float, str, bool, type(None))) else repr(value))
        return None
