import { describe, expect, it } from "vitest";
import { classifyDocument, classifyPng, linkText, normaliseReport, reportErrors, reportIsEmpty } from "../src/importing";
import type { PngTextChunk } from "../src/png";

const OURS = { format: "latentgraph/workflow@1", nodes: { a: { type: "int_constant", inputs: {} } } };
const UI = {
  last_node_id: 2, last_link_id: 1, version: 0.4,
  nodes: [{ id: 1, type: "EmptyLatentImage", pos: [0, 0], widgets_values: [64, 64, 1], outputs: [{ name: "LATENT", type: "LATENT", links: [1] }] }],
  links: [[1, 1, 0, 2, 0, "LATENT"]], groups: [],
};
const API = { "3": { class_type: "KSampler", inputs: { seed: 1, model: ["4", 0] } }, "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "x.safetensors" } } };
const text = (keyword: string, value: unknown): PngTextChunk => ({ kind: "tEXt", keyword, text: typeof value === "string" ? value : JSON.stringify(value) });

describe("which documents the server converts", () => {
  it("keeps ours, tagged or not, and sends ComfyUI's UI and API formats", () => {
    expect(classifyDocument(OURS)).toBe("latentgraph");
    expect(classifyDocument({ nodes: {} })).toBe("latentgraph");
    expect(classifyDocument({ format: "latentgraph/workflow@0", nodes: {} })).toBe("latentgraph");
    expect(classifyDocument(UI)).toBe("comfyui-ui");
    expect(classifyDocument({ ...UI, version: 1, links: [{ id: 1, origin_id: 1, origin_slot: 0, target_id: 2, target_slot: 0, type: "LATENT" }] })).toBe("comfyui-ui");
    expect(classifyDocument(API)).toBe("comfyui-api");
  });

  it("recognises neither in what is neither", () => {
    for (const value of [null, [], "text", 3, {}, { format: "comfyui", nodes: [] }, { a: { class_type: 1 } }, { a: { class_type: "X" }, b: 2 }]) {
      expect(classifyDocument(value), JSON.stringify(value)).toBeNull();
    }
  });

  it("opens a PNG of ours itself and sends ComfyUI's, whichever chunk it uses", () => {
    expect(classifyPng([text("workflow", OURS)])).toEqual({ kind: "latentgraph", text: JSON.stringify(OURS) });
    expect(classifyPng([text("prompt", API), text("workflow", UI)])).toEqual({ kind: "comfyui" });
    expect(classifyPng([text("prompt", API)])).toEqual({ kind: "comfyui" });
    expect(classifyPng([text("workflow", "{ not json")])).toEqual({ kind: "comfyui" }); // the converter says what is wrong
    expect(classifyPng([text("parameters", "a photo, Steps: 20")])).toBeNull();
    expect(classifyPng([])).toBeNull();
  });
});

describe("the converter's report", () => {
  const report = normaliseReport({
    format: "comfyui-ui",
    ok: false,
    unmapped: [{ id: 7, type: "SomeCustomNode", reason: "no such node type in Latentgraph", links: [[5, 7, 0, 9, 1, "IMAGE"]] }],
    values: [{ id: "3", type: "KSampler", input: "steps", value: 100000, message: "steps: 100000 is above 10000" }],
    missing_files: [{ id: "4", type: "CheckpointLoaderSimple", input: "checkpoint", kind: "checkpoints", name: "sd_xl_base_1.0.safetensors" }],
    problems: [{ id: "5", input: "clip", message: "clip: needs a link" }, { id: "6", message: "a group node: expanded" }],
    notes: ["the Reroute node 10 became points on its link"],
  });

  it("is read with every list present and ids as strings", () => {
    expect(report.unmapped).toEqual([{ id: "7", type: "SomeCustomNode", reason: "no such node type in Latentgraph", links: [[5, 7, 0, 9, 1, "IMAGE"]] }]);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([{ id: "5", input: "clip", message: "clip: needs a link" }, { id: "6", input: null, message: "a group node: expanded" }]);
    expect(normaliseReport({ format: "comfyui-api" })).toEqual({ format: "comfyui-api", ok: true, unmapped: [], values: [], missing_files: [], problems: [], notes: [] });
    expect(normaliseReport(null).ok).toBe(true);
  });

  it("is empty only when it has nothing to say", () => {
    expect(reportIsEmpty(normaliseReport({ format: "comfyui-ui", ok: true }))).toBe(true);
    expect(reportIsEmpty(report)).toBe(false);
    expect(reportIsEmpty(normaliseReport({ notes: ["n"] }))).toBe(false);
    expect(reportIsEmpty(normaliseReport({ missing_files: [{ id: "1", name: "x" }] }))).toBe(false);
    expect(reportIsEmpty(normaliseReport({ problems: [{ id: "1", message: "x" }] }))).toBe(false);
  });

  it("puts values and missing files on the inputs of their nodes", () => {
    expect(reportErrors(report)).toEqual([
      { node: "3", input: "steps", code: "import_value", message: "steps: 100000 is above 10000" },
      { node: "4", input: "checkpoint", code: "missing_file", message: "no checkpoints named “sd_xl_base_1.0.safetensors” in Latentgraph's folders" },
      { node: "5", input: "clip", code: "import_problem", message: "clip: needs a link" },
      { node: "6", input: null, code: "import_problem", message: "a group node: expanded" },
    ]);
  });

  it("names an unmapped node's links whatever shape the server gives them", () => {
    expect(linkText([5, 7, 0, 9, 1, "IMAGE"])).toBe("5 7 0 9 1 IMAGE");
    expect(linkText({ from_node: "5", from_slot: 0, to_node: "7", to_slot: "image" })).toBe("5.0 → 7.image");
    expect(linkText("5:0 → 7.image")).toBe("5:0 → 7.image");
  });
});
