"""The built-in primitive nodes, through the real registry, and the shipped arithmetic workflow."""

import json
import re
from pathlib import Path

import pytest

import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
from latentgraph.engine import CancelToken, Executor, OutputCache, RunContext, find_issues, registry, validate_workflow
from engine_nodes import L, n, wf
from latentgraph.nodes.primitives import MAX_SEED, ShowValue

ROOT = Path(__file__).resolve().parent.parent
PRIMITIVES = ["boolean_constant", "float_constant", "float_math", "int_constant", "int_math", "seed",
              "show_value", "string_constant", "string_format"]


@pytest.fixture
def executor():
    return Executor(registry, OutputCache())


def value_of(executor, node_type, **inputs):
    """Run one node and return its `value` output (or raise with its failure)."""
    result = executor.run(wf(x=n(node_type, **inputs)), outputs=["x"])
    if result.errors:
        raise result.errors[0].error
    return result.values["x"]["value"] if "value" in result.values["x"] else result.values["x"]


def issues(doc):
    _, found = find_issues(doc, registry, ["x"])
    return [(i.node, i.input, i.code, i.message) for i in found]


def test_the_primitive_library_is_registered_in_the_primitives_category():
    catalog = {entry["type"]: entry for entry in registry.catalog() if entry["category"] == "primitives"}
    assert sorted(catalog) == PRIMITIVES
    assert catalog["show_value"]["output_node"] is True
    assert [t for t, e in catalog.items() if e["output_node"]] == ["show_value"]
    assert catalog["seed"]["inputs"][0] == {"name": "seed", "type": "INT", "required": False, "default": 0,
                                            "minimum": 0, "maximum": 2**64 - 1, "widget": "seed",
                                            "link_only": False, "description": "the seed, 0 to 2^64-1"}
    assert catalog["int_math"]["inputs"][2]["choices"] == ["add", "subtract", "multiply", "floor_divide", "modulo",
                                                           "power", "min", "max"]
    assert catalog["float_math"]["inputs"][2]["choices"] == ["add", "subtract", "multiply", "divide", "power",
                                                             "min", "max"]
    assert catalog["string_constant"]["inputs"][0]["multiline"] is True


@pytest.mark.parametrize("node_type, value", [
    ("int_constant", -12), ("float_constant", 0.125), ("string_constant", "a cat\non a mat"),
    ("boolean_constant", True),
])
def test_constants_output_their_value(executor, node_type, value):
    assert value_of(executor, node_type, value=value) == value


def test_constants_have_defaults(executor):
    assert value_of(executor, "int_constant") == 0
    assert value_of(executor, "float_constant") == 0.0
    assert value_of(executor, "string_constant") == ""
    assert value_of(executor, "boolean_constant") is False


def test_a_float_constant_accepts_an_integer_literal_as_a_float(executor):
    value = value_of(executor, "float_constant", value=3)
    assert value == 3.0 and type(value) is float


@pytest.mark.parametrize("seed", [0, 42, MAX_SEED])
def test_seed_accepts_zero_to_two_to_the_64_minus_one(executor, seed):
    result = executor.run(wf(x=n("seed", seed=seed)), outputs=["x"])
    assert result.values["x"] == {"seed": seed}


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_outside_its_range_is_out_of_bounds(seed):
    assert issues(wf(x=n("seed", seed=seed))) == [
        ("x", "seed", "out_of_bounds", f"node 'x' (seed) input 'seed' must be >= 0 and <= 18446744073709551615, got {seed}")
    ]


@pytest.mark.parametrize("operation, a, b, expected", [
    ("add", 7, 3, 10), ("subtract", 7, 10, -3), ("multiply", 7, 3, 21), ("floor_divide", 7, 2, 3),
    ("floor_divide", -7, 2, -4), ("modulo", 7, 3, 1), ("modulo", -7, 3, 2), ("power", 2, 10, 1024),
    ("power", 5, 0, 1), ("min", 7, 3, 3), ("max", 7, 3, 7),
])
def test_int_math(executor, operation, a, b, expected):
    value = value_of(executor, "int_math", a=a, b=b, operation=operation)
    assert value == expected and type(value) is int


def test_int_math_defaults_to_add(executor):
    assert value_of(executor, "int_math", a=2, b=3) == 5


@pytest.mark.parametrize("operation, message", [
    ("floor_divide", "cannot floor divide by zero (b is 0)"),
    ("modulo", "cannot modulo by zero (b is 0)"),
])
def test_int_math_by_zero_fails_with_a_clear_message(executor, operation, message):
    result = executor.run(wf(x=n("int_math", a=1, b=0, operation=operation)), outputs=["x"])
    (failure,) = result.errors
    assert (failure.node_id, failure.node_type, failure.error_type) == ("x", "int_math", "ValueError")
    assert str(failure.error) == message
    assert str(failure) == f"node 'x' (int_math) failed: ValueError: {message}"


def test_int_math_refuses_a_negative_power(executor):
    with pytest.raises(ValueError, match=r"^integer power needs b >= 0, got -1$"):
        value_of(executor, "int_math", a=2, b=-1, operation="power")


def test_int_math_has_no_true_division():
    assert issues(wf(x=n("int_math", operation="divide"))) == [
        ("x", "operation", "not_in_choices",
         "node 'x' (int_math) input 'operation' must be one of 'add', 'subtract', 'multiply', 'floor_divide', "
         "'modulo', 'power', 'min', 'max', got 'divide'")
    ]


@pytest.mark.parametrize("operation, a, b, expected", [
    ("add", 1.5, 2.25, 3.75), ("subtract", 1.5, 2.25, -0.75), ("multiply", 1.5, 2.0, 3.0),
    ("divide", 1.0, 4.0, 0.25), ("power", 9.0, 0.5, 3.0), ("min", 1.5, -2.0, -2.0), ("max", 1.5, -2.0, 1.5),
])
def test_float_math(executor, operation, a, b, expected):
    value = value_of(executor, "float_math", a=a, b=b, operation=operation)
    assert value == expected and type(value) is float


def test_float_math_by_zero_fails_with_a_clear_message(executor):
    with pytest.raises(ValueError, match=r"^cannot divide by zero \(b is 0\)$"):
        value_of(executor, "float_math", a=1.0, b=0.0, operation="divide")


@pytest.mark.parametrize("operation, a, b", [("multiply", 1e308, 10.0), ("power", 10.0, 400.0)])
def test_float_math_refuses_results_that_are_not_finite(executor, operation, a, b):
    with pytest.raises(ValueError, match="^" + re.escape(f"{a} {operation} {b} is not a finite number") + "$"):
        value_of(executor, "float_math", a=a, b=b, operation=operation)


def test_float_math_takes_linked_integers(executor):
    doc = wf(i=n("int_constant", value=3), x=n("float_math", a=L("i", "value"), b=0.5, operation="multiply"))
    result = executor.run(doc, outputs=["x"])
    assert result.values["x"] == {"value": 1.5}


def test_string_format_fills_placeholders_from_linked_values(executor):
    doc = wf(
        w=n("int_constant", value=512), f=n("float_constant", value=7.5), t=n("string_constant", value="a cat"),
        flag=n("boolean_constant", value=True),
        x=n("string_format", template="{c}, {a}px, cfg {b}, {d}", a=L("w", "value"), b=L("f", "value"),
            c=L("t", "value"), d=L("flag", "value")),
    )
    assert executor.run(doc, outputs=["x"]).values["x"] == {"value": "a cat, 512px, cfg 7.5, True"}


def test_string_format_leaves_unlinked_placeholders_empty_and_honours_format_specs(executor):
    doc = wf(w=n("int_constant", value=7), x=n("string_format", template="[{a:>3}][{b}]", a=L("w", "value")))
    assert executor.run(doc, outputs=["x"]).values["x"] == {"value": "[  7][]"}
    assert value_of(executor, "string_format") == ""  # "{a}" with nothing linked


@pytest.mark.parametrize("template, placeholder", [("seed {seed}", "{seed}"), ("{}", "{}"), ("{0}", "{0}"),
                                                   ("{e.real}", "{e.real}")])
def test_string_format_names_a_bad_placeholder(executor, template, placeholder):
    result = executor.run(wf(x=n("string_format", template=template)), outputs=["x"])
    (failure,) = result.errors
    assert failure.error_type == "ValueError"
    assert str(failure.error) == f"template placeholder {placeholder} is not one of {{a}}, {{b}}, {{c}}, {{d}}"


def test_string_format_takes_links_only_for_its_values():
    assert issues(wf(x=n("string_format", a="cat"))) == [
        ("x", "a", "link_required",
         "node 'x' (string_format) input 'a' (ANY) must be a link {\"node\": ..., \"output\": ...}, got the value 'cat'")
    ]


@pytest.mark.parametrize("source, value", [
    (n("int_constant", value=3), 3), (n("float_constant", value=0.5), 0.5),
    (n("string_constant", value="hi"), "hi"), (n("boolean_constant", value=False), False),
])
def test_show_value_reports_what_it_is_given(executor, source, value):
    result = executor.run(wf(src=source, show=n("show_value", value=L("src", "value"))))
    assert result.results == {"show": {"value": value}}
    assert result.values == {"show": {}}


def test_show_value_reports_other_values_by_their_repr():
    ctx = RunContext("r", "show", "show_value", None, CancelToken(), lambda kind, data: None)
    assert ShowValue.model_construct(value=[1, "a"]).run(ctx) is None
    assert ctx.results == {"value": "[1, 'a']"}


def test_show_value_needs_a_value():
    _, found = find_issues(wf(show=n("show_value")), registry)
    assert [(i.node, i.input, i.code) for i in found] == [("show", "value", "missing_input")]


def test_the_shipped_arithmetic_workflow_validates_and_computes_its_caption(executor):
    text = (ROOT / "workflows" / "arithmetic.json").read_text()
    graph = validate_workflow(text, registry)
    assert graph.outputs == ("show",)
    assert len(graph.nodes) == 7
    result = executor.run(text)
    assert result.status == "succeeded"
    assert result.results == {"show": {"value": "512x768 image, 6144 latent cells, seed 42"}}
    assert sorted(result.executed) == ["caption", "height", "latent_cells", "pixels", "seed", "show", "width"]

    intermediate = executor.run(text, outputs=["pixels", "latent_cells"])
    assert intermediate.values == {"pixels": {"value": 393216}, "latent_cells": {"value": 6144}}
    assert intermediate.executed == []

    doc = json.loads(text)
    doc["nodes"]["seed"]["inputs"]["seed"] = 7
    rerun = executor.run(doc)
    assert rerun.results == {"show": {"value": "512x768 image, 6144 latent cells, seed 7"}}
    assert sorted(rerun.executed) == ["caption", "seed", "show"]
    assert sorted(rerun.cached) == ["height", "latent_cells", "width"]


def test_int_power_refuses_results_too_large_to_compute_in_bounded_time(executor):
    with pytest.raises(ValueError, match="more than 4096 bits"):
        value_of(executor, "int_math", a=2, b=10**12, operation="power")
    assert value_of(executor, "int_math", a=2, b=100, operation="power") == 2**100


def test_string_format_refuses_attribute_and_index_access(executor):
    with pytest.raises(ValueError, match=r"\{a.__class__\} is not one of \{a\}, \{b\}, \{c\}, \{d\}"):
        value_of(executor, "string_format", template="{a.__class__}")
    with pytest.raises(ValueError, match=r"\{a\[0\]\} is not one of"):
        value_of(executor, "string_format", template="{a[0]}")
