"""Node modes: a bypassed node passes its matching input on, a muted one (and what needs it) does
not run. Resolved before validation, so nothing disabled is validated, run, cached or signed."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import pytest

import engine_nodes
from engine_nodes import CALLS, MODEL, L, n, wf
from latentgraph.engine import (CancelToken, Executor, Input, Node, NodeOutputs, NodeRegistry, Output, OutputCache,
                                RunContext, WorkflowInvalid, find_issues, parse_workflow, ports, workflow_json_schema)
from latentgraph.engine.graph import resolve_modes
from latentgraph.engine.workflow import WorkflowFormatError

# The engine test nodes, plus a few with ANY and optional link inputs, in a registry of this file's own.
REG = NodeRegistry()
for _info in engine_nodes.registry:
    REG.register(_info.cls, _info.type, version=_info.version, category=_info.category, title=_info.title,
                 output=_info.is_output, cacheable=_info.cacheable)


@REG.node("tag_model", category="test")
class TagModel(Node):
    """An ANY input declared before a MODEL input; gives a MODEL."""

    extra: Any = Input(None, port=ports.ANY)
    model: Any = Input(None, port=MODEL)

    class Outputs(NodeOutputs):
        model: Any = Output(port=MODEL)

    def run(self, ctx: RunContext) -> Outputs:
        CALLS[ctx.node_id] += 1
        return self.Outputs(model=self.model)


@REG.node("anything", category="test")
class Anything(Node):
    """An ANY output after an INT input."""

    value: int = Input(0)

    class Outputs(NodeOutputs):
        out: Any = Output(port=ports.ANY)

    def run(self, ctx: RunContext) -> Outputs:
        CALLS[ctx.node_id] += 1
        return self.Outputs(out=self.value)


@REG.node("model_name", category="test")
class ModelName(Node):
    """The name of an optional MODEL ("none" without one) and an optional number."""

    model: Optional[Any] = Input(None, port=MODEL)
    number: int = Input(-1)

    class Outputs(NodeOutputs):
        name: str = Output()

    def run(self, ctx: RunContext) -> Outputs:
        CALLS[ctx.node_id] += 1
        return self.Outputs(name=f"{self.model.name if self.model is not None else 'none'}/{self.number}")


@REG.node("twice", category="test")
class Twice(Node):
    """2 * value; the value is required."""

    value: int = Input()

    class Outputs(NodeOutputs):
        value: int = Output()

    def run(self, ctx: RunContext) -> Outputs:
        CALLS[ctx.node_id] += 1
        return self.Outputs(value=2 * self.value)


@pytest.fixture(autouse=True)
def fresh():
    engine_nodes.reset()


@pytest.fixture
def executor():
    return Executor(REG, OutputCache())


def moded(node_mode: str, type_name: str, /, **inputs: Any) -> dict:
    return {"type": type_name, "inputs": inputs, "mode": node_mode}


def bypass(type_name: str, /, **inputs: Any) -> dict:
    return moded("bypass", type_name, **inputs)


def mute(type_name: str, /, **inputs: Any) -> dict:
    return moded("mute", type_name, **inputs)


def messages(document, outputs=None) -> list[str]:
    graph, issues = find_issues(document, REG, outputs)
    assert graph is None
    return [i.message for i in issues]


# --- bypass ----------------------------------------------------------------------------------------

def test_a_bypassed_node_passes_the_input_of_its_output_type_on(executor):
    document = wf(
        model=n("make_model", name="m"),
        latent=n("make_latent", width=3),
        use=bypass("use_model", model=L("model", "model"), latent=L("latent", "latent")),
        s=n("sink", value=L("use", "latent")),
    )
    result = executor.run(document)
    assert result.ok and result.results["s"] == {"value": [0.0, 0.0, 0.0]}  # the LATENT, not the MODEL before it
    assert "use" not in CALLS and result.executed == ["latent", "s"]  # the model is needed by nothing that runs
    assert result.disabled == {"use": "bypassed"}
    graph = executor.validate(document)
    assert set(graph.nodes) == {"model", "latent", "s"} and graph.nodes["s"].links["value"] == ("latent", "latent")
    assert graph.workflow.nodes["use"].mode == "bypass"  # the workflow as written is kept (saved images embed it)


def test_the_first_input_of_the_type_wins_for_every_output(executor):
    document = wf(
        one=n("constant", value=1),
        two=n("constant", value=2),
        x=bypass("split", a=L("one", "value"), b=L("two", "value")),
        sa=n("sink", value=L("x", "double_a")),
        sb=n("sink", value=L("x", "double_b")),
        st=n("sink", value=L("x", "total")),
    )
    result = executor.run(document)
    assert {k: v["value"] for k, v in result.results.items()} == {"sa": 1, "sb": 1, "st": 1}
    # Only inputs set in the workflow count: with `a` left out, `b` is the first INT input.
    document["nodes"]["x"]["inputs"].pop("a")
    result = executor.run(document)
    assert {k: v["value"] for k, v in result.results.items()} == {"sa": 2, "sb": 2, "st": 2}


def test_a_literal_passes_through_as_if_written_on_the_reader(executor):
    through = wf(
        c=n("constant", value=30),
        x=bypass("add", a=7, b=L("c", "value")),
        y=n("add", a=L("x", "value"), b=100),
        s=n("sink", value=L("y", "value")),
    )
    direct = wf(y=n("add", a=7, b=100), s=n("sink", value=L("y", "value")))
    assert executor.run(through).results["s"] == {"value": 107}
    assert executor.validate(through).nodes["y"].literals == {"a": 7, "b": 100}
    again = executor.run(direct)  # the same signatures: nothing runs
    assert again.executed == [] and again.cached == ["s"]
    # An ANY input (a sink) takes the literal too.
    assert executor.run(wf(x=bypass("add", a=5), s=n("sink", value=L("x", "value")))).results["s"] == {"value": 5}


def test_a_passed_literal_is_checked_against_the_reader_input(executor):
    document = wf(x=bypass("constant", value=50), b=n("bounded", value=L("x", "value")), s=n("sink", value=L("b", "value")))
    assert messages(document) == [
        "node 'b' (bounded) input 'value' must be >= 0 and <= 10, got 50 (passed through bypassed node 'x')"]


def test_chains_of_bypassed_nodes_pass_through(executor):
    document = wf(
        c=n("constant", value=4),
        x1=bypass("add", a=L("c", "value"), b=1),
        x2=bypass("add", a=L("x1", "value"), b=2),
        s=n("sink", value=L("x2", "value")),
    )
    result = executor.run(document)
    assert result.results["s"] == {"value": 4} and result.executed == ["c", "s"]
    assert result.disabled == {"x1": "bypassed", "x2": "bypassed"}
    modes = resolve_modes(parse_workflow(document), REG)
    assert modes.through == {("s", "value"): ("x2", "x1")}
    assert modes.workflow.nodes["s"].inputs == {"value": L("c", "value")}


def test_a_type_mismatch_through_a_bypass_names_the_bypassed_nodes():
    document = wf(
        c=n("text", value="hi"),
        x1=bypass("sink", value=L("c", "value")),
        x2=bypass("anything", value=3),
        m=bypass("tag_model", extra=L("c", "value")),
        u=n("use_model", model=L("m", "model"), latent=L("m", "model")),
    )
    assert messages(document, ["u"]) == [
        "node 'u' (use_model) input 'model' expects MODEL, but node 'c' (text) output 'value' gives STRING "
        "(passed through bypassed node 'm')",
        "node 'u' (use_model) input 'latent' expects LATENT, but node 'c' (text) output 'value' gives STRING "
        "(passed through bypassed node 'm')",
    ]


def test_an_any_port_matches_only_when_nothing_matches_exactly(executor):
    document = wf(
        model=n("make_model", name="exact"),
        other=n("make_model", name="any"),
        t=bypass("tag_model", extra=L("other", "model"), model=L("model", "model")),
        name=n("model_name", model=L("t", "model")),
        s=n("sink", value=L("name", "name")),
    )
    assert executor.run(document).results["s"] == {"value": "exact/-1"}  # MODEL beats the ANY before it
    document["nodes"]["t"]["inputs"].pop("model")
    assert executor.run(document).results["s"] == {"value": "any/-1"}  # the ANY input when nothing else matches
    # An ANY output passes on the first input set, whatever its type.
    document = wf(c=n("constant", value=9), x=bypass("anything", value=L("c", "value")), s=n("sink", value=L("x", "out")))
    assert executor.run(document).results["s"] == {"value": 9}


def test_a_read_output_with_nothing_to_pass_through_is_an_error_on_the_bypassed_node():
    document = wf(
        x=bypass("make_model", name="m"),
        u=n("model_name", model=L("x", "model")),
        v=n("model_name", model=L("x", "model")),
        s=n("sink", value=L("u", "name")),
        t=n("sink", value=L("v", "name")),
    )
    graph, issues = find_issues(document, REG)
    assert graph is None
    assert [(i.node, i.input, i.code, i.message) for i in issues] == [
        ("x", None, "bypass_no_input", "node 'x' (make_model) is bypassed, but has no MODEL input set to pass through "
                                       "to its output 'model' (MODEL), which nodes 'u', 'v' read")]


def test_a_bypassed_output_nobody_reads_needs_nothing_to_pass_through(executor):
    document = wf(x=bypass("make_model", name="m"), c=n("constant", value=1), s=n("sink", value=L("c", "value")))
    result = executor.run(document)
    assert result.ok and result.disabled == {"x": "bypassed"} and result.executed == ["c", "s"]


def test_a_cycle_of_bypassed_nodes_is_an_error_not_a_hang():
    document = wf(
        x1=bypass("add", a=L("x2", "value")),
        x2=bypass("add", a=L("x1", "value")),
        s=n("sink", value=L("x1", "value")),
    )
    graph, issues = find_issues(document, REG)
    assert graph is None
    assert [(i.node, i.code, i.message) for i in issues] == [
        ("x1", "cycle", "the workflow has a cycle through bypassed nodes: 'x1' -> 'x2' -> 'x1'")]
    assert messages(wf(x=bypass("add", a=L("x", "value")), s=n("sink", value=L("x", "value")))) == [
        "the workflow has a cycle through bypassed nodes: 'x' -> 'x'"]


def test_a_bypassed_node_of_unknown_type_is_an_error_only_when_read(executor):
    document = wf(x=bypass("no_such_type", a=1), c=n("constant", value=1), s=n("sink", value=L("c", "value")))
    assert executor.run(document).ok
    document["nodes"]["s"]["inputs"]["value"] = L("x", "value")
    assert messages(document) == [
        "node 'x': unknown node type 'no_such_type' (it is bypassed, but what passes through it cannot be known)"]
    document["nodes"]["x"]["type"] = "add"
    document["nodes"]["s"]["inputs"]["value"] = L("x", "sum")
    assert messages(document) == [
        "node 's' (sink) input 'value' links to output 'sum' of bypassed node 'x' (add), which has no such output "
        "(its outputs: value)"]
    document["nodes"]["s"]["inputs"]["value"] = L("y", "value")  # through a second bypassed node
    document["nodes"]["y"] = bypass("add", b=L("x", "sum"))
    _, issues = find_issues(document, REG)
    assert [(i.node, i.input, i.code, i.message) for i in issues] == [
        ("y", "b", "missing_output", "node 'y' (add) input 'b' links to output 'sum' of bypassed node 'x' (add), "
                                     "which has no such output (its outputs: value)")]


# --- mute ------------------------------------------------------------------------------------------

def test_a_muted_node_and_what_needs_it_do_not_run(executor):
    document = wf(
        c=n("constant", value=1),
        m=mute("add", a=L("c", "value"), b=1),
        x=n("twice", value=L("m", "value")),  # needs m
        y=n("twice", value=L("x", "value")),  # needs m through x
        z=n("add", a=L("m", "value"), b=3),  # its inputs are optional: it runs without m's value
        s3=n("sink", value=L("z", "value")),
        s1=n("sink", value=L("y", "value")),
        s2=n("sink", value=L("c", "value")),
    )
    events = []
    executor.events.subscribe(events.append)
    result = executor.run(document)
    assert result.ok and result.executed == ["c", "z", "s2", "s3"]
    assert result.results == {"s2": {"value": 1}, "s3": {"value": 3}}
    why = {"m": "muted", "x": "needs muted node 'm'", "y": "needs muted node 'm'", "s1": "needs muted node 'm'"}
    assert result.disabled == why
    assert events[0].type == "run_started" and events[0].data["disabled"] == why
    assert events[0].data["to_run"] == ["c", "z", "s2", "s3"]


def test_an_optional_input_linked_to_a_muted_node_is_left_unset(executor):
    document = wf(
        model=mute("make_model", name="m"),
        c=mute("constant", value=5),
        name=n("model_name", model=L("model", "model"), number=L("c", "value")),
        s=n("sink", value=L("name", "name")),
    )
    result = executor.run(document)
    assert result.results["s"] == {"value": "none/-1"} and result.disabled == {"model": "muted", "c": "muted"}
    # The same signature as the workflow without the links: nothing runs again.
    again = executor.run(wf(name=n("model_name"), s=n("sink", value=L("name", "name"))))
    assert again.executed == []


def test_a_bypass_that_passes_a_muted_node_on_makes_its_reader_need_it(executor):
    document = wf(
        m=mute("constant", value=1),
        x=bypass("add", a=L("m", "value"), b=2),
        s=n("sink", value=L("x", "value")),
        k=n("constant", value=5),
        keep=n("sink", value=L("k", "value")),
    )
    result = executor.run(document)
    assert result.disabled == {"m": "muted", "x": "bypassed", "s": "needs muted node 'm'"}
    assert result.results == {"keep": {"value": 5}}


def test_a_muted_reader_of_a_bypass_with_nothing_to_pass_is_no_error(executor):
    document = wf(
        m=mute("constant"),
        x=bypass("make_model"),
        u=n("use_model", model=L("x", "model"), latent=L("m", "value")),  # needs m: does not run
        s=n("sink", value=L("u", "latent")),
        k=n("constant", value=5),
        keep=n("sink", value=L("k", "value")),
    )
    assert executor.run(document).disabled["u"] == "needs muted node 'm'"


def test_everything_muted_is_nothing_to_run():
    document = wf(c=n("constant", value=1), s=mute("sink", value=L("c", "value")),
                  t=n("sink", value=L("m", "value")), m=mute("constant"))
    graph, issues = find_issues(document, REG)
    assert graph is None and [(i.node, i.code) for i in issues] == [(None, "no_output_node")]
    assert issues[0].message == ("nothing to run: every output node is muted, bypassed or needs a muted node: "
                                 "'s' (muted), 't' (needs muted node 'm')")


def test_a_requested_output_that_does_not_run_is_an_error():
    document = wf(m=mute("constant"), s=n("sink", value=L("m", "value")), b=bypass("sink", value=1),
                  k=n("constant", value=2), t=n("sink", value=L("k", "value")))
    graph, issues = find_issues(document, REG, ["s", "b", "t"])
    assert graph is None
    assert [(i.node, i.code, i.message) for i in issues] == [
        ("s", "output_not_run", "requested output node 's' does not run: it needs muted node 'm'"),
        ("b", "output_not_run", "requested output node 'b' does not run: it is bypassed"),
    ]
    graph, issues = find_issues(document, REG, ["t"])
    assert issues == [] and graph.outputs == ("t",)


def test_disabled_nodes_are_not_validated(executor):
    document = wf(
        b=bypass("bounded", value=99, ratio="no", nonsense=1),
        m=mute("pick", mode="sideways", sampler="none"),  # a muted loader whose file is gone
        u=mute("no_such_type", whatever=L("nowhere", "x")),
        x=n("add", a=L("b", "value"), b=1),
        s=n("sink", value=L("x", "value")),
    )
    result = executor.run(document)  # the bypassed node's invalid literal is not what passes: value 99 is
    assert result.ok and result.results["s"] == {"value": 100}
    assert result.disabled == {"b": "bypassed", "m": "muted", "u": "muted"}


def test_toggling_bypass_reuses_the_cache(executor):
    def document(mode):
        x = {"type": "add", "inputs": {"a": L("c", "value"), "b": 10}}
        if mode:
            x["mode"] = mode
        return wf(c=n("constant", value=1), x=x, y=n("add", a=L("x", "value"), b=100), s=n("sink", value=L("y", "value")))

    plain = wf(c=n("constant", value=1), y=n("add", a=L("c", "value"), b=100), s=n("sink", value=L("y", "value")))
    signatures = executor.plan(executor.validate(plain), "r1").signatures
    assert executor.plan(executor.validate(document("bypass")), "r2").signatures == signatures

    assert executor.run(plain).results["s"] == {"value": 101}
    bypassed = executor.run(document("bypass"))
    assert bypassed.executed == [] and bypassed.results["s"] == {"value": 101}
    on = executor.run(document(None))
    assert on.executed == ["x", "y", "s"] and on.results["s"] == {"value": 111}
    assert executor.run(document("bypass")).executed == []
    assert executor.run(document(None)).executed == []
    assert dict(CALLS) == {"c": 1, "y": 2, "s": 2, "x": 1}
    muted = executor.run(document("mute"))  # y's input `a` is optional: unset, it counts from 0
    assert muted.executed == ["y", "s"] and muted.results["s"] == {"value": 100} and muted.disabled == {"x": "muted"}


# --- the format ------------------------------------------------------------------------------------

def test_mode_round_trips_through_json_and_is_left_out_when_absent():
    document = wf(c=n("constant", value=1), x=bypass("add", a=L("c", "value")), m=mute("constant"),
                  s=n("sink", value=L("x", "value")))
    workflow = parse_workflow(json.dumps(document))
    assert workflow.nodes["x"].mode == "bypass" and workflow.nodes["m"].mode == "mute" and workflow.nodes["c"].mode is None
    assert workflow.to_dict()["nodes"] == document["nodes"]
    assert "mode" not in json.loads(workflow.to_json())["nodes"]["c"]
    assert parse_workflow(workflow.to_json()) == workflow
    mode = workflow_json_schema()["$defs"]["NodeSpec"]["properties"]["mode"]
    assert {"enum": ["bypass", "mute"], "type": "string"} in mode["anyOf"] and "bypass" in mode["description"]


def test_an_unknown_mode_is_a_format_error_naming_the_node():
    document = wf(x=moded("disabled", "constant"), s=n("sink", value=L("x", "value")))
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow(document)
    assert info.value.problems == [("nodes.x.mode", "invalid_mode",
                                    "node 'x': unknown mode 'disabled'; a node's mode is 'bypass', 'mute' or absent (it runs)")]
    _, issues = find_issues(document, REG)
    assert [(i.node, i.code) for i in issues] == [("x", "invalid_mode")]
    with pytest.raises(WorkflowInvalid, match="unknown mode 'disabled'"):
        Executor(REG).run(document)


# --- the server's view -----------------------------------------------------------------------------

def test_the_worker_summary_and_the_live_run_state_carry_the_disabled_nodes(executor):
    from latentgraph.server.hub import RunState
    from latentgraph.server.messages import run_message
    from latentgraph.server.worker import Job, LocalWorker

    document = wf(c=n("constant", value=1), x=bypass("add", a=L("c", "value")), m=mute("constant"),
                  s=n("sink", value=L("x", "value")))
    events = []
    outcome = LocalWorker(executor).execute(Job("r1", document), CancelToken(), events.append)
    assert outcome.status == "succeeded" and outcome.summary["disabled"] == {"x": "bypassed", "m": "muted"}
    state = RunState("r1", None)
    for seq, event in enumerate(events, 1):
        state.apply(run_message(event, seq))
    assert state.to_dict()["disabled"] == {"x": "bypassed", "m": "muted"}
    assert json.loads(run_message(events[0], 1).text)["data"]["disabled"] == {"x": "bypassed", "m": "muted"}


# --- on the demo model -----------------------------------------------------------------------------

def _txt2img() -> dict:
    from test_sd_nodes import txt2img

    return txt2img()


def _image(executor, result, node="save") -> np.ndarray:
    from test_sd_nodes import image_of

    return image_of(executor, result, node)


def test_bypassing_image_scale_and_lora_gives_the_image_of_the_workflow_without_them(sd_executor):
    plain = _txt2img()
    reference = _image(sd_executor, sd_executor.run(plain))
    sd_executor.cache.clear()

    document = _txt2img()
    nodes = document["nodes"]
    # A LoRA whose file is not there and a scale to an invalid size: bypassed, neither is validated.
    nodes["lora"] = bypass("lora_loader", model=L("checkpoint", "model"), clip=L("checkpoint", "clip"),
                           lora_name="not-installed.safetensors", strength_model=1.0, strength_clip=1.0)
    for prompt in ("positive", "negative"):
        nodes[prompt]["inputs"]["clip"] = L("lora", "clip")
    nodes["sampler"]["inputs"]["model"] = L("lora", "model")
    nodes["scale"] = bypass("image_scale", image=L("decode", "image"), width=-3, height=64)
    nodes["save"]["inputs"]["images"] = L("scale", "image")
    nodes["extra_save"] = mute("save_image", images=L("decode", "image"), filename_prefix="muted")

    result = sd_executor.run(document)
    assert result.ok, result.errors
    assert result.disabled == {"lora": "bypassed", "scale": "bypassed", "extra_save": "muted"}
    assert set(result.executed) == {"checkpoint", "latent", "positive", "negative", "sampler", "decode", "save"}
    assert np.array_equal(_image(sd_executor, result), reference)
    assert list(result.results) == ["save"]
    assert not list(sd_executor.services.folders.outputs.glob("muted*"))

    # Toggled back on, the scale runs on the cached decode: nothing upstream runs again.
    nodes["scale"] = n("image_scale", image=L("decode", "image"), width=32, height=32)
    again = sd_executor.run(document)
    assert again.executed == ["scale", "save"] and _image(sd_executor, again).shape == (32, 32, 3)
