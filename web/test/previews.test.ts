// Images reported by nodes that are not output nodes (the ControlNet preprocessors report their map
// under `previews`): the store files them under their node like an output node's `images`, so the
// node draws them, from the node's own event and from a later run's cached results alike.
import { beforeEach, describe, expect, it } from "vitest";
import { imagesOf } from "../src/api";
import { applyRunEvent, finishRun, openWorkflow, setCatalog, useEditor } from "../src/store";
import type { Catalog, NodeTypeSpec, Workflow } from "../src/types";

const spec = (type: string, category: string, inputs: NodeTypeSpec["inputs"], outputs: [string, string][], output_node = false): NodeTypeSpec => ({
  type, version: 1, category, title: type, description: `the ${type} node`, output_node,
  inputs, outputs: outputs.map(([name, t]) => ({ name, type: t })),
});
const image = { name: "image", type: "IMAGE", required: true, link_only: true };
const CATALOG: Catalog = Object.fromEntries([
  spec("load_image", "image", [{ name: "image", type: "STRING", required: true, link_only: false, choices: ["photo.png"] }], [["image", "IMAGE"], ["mask", "MASK"]]),
  spec("canny", "preprocessors", [image, { name: "low_threshold", type: "INT", required: false, link_only: false, default: 100 },
    { name: "high_threshold", type: "INT", required: false, link_only: false, default: 200 }], [["image", "IMAGE"]]),
  spec("save_image", "image", [{ ...image, name: "images" }], [], true),
].map((s) => [s.type, s]));

const WORKFLOW: Workflow = {
  format: "latentgraph/workflow@1",
  nodes: {
    load: { type: "load_image", inputs: { image: "photo.png" } },
    edges: { type: "canny", inputs: { image: { node: "load", output: "image" }, low_threshold: 100, high_threshold: 200 } },
    save: { type: "save_image", inputs: { images: { node: "edges", output: "image" } } },
  },
};
const map = (n: number) => ({ filename: `canny_0000${n}_.png`, subfolder: "", type: "temp" });
const saved = (n: number) => ({ filename: `latentgraph_0000${n}_.png`, subfolder: "", type: "output" });
const state = () => useEditor.getState();

beforeEach(() => {
  setCatalog(CATALOG);
  useEditor.setState({ errors: {}, runNodes: {}, activeRun: null, outputs: {} });
  openWorkflow(WORKFLOW, { keepHistory: false });
});

describe("images reported by a preprocessor node", () => {
  it("are found under any key of a node's results", () => {
    expect(imagesOf({ previews: [map(1)] })).toEqual([map(1)]);
    expect(imagesOf({ previews: [map(1), map(2)], images: [saved(1)] })).toEqual([map(1), map(2), saved(1)]);
  });

  it("show on the node that reported them when it finishes, and a new map replaces the old one", () => {
    applyRunEvent({ type: "run_started", run_id: "r1", timestamp: 0, data: { to_run: ["load", "edges", "save"], cached: [] } });
    applyRunEvent({ type: "node_finished", run_id: "r1", timestamp: 0, data: { node: "edges", seconds: 0.01, results: { previews: [map(1)] } } });
    expect(state().outputs.edges).toEqual([map(1)]);
    expect(state().outputs.save).toBeUndefined();
    applyRunEvent({ type: "node_finished", run_id: "r1", timestamp: 0, data: { node: "save", seconds: 0.01, results: { images: [saved(1)] } } });
    expect(state().outputs).toEqual({ edges: [map(1)], save: [saved(1)] });

    applyRunEvent({ type: "run_started", run_id: "r2", timestamp: 0, data: { to_run: ["edges", "save"], cached: ["load"] } });
    applyRunEvent({ type: "node_finished", run_id: "r2", timestamp: 0, data: { node: "edges", seconds: 0.01, results: { previews: [map(2)] } } });
    expect(state().outputs.edges).toEqual([map(2)]);
  });

  it("show from a run's results when the node itself came from the cache", () => {
    // After a reload the store is empty; the run finds the map cached and lists it in its results.
    applyRunEvent({ type: "run_started", run_id: "r3", timestamp: 0, data: { to_run: ["save"], cached: ["load", "edges"] } });
    applyRunEvent({ type: "node_cached", run_id: "r3", timestamp: 0, data: { node: "edges" } });
    expect(state().outputs.edges).toBeUndefined();
    const finished = { type: "run_finished", run_id: "r3", timestamp: 0, data: { status: "succeeded", results: { edges: { previews: [map(1)] }, save: { images: [saved(2)] } } } };
    applyRunEvent(finished);
    finishRun(finished);
    expect(state().outputs).toEqual({ edges: [map(1)], save: [saved(2)] });
    expect(state().runNodes.edges.status).toBe("cached");
  });
});
