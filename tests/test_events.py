"""Run events: the exact sequence of a run, ids and timestamps, JSON form, subscribers."""

import json
import logging

import pytest

import engine_nodes
from latentgraph.engine import CancelToken, Event, EventBus, Executor, OutputCache, RunContext
from latentgraph.engine.events import EVENT_TYPES
from engine_nodes import L, n, wf

REG = engine_nodes.registry


@pytest.fixture(autouse=True)
def fresh():
    engine_nodes.reset()


def chain(steps=2):
    return wf(c=n("constant", value=2), x=n("slow", value=L("c", "value"), steps=steps),
              s=n("sink", value=L("x", "value")))


def run_recording(executor, doc, **kwargs):
    events = []
    unsubscribe = executor.events.subscribe(events.append)
    try:
        result = executor.run(doc, **kwargs)
    finally:
        unsubscribe()
    return result, events


def shape(events):
    """(type, node) pairs, with the progress step for node_progress."""
    out = []
    for e in events:
        if e.type == "node_progress":
            out.append((e.type, e.data["node"], e.data["step"], e.data["total"]))
        else:
            out.append((e.type, e.data.get("node")))
    return out


def test_the_event_sequence_of_a_first_run():
    executor = Executor(REG, OutputCache())
    result, events = run_recording(executor, chain())
    assert shape(events) == [
        ("run_started", None),
        ("node_started", "c"), ("node_finished", "c"),
        ("node_started", "x"), ("node_progress", "x", 0, 2), ("node_progress", "x", 1, 2), ("node_finished", "x"),
        ("node_started", "s"), ("node_finished", "s"),
        ("run_finished", None),
    ]
    assert events[0].data == {"outputs": ["s"], "nodes": ["c", "x", "s"], "to_run": ["c", "x", "s"], "cached": []}
    assert events[1].data == {"node": "c", "node_type": "constant"}
    finished_c = dict(events[2].data)
    assert finished_c.pop("seconds") >= 0
    assert finished_c == {"node": "c", "node_type": "constant", "outputs": {"value": "2"}, "results": {}}
    assert events[4].data == {"node": "x", "node_type": "slow", "step": 0, "total": 2}
    finished_s = dict(events[8].data)
    finished_s.pop("seconds")
    assert finished_s == {"node": "s", "node_type": "sink", "outputs": {}, "results": {"value": 2}}
    last = dict(events[-1].data)
    assert 0 <= last.pop("seconds") <= result.seconds
    assert last == {"status": "succeeded", "results": {"s": {"value": 2}}, "errors": []}


def test_cached_nodes_get_node_cached_events_before_anything_runs():
    executor = Executor(REG, OutputCache())
    executor.run(chain(steps=2))
    _, events = run_recording(executor, chain(steps=1))
    assert shape(events) == [
        ("run_started", None),
        ("node_cached", "c"),
        ("node_started", "x"), ("node_progress", "x", 0, 1), ("node_finished", "x"),
        ("node_started", "s"), ("node_finished", "s"),
        ("run_finished", None),
    ]
    assert events[0].data == {"outputs": ["s"], "nodes": ["c", "x", "s"], "to_run": ["x", "s"], "cached": ["c"]}
    assert events[1].data == {"node": "c", "node_type": "constant"}


def test_a_fully_cached_run_announces_only_the_cached_sink():
    executor = Executor(REG, OutputCache())
    executor.run(chain())
    _, events = run_recording(executor, chain())
    assert shape(events) == [("run_started", None), ("node_cached", "s"), ("run_finished", None)]
    assert events[0].data == {"outputs": ["s"], "nodes": ["s"], "to_run": [], "cached": ["s"]}
    assert events[-1].data["results"] == {"s": {"value": 2}}


def test_every_event_carries_the_run_id_and_timestamps_never_go_back():
    executor = Executor(REG, OutputCache())
    result, events = run_recording(executor, chain(steps=5), run_id="my-run")
    assert result.run_id == "my-run"
    assert len(events) == 13  # run_started, 2 + (2 + 5) + 2 node events, run_finished
    assert {e.run_id for e in events} == {"my-run"}
    assert all(isinstance(e.timestamp, float) for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert {e.type for e in events} <= set(EVENT_TYPES)


def test_event_to_json_round_trips():
    event = Event("node_finished", "run-1", {"node": "a", "outputs": {"value": "3"}, "results": {"n": [1, 2]}},
                  timestamp=1700000000.25)
    assert event.to_dict() == {"type": "node_finished", "run_id": "run-1", "timestamp": 1700000000.25,
                               "data": {"node": "a", "outputs": {"value": "3"}, "results": {"n": [1, 2]}}}
    assert json.loads(event.to_json()) == event.to_dict()
    again = Event(**{k: v for k, v in json.loads(event.to_json()).items()})
    assert again == event


def test_events_of_a_real_run_serialise_to_json():
    executor = Executor(REG, OutputCache())
    _, events = run_recording(executor, chain())
    for event in events:
        decoded = json.loads(event.to_json())
        assert decoded["type"] == event.type and decoded["run_id"] == event.run_id
        assert decoded["timestamp"] == event.timestamp


def test_a_preview_is_replaced_by_its_size_in_json_but_kept_on_the_event():
    class Preview:
        width, height = 64, 48

    published = []
    ctx = RunContext("r", "k", "ksampler", None, CancelToken(), lambda kind, data: published.append((kind, data)))
    preview = Preview()
    ctx.progress(3, 20, preview=preview)
    ctx.progress(4, 20)
    assert published[0] == ("node_progress", {"node": "k", "node_type": "ksampler", "step": 3, "total": 20,
                                              "preview": preview})
    assert published[1] == ("node_progress", {"node": "k", "node_type": "ksampler", "step": 4, "total": 20})
    event = Event(published[0][0], "r", published[0][1], timestamp=1.0)
    assert event.to_dict()["data"]["preview"] == {"width": 64, "height": 48}
    assert json.loads(event.to_json())["data"]["preview"] == {"width": 64, "height": 48}
    assert event.data["preview"] is preview


def test_report_collects_results_across_calls():
    ctx = RunContext("r", "save", "save_image", None, CancelToken(), lambda kind, data: None)
    ctx.report(images=["a.png"])
    ctx.report(count=1)
    assert ctx.results == {"images": ["a.png"], "count": 1}


def test_a_subscriber_that_raises_does_not_break_the_run(caplog):
    executor = Executor(REG, OutputCache())

    def broken(event):
        raise RuntimeError("subscriber bug")

    executor.events.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="latentgraph.engine.events"):
        result, events = run_recording(executor, chain())
    assert result.status == "succeeded"
    assert result.results == {"s": {"value": 2}}
    assert len(events) == 10  # the healthy subscriber saw everything
    failures = [r for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(failures) == 10
    assert "failed on run_started" in failures[0].getMessage()


def test_unsubscribe_stops_delivery_and_is_safe_during_publish():
    bus = EventBus()
    seen_a, seen_b, once = [], [], []
    unsubscribe_a = bus.subscribe(seen_a.append)
    bus.subscribe(seen_b.append)

    def only_first(event):
        once.append(event.type)
        unsubscribe_once()

    unsubscribe_once = bus.subscribe(only_first)
    bus.publish(Event("run_started", "r", {}))
    unsubscribe_a()
    bus.publish(Event("run_finished", "r", {}))
    unsubscribe_a()  # a second call is harmless
    assert [e.type for e in seen_a] == ["run_started"]
    assert [e.type for e in seen_b] == ["run_started", "run_finished"]
    assert once == ["run_started"]


def test_a_node_knows_whether_anyone_listens_for_its_previews():
    bus = EventBus()
    assert not bus.listened
    unsubscribe = bus.subscribe(lambda event: None)
    assert bus.listened
    unsubscribe()
    assert not bus.listened
    executor = Executor(REG, OutputCache(), events=bus)
    seen = []
    ctx = RunContext("r", "k", "ksampler", None, CancelToken(), lambda kind, data: None,
                     listened=lambda: executor.events.listened)
    assert not ctx.wants_previews
    bus.subscribe(seen.append)
    assert ctx.wants_previews
    assert RunContext("r", "k", "ksampler", None, CancelToken(), lambda kind, data: None).wants_previews  # no bus: yes


def test_an_executor_stops_delivering_to_an_unsubscribed_listener():
    executor = Executor(REG, OutputCache())
    seen = []
    unsubscribe = executor.events.subscribe(seen.append)
    executor.run(chain())
    count = len(seen)
    unsubscribe()
    executor.run(chain(steps=3))
    assert count == 10 and len(seen) == 10


def test_failure_and_skip_events_in_order():
    executor = Executor(REG, OutputCache())
    doc = wf(boom=n("fail", message="no"), after=n("add", a=L("boom", "value")), s=n("sink", value=L("after", "value")))
    result, events = run_recording(executor, doc)
    assert shape(events) == [
        ("run_started", None),
        ("node_started", "boom"), ("node_failed", "boom"),
        ("node_skipped", "after"), ("node_skipped", "s"),
        ("run_finished", None),
    ]
    assert events[-1].data["status"] == "failed"
    assert result.status == "failed"
