"""The workflow JSON format: parsing, links vs literals, the JSON Schema, migrations, ui and meta."""

import json
from pathlib import Path

import pytest

import engine_nodes
from latentgraph.engine import FORMAT, Executor, OutputCache, Workflow, find_issues, link, parse_workflow, workflow_json_schema
from latentgraph.engine.workflow import MIGRATIONS, Link, WorkflowFormatError, as_link, migrate
from engine_nodes import L, n, wf

ROOT = Path(__file__).resolve().parent.parent

DOC = {
    "format": "latentgraph/workflow@1",
    "nodes": {
        "a": {"type": "constant", "inputs": {"value": 2}},
        "b": {"type": "add", "inputs": {"a": {"node": "a", "output": "value"}, "b": 3}, "title": "Adder"},
        "out": {"type": "sink", "inputs": {"value": {"node": "b", "output": "value"}}},
    },
    "ui": {"a": {"x": 0, "y": 0}},
    "meta": {"name": "demo"},
}


@pytest.fixture(autouse=True)
def fresh():
    engine_nodes.reset()


def test_format_tag_is_latentgraph_workflow_at_1():
    assert FORMAT == "latentgraph/workflow@1"


@pytest.mark.parametrize("source", [json.dumps(DOC), json.dumps(DOC).encode("utf-8"), DOC],
                         ids=["str", "bytes", "dict"])
def test_a_workflow_parses_from_text_bytes_or_a_decoded_dict(source):
    workflow = parse_workflow(source)
    assert isinstance(workflow, Workflow)
    assert workflow.format == FORMAT
    assert list(workflow.nodes) == ["a", "b", "out"]
    assert workflow.nodes["b"].type == "add"
    assert workflow.nodes["b"].title == "Adder"
    assert workflow.nodes["b"].inputs == {"a": {"node": "a", "output": "value"}, "b": 3}
    assert workflow.ui == {"a": {"x": 0, "y": 0}}
    assert workflow.meta == {"name": "demo"}


def test_a_parsed_workflow_is_returned_as_is_and_round_trips_through_json():
    workflow = parse_workflow(DOC)
    assert parse_workflow(workflow) is workflow
    assert json.loads(workflow.to_json()) == DOC
    assert workflow.to_dict() == DOC


def test_format_ui_meta_and_inputs_may_be_left_out():
    workflow = parse_workflow({"nodes": {"x": {"type": "constant"}}})
    assert workflow.format == FORMAT
    assert workflow.nodes["x"].inputs == {}
    assert (workflow.ui, workflow.meta) == ({}, {})
    assert workflow.to_dict() == {"format": FORMAT, "nodes": {"x": {"type": "constant", "inputs": {}}}, "ui": {}, "meta": {}}


def test_malformed_json_is_an_invalid_json_problem_with_its_position():
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow('{"nodes": {')
    assert [(p, c) for p, c, _ in info.value.problems] == [("", "invalid_json")]
    assert "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 12" in str(info.value)


def test_a_document_that_is_not_an_object_is_an_invalid_workflow():
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow("[1, 2]")
    assert info.value.problems == [("", "invalid_workflow", "a workflow is a JSON object, got list")]


def test_shape_problems_are_each_reported_with_their_path():
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow({"nodes": {"a": {"inputs": {}, "colour": "red"}}, "extra": 1})
    problems = sorted((p, c) for p, c, _ in info.value.problems)
    assert problems == [("extra", "invalid_workflow"), ("nodes.a.colour", "invalid_workflow"),
                        ("nodes.a.type", "invalid_workflow")]
    assert "nodes.a.type: Field required" in str(info.value)


def test_a_missing_nodes_key_is_reported():
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow({"format": FORMAT})
    assert info.value.problems == [("nodes", "invalid_workflow", "nodes: Field required")]


# --- links and literals --------------------------------------------------------------------------

def test_an_object_with_exactly_node_and_output_strings_is_a_link():
    assert as_link({"node": "a", "output": "value"}) == Link(node="a", output="value")
    assert as_link(Link(node="a", output="v")) == Link(node="a", output="v")
    assert link("a", "value") == {"node": "a", "output": "value"}
    assert as_link(link("seed", "seed")) == Link(node="seed", output="seed")


@pytest.mark.parametrize("literal", [
    5, "a", None, [1, 2], {"node": "a"}, {"output": "value"}, {"node": "a", "output": 1},
    {"node": 1, "output": "value"}, {"node": "a", "output": "value", "extra": 1}, {"x": "a", "y": "b"},
])
def test_anything_else_is_a_literal(literal):
    assert as_link(literal) is None


# --- JSON Schema ---------------------------------------------------------------------------------

def test_the_schema_describes_the_workflow_document():
    schema = workflow_json_schema()
    assert schema["$id"] == "https://latentgraph.dev/schema/workflow-1.json"
    assert schema["title"] == "Latentgraph workflow"
    assert schema["type"] == "object"
    assert schema["required"] == ["nodes"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"format", "nodes", "ui", "meta"}
    assert schema["properties"]["format"]["default"] == FORMAT
    assert json.loads(json.dumps(schema)) == schema


def test_the_schema_is_valid_json_schema_and_real_workflows_validate_against_it():
    jsonschema = pytest.importorskip("jsonschema")
    schema = workflow_json_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    validator.validate(json.loads((ROOT / "workflows" / "arithmetic.json").read_text()))
    validator.validate(DOC)
    assert not validator.is_valid({"nodes": {"a": {"inputs": {}}}})  # type is required
    assert not validator.is_valid({"nodes": {}, "extra": 1})


# --- migrations ----------------------------------------------------------------------------------

def test_an_older_format_is_migrated_through_the_registered_chain(monkeypatch):
    def from_v0(document):  # v0 called nodes "graph" and inputs "args"
        return {"format": "latentgraph/workflow@0.5",
                "nodes": {k: {"type": v["kind"], "args": v["args"]} for k, v in document["graph"].items()}}

    def from_v05(document):
        return {"format": FORMAT,
                "nodes": {k: {"type": v["type"], "inputs": v["args"]} for k, v in document["nodes"].items()}}

    monkeypatch.setitem(MIGRATIONS, "latentgraph/workflow@0", from_v0)
    monkeypatch.setitem(MIGRATIONS, "latentgraph/workflow@0.5", from_v05)
    old = {"format": "latentgraph/workflow@0", "graph": {
        "a": {"kind": "constant", "args": {"value": 4}},
        "out": {"kind": "sink", "args": {"value": {"node": "a", "output": "value"}}},
    }}
    workflow = parse_workflow(json.dumps(old))
    assert workflow.format == FORMAT
    assert workflow.nodes["a"].inputs == {"value": 4}
    result = Executor(engine_nodes.registry).run(old)
    assert result.results == {"out": {"value": 4}}


def test_an_unknown_format_is_refused_with_code_unknown_format(monkeypatch):
    monkeypatch.setitem(MIGRATIONS, "latentgraph/workflow@0", lambda d: d)
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow({"format": "comfyui/prompt", "nodes": {}})
    assert info.value.problems == [(
        "format", "unknown_format",
        "unknown workflow format 'comfyui/prompt' (known: latentgraph/workflow@1, latentgraph/workflow@0)",
    )]
    _, issues = find_issues({"format": "latentgraph/workflow@9", "nodes": {}}, engine_nodes.registry)
    assert [(i.node, i.input, i.code) for i in issues] == [(None, None, "unknown_format")]


def test_a_migration_that_does_not_advance_the_format_is_refused_not_looped(monkeypatch):
    monkeypatch.setitem(MIGRATIONS, "old", lambda d: d)
    with pytest.raises(WorkflowFormatError) as info:
        migrate({"format": "old", "nodes": {}})
    assert info.value.problems[0][1] == "unknown_format"


@pytest.mark.parametrize("fmt", [["latentgraph/workflow@1"], {"v": 1}, 1])
def test_a_format_tag_that_is_not_a_string_is_an_unknown_format_not_a_crash(fmt):
    _, issues = find_issues({"format": fmt, "nodes": {}}, engine_nodes.registry)
    assert [(i.node, i.input, i.code) for i in issues] == [(None, None, "unknown_format")]


# --- ui, meta and titles never change a result ---------------------------------------------------

def test_ui_meta_and_titles_change_neither_signatures_nor_results():
    executor = Executor(engine_nodes.registry, OutputCache())
    first = executor.run(DOC)
    assert first.executed == ["a", "b", "out"]
    assert first.results == {"out": {"value": 5}}

    decorated = json.loads(json.dumps(DOC))
    decorated["ui"] = {"a": {"x": 500, "y": -20}, "b": {"collapsed": True}, "groups": [1, 2]}
    decorated["meta"] = {"name": "renamed", "description": "a different description"}
    decorated["nodes"]["a"]["title"] = "The answer"
    del decorated["nodes"]["b"]["title"]
    plan_a = executor.plan(executor.validate(DOC), "nonce")
    plan_b = executor.plan(executor.validate(decorated), "nonce")
    assert plan_a.signatures == plan_b.signatures

    second = executor.run(decorated)
    assert second.executed == []
    assert second.cached == ["out"]
    assert second.results == {"out": {"value": 5}}
    assert engine_nodes.CALLS == {"a": 1, "b": 1, "out": 1}


def test_the_shipped_workflows_parse_and_their_layout_names_real_nodes():
    workflow = parse_workflow((ROOT / "workflows" / "arithmetic.json").read_text())
    assert set(workflow.ui) == set(workflow.nodes)
    assert workflow.meta["name"] == "Arithmetic"


def test_workflow_helpers_build_documents():
    assert wf(a=n("constant", value=1), s=n("sink", value=L("a", "value"))) == {
        "format": FORMAT,
        "nodes": {"a": {"type": "constant", "inputs": {"value": 1}},
                  "s": {"type": "sink", "inputs": {"value": {"node": "a", "output": "value"}}}},
    }


def test_links_built_as_link_objects_are_saved_as_links():
    from latentgraph.engine.workflow import Link, Workflow, parse_workflow

    built = Workflow(nodes={"a": {"type": "constant", "inputs": {"value": 1}},
                            "s": {"type": "sink", "inputs": {"value": Link("a", "value")}}})
    assert built.to_dict()["nodes"]["s"]["inputs"]["value"] == {"node": "a", "output": "value"}
    assert parse_workflow(built.to_json()).nodes["s"].inputs["value"] == {"node": "a", "output": "value"}
