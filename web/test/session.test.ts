import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { importBytes } from "../src/session";
import { useEditor } from "../src/store";
import type { Workflow } from "../src/types";
import { png, tEXt } from "./pngs";

const state = () => useEditor.getState();
const CONVERTED: Workflow = {
  format: "latentgraph/workflow@1",
  meta: { notes: [{ id: "9", text: "a ComfyUI note", x: 0, y: 300, width: 200, height: 80 }], groups: [{ id: "group-1", title: "Sampling", x: -20, y: -50, width: 600, height: 400 }] },
  nodes: {
    "3": { type: "ksampler", inputs: { steps: 100000 } },
    "4": { type: "checkpoint_loader", inputs: { checkpoint: "sd_xl_base_1.0.safetensors" } },
  },
  ui: { "3": { x: 400, y: 0, reroutes: { model: [[300, 40]] } }, "4": { x: 0, y: 0 } },
};
const REPORT = {
  format: "comfyui-ui",
  ok: false,
  unmapped: [{ id: "7", type: "SomeCustomNode", reason: "no such node type", links: [] }],
  values: [{ id: "3", type: "KSampler", input: "steps", value: 100000, message: "steps: 100000 is above 10000" }],
  missing_files: [{ id: "4", type: "CheckpointLoaderSimple", input: "checkpoint", kind: "checkpoints", name: "sd_xl_base_1.0.safetensors" }],
  notes: [],
};
const UI_JSON = JSON.stringify({ nodes: [{ id: 3, type: "KSampler" }], links: [], groups: [] });
const OURS = { format: "latentgraph/workflow@1", meta: { name: "mine" }, nodes: { a: { type: "int_constant", inputs: { value: 1 } } }, ui: { a: { x: 0, y: 0 } } };

let calls: { url: string; init: RequestInit }[];
function serve(status: number, body: unknown) {
  calls = [];
  vi.stubGlobal("fetch", vi.fn(async (url: string, init: RequestInit) => {
    calls.push({ url, init });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  }));
}

beforeEach(() => {
  useEditor.setState({ nodes: [], edges: [], notes: [], groups: [], past: [], future: [], toasts: [], dialog: null, importReport: null, errors: {}, workflowErrors: [] });
});
afterEach(() => vi.unstubAllGlobals());

describe("opening a file", () => {
  it("sends ComfyUI's JSON to the converter, opens what comes back and shows the report", async () => {
    serve(200, { workflow: CONVERTED, report: REPORT });
    const bytes = new TextEncoder().encode(UI_JSON);
    expect(await importBytes(bytes, "portrait.json")).toBe(true);
    expect(calls).toHaveLength(1);
    expect(calls[0].url).toBe("/api/workflows/import");
    expect(calls[0].init.method).toBe("POST");
    expect((calls[0].init.headers as Record<string, string>)["content-type"]).toBe("application/json");
    expect(calls[0].init.body).toBe(bytes);
    const doc = state().currentWorkflow();
    expect(doc.meta).toEqual({ ...CONVERTED.meta, name: "portrait" });
    expect(doc.nodes).toEqual(CONVERTED.nodes);
    expect(doc.ui).toEqual(CONVERTED.ui);
    expect(state().notes.map((n) => n.data.text)).toEqual(["a ComfyUI note"]);
    expect(state().groups.map((g) => g.data.title)).toEqual(["Sampling"]);
    expect(state().dirty).toBe(true);
    expect(state().dialog).toBe("import-report");
    expect(state().importReport?.report.unmapped[0]).toMatchObject({ id: "7", type: "SomeCustomNode" });
    expect(state().errors["3"].inputs.steps).toEqual(["steps: 100000 is above 10000"]);
    expect(state().errors["4"].inputs.checkpoint[0]).toMatch(/sd_xl_base_1\.0\.safetensors/);
    expect(state().toasts.at(-1)).toMatchObject({ kind: "error", text: "Imported portrait.json from ComfyUI: 1 node could not be mapped" });
  });

  it("sends a ComfyUI PNG as it is, and shows no report when it has nothing to say", async () => {
    serve(200, { workflow: { ...CONVERTED, meta: { name: "named" } }, report: { format: "comfyui-ui", ok: true, unmapped: [], values: [], missing_files: [], notes: [] } });
    const bytes = png(tEXt("prompt", '{"3": {"class_type": "KSampler", "inputs": {}}}'), tEXt("workflow", UI_JSON));
    expect(await importBytes(bytes, "ComfyUI_00001_.png")).toBe(true);
    expect((calls[0].init.headers as Record<string, string>)["content-type"]).toBe("image/png");
    expect(calls[0].init.body).toBe(bytes);
    expect(state().currentWorkflow().meta!.name).toBe("named");
    expect(state().dialog).toBeNull();
    expect(state().importReport?.report.ok).toBe(true);
    expect(state().toasts.at(-1)).toMatchObject({ kind: "info", text: "Imported ComfyUI_00001_.png from ComfyUI" });
  });

  it("opens its own JSON and PNGs without the converter", async () => {
    serve(500, {});
    expect(await importBytes(new TextEncoder().encode(JSON.stringify(OURS)), "mine.json")).toBe(true);
    expect(await importBytes(png(tEXt("workflow", JSON.stringify(OURS))), "mine.png")).toBe(true);
    expect(calls).toHaveLength(0);
    expect(state().currentWorkflow().meta).toEqual({ name: "mine" });
  });

  it("says why when the server refuses the file, or when a file is no workflow at all", async () => {
    serve(400, { detail: "not a ComfyUI workflow: node 3 has no class_type", code: "bad_workflow" });
    expect(await importBytes(png(tEXt("prompt", "{}")), "odd.png")).toBe(false);
    expect(state().toasts.at(-1)).toMatchObject({ kind: "error", text: "Could not import odd.png: not a ComfyUI workflow: node 3 has no class_type" });
    expect(await importBytes(png(tEXt("parameters", "Steps: 20")), "a1111.png")).toBe(false);
    expect(state().toasts.at(-1)!.text).toBe("Could not import a1111.png: this PNG carries no workflow");
    expect(await importBytes(new TextEncoder().encode("[1, 2]"), "list.json")).toBe(false);
    expect(state().toasts.at(-1)!.text).toBe("Could not import list.json: a workflow is a JSON object");
    expect(calls).toHaveLength(1);
  });
});
