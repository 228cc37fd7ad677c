"""The `latentgraph` command: exit codes, --set, --sweep, --events, validate, nodes, schema."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from latentgraph.engine import registry, workflow_json_schema
from latentgraph.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main, parse_size

ROOT = Path(__file__).resolve().parent.parent
ARITHMETIC = str(ROOT / "workflows" / "arithmetic.json")
CAPTION = "512x768 image, 6144 latent cells, seed 42"
ALL_NODES = ["width", "height", "seed", "pixels", "latent_cells", "caption", "show"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run_cli(capsys, "run", ARITHMETIC, "--json", "-q", *argv)
    return code, json.loads(out), err


def write(tmp_path, document, name="workflow.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


INVALID = {
    "nodes": {
        "a": {"type": "int_constant", "inputs": {"value": "five"}},
        "b": {"type": "int_math", "inputs": {"a": {"node": "ghost", "output": "value"}, "operation": "divide"}},
        "c": {"type": "teleport"},
        "show": {"type": "show_value", "inputs": {"value": {"node": "a", "output": "value"}}},
    }
}
INVALID_CODES = ["invalid_value", "missing_node", "not_in_choices", "unknown_node_type"]


def test_exit_codes_are_0_1_2():
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE) == (0, 1, 2)


# --- run -----------------------------------------------------------------------------------------

def test_run_succeeds_and_prints_each_output_nodes_results(capsys):
    code, out, err = run_cli(capsys, "run", ARITHMETIC)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("run 1/1: succeeded in ")
    assert lines[0].endswith(" s, 7 ran, 0 cached")
    assert lines[1:] == [f'  show: {{"value": "{CAPTION}"}}']
    # on a pipe, the progress display writes one line per finished node
    assert [line.split()[0] for line in err.splitlines()] == ALL_NODES
    assert err.splitlines()[0].startswith("  width (int_constant) ")


def test_quiet_run_prints_no_progress(capsys):
    code, out, err = run_cli(capsys, "run", ARITHMETIC, "-q")
    assert code == 0 and err == ""
    assert out.count("\n") == 2


def test_run_json_summary(capsys):
    code, summaries, _ = run_json(capsys)
    assert code == 0
    (summary,) = summaries
    assert set(summary) == {"sweep", "run_id", "status", "seconds", "executed", "cached", "results", "errors"}
    assert summary["sweep"] == ""
    assert summary["status"] == "succeeded"
    assert sorted(summary["executed"]) == sorted(ALL_NODES)
    assert summary["cached"] == [] and summary["errors"] == []
    assert summary["results"] == {"show": {"value": CAPTION}}


def test_a_workflow_that_fails_validation_exits_1_and_prints_every_issue_with_its_code(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", write(tmp_path, INVALID))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "workflow is invalid (4 problems):"
    assert [line.split("]")[0].strip(" [") for line in lines[1:]] == INVALID_CODES
    assert "  [unknown_node_type] node 'c': unknown node type 'teleport'" in lines
    assert "  [missing_node] node 'b' (int_math) input 'a' links to node 'ghost', which does not exist" in lines


def test_a_file_that_is_not_json_is_a_validation_failure(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", write(tmp_path, "{not json"))
    assert code == 1
    assert err.startswith("workflow is invalid (1 problem):\n  [invalid_json] malformed JSON: ")


def test_an_unknown_format_is_a_validation_failure(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", write(tmp_path, {"format": "other@3", "nodes": {}}))
    assert code == 1
    assert "  [unknown_format] unknown workflow format 'other@3'" in err


def test_a_node_failure_exits_1_and_names_the_node(capsys):
    code, out, err = run_cli(capsys, "run", ARITHMETIC, "--set", "latent_cells.b=0")
    assert code == 1
    assert out.splitlines()[0].startswith("run 1/1: failed in ")
    assert out.splitlines()[0].endswith(" s, 4 ran, 0 cached")
    assert "  error in node 'latent_cells' (int_math) failed: ValueError: cannot floor divide by zero (b is 0)" in out
    assert "  FAILED latent_cells (int_math): ValueError: cannot floor divide by zero (b is 0)" in err
    assert "  skipped caption (string_format): upstream node 'latent_cells' failed" in err
    assert "  skipped show (show_value): upstream node 'latent_cells' failed" in err


def test_a_node_failure_in_json(capsys):
    code, (summary,), _ = run_json(capsys, "--set", "latent_cells.b=0")
    assert code == 1
    assert summary["status"] == "failed"
    assert summary["errors"] == [{"node": "latent_cells", "type": "int_math", "error_type": "ValueError",
                                  "message": "cannot floor divide by zero (b is 0)",
                                  "inputs": {"a": "393216", "b": "0", "operation": "'floor_divide'"}}]
    assert summary["results"] == {}


@pytest.mark.parametrize("argv, message", [
    (["--set", "width"], "--set expects NODE.INPUT=VALUE, got 'width'"),
    (["--set", "width=3"], "--set expects NODE.INPUT=VALUE, got 'width=3'"),
    (["--set", ".value=3"], "--set expects NODE.INPUT=VALUE, got '.value=3'"),
    (["--set", "nope.value=3"],
     "--set: the workflow has no node 'nope' (its nodes: width, height, pixels, latent_cells, seed, caption, show)"),
    (["--sweep", "seed=1,2"], "--sweep expects NODE.INPUT=VALUE, got 'seed=1,2'"),
    (["--sweep", "nope.seed=1,2"], "--sweep: the workflow has no node 'nope'"),
    (["--sweep", "seed.seed=[1, 2"], "--sweep list is not valid JSON: "),
])
def test_bad_set_and_sweep_arguments_are_usage_errors(capsys, argv, message):
    code, out, err = run_cli(capsys, "run", ARITHMETIC, "-q", *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("latentgraph: error: " + message)


def test_a_missing_workflow_file_is_a_usage_error(capsys, tmp_path):
    missing = str(tmp_path / "nowhere.json")
    for command in ("run", "validate"):
        code, _, err = run_cli(capsys, command, missing)
        assert code == 2
        assert err == f"latentgraph: error: cannot read workflow {missing!r}: No such file or directory\n"


def test_an_unwritable_events_file_is_a_usage_error(capsys, tmp_path):
    target = str(tmp_path / "no" / "such" / "dir" / "events.jsonl")
    code, _, err = run_cli(capsys, "run", ARITHMETIC, "-q", "--events", target)
    assert code == 2
    assert err.startswith(f"latentgraph: error: cannot write events to {target!r}")


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["run"], ["run", ARITHMETIC, "--cache-size", "lots"]])
def test_argparse_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: latentgraph" in capsys.readouterr().err


# --- --set coercion ------------------------------------------------------------------------------

def test_set_parses_json_for_an_int_input(capsys):
    code, (summary,), _ = run_json(capsys, "--set", "width.value=640")
    assert code == 0
    assert summary["results"] == {"show": {"value": "640x768 image, 7680 latent cells, seed 42"}}


def test_set_takes_raw_text_for_a_string_input(capsys):
    code, (summary,), _ = run_json(capsys, "--set", "caption.template=123")
    assert summary["results"] == {"show": {"value": "123"}}  # text "123", not the number 123
    code, (summary,), _ = run_json(capsys, "--set", "caption.template={a} by {b}, \"seed\" {d}")
    assert summary["results"] == {"show": {"value": '512 by 768, "seed" 42'}}


def test_set_may_replace_a_link_with_a_literal_and_operation_takes_plain_text(capsys):
    code, (summary,), _ = run_json(capsys, "--set", "pixels.a=1", "--set", "latent_cells.operation=max")
    assert code == 0
    # pixels = 1 * 768; latent_cells = max(768, 64)
    assert summary["results"] == {"show": {"value": "512x768 image, 768 latent cells, seed 42"}}


@pytest.mark.parametrize("value, shown", [('"640"', "'640'"), ("abc", "'abc'"), ("6.5", "6.5")])
def test_set_values_of_the_wrong_type_fail_validation(capsys, value, shown):
    code, out, err = run_cli(capsys, "run", ARITHMETIC, "-q", "--set", f"width.value={value}")
    assert code == 1 and out == ""
    assert "  [invalid_value] node 'width' (int_constant) input 'value': input should be a valid integer (INT), " \
           f"got {shown}" in err


# --- --sweep -------------------------------------------------------------------------------------

def test_sweep_runs_once_per_value_and_later_runs_take_unchanged_nodes_from_the_cache(capsys):
    code, summaries, _ = run_json(capsys, "--sweep", "seed.seed=1,2,3")
    assert code == 0
    assert [s["sweep"] for s in summaries] == ["seed.seed=1", "seed.seed=2", "seed.seed=3"]
    assert [s["results"]["show"]["value"] for s in summaries] == [
        f"512x768 image, 6144 latent cells, seed {seed}" for seed in (1, 2, 3)]
    assert sorted(summaries[0]["executed"]) == sorted(ALL_NODES)
    assert summaries[0]["cached"] == []
    for later in summaries[1:]:
        assert later["executed"] == ["seed", "caption", "show"]
        assert later["cached"] == ["width", "height", "latent_cells"]
    assert len({s["run_id"] for s in summaries}) == 3


def test_sweep_takes_a_json_list_and_several_sweeps_run_every_combination(capsys):
    code, summaries, _ = run_json(capsys, "--sweep", "seed.seed=[5, 6]", "--sweep", "caption.template={d}!,<{d}>")
    assert code == 0
    assert [(s["sweep"], s["results"]["show"]["value"]) for s in summaries] == [
        ('seed.seed=5, caption.template="{d}!"', "5!"),
        ('seed.seed=5, caption.template="<{d}>"', "<5>"),
        ('seed.seed=6, caption.template="{d}!"', "6!"),
        ('seed.seed=6, caption.template="<{d}>"', "<6>"),
    ]
    assert summaries[2]["executed"] == ["seed", "caption", "show"]
    assert summaries[3]["executed"] == ["caption", "show"]
    assert summaries[3]["cached"] == ["width", "height", "seed", "latent_cells"]


def test_sweep_with_a_cache_too_small_to_keep_anything_reruns_everything(capsys):
    code, summaries, _ = run_json(capsys, "--sweep", "seed.seed=1,2", "--cache-size", "0")
    assert code == 0
    assert [sorted(s["executed"]) for s in summaries] == [sorted(ALL_NODES)] * 2


def test_sweep_stops_at_the_first_invalid_value(capsys):
    code, summaries, err = run_json(capsys, "--sweep", "seed.seed=1,-1,2")
    assert code == 1
    assert [s["status"] for s in summaries] == ["succeeded", "invalid"]
    assert [e["code"] for e in summaries[1]["errors"]] == ["out_of_bounds"]
    assert "  [out_of_bounds] node 'seed' (seed) input 'seed' must be >= 0 and <= 18446744073709551615, got -1" in err


def test_sweep_text_output_numbers_the_runs(capsys):
    code, out, _ = run_cli(capsys, "run", ARITHMETIC, "-q", "--sweep", "seed.seed=1,2")
    assert code == 0
    heads = [line for line in out.splitlines() if line.startswith("run ")]
    assert heads[0].startswith("run 1/2 (seed.seed=1): succeeded in ") and heads[0].endswith(", 7 ran, 0 cached")
    assert heads[1].startswith("run 2/2 (seed.seed=2): succeeded in ") and heads[1].endswith(", 3 ran, 3 cached")


def test_output_runs_only_what_the_named_nodes_need(capsys):
    code, (summary,), _ = run_json(capsys, "--output", "pixels")
    assert code == 0
    assert summary["executed"] == ["width", "height", "pixels"]
    assert summary["results"] == {}


# --- --events ------------------------------------------------------------------------------------

def test_events_are_written_one_json_object_per_line(capsys, tmp_path):
    path = tmp_path / "events.jsonl"
    code, _, _ = run_cli(capsys, "run", ARITHMETIC, "-q", "--events", str(path), "--sweep", "seed.seed=1,2")
    assert code == 0
    events = [json.loads(line) for line in path.read_text().splitlines()]
    first_run = [e for e in events if e["run_id"] == events[0]["run_id"]]
    second_run = events[len(first_run):]
    assert [e["type"] for e in first_run] == ["run_started"] + ["node_started", "node_finished"] * 7 + ["run_finished"]
    assert first_run[0]["data"]["to_run"] == [e["data"]["node"] for e in first_run if e["type"] == "node_started"]
    assert [(e["type"], e["data"].get("node")) for e in second_run] == [
        ("run_started", None),
        ("node_cached", "width"), ("node_cached", "height"), ("node_cached", "latent_cells"),
        ("node_started", "seed"), ("node_finished", "seed"),
        ("node_started", "caption"), ("node_finished", "caption"),
        ("node_started", "show"), ("node_finished", "show"),
        ("run_finished", None),
    ]
    assert len({e["run_id"] for e in second_run}) == 1
    assert second_run[-1]["data"]["results"] == {"show": {"value": "512x768 image, 6144 latent cells, seed 2"}}
    assert all(set(e) == {"type", "run_id", "timestamp", "data"} for e in events)


# --- validate, nodes, schema ---------------------------------------------------------------------

def test_validate_a_valid_workflow(capsys):
    code, out, _ = run_cli(capsys, "validate", ARITHMETIC)
    assert code == 0
    assert out == f"{ARITHMETIC}: valid (7 nodes, outputs: show)\n"
    code, out, _ = run_cli(capsys, "validate", ARITHMETIC, "--json")
    assert code == 0
    assert json.loads(out) == {"valid": True, "errors": []}


def test_validate_an_invalid_workflow(capsys, tmp_path):
    path = write(tmp_path, INVALID)
    code, out, _ = run_cli(capsys, "validate", path)
    assert code == 1
    assert out.splitlines()[0] == "workflow is invalid (4 problems):"
    assert [line.split("]")[0].strip(" [") for line in out.splitlines()[1:]] == INVALID_CODES
    code, out, _ = run_cli(capsys, "validate", path, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False
    assert [(e["node"], e["input"], e["code"]) for e in report["errors"]] == [
        ("a", "value", "invalid_value"), ("b", "a", "missing_node"), ("b", "operation", "not_in_choices"),
        ("c", None, "unknown_node_type"),
    ]
    assert all(set(e) == {"node", "input", "code", "message"} for e in report["errors"])


def test_validate_with_a_requested_output_that_does_not_exist(capsys):
    code, out, _ = run_cli(capsys, "validate", ARITHMETIC, "--output", "ghost", "--json")
    assert code == 1
    assert json.loads(out)["errors"] == [{"node": "ghost", "input": None, "code": "missing_node",
                                          "message": "requested output node 'ghost' does not exist"}]


def test_nodes_prints_the_catalog(capsys):
    code, out, _ = run_cli(capsys, "nodes")
    assert code == 0
    catalog = json.loads(out)
    assert catalog == json.loads(json.dumps(registry.catalog(), default=str))
    assert {"int_constant", "int_math", "seed", "show_value", "string_format"} <= {e["type"] for e in catalog}
    code, out, _ = run_cli(capsys, "nodes", "--type", "seed", "--type", "int_math")
    assert [e["type"] for e in json.loads(out)] == ["int_math", "seed"]


def test_nodes_with_an_unknown_type_is_a_usage_error(capsys):
    code, out, err = run_cli(capsys, "nodes", "--type", "seed", "--type", "warp", "--type", "bend")
    assert code == 2 and out == ""
    assert err == "latentgraph: error: unknown node type(s): bend, warp\n"


def test_schema_prints_the_workflow_json_schema(capsys):
    code, out, _ = run_cli(capsys, "schema")
    assert code == 0
    assert json.loads(out) == workflow_json_schema()


@pytest.mark.parametrize("text, size", [("4GiB", 4 << 30), ("512MB", 512 << 20), ("1000", 1000), ("1.5k", 1536),
                                        ("2 mib", 2 << 20), ("0", 0)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1", "4 GB extra", ""])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


# --- as a real process ---------------------------------------------------------------------------

def test_the_module_runs_as_a_command():
    ok = subprocess.run([sys.executable, "-m", "latentgraph", "run", ARITHMETIC, "--json", "-q"],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["results"] == {"show": {"value": CAPTION}}

    usage = subprocess.run([sys.executable, "-m", "latentgraph", "run", ARITHMETIC, "--set", "oops"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    assert usage.stderr == "latentgraph: error: --set expects NODE.INPUT=VALUE, got 'oops'\n"


def test_the_module_reports_validation_failure_as_exit_1(tmp_path):
    invalid = subprocess.run([sys.executable, "-m", "latentgraph", "validate", write(tmp_path, INVALID)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert invalid.returncode == 1
    assert invalid.stdout.startswith("workflow is invalid (4 problems):\n  [invalid_value] ")
