"""The executor: planning, caching, failures, cancellation; and the output cache's byte bound."""

import sys
import threading
import time
from typing import Any

import pytest

import engine_nodes
from latentgraph.engine import (CancelToken, Executor, Input, Node, NodeOutputs, NodeRegistry, Output, OutputCache, RunContext,
                    register_sizer, sizeof)
from latentgraph.engine.errors import NodeFailure
from engine_nodes import CALLS, EXECUTED, SLOW_STEPS, L, n, wf

REG = engine_nodes.registry


@pytest.fixture(autouse=True)
def fresh():
    engine_nodes.reset()


@pytest.fixture
def executor():
    return Executor(REG, OutputCache())


def recorder(executor):
    events = []
    executor.events.subscribe(events.append)
    return events


def diamond(a=1, z_b=20):
    """a, b → x = a + b → y = x + 10;  b → z = b + z_b;  w = y + z → s."""
    return wf(
        a=n("constant", value=a),
        b=n("constant", value=2),
        x=n("add", a=L("a", "value"), b=L("b", "value")),
        y=n("add", a=L("x", "value"), b=10),
        z=n("add", a=L("b", "value"), b=z_b),
        w=n("add", a=L("y", "value"), b=L("z", "value")),
        s=n("sink", value=L("w", "value")),
    )


def assert_dependencies_first(doc, executed):
    position = {node_id: i for i, node_id in enumerate(executed)}
    for node_id in executed:
        for value in doc["nodes"][node_id]["inputs"].values():
            if isinstance(value, dict) and value.get("node") in position:
                assert position[value["node"]] < position[node_id], (value["node"], node_id, executed)


# --- what runs -----------------------------------------------------------------------------------

def test_a_first_run_executes_every_needed_node_once_in_dependency_order(executor):
    result = executor.run(diamond())
    assert result.status == "succeeded" and result.ok
    assert sorted(result.executed) == ["a", "b", "s", "w", "x", "y", "z"]
    assert result.executed == EXECUTED
    assert_dependencies_first(diamond(), result.executed)
    assert result.cached == [] and result.skipped == [] and result.errors == []
    assert result.results == {"s": {"value": (1 + 2 + 10) + (2 + 20)}}
    assert dict(CALLS) == {n_: 1 for n_ in "abxyzws"}


def test_a_chain_declared_backwards_still_runs_dependencies_first(executor):
    doc = wf(out=n("sink", value=L("c3", "value")), c3=n("add", a=L("c2", "value"), b=3),
             c2=n("add", a=L("c1", "value"), b=2), c1=n("constant", value=1))
    result = executor.run(doc)
    assert result.executed == ["c1", "c2", "c3", "out"]
    assert result.results == {"out": {"value": 6}}


def test_a_branch_that_leads_to_no_output_never_runs(executor):
    doc = diamond()
    doc["nodes"]["dangling"] = n("add", a=L("a", "value"), b=100)
    doc["nodes"]["dangling_too"] = n("fail", value=L("dangling", "value"))
    result = executor.run(doc)
    assert "dangling" not in CALLS and "dangling_too" not in CALLS
    assert result.status == "succeeded"


def test_requested_outputs_run_only_what_they_need(executor):
    doc = wf(
        a=n("constant", value=1), one=n("add", a=L("a", "value"), b=1), s1=n("sink", value=L("one", "value")),
        b=n("constant", value=2), two=n("add", a=L("b", "value"), b=2), s2=n("sink", value=L("two", "value")),
    )
    result = executor.run(doc, outputs=["s1"])
    assert result.executed == ["a", "one", "s1"]
    assert result.results == {"s1": {"value": 2}}
    assert set(CALLS) == {"a", "one", "s1"}

    both = executor.run(doc)  # by default every output node is requested
    assert sorted(both.executed) == ["b", "s2", "two"]
    assert both.cached == ["s1"]
    assert both.results == {"s1": {"value": 2}, "s2": {"value": 4}}


def test_any_node_may_be_requested_and_its_outputs_are_returned_in_values(executor):
    result = executor.run(diamond(), outputs=["x", "z"])
    assert sorted(result.executed) == ["a", "b", "x", "z"]
    assert result.values == {"x": {"value": 3}, "z": {"value": 22}}
    assert result.results == {}


def test_an_unchanged_rerun_runs_nothing(executor):
    first = executor.run(diamond())
    second = executor.run(diamond())
    assert second.executed == []
    assert second.cached == ["s"]
    assert second.results == first.results == {"s": {"value": 35}}
    assert dict(CALLS) == {n_: 1 for n_ in "abxyzws"}
    assert second.run_id != first.run_id


def test_changing_one_literal_reruns_exactly_that_node_and_its_descendants(executor):
    executor.run(diamond(a=1))
    engine_nodes.reset()
    result = executor.run(diamond(a=5))
    assert set(result.executed) == {"a", "x", "y", "w", "s"}
    assert result.cached == ["b", "z"]  # dependencies first, like executed
    assert result.results == {"s": {"value": 39}}

    engine_nodes.reset()
    result = executor.run(diamond(a=5, z_b=21))
    assert set(result.executed) == {"z", "w", "s"}
    assert result.cached == ["b", "y"]  # x and a are not even looked at: y is cached
    assert result.results == {"s": {"value": 40}}


def test_when_a_sink_is_cached_its_upstream_is_neither_run_nor_fetched(executor):
    executor.run(diamond())
    before = executor.cache.stats()
    assert (before.hits, before.misses, before.entries) == (0, 7, 7)
    sink_signature = executor.plan(executor.validate(diamond()), "nonce").signatures["s"]
    looked_up = []
    real_get = executor.cache.get
    executor.cache.get = lambda signature: looked_up.append(signature) or real_get(signature)
    engine_nodes.reset()
    result = executor.run(diamond())
    assert result.executed == [] and result.cached == ["s"]
    assert CALLS == {}
    assert looked_up == [sink_signature]
    after = executor.cache.stats()
    assert (after.hits, after.misses) == (2, 7)  # the plan above, and the run


def test_a_run_accepts_a_validated_graph_and_a_given_run_id(executor):
    graph = executor.validate(diamond())
    result = executor.run(graph, run_id="run-1")
    assert result.run_id == "run-1"
    assert result.results == {"s": {"value": 35}}


# --- signatures ----------------------------------------------------------------------------------

def test_the_signature_ignores_the_key_order_of_inputs_and_nodes_and_the_ui(executor):
    doc = diamond()
    reordered = {"nodes": {}, "ui": {"x": {"x": 1, "y": 2}}}
    for node_id in reversed(list(doc["nodes"])):
        spec = doc["nodes"][node_id]
        reordered["nodes"][node_id] = {"inputs": dict(reversed(list(spec["inputs"].items()))), "type": spec["type"]}
    sig_a = executor.plan(executor.validate(doc), "nonce-1").signatures
    sig_b = executor.plan(executor.validate(reordered), "nonce-2").signatures
    assert sig_a == sig_b
    assert len(set(sig_a.values())) == 7
    executor.run(doc)
    assert executor.run(reordered).executed == []


def test_an_explicit_default_and_an_omitted_input_have_the_same_signature(executor):
    omitted = wf(a=n("add", a=1), s=n("sink", value=L("a", "value")))
    explicit = wf(a=n("add", a=1, b=0), s=n("sink", value=L("a", "value")))
    assert (executor.plan(executor.validate(omitted), "n").signatures
            == executor.plan(executor.validate(explicit), "n").signatures)


def test_linking_a_different_output_changes_the_signature(executor):
    def doc(output):
        return wf(f=n("add_float", a=1.0), s=n("sink", value=L("f", output)))

    first = executor.plan(executor.validate(doc("value")), "n").signatures
    second = executor.plan(executor.validate(doc("types")), "n").signatures
    assert first["f"] == second["f"]
    assert first["s"] != second["s"]


def _versioned_registry(version):
    reg = NodeRegistry()

    class Versioned(Node):
        value: int = Input(0)

        class Outputs(NodeOutputs):
            value: int = Output()

        def run(self, ctx: RunContext) -> Outputs:
            engine_nodes.EXECUTED.append(ctx.node_id)
            return self.Outputs(value=self.value * version)

    reg.register(Versioned, "versioned", version=version)
    reg.register(engine_nodes.Sink, "sink", output=True)
    return reg


def test_an_output_that_depends_on_some_inputs_keeps_its_readers_cached_when_another_changes(executor):
    def doc(a, b):
        return wf(split=n("split", a=a, b=b),
                  from_a=n("add", a=L("split", "double_a"), b=1),
                  from_b=n("add", a=L("split", "double_b"), b=1),
                  from_all=n("add", a=L("split", "total"), b=1),
                  s=n("sink", value=L("from_a", "value")), t=n("sink", value=L("from_b", "value")),
                  u=n("sink", value=L("from_all", "value")))

    first = executor.run(doc(1, 2))
    assert first.results == {"s": {"value": 3}, "t": {"value": 5}, "u": {"value": 4}}
    engine_nodes.reset()
    second = executor.run(doc(1, 7))  # b changed: the node and what reads double_b or total re-run
    assert second.results == {"s": {"value": 3}, "t": {"value": 15}, "u": {"value": 9}}
    assert sorted(second.executed) == ["from_all", "from_b", "split", "t", "u"]
    assert sorted(second.cached) == ["s"]
    engine_nodes.reset()
    third = executor.run(doc(4, 7))  # a changed: now double_a's readers re-run, double_b's stay cached
    assert third.results == {"s": {"value": 9}, "t": {"value": 15}, "u": {"value": 12}}
    assert sorted(third.executed) == ["from_a", "from_all", "s", "split", "u"]
    assert sorted(third.cached) == ["t"]


def test_an_output_cannot_depend_on_an_input_its_node_does_not_have():
    from latentgraph.engine import NodeRegistry

    with pytest.raises(TypeError, match=r"Broken.Outputs.x depends on inputs it does not have: nope"):
        @NodeRegistry().node("broken", category="test")
        class Broken(Node):
            a: int = Input(0)

            class Outputs(NodeOutputs):
                x: int = Output(depends_on=("a", "nope"))

            def run(self, ctx):  # pragma: no cover
                return self.Outputs(x=self.a)


def test_a_version_bump_invalidates_cached_results():
    cache = OutputCache()
    doc = wf(v=n("versioned", value=3), s=n("sink", value=L("v", "value")))
    assert Executor(_versioned_registry(1), cache).run(doc).results == {"s": {"value": 3}}
    assert Executor(_versioned_registry(1), cache).run(doc).executed == []
    bumped = Executor(_versioned_registry(2), cache).run(doc)
    assert bumped.executed == ["v", "s"]
    assert bumped.results == {"s": {"value": 6}}


def test_an_uncacheable_node_always_runs_and_so_does_everything_downstream(executor):
    doc = wf(c=n("constant", value=10), r=n("random_value", salt=L("c", "value")),
             x=n("add", a=L("r", "value"), b=1), s=n("sink", value=L("x", "value")))
    first = executor.run(doc)
    assert first.executed == ["c", "r", "x", "s"]
    assert first.results == {"s": {"value": 12}}
    second = executor.run(doc)
    assert second.executed == ["r", "x", "s"]
    assert second.cached == ["c"]
    assert second.results == {"s": {"value": 13}}
    assert dict(CALLS) == {"c": 1, "r": 2, "x": 2, "s": 2}


def test_a_fingerprint_is_part_of_the_signature():
    stamp = {"mtime": 1}
    reg = NodeRegistry()

    class Loader(Node):
        path: str = Input("model.bin")

        class Outputs(NodeOutputs):
            value: str = Output()

        @classmethod
        def fingerprint(cls, literal_inputs, services):
            return [literal_inputs["path"], stamp["mtime"], services]

        def run(self, ctx: RunContext) -> Outputs:
            engine_nodes.EXECUTED.append(ctx.node_id)
            return self.Outputs(value=f"{self.path}@{stamp['mtime']}")

    reg.register(Loader, "loader")
    reg.register(engine_nodes.Sink, "sink", output=True)
    executor = Executor(reg, services="svc")
    doc = wf(l=n("loader"), s=n("sink", value=L("l", "value")))
    assert executor.run(doc).results == {"s": {"value": "model.bin@1"}}
    assert executor.run(doc).executed == []
    stamp["mtime"] = 2  # the file changed on disk
    result = executor.run(doc)
    assert result.executed == ["l", "s"]
    assert result.results == {"s": {"value": "model.bin@2"}}


# --- the byte bound ------------------------------------------------------------------------------

class Blob:
    """A value that tells the cache its size through `nbytes`."""

    def __init__(self, nbytes):
        self.nbytes = nbytes


def entry_overhead():
    """Bytes a cache entry {"v": Blob(0)} with no results takes beyond the blob itself."""
    return OutputCache().put("probe", {"v": Blob(0)}, {}).nbytes


def test_the_cache_evicts_least_recently_used_entries_to_stay_within_its_bound():
    unit = entry_overhead() + 100
    cache = OutputCache(max_bytes=3 * unit)
    for key in ("a", "b", "c"):
        assert cache.put(key, {"v": Blob(100)}, {}).nbytes == unit
    assert cache.stats().nbytes == 3 * unit
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", {"v": Blob(100)}, {})
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (True, False, True, True)
    assert cache.get("b") is None
    stats = cache.stats()
    assert (stats.entries, stats.nbytes, stats.max_bytes, stats.hits, stats.misses, stats.evictions) == (
        3, 3 * unit, 3 * unit, 1, 1, 1)
    cache.put("e", {"v": Blob(100 + unit)}, {})  # takes two entries' room: c and a go (LRU first)
    assert [k for k in "acde" if k in cache] == ["d", "e"]
    assert cache.stats().evictions == 3
    assert cache.stats().nbytes == 3 * unit


def test_an_entry_larger_than_the_bound_is_not_kept_and_evicts_nothing():
    unit = entry_overhead() + 100
    cache = OutputCache(max_bytes=2 * unit)
    cache.put("small", {"v": Blob(100)}, {})
    entry = cache.put("huge", {"v": Blob(10 * unit)}, {"saved": "x.png"})
    assert entry.outputs["v"].nbytes == 10 * unit and entry.results == {"saved": "x.png"}
    assert "huge" not in cache and "small" in cache
    assert (cache.stats().entries, cache.stats().nbytes, cache.stats().evictions) == (1, unit, 0)


def test_putting_a_signature_again_replaces_its_entry_and_its_size():
    unit = entry_overhead()
    cache = OutputCache(max_bytes=10_000)
    cache.put("a", {"v": Blob(100)}, {})
    cache.put("a", {"v": Blob(300)}, {})
    assert len(cache) == 1
    assert cache.stats().nbytes == unit + 300
    cache.clear()
    assert len(cache) == 0 and cache.stats().nbytes == 0


def test_outputs_too_big_for_the_cache_are_recomputed_next_run():
    executor = Executor(REG, OutputCache(max_bytes=2000))
    doc = wf(t=n("text", value="x" * 5000), big=n("sink", value=L("t", "value")),
             k=n("constant", value=1), small=n("sink", value=L("k", "value")))
    executor.run(doc)
    second = executor.run(doc)
    assert second.executed == ["t", "big"]
    assert second.cached == ["small"]
    assert second.results == {"small": {"value": 1}, "big": {"value": "x" * 5000}}


class FakeTensor:
    def __init__(self, element_size, nelement):
        self._e, self._n = element_size, nelement

    def element_size(self):
        return self._e

    def nelement(self):
        return self._n


class FakeModule:
    def __init__(self, parameters, buffers):
        self._p, self._b = parameters, buffers

    def parameters(self):
        return iter(self._p)

    def buffers(self):
        return iter(self._b)


def test_sizeof_counts_tensor_storage():
    assert sizeof(FakeTensor(2, 4 * 64 * 64)) == 32768
    assert sizeof(FakeTensor(4, 0)) == 0


def test_sizeof_counts_module_parameters_and_buffers_once_each():
    shared = FakeTensor(4, 1000)
    module = FakeModule([FakeTensor(2, 500), shared], [FakeTensor(1, 10), shared])
    assert sizeof(module) == 1000 + 4000 + 10


def test_sizeof_recurses_into_containers_and_counts_shared_objects_once():
    t = FakeTensor(4, 100)
    assert sizeof([t, t]) == sys.getsizeof([t, t]) + 400
    assert sizeof((t,)) == sys.getsizeof((t,)) + 400
    data = b"x" * 1000
    assert sizeof(data) == sys.getsizeof(data)
    assert sizeof([data]) == sys.getsizeof([data]) + sys.getsizeof(data)
    inner = [t]
    assert sizeof([inner, inner]) == sys.getsizeof([inner, inner]) + sys.getsizeof(inner) + 400
    d = {"latent": t, "more": [t, Blob(50)]}
    assert sizeof(d) == (sys.getsizeof(d) + sys.getsizeof("latent") + sys.getsizeof("more")
                         + 400 + sys.getsizeof(d["more"]) + 50)
    assert sizeof("abc") == sys.getsizeof("abc")
    assert sizeof(7) == sys.getsizeof(7)


def test_sizeof_reads_images_by_size_and_bands_and_plain_objects_by_their_attributes():
    class FakeImage:
        size = (64, 32)

        def getbands(self):
            return ("R", "G", "B")

    assert sizeof(FakeImage()) == 64 * 32 * 3

    class Holder:
        def __init__(self):
            self.t = FakeTensor(1, 10_000)

    holder = Holder()
    assert sizeof(holder) == sys.getsizeof(holder) + sizeof(vars(holder))
    assert sizeof(holder) > 10_000


def test_register_sizer_teaches_sizeof_a_new_kind():
    class Opaque:
        __slots__ = ()

    register_sizer(Opaque, lambda value: 12345)
    assert sizeof(Opaque()) == 12345
    assert sizeof([Opaque()]) == sys.getsizeof([None]) + 12345


# --- failures ------------------------------------------------------------------------------------

FAILING = wf(
    a=n("constant", value=3),
    boom=n("fail", value=L("a", "value"), message="kaboom"),
    after=n("add", a=L("boom", "value")),
    s1=n("sink", value=L("after", "value")),
    b=n("constant", value=4),
    s2=n("sink", value=L("b", "value")),
)


def test_a_failure_stays_in_its_branch(executor):
    events = recorder(executor)
    result = executor.run(FAILING)
    assert result.status == "failed" and not result.ok
    assert sorted(result.executed) == ["a", "b", "s2"]
    assert result.skipped == ["after", "s1"]
    assert result.results == {"s2": {"value": 4}}
    assert dict(CALLS) == {"a": 1, "boom": 1, "b": 1, "s2": 1}

    skipped = [e.data for e in events if e.type == "node_skipped"]
    assert skipped == [
        {"node": "after", "node_type": "add", "failed": "boom", "reason": "upstream node 'boom' failed"},
        {"node": "s1", "node_type": "sink", "failed": "boom", "reason": "upstream node 'boom' failed"},
    ]
    failed = [e.data for e in events if e.type == "node_failed"]
    assert failed == [{"node": "boom", "type": "fail", "error_type": "RuntimeError", "message": "kaboom",
                       "inputs": {"value": "3", "message": "'kaboom'"}}]
    finished = events[-1]
    assert finished.type == "run_finished"
    assert finished.data["status"] == "failed"
    assert finished.data["errors"] == failed
    assert finished.data["results"] == {"s2": {"value": 4}}


def test_a_node_failure_names_the_node_its_type_its_inputs_and_the_exception(executor):
    (failure,) = executor.run(FAILING).errors
    assert isinstance(failure, NodeFailure)
    assert (failure.node_id, failure.node_type) == ("boom", "fail")
    assert failure.inputs == {"value": "3", "message": "'kaboom'"}
    assert failure.error_type == "RuntimeError"
    assert isinstance(failure.error, RuntimeError) and str(failure.error) == "kaboom"
    assert str(failure) == "node 'boom' (fail) failed: RuntimeError: kaboom"


def test_failures_are_not_cached_and_the_healthy_branch_is(executor):
    executor.run(FAILING)
    engine_nodes.reset()
    again = executor.run(FAILING)
    assert again.executed == []
    assert CALLS == {"boom": 1}
    assert set(again.cached) == {"a", "s2"}
    assert again.skipped == ["after", "s1"]


def test_a_node_returning_the_wrong_type_fails_clearly(executor):
    result = executor.run(wf(bad=n("bad_output"), s=n("sink", value=L("bad", "value"))))
    (failure,) = result.errors
    assert failure.node_id == "bad"
    assert failure.error_type == "TypeError"
    assert str(failure.error) == "BadOutput.run() returned dict, expected BadOutput.Outputs"
    assert result.skipped == ["s"]


def test_a_linked_value_out_of_bounds_fails_at_run_time_naming_node_and_input(executor):
    doc = wf(k=n("constant", value=11), x=n("bounded", value=L("k", "value")), s=n("sink", value=L("x", "value")))
    executor.validate(doc)  # a link cannot be checked before it has a value
    result = executor.run(doc)
    (failure,) = result.errors
    assert (failure.node_id, failure.error_type) == ("x", "ValueError")
    assert str(failure.error) == "node 'x' (bounded) input 'value' must be >= 0 and <= 10, got 11"
    assert failure.inputs == {"value": "11", "ratio": "0.5"}
    assert "x" not in CALLS  # the node itself never ran
    ok = executor.run(wf(k=n("constant", value=10), x=n("bounded", value=L("k", "value")), s=n("sink", value=L("x", "value"))))
    assert ok.results == {"s": {"value": 10}}


def test_a_linked_value_outside_the_inputs_choices_fails_at_run_time(executor):
    doc = wf(t=n("text", value="medium"), p=n("pick", mode=L("t", "value")), s=n("sink", value=L("p", "value")))
    (failure,) = executor.run(doc).errors
    assert str(failure.error) == "node 'p' (pick) input 'mode' must be one of 'fast', 'slow', got 'medium'"


def test_failure_inputs_describe_values_briefly(executor):
    doc = wf(m=n("make_model"), lat=n("make_latent", width=3), boom=n("fail", message="x" * 200),
             u=n("use_model", model=L("m", "model"), latent=L("lat", "latent")),
             s1=n("sink", value=L("u", "latent")), s2=n("sink", value=L("boom", "value")))
    (failure,) = executor.run(doc).errors
    assert failure.inputs["message"] == repr("x" * 200)[:77] + "..."
    assert failure.inputs["value"] == "0"


# --- cancellation --------------------------------------------------------------------------------

SLOW = wf(
    a=n("constant", value=1),
    slow=n("slow", value=L("a", "value"), steps=2000, delay=0.002),
    after=n("add", a=L("slow", "value")),
    s=n("sink", value=L("after", "value")),
)


def test_a_cancel_from_another_thread_stops_the_running_node_within_one_step(executor):
    events = recorder(executor)
    executor.run(wf(a=n("constant", value=1), s=n("sink", value=L("a", "value"))))  # caches a
    token = CancelToken()
    steps_at_cancel = []
    going = threading.Event()  # set once the node has made a few steps (waited on, not slept on)
    executor.events.subscribe(lambda e: going.set() if e.type == "node_progress" and e.data["step"] >= 3 else None)

    def cancel():
        going.wait(30)
        steps_at_cancel.append(len(SLOW_STEPS))
        token.cancel()

    canceller = threading.Thread(target=cancel)
    events.clear()
    engine_nodes.reset()
    started = time.perf_counter()
    canceller.start()
    try:
        result = executor.run(SLOW, cancel=token)
    finally:
        going.set()
        canceller.join()
    assert time.perf_counter() - started < 30  # 2000 steps of 2 ms would take 4 s and more
    assert result.status == "cancelled" and not result.ok
    assert len(SLOW_STEPS) - steps_at_cancel[0] <= 1
    assert 3 <= len(SLOW_STEPS) < 2000
    assert "after" not in CALLS and "s" not in CALLS
    assert result.executed == [] and result.cached == ["a"]
    assert events[-1].type == "run_cancelled"
    assert events[-1].data["node"] == "slow"
    assert events[-1].data["seconds"] >= 0.006  # three steps of 2 ms at least
    assert not any(e.type in ("run_finished", "node_finished") and e.data.get("node") == "slow" for e in events)
    assert "slow" not in [e.data.get("node") for e in events if e.type == "node_failed"]


def test_a_token_cancelled_before_the_run_starts_runs_nothing(executor):
    events = recorder(executor)
    token = CancelToken()
    token.cancel()
    assert token.cancelled
    result = executor.run(SLOW, cancel=token)
    assert result.status == "cancelled"
    assert CALLS == {}
    assert result.executed == []
    assert [e.type for e in events] == ["run_started", "run_cancelled"]
    assert events[-1].data["node"] is None


def test_what_was_cached_before_a_cancel_stays_cached(executor):
    executor.run(wf(a=n("constant", value=1), s=n("sink", value=L("a", "value"))))
    entries = len(executor.cache)
    token = CancelToken()
    token.cancel()
    executor.run(SLOW, cancel=token)
    assert len(executor.cache) == entries
    engine_nodes.reset()
    again = executor.run(wf(a=n("constant", value=1), s=n("sink", value=L("a", "value"))))
    assert again.executed == [] and again.cached == ["s"]

    # and what finished before the cancel in the cancelled run is cached too
    token = CancelToken()
    unsubscribe = executor.events.subscribe(lambda e: token.cancel() if e.type == "node_progress" else None)
    try:
        executor.run(SLOW, cancel=token)
    finally:
        unsubscribe()
    engine_nodes.reset()
    quick = executor.run(wf(a=n("constant", value=1), slow=n("slow", value=L("a", "value"), steps=2000, delay=0.002),
                            s=n("sink", value=L("a", "value"))), outputs=["a"])
    assert quick.cached == ["a"] and CALLS == {}


def test_a_cancelled_run_can_be_followed_by_a_normal_run(executor):
    token = CancelToken()
    token.cancel()
    executor.run(SLOW, cancel=token)
    doc = wf(a=n("constant", value=1), slow=n("slow", value=L("a", "value"), steps=3), s=n("sink", value=L("slow", "value")))
    result = executor.run(doc)
    assert result.status == "succeeded"
    assert result.results == {"s": {"value": 1}}
    assert SLOW_STEPS == [("slow", 0), ("slow", 1), ("slow", 2)]


def test_results_downstream_of_an_uncacheable_node_are_never_stored(executor):
    doc = wf(c=n("constant", value=10), r=n("random_value", salt=L("c", "value")),
             x=n("add", a=L("r", "value"), b=1), s=n("sink", value=L("x", "value")))
    for _ in range(3):
        executor.run(doc)
    assert len(executor.cache) == 1  # only the constant: r, x and s are unique to each run


def test_a_node_that_catches_exception_cannot_swallow_a_cancel(executor):
    token = CancelToken()
    unsubscribe = executor.events.subscribe(lambda e: token.cancel() if e.type == "node_progress" else None)
    try:
        result = executor.run(wf(w=n("swallow"), s=n("sink", value=L("w", "value"))), cancel=token)
    finally:
        unsubscribe()
    assert result.status == "cancelled"
    assert 0 < len(SLOW_STEPS) < 2000
