"""Validation: one test per error code, every problem in one pass, and nothing runs on failure."""

import pytest

import engine_nodes
from latentgraph.engine import Executor, ValidationIssue, WorkflowInvalid, find_issues, validate_workflow
from engine_nodes import AVAILABLE_SAMPLERS, CALLS, L, n, wf

REG = engine_nodes.registry


@pytest.fixture(autouse=True)
def fresh():
    engine_nodes.reset()


def issues_of(doc, outputs=None):
    graph, issues = find_issues(doc, REG, outputs)
    assert graph is None
    assert all(isinstance(i, ValidationIssue) for i in issues)
    return issues


def only_issue(doc, outputs=None):
    issues = issues_of(doc, outputs)
    assert len(issues) == 1, [i.message for i in issues]
    return issues[0]


def where(issue):
    return (issue.node, issue.input, issue.code)


def with_sink(**nodes):
    """A workflow that has an output node, so only the problem under test is reported."""
    return wf(**nodes, out=n("sink", value=L("k", "value")), k=n("constant", value=1))


# --- one test per code ---------------------------------------------------------------------------

def test_invalid_json():
    issue = only_issue('{"nodes": {"a": ')
    assert where(issue) == (None, None, "invalid_json")
    assert issue.message.startswith("malformed JSON: ")
    assert "line 1 column 17" in issue.message


def test_invalid_workflow():
    issues = issues_of({"nodes": {"a": {"typ": "constant"}}})
    assert [(where(i), i.message) for i in issues] == [
        ((None, None, "invalid_workflow"), "nodes.a.type: Field required"),
        ((None, None, "invalid_workflow"), "nodes.a.typ: Extra inputs are not permitted"),
    ]
    issues = issues_of("42")
    assert [where(i) for i in issues] == [(None, None, "invalid_workflow")]
    assert issues[0].message == "a workflow is a JSON object, got int"


def test_unknown_format():
    issue = only_issue({"format": "latentgraph/workflow@2", "nodes": {}})
    assert where(issue) == (None, None, "unknown_format")
    assert "unknown workflow format 'latentgraph/workflow@2'" in issue.message


def test_unknown_node_type():
    issue = only_issue(with_sink(x=n("no_such_node", value=1)))
    assert where(issue) == ("x", None, "unknown_node_type")
    assert issue.message == "node 'x': unknown node type 'no_such_node'"


def test_unknown_input():
    issue = only_issue(with_sink(x=n("add", a=1, c=2)))
    assert where(issue) == ("x", "c", "unknown_input")
    assert issue.message == "node 'x' (add) has no input 'c' (its inputs: a, b)"


def test_missing_input():
    issue = only_issue(with_sink(lat=n("make_latent"), x=n("use_model", latent=L("lat", "latent"))))
    assert where(issue) == ("x", "model", "missing_input")
    assert issue.message == "node 'x' (use_model) is missing required input 'model' (MODEL)"


def test_missing_node_for_a_link_to_a_node_that_does_not_exist():
    issue = only_issue(with_sink(x=n("add", a=L("ghost", "value"))))
    assert where(issue) == ("x", "a", "missing_node")
    assert issue.message == "node 'x' (add) input 'a' links to node 'ghost', which does not exist"


def test_missing_node_for_a_requested_output_that_does_not_exist():
    issue = only_issue(with_sink(), outputs=["out", "ghost"])
    assert where(issue) == ("ghost", None, "missing_node")
    assert issue.message == "requested output node 'ghost' does not exist"


def test_missing_output():
    issue = only_issue(with_sink(m=n("make_model"), x=n("add", a=L("m", "weights"))))
    assert where(issue) == ("x", "a", "missing_output")
    assert issue.message == ("node 'x' (add) input 'a' links to output 'weights' of node 'm' (make_model), "
                             "which has no such output (its outputs: model)")


def test_type_mismatch_names_both_ends_and_both_types():
    issue = only_issue(with_sink(lat=n("make_latent"),
                                 x=n("use_model", model=L("lat", "latent"), latent=L("lat", "latent"))))
    assert where(issue) == ("x", "model", "type_mismatch")
    assert issue.message == ("node 'x' (use_model) input 'model' expects MODEL, "
                             "but node 'lat' (make_latent) output 'latent' gives LATENT")


def test_link_required_for_a_literal_given_to_a_model_input():
    issue = only_issue(with_sink(lat=n("make_latent"),
                                 x=n("use_model", model="v1-5.safetensors", latent=L("lat", "latent"))))
    assert where(issue) == ("x", "model", "link_required")
    assert issue.message == ("node 'x' (use_model) input 'model' (MODEL) must be a link "
                             "{\"node\": ..., \"output\": ...}, got the value 'v1-5.safetensors'")


@pytest.mark.parametrize("node_type, input_name, value, kind", [
    ("add", "a", "5", "INT"),          # validation is strict: no string → int coercion
    ("add", "a", 2.5, "INT"),
    ("add", "a", True, "INT"),         # a bool is not an int
    ("number", "value", "1.5", "FLOAT"),
    ("text", "value", 5, "STRING"),
    ("add", "a", None, "INT"),
    ("add", "a", [1], "INT"),
])
def test_invalid_value_for_a_value_of_the_wrong_type(node_type, input_name, value, kind):
    issue = only_issue(with_sink(x=n(node_type, **{input_name: value})))
    assert where(issue) == ("x", input_name, "invalid_value")
    assert issue.message.startswith(f"node 'x' ({node_type}) input '{input_name}': input should be a valid ")
    assert issue.message.endswith(f"({kind}), got {value!r}")


def test_a_link_shaped_object_with_a_non_string_output_is_a_literal_and_so_an_invalid_value():
    issue = only_issue(with_sink(x=n("add", a={"node": "k", "output": 1})))
    assert where(issue) == ("x", "a", "invalid_value")


@pytest.mark.parametrize("input_name, value, bounds", [
    ("value", -1, ">= 0 and <= 10"),
    ("value", 11, ">= 0 and <= 10"),
    ("ratio", 0.0, "> 0.0 and < 1.0"),
    ("ratio", 1.0, "> 0.0 and < 1.0"),
])
def test_out_of_bounds(input_name, value, bounds):
    issue = only_issue(with_sink(x=n("bounded", **{input_name: value})))
    assert where(issue) == ("x", input_name, "out_of_bounds")
    assert issue.message == f"node 'x' (bounded) input '{input_name}' must be {bounds}, got {value!r}"


def test_values_on_the_bounds_are_accepted():
    graph = validate_workflow(with_sink(lo=n("bounded", value=0, ratio=0.001), hi=n("bounded", value=10, ratio=0.999)), REG)
    assert graph.nodes["lo"].literals == {"value": 0, "ratio": 0.001}
    assert graph.nodes["hi"].literals == {"value": 10, "ratio": 0.999}


def test_not_in_choices_for_a_literal_annotation():
    issue = only_issue(with_sink(x=n("pick", mode="medium")))
    assert where(issue) == ("x", "mode", "not_in_choices")
    assert issue.message == "node 'x' (pick) input 'mode' must be one of 'fast', 'slow', got 'medium'"


def test_not_in_choices_for_a_static_choices_list():
    issue = only_issue(with_sink(x=n("pick", size=300)))
    assert where(issue) == ("x", "size", "not_in_choices")
    assert issue.message == "node 'x' (pick) input 'size' must be one of 256, 512, 768, got 300"


def test_not_in_choices_for_dynamic_choices_evaluated_at_validation_time():
    doc = with_sink(x=n("pick", sampler="lms"))
    issue = only_issue(doc)
    assert where(issue) == ("x", "sampler", "not_in_choices")
    assert issue.message == "node 'x' (pick) input 'sampler' must be one of 'euler', 'ddim', got 'lms'"
    AVAILABLE_SAMPLERS.append("lms")  # e.g. a file appeared in the models folder
    assert validate_workflow(doc, REG).nodes["x"].literals["sampler"] == "lms"
    AVAILABLE_SAMPLERS.clear()
    issue = only_issue(with_sink(x=n("pick", sampler="euler")))
    assert issue.message == "node 'x' (pick) input 'sampler' must be one of (none available), got 'euler'"


def test_cycle_lists_the_nodes_on_it_in_the_direction_values_flow():
    # c reads a, a reads b, b reads c: values flow a -> c -> b -> a
    issue = only_issue(with_sink(c=n("add", a=L("a", "value")), a=n("add", a=L("b", "value")),
                                 b=n("add", a=L("c", "value"))))
    assert where(issue) == ("a", None, "cycle")
    assert issue.message == "the workflow has a cycle: 'a' -> 'c' -> 'b' -> 'a'"


def test_a_self_loop_is_a_cycle():
    issue = only_issue(with_sink(s=n("add", a=L("s", "value"))))
    assert where(issue) == ("s", None, "cycle")
    assert issue.message == "the workflow has a cycle: 's' -> 's'"


def test_two_separate_cycles_are_two_issues():
    issues = issues_of(with_sink(p=n("add", a=L("q", "value")), q=n("add", a=L("p", "value")),
                                 s=n("add", a=L("s", "value"))))
    assert sorted(i.message for i in issues) == ["the workflow has a cycle: 'p' -> 'q' -> 'p'",
                                                 "the workflow has a cycle: 's' -> 's'"]


def test_no_output_node():
    issue = only_issue(wf(a=n("constant", value=1), b=n("add", a=L("a", "value"))))
    assert where(issue) == (None, None, "no_output_node")
    assert "the workflow has no output node" in issue.message
    issue = only_issue(with_sink(), outputs=[])
    assert where(issue) == (None, None, "no_output_node")
    assert issue.message == "no output node was requested"


def test_no_output_node_is_not_claimed_while_an_unknown_type_might_be_one():
    issue = only_issue(wf(a=n("constant"), x=n("save_something", value=L("a", "value"))))
    assert where(issue) == ("x", None, "unknown_node_type")


# --- all at once, and nothing runs ---------------------------------------------------------------

FIVE_PROBLEMS = wf(
    a=n("constant", value="7"),                                       # invalid_value
    b=n("add", a=L("a", "value"), c=1),                               # unknown_input
    c=n("bounded", value=99),                                         # out_of_bounds
    d=n("add", a=L("nowhere", "value")),                              # missing_node
    e=n("what_is_this"),                                              # unknown_node_type
    ok=n("add", a=1, b=2),
    out=n("sink", value=L("ok", "value")),
)


def test_every_problem_is_reported_in_one_pass_in_workflow_order():
    issues = issues_of(FIVE_PROBLEMS)
    assert [where(i) for i in issues] == [
        ("a", "value", "invalid_value"),
        ("b", "c", "unknown_input"),
        ("c", "value", "out_of_bounds"),
        ("d", "a", "missing_node"),
        ("e", None, "unknown_node_type"),
    ]


def test_workflow_invalid_carries_every_issue_and_lists_them_in_its_message():
    with pytest.raises(WorkflowInvalid) as info:
        validate_workflow(FIVE_PROBLEMS, REG)
    assert len(info.value.issues) == 5
    text = str(info.value)
    assert text.startswith("workflow is invalid (5 problems):\n  - ")
    assert "node 'e': unknown node type 'what_is_this'" in text
    with pytest.raises(WorkflowInvalid, match=r"workflow is invalid \(1 problem\):"):
        validate_workflow(with_sink(x=n("add", z=1)), REG)


def test_a_workflow_that_fails_validation_runs_nothing():
    executor = Executor(REG)
    seen = []
    executor.events.subscribe(seen.append)
    with pytest.raises(WorkflowInvalid):
        executor.run(FIVE_PROBLEMS)
    assert CALLS == {}
    assert seen == []
    assert len(executor.cache) == 0


def test_issue_to_dict_is_node_input_code_message():
    issue = only_issue(with_sink(x=n("add", c=2)))
    assert issue.to_dict() == {"node": "x", "input": "c", "code": "unknown_input",
                               "message": "node 'x' (add) has no input 'c' (its inputs: a, b)"}
    assert str(issue) == issue.message


# --- what links are accepted ---------------------------------------------------------------------

def test_an_int_output_may_feed_a_float_input_and_arrives_as_a_float():
    doc = wf(i=n("constant", value=2), x=n("add_float", a=L("i", "value"), b=1), out=n("sink", value=L("x", "types")))
    graph = validate_workflow(doc, REG)
    assert graph.nodes["x"].literals == {"b": 1.0}
    assert type(graph.nodes["x"].literals["b"]) is float
    result = Executor(REG).run(doc, outputs=["x"])
    assert result.values["x"] == {"value": 3.0, "types": "float,float"}


def test_a_float_output_may_not_feed_an_int_input():
    issue = only_issue(with_sink(f=n("number", value=1.0), x=n("add", a=L("f", "value"))))
    assert where(issue) == ("x", "a", "type_mismatch")
    assert issue.message == "node 'x' (add) input 'a' expects INT, but node 'f' (number) output 'value' gives FLOAT"


@pytest.mark.parametrize("source, output", [("make_model", "model"), ("make_latent", "latent"),
                                            ("text", "value"), ("number", "value"), ("constant", "value")])
def test_an_any_input_accepts_a_link_of_any_type(source, output):
    graph = validate_workflow(wf(src=n(source), out=n("sink", value=L("src", output))), REG)
    assert graph.outputs == ("out",)
    assert graph.nodes["out"].links["value"].node == "src"


def test_an_any_input_takes_links_only():
    issue = only_issue(wf(out=n("sink", value=5)))
    assert where(issue) == ("out", "value", "link_required")


def test_defaults_fill_unset_inputs_and_the_graph_orders_dependencies_first():
    graph = validate_workflow(wf(out=n("sink", value=L("b", "value")), b=n("add", a=L("a", "value")), a=n("constant")), REG)
    assert graph.nodes["b"].literals == {"b": 0}
    assert graph.nodes["a"].literals == {"value": 0}
    assert graph.order == ("a", "b", "out")
    assert graph.outputs == ("out",)
