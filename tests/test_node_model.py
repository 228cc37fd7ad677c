"""The node model: what a registry reads off a node class, the catalog, bad declarations, plug-ins."""

import importlib
import json
import logging
import types
from typing import Any, Literal, Optional

import pytest

from latentgraph.engine import Input, Node, NodeOutputs, NodeRegistry, Output, RunContext, ports

MODEL = ports.register_port_type("MODEL")  # the engine knows only primitives: a test library's own kinds
LATENT = ports.register_port_type("LATENT")

# `engine.registry` is the process-wide NodeRegistry (engine/__init__ re-exports it under the
# submodule's name), so the module itself is taken from sys.modules.
registry_module = importlib.import_module("latentgraph.engine.registry")


class Everything(Node):
    """Exercise every kind of input.

    A second paragraph of the description.
    """

    count: int = Input(description="how many")
    ratio: float = Input(0.25, ge=0.0, le=1.0, step=0.05, description="a fraction")
    label: str = Input("hello", multiline=True)
    enabled: bool = Input(True)
    mode: Literal["fast", "slow"] = Input("slow")
    size: Literal[256, 512] = Input(512)
    sampler: str = Input("euler", choices=["euler", "ddim"])
    scheduler: str = Input("karras", choices=lambda: ["karras", "normal"])
    seed: int = Input(0, ge=0, le=2**64 - 1, widget="seed")
    strength: float = Input(0.5, gt=0.0, lt=1.0)
    name: str = Input("x", min_length=1, max_length=8)
    maybe: Optional[int] = Input(None)
    model: Any = Input(port=MODEL, description="the model")
    anything: Any = Input(None, port=ports.ANY)

    class Outputs(NodeOutputs):
        count: int = Output(description="the count")
        latent: Any = Output(port=LATENT)

    def run(self, ctx: RunContext) -> Outputs:  # pragma: no cover - never run
        raise AssertionError


@pytest.fixture
def everything():
    return NodeRegistry().register(Everything, "everything", version=3, category="demo")


def test_primitive_ports_are_inferred_from_int_float_str_bool_and_literal_annotations(everything):
    got = {name: spec.port for name, spec in everything.inputs.items()}
    assert got == {
        "count": "INT", "ratio": "FLOAT", "label": "STRING", "enabled": "BOOLEAN", "mode": "STRING",
        "size": "INT", "sampler": "STRING", "scheduler": "STRING", "seed": "INT", "strength": "FLOAT",
        "name": "STRING", "maybe": "INT", "model": "MODEL", "anything": "ANY",
    }
    assert {name: o.port for name, o in everything.outputs.items()} == {"count": "INT", "latent": "LATENT"}


def test_explicit_ports_make_link_only_inputs_and_primitive_ports_make_widgets(everything):
    assert everything.inputs["model"].is_primitive is False
    assert everything.inputs["anything"].is_primitive is False
    assert all(everything.inputs[name].is_primitive for name in ("count", "ratio", "label", "enabled", "maybe"))


def test_an_input_without_default_is_required_and_one_with_a_default_is_not(everything):
    assert everything.inputs["count"].required is True
    assert everything.inputs["count"].default is None
    assert everything.inputs["model"].required is True
    assert everything.inputs["ratio"].required is False
    assert everything.inputs["ratio"].default == 0.25
    assert everything.inputs["maybe"].required is False
    assert everything.inputs["maybe"].default is None


def test_bounds_step_widget_and_multiline_are_read_off_the_input(everything):
    ratio = everything.inputs["ratio"]
    assert (ratio.minimum, ratio.maximum, ratio.step) == (0.0, 1.0, 0.05)
    strength = everything.inputs["strength"]
    assert (strength.exclusive_minimum, strength.exclusive_maximum) == (0.0, 1.0)
    assert (strength.minimum, strength.maximum) == (None, None)
    seed = everything.inputs["seed"]
    assert (seed.minimum, seed.maximum, seed.widget) == (0, 2**64 - 1, "seed")
    name = everything.inputs["name"]
    assert (name.min_length, name.max_length) == (1, 8)
    assert everything.inputs["label"].multiline is True
    assert everything.inputs["count"].multiline is False


def test_static_choices_come_from_literal_or_a_list_and_dynamic_choices_from_a_callable(everything):
    assert everything.inputs["mode"].choices() == ["fast", "slow"]
    assert everything.inputs["size"].choices() == [256, 512]
    assert everything.inputs["sampler"].choices() == ["euler", "ddim"]
    assert everything.inputs["scheduler"].static_choices is None
    assert everything.inputs["scheduler"].choices() == ["karras", "normal"]
    assert everything.inputs["count"].choices() is None


def test_dynamic_choices_are_evaluated_each_time_they_are_asked_for():
    available = ["a"]

    class Dyn(Node):
        pick: str = Input("a", choices=lambda: list(available))

    reg = NodeRegistry()
    info = reg.register(Dyn, "dyn")
    assert reg.catalog()[0]["inputs"][0]["choices"] == ["a"]
    available.append("b")
    assert info.inputs["pick"].choices() == ["a", "b"]
    assert reg.catalog()[0]["inputs"][0]["choices"] == ["a", "b"]


def test_node_info_carries_type_version_category_title_flags_and_docstring(everything):
    assert everything.type == "everything"
    assert everything.version == 3
    assert everything.category == "demo"
    assert everything.title == "Everything"
    assert everything.description == "Exercise every kind of input.\n\nA second paragraph of the description."
    assert everything.is_output is False
    assert everything.cacheable is True
    assert everything.cls is Everything
    assert Everything.node_info is everything
    assert everything.inputs["count"].description == "how many"
    assert everything.outputs["count"].description == "the count"


def test_title_defaults_to_the_type_name_in_words_and_a_missing_docstring_gives_an_empty_description():
    class NoDoc(Node):
        x: int = Input(1)

    info = NodeRegistry().register(NoDoc, "load_checkpoint_file", output=True, cacheable=False)
    assert info.title == "Load checkpoint file"
    assert info.description == ""
    assert (info.is_output, info.cacheable) == (True, False)
    titled = NodeRegistry().register(NoDoc, "other", title="My title")
    assert titled.title == "My title"


def test_catalog_entry_has_the_documented_keys_and_json_types(everything):
    entry = NodeRegistry().register(Everything, "everything", version=3, category="demo").catalog_entry()
    assert list(entry) == ["type", "version", "category", "title", "description", "output_node",
                           "cacheable", "inputs", "outputs"]
    assert json.loads(json.dumps(entry)) == entry  # JSON-able as is
    inputs = {i["name"]: i for i in entry["inputs"]}
    assert [i["name"] for i in entry["inputs"]] == list(Everything.model_fields)
    assert inputs["count"] == {"name": "count", "type": "INT", "required": True, "link_only": False,
                               "description": "how many"}
    assert inputs["ratio"] == {"name": "ratio", "type": "FLOAT", "required": False, "default": 0.25,
                               "minimum": 0.0, "maximum": 1.0, "step": 0.05, "link_only": False,
                               "description": "a fraction"}
    assert inputs["label"] == {"name": "label", "type": "STRING", "required": False, "default": "hello",
                               "multiline": True, "link_only": False, "description": ""}
    assert inputs["mode"]["choices"] == ["fast", "slow"]
    assert inputs["scheduler"]["choices"] == ["karras", "normal"]
    assert inputs["seed"]["widget"] == "seed"
    assert inputs["strength"]["exclusive_minimum"] == 0.0 and inputs["strength"]["exclusive_maximum"] == 1.0
    assert inputs["name"]["min_length"] == 1 and inputs["name"]["max_length"] == 8
    assert "default" not in inputs["maybe"]  # a None default is left out
    assert inputs["model"] == {"name": "model", "type": "MODEL", "required": True, "link_only": True,
                               "description": "the model"}
    assert entry["outputs"] == [{"name": "count", "type": "INT", "description": "the count"},
                                {"name": "latent", "type": "LATENT", "description": ""}]
    assert (entry["version"], entry["output_node"], entry["cacheable"]) == (3, False, True)


def test_catalog_is_sorted_by_category_then_type():
    reg = NodeRegistry()

    def make():
        class N(Node):
            pass
        return N

    for type_name, category in [("zeta", "alpha"), ("beta", "zulu"), ("alpha", "zulu"), ("omega", "alpha"), ("mid", "mike")]:
        reg.register(make(), type_name, category=category)
    assert [(e["category"], e["type"]) for e in reg.catalog()] == [
        ("alpha", "omega"), ("alpha", "zeta"), ("mike", "mid"), ("zulu", "alpha"), ("zulu", "beta"),
    ]
    assert len(reg) == 5
    assert "mid" in reg and "nope" not in reg
    assert reg.get("nope") is None
    assert sorted(info.type for info in reg) == ["alpha", "beta", "mid", "omega", "zeta"]


def test_the_decorator_registers_and_returns_the_class():
    reg = NodeRegistry()

    @reg.node("decorated", category="x", version=2)
    class Decorated(Node):
        pass

    assert isinstance(Decorated, type)
    assert reg.get("decorated").cls is Decorated
    assert reg.get("decorated").version == 2


@pytest.mark.parametrize("bad_name", ["AddInt", "add-int", "1add", "add__int", "_add", "add_", ""])
def test_a_type_name_that_is_not_snake_case_is_refused(bad_name):
    class N(Node):
        pass

    with pytest.raises(ValueError, match="node type names are snake_case, got " + repr(bad_name).replace("\\", "\\\\")):
        NodeRegistry().register(N, bad_name)


def test_an_unknown_port_type_is_refused_with_the_field_named():
    class UnknownPort(Node):
        thing: Any = Input(port="WIDGET")

    with pytest.raises(TypeError, match=r"UnknownPort\.thing: unknown port type 'WIDGET'"):
        NodeRegistry().register(UnknownPort, "unknown_port")


def test_an_annotation_no_port_can_be_inferred_from_is_refused():
    class ListInput(Node):
        values: list[int] = Input([1])

    with pytest.raises(TypeError, match=r"ListInput\.values: cannot infer a port type from list\[int\]; pass port="):
        NodeRegistry().register(ListInput, "list_input")


def test_an_output_without_an_inferable_port_is_refused():
    class BadOut(Node):
        class Outputs(NodeOutputs):
            thing: Any = Output()

    with pytest.raises(TypeError, match=r"BadOut\.Outputs\.thing: cannot infer a port type"):
        NodeRegistry().register(BadOut, "bad_out")


def test_an_explicit_port_contradicting_the_annotation_is_refused():
    class Contradiction(Node):
        x: int = Input(0, port=ports.FLOAT)

    with pytest.raises(TypeError, match=r"Contradiction\.x: port FLOAT contradicts the annotation"):
        NodeRegistry().register(Contradiction, "contradiction")


def test_a_class_that_is_not_a_node_is_refused():
    class NotANode:
        pass

    with pytest.raises(TypeError, match="must subclass engine.Node"):
        NodeRegistry().register(NotANode, "not_a_node")  # type: ignore[arg-type]


def test_registering_a_different_class_under_a_taken_name_is_refused_and_names_the_holder():
    reg = NodeRegistry()

    class First(Node):
        pass

    class Second(Node):
        pass

    reg.register(First, "taken")
    with pytest.raises(ValueError, match=r"node type 'taken' is already registered by test_node_model\..*First"):
        reg.register(Second, "taken")
    assert reg.get("taken").cls is First
    reg.register(First, "taken")  # the same class again (a module reloaded) is fine
    assert len(reg) == 1


# --- entry points --------------------------------------------------------------------------------

class FakeEntryPoint:
    def __init__(self, name, value, target):
        self.name = name
        self.value = value
        self._target = target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_entry_points_load_modules_and_registry_functions_and_skip_a_broken_one(monkeypatch, caplog):
    reg = NodeRegistry()

    class FromModule(Node):
        pass

    module = types.ModuleType("fake_library")  # importing a module registers its nodes itself
    module.FromModule = FromModule

    def register_nodes(registry):
        class FromFunction(Node):
            pass

        registry.register(FromFunction, "from_function")

    asked = []

    def fake_entry_points(group):
        asked.append(group)
        return [
            FakeEntryPoint("module_lib", "fake_library", module),
            FakeEntryPoint("broken_lib", "broken_library", ImportError("No module named 'torchvision'")),
            FakeEntryPoint("function_lib", "other_library:register_nodes", register_nodes),
        ]

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    with caplog.at_level(logging.WARNING, logger="latentgraph.engine.registry"):
        loaded = reg.load_entry_points()

    assert asked == ["latentgraph.nodes"]
    assert loaded == ["module_lib", "function_lib"]
    assert "from_function" in reg
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["node library 'broken_lib' (broken_library) failed to load: No module named 'torchvision'"]


def test_a_registry_function_that_raises_is_skipped_too(monkeypatch, caplog):
    def explode(registry):
        raise RuntimeError("bad plug-in")

    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: [FakeEntryPoint("exploding", "pkg:explode", explode)])
    with caplog.at_level(logging.WARNING, logger="latentgraph.engine.registry"):
        assert NodeRegistry().load_entry_points(group="custom.group") == []
    assert "node library 'exploding' (pkg:explode) failed to load: bad plug-in" in caplog.text
