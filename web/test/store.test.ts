import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { validationErrorsOf } from "../src/api";
import { matchingPort, searchNodeTypes } from "../src/search";
import {
  addNode,
  advanceSeeds,
  applyRunEvent,
  connect,
  copySelected,
  currentWorkflow,
  deleteSelected,
  openWorkflow,
  paste,
  redo,
  setCatalog,
  setInput,
  setSeedControl,
  showLiveRun,
  showValidationErrors,
  toggleSocket,
  undo,
  useEditor,
} from "../src/store";
import type { Catalog, NodeTypeSpec, Workflow } from "../src/types";

const ROOT = join(__dirname, "..", "..");
const txt2img = (): Workflow => JSON.parse(readFileSync(join(ROOT, "workflows", "txt2img.json"), "utf8"));

// A catalog with the node types txt2img uses (shapes as `latentgraph nodes` prints them).
const port = (name: string, type: string, extra: object = {}) => ({ name, type, required: true, link_only: true, ...extra });
const widget = (name: string, type: string, extra: object = {}) => ({ name, type, required: false, link_only: false, ...extra });
const spec = (type: string, category: string, inputs: NodeTypeSpec["inputs"], outputs: [string, string][], output_node = false): NodeTypeSpec => ({
  type, version: 1, category, title: type.replace(/_/g, " "), description: `the ${type} node`, output_node,
  inputs, outputs: outputs.map(([name, t]) => ({ name, type: t })),
});
const CATALOG: Catalog = Object.fromEntries([
  spec("checkpoint_loader", "loaders", [widget("checkpoint", "STRING", { required: true, choices: ["latentgraph-demo.safetensors"] })], [["model", "MODEL"], ["clip", "CLIP"], ["vae", "VAE"]]),
  spec("clip_text_encode", "conditioning", [port("clip", "CLIP"), widget("text", "STRING", { default: "", multiline: true })], [["conditioning", "CONDITIONING"]]),
  spec("empty_latent", "latent", [widget("width", "INT", { default: 512, minimum: 64, maximum: 8192, step: 8 }), widget("height", "INT", { default: 512 }), widget("batch_size", "INT", { default: 1 })], [["latent", "LATENT"]]),
  spec("ksampler", "sampling", [
    port("model", "MODEL"), port("positive", "CONDITIONING"), port("negative", "CONDITIONING"), port("latent", "LATENT"),
    widget("seed", "INT", { default: 0, minimum: 0, maximum: 18446744073709551615, widget: "seed" }),
    widget("steps", "INT", { default: 20, minimum: 1, maximum: 1000 }), widget("cfg", "FLOAT", { default: 7 }),
    widget("sampler", "STRING", { default: "dpmpp_2m", choices: ["euler", "dpmpp_2m"] }), widget("scheduler", "STRING", { default: "karras", choices: ["karras"] }),
    widget("denoise", "FLOAT", { default: 1 }),
  ], [["latent", "LATENT"]]),
  spec("vae_decode", "latent", [port("vae", "VAE"), port("latent", "LATENT")], [["image", "IMAGE"]]),
  spec("save_image", "image", [port("images", "IMAGE"), widget("filename_prefix", "STRING", { default: "latentgraph" })], [], true),
  spec("seed", "primitives", [widget("seed", "INT", { default: 0, widget: "seed" })], [["seed", "INT"]]),
  spec("float_math", "primitives", [widget("a", "FLOAT", { default: 0 }), widget("b", "FLOAT", { default: 0 })], [["value", "FLOAT"]]),
].map((s) => [s.type, s]));

const state = () => useEditor.getState();
const node = (id: string) => state().nodes.find((n) => n.id === id)!;
const edges = () => state().edges.map((e) => `${e.source}.${e.sourceHandle}->${e.target}.${e.targetHandle}`).sort();
const select = (...ids: string[]) => useEditor.setState({ nodes: state().nodes.map((n) => ({ ...n, selected: ids.includes(n.id) })) });

beforeEach(() => {
  setCatalog(CATALOG);
  useEditor.setState({ nodes: [], edges: [], past: [], future: [], clipboard: null, toasts: [], errors: {}, runNodes: {}, activeRun: null, outputs: {} });
  openWorkflow(txt2img(), { keepHistory: false });
});

describe("the editor store", () => {
  it("opens a workflow and gives it back unchanged", () => {
    expect(currentWorkflow()).toEqual(txt2img());
    expect(state().dirty).toBe(false);
  });

  it("adds a node with its defaults under a fresh id", () => {
    const first = addNode("seed", { x: 1, y: 2 });
    const second = addNode("seed", { x: 3, y: 4 });
    expect([first, second]).toEqual(["seed", "seed_2"]);
    expect(node("seed").data.inputs).toEqual({ seed: 0 });
    expect(currentWorkflow().nodes.seed_2).toEqual({ type: "seed", inputs: { seed: 0 } });
    expect(state().dirty).toBe(true);
  });

  it("links matching types, replaces an input's link, and refuses a mismatch with a reason", () => {
    addNode("seed", { x: 0, y: 0 });
    expect(connect({ source: "seed", sourceHandle: "seed", target: "sampler", targetHandle: "seed" })).toBe(true);
    expect(currentWorkflow().nodes.sampler.inputs.seed).toEqual({ node: "seed", output: "seed" });
    expect(connect({ source: "checkpoint", sourceHandle: "clip", target: "sampler", targetHandle: "model" })).toBe(false);
    expect(state().toasts.at(-1)!.text).toBe("Link refused: sampler.model takes MODEL, but checkpoint.clip gives CLIP");
    expect(edges()).toContain("checkpoint.model->sampler.model");
    // INT feeds FLOAT; a second link to the same input replaces the first.
    addNode("float_math", { x: 0, y: 0 });
    expect(connect({ source: "seed", sourceHandle: "seed", target: "float_math", targetHandle: "a" })).toBe(true);
    expect(connect({ source: "float_math", sourceHandle: "value", target: "float_math", targetHandle: "b" })).toBe(false);
    expect(connect({ source: "latent", sourceHandle: "latent", target: "sampler", targetHandle: "latent" })).toBe(true);
    expect(edges().filter((e) => e.endsWith("sampler.latent"))).toEqual(["latent.latent->sampler.latent"]);
  });

  it("undoes and redoes edits, one step per typing burst", () => {
    setInput("positive", "text", "a");
    setInput("positive", "text", "ab");
    setInput("positive", "text", "abc");
    deleteSelected(); // nothing selected: no step
    select("decode");
    deleteSelected();
    expect(node("decode")).toBeUndefined();
    expect(edges()).not.toContain("decode.image->save.images");
    undo();
    expect(edges()).toContain("decode.image->save.images");
    undo();
    expect(node("positive").data.inputs.text).toBe(txt2img().nodes.positive.inputs.text);
    redo();
    expect(node("positive").data.inputs.text).toBe("abc");
    redo();
    expect(node("decode")).toBeUndefined();
  });

  it("copies and pastes nodes with fresh ids and the links between them", () => {
    select("checkpoint", "positive");
    expect(copySelected()).toBe(2);
    expect(paste({ x: 1000, y: 1000 })).toBe(2);
    expect(node("checkpoint_loader").position).toEqual({ x: 1000, y: 1140 });
    expect(node("clip_text_encode").data.inputs).toEqual(node("positive").data.inputs);
    expect(edges()).toContain("checkpoint_loader.clip->clip_text_encode.clip");
    expect(state().nodes.filter((n) => n.selected).map((n) => n.id).sort()).toEqual(["checkpoint_loader", "clip_text_encode"]);
    paste();
    expect(node("checkpoint_loader_2")).toBeDefined();
  });

  it("turns a widget into an input and back, keeping that in ui", () => {
    toggleSocket("sampler", "steps");
    expect(currentWorkflow().ui!.sampler).toEqual({ x: 700, y: 160, socket_inputs: ["steps"] });
    expect(currentWorkflow().nodes.sampler.inputs.steps).toBe(20); // the value waits for the widget's return
    addNode("seed", { x: 0, y: 0 });
    connect({ source: "seed", sourceHandle: "seed", target: "sampler", targetHandle: "seed" });
    toggleSocket("sampler", "seed"); // a linked widget goes back: the link goes
    expect(edges()).not.toContain("seed.seed->sampler.seed");
    toggleSocket("sampler", "steps");
    expect(currentWorkflow().ui!.sampler).toEqual({ x: 700, y: 160 });
  });

  it("applies each seed's after-run rule", () => {
    setSeedControl("sampler", "seed", "increment");
    advanceSeeds();
    expect(node("sampler").data.inputs.seed).toBe(43);
    expect(currentWorkflow().ui!.sampler).toEqual({ x: 700, y: 160, seed_control: { seed: "increment" } });
    setSeedControl("sampler", "seed", "randomize");
    advanceSeeds();
    const seed = node("sampler").data.inputs.seed as number;
    expect(Number.isSafeInteger(seed) && seed >= 0).toBe(true);
    setSeedControl("sampler", "seed", "fixed");
    advanceSeeds();
    expect(node("sampler").data.inputs.seed).toBe(seed);
    expect(currentWorkflow().ui!.sampler).toEqual({ x: 700, y: 160 });
  });

  it("files validation errors under their node and input", () => {
    showValidationErrors([
      { node: "sampler", input: "steps", code: "out_of_bounds", message: "steps: 0 is below 1" },
      { node: "save", input: null, code: "missing_input", message: "save needs images" },
      { node: null, input: null, code: "no_output_node", message: "nothing to run" },
    ]);
    expect(state().errors.sampler.inputs.steps).toEqual(["steps: 0 is below 1"]);
    expect(state().errors.save.messages).toEqual(["save needs images"]);
    expect(state().workflowErrors).toEqual(["nothing to run"]);
    setInput("sampler", "steps", 4); // editing the input clears its error
    expect(state().errors.sampler).toBeUndefined();
  });

  it("follows a run's events: cached, running with progress, done with images, failed", () => {
    const run = "r1";
    applyRunEvent({ type: "run_started", run_id: run, timestamp: 0, data: { to_run: ["sampler", "decode", "save"], cached: ["checkpoint"] } });
    expect(state().runNodes.checkpoint.status).toBe("cached");
    applyRunEvent({ type: "node_started", run_id: run, timestamp: 0, data: { node: "sampler" } });
    applyRunEvent({ type: "node_progress", run_id: run, timestamp: 0, data: { node: "sampler", step: 3, total: 20, preview: "data:image/jpeg;base64,AA" } });
    expect(state().runNodes.sampler).toMatchObject({ status: "running", step: 3, total: 20, preview: "data:image/jpeg;base64,AA" });
    applyRunEvent({ type: "node_progress", run_id: "other", timestamp: 0, data: { node: "sampler", step: 9, total: 20 } });
    expect(state().runNodes.sampler.step).toBe(3);
    applyRunEvent({ type: "node_finished", run_id: run, timestamp: 0, data: { node: "save", seconds: 0.2, results: { images: [{ filename: "a.png", subfolder: "", type: "output" }] } } });
    expect(state().outputs.save).toEqual([{ filename: "a.png", subfolder: "", type: "output" }]);
    applyRunEvent({ type: "node_failed", run_id: run, timestamp: 0, data: { node: "decode", error_type: "RuntimeError", message: "out of memory" } });
    expect(state().errors.decode.messages).toEqual(["RuntimeError: out of memory"]);
  });

  it("marks the nodes a run leaves out for their modes, and why", () => {
    applyRunEvent({
      type: "run_started", run_id: "r2", timestamp: 0,
      data: { to_run: ["sampler"], cached: [], disabled: { negative: "bypassed", decode: "muted", save: "needs muted node 'decode'" } },
    });
    expect(state().runNodes.negative).toEqual({ status: "disabled", message: "bypassed" });
    expect(state().runNodes.save).toEqual({ status: "disabled", message: "needs muted node 'decode'" });
    expect(state().runNodes.sampler.status).toBe("queued");
    showLiveRun({ run_id: "r3", status: "running", nodes: { sampler: { status: "running" } }, progress: null, preview: null, disabled: { decode: "muted" } });
    expect(state().runNodes).toEqual({ decode: { status: "disabled", message: "muted" }, sampler: { status: "running", step: undefined, total: undefined } });
  });
});

describe("node search", () => {
  it("finds by title, type and description, best first", () => {
    expect(searchNodeTypes(CATALOG, "ksam")[0].type).toBe("ksampler");
    expect(searchNodeTypes(CATALOG, "empty lat").map((s) => s.type)).toEqual(["empty_latent"]);
    expect(searchNodeTypes(CATALOG, "zzz")).toEqual([]);
  });
  it("offers the port a dragged link fits", () => {
    expect(matchingPort(CATALOG.vae_decode, { node: "x", handle: "latent", handleType: "source", portType: "LATENT" })).toBe("latent");
    expect(matchingPort(CATALOG.save_image, { node: "x", handle: "latent", handleType: "source", portType: "LATENT" })).toBeNull();
    expect(matchingPort(CATALOG.checkpoint_loader, { node: "x", handle: "clip", handleType: "target", portType: "CLIP" })).toBe("clip");
  });
});

describe("server error bodies", () => {
  it("finds the validation errors of a 422", () => {
    const errors = [{ node: "a", input: "b", code: "c", message: "m" }];
    expect(validationErrorsOf({ detail: "the workflow is invalid", code: "invalid_workflow", errors })).toEqual(errors);
    expect(validationErrorsOf({ detail: { errors } })).toEqual(errors);
    expect(validationErrorsOf({ detail: "nope" })).toBeNull();
  });
});
