import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Catalog, Workflow } from "../src/types";
import {
  edgeId,
  freshNodeId,
  GROUP_Z,
  graphToWorkflow,
  makeEdge,
  parseWorkflowText,
  reroutesOf,
  socketInputs,
  workflowToGraph,
} from "../src/workflow";

const WORKFLOWS = join(__dirname, "..", "..", "workflows");
const files = readdirSync(WORKFLOWS).filter((name) => name.endsWith(".json"));

function roundTrip(workflow: Workflow, catalog?: Catalog): Workflow {
  // Through JSON text too, as a save would do.
  return JSON.parse(JSON.stringify(graphToWorkflow(workflowToGraph(workflow), catalog)));
}

describe("graph ↔ workflow JSON", () => {
  it("finds the bundled workflows", () => {
    expect(files).toContain("txt2img.json");
  });

  it.each(files)("round-trips %s losslessly", (name) => {
    const original = JSON.parse(readFileSync(join(WORKFLOWS, name), "utf8"));
    expect(roundTrip(original)).toEqual(original);
  });

  it.each(files)("keeps %s's node and input order when written with its catalog order", (name) => {
    const original = JSON.parse(readFileSync(join(WORKFLOWS, name), "utf8")) as Workflow;
    const catalog: Catalog = {};
    for (const [, node] of Object.entries(original.nodes)) {
      catalog[node.type] = {
        type: node.type, version: 1, category: "x", title: node.type, description: "", output_node: false,
        inputs: Object.keys(node.inputs).map((input) => ({ name: input, type: "ANY", required: false, link_only: false })),
        outputs: [],
      };
    }
    const back = roundTrip(original, catalog);
    expect(JSON.stringify(back.nodes)).toBe(JSON.stringify(original.nodes));
    expect(Object.keys(back.ui!)).toEqual(Object.keys(original.ui!));
  });

  it("turns links into edges and literals into node data", () => {
    const original = JSON.parse(readFileSync(join(WORKFLOWS, "txt2img.json"), "utf8"));
    const graph = workflowToGraph(original);
    const sampler = graph.nodes.find((node) => node.id === "sampler")!;
    expect(sampler.data.type).toBe("ksampler");
    expect(sampler.data.inputs).toEqual({ seed: 42, steps: 20, cfg: 2.0, sampler: "dpmpp_2m", scheduler: "karras", denoise: 1.0 });
    expect(sampler.position).toEqual({ x: 700, y: 160 });
    expect(graph.edges).toContainEqual(makeEdge("checkpoint", "model", "sampler", "model"));
    expect(graph.edges.filter((edge) => edge.target === "sampler")).toHaveLength(4);
    expect(new Set(graph.edges.map((edge) => edge.id)).size).toBe(graph.edges.length);
  });

  const edgeCases: Record<string, Workflow> = {
    "titles, meta and extra ui keys": {
      format: "latentgraph/workflow@1",
      meta: { name: "x", description: "d", tags: ["a"], nested: { deep: [1, { two: 2 }] } },
      nodes: {
        a: { type: "int_constant", inputs: { value: 3 }, title: "Width" },
        b: { type: "show_value", inputs: { value: { node: "a", output: "value" } }, title: "" },
      },
      ui: {
        a: { x: 1.5, y: -20, width: 300, colour: "#123", collapsed: true },
        b: { x: 0, y: 0 },
        viewport: { x: 10, y: 20, zoom: 0.5 },
        groups: [{ title: "g", nodes: ["a"] }],
      },
    },
    "widget turned into an input, linked and not": {
      format: "latentgraph/workflow@1",
      nodes: {
        seed: { type: "seed", inputs: { seed: 5 } },
        k: { type: "ksampler", inputs: { seed: { node: "seed", output: "seed" }, steps: 4 } },
        n: { type: "noise", inputs: { seed: 9 } },
      },
      ui: {
        seed: { x: 0, y: 0 },
        k: { x: 200, y: 0, socket_inputs: ["seed"] },
        n: { x: 200, y: 300, socket_inputs: ["seed"] },
      },
      meta: {},
    },
    "literal values of every JSON kind, including objects that are not links": {
      format: "latentgraph/workflow@1",
      nodes: {
        v: {
          type: "anything",
          inputs: {
            s: "text with \"quotes\", unicode ✓ and \n newlines",
            i: -7, f: 0.1, big: 9007199254740991, t: true, n: null,
            list: [1, "two", { node: "v", output: "x" }],
            notlink: { node: "v", output: "x", extra: 1 },
            half: { node: "v" },
            numbers: { node: 1, output: 2 },
            empty: {},
          },
        },
      },
      ui: { v: { x: 0, y: 0 } },
      meta: {},
    },
    "links to missing nodes and missing outputs": {
      format: "latentgraph/workflow@1",
      nodes: {
        a: { type: "show_value", inputs: { value: { node: "ghost", output: "value" } } },
        b: { type: "show_value", inputs: { value: { node: "a", output: "no_such_output" } } },
      },
      ui: { a: { x: 0, y: 0 }, b: { x: 100, y: 0 } },
      meta: {},
    },
    "nodes without ui, odd ui entries, ids with punctuation": {
      format: "latentgraph/workflow@1",
      nodes: {
        "node.with.dots": { type: "int_constant", inputs: {} },
        "sp ace/é": { type: "show_value", inputs: { value: { node: "node.with.dots", output: "value" } } },
        "←": { type: "int_constant", inputs: { value: 1 } },
      },
      ui: { "node.with.dots": "not a position", "←": { x: "1", y: 2 } },
      meta: { name: "odd" },
    },
    "a cycle and a self link": {
      format: "latentgraph/workflow@1",
      nodes: {
        a: { type: "int_math", inputs: { a: { node: "b", output: "value" }, b: { node: "a", output: "value" } } },
        b: { type: "int_math", inputs: { a: { node: "a", output: "value" } } },
      },
      ui: { a: { x: 0, y: 0 }, b: { x: 1, y: 1 } },
      meta: {},
    },
    "an empty workflow": { format: "latentgraph/workflow@1", nodes: {}, ui: {}, meta: {} },
    "bypassed and muted nodes, notes, groups and reroute points (the ComfyUI additions)": {
      format: "latentgraph/workflow@1",
      meta: {
        name: "comfy things",
        notes: [
          { id: "n1", text: "# Read me\n**bold** <b>not html</b>", x: -40, y: 10.5, width: 300, height: 120 },
          { id: "n2", text: "", x: 0, y: 500, width: 200, height: 80, color: "#223344", from_comfyui: { id: 12, bgcolor: "#353" } },
        ],
        groups: [
          { id: "g1", title: "Prompt", x: -60, y: -60, width: 800, height: 400, color: "#a1309b" },
          { id: "g2", title: "", x: 900, y: 0, width: 10, height: 10, extra: [1, 2] },
        ],
        tags: ["x"],
      },
      nodes: {
        a: { type: "int_constant", inputs: { value: 3 }, mode: "bypass" },
        b: { type: "show_value", inputs: { value: { node: "a", output: "value" } }, title: "B", mode: "mute" },
        c: { type: "show_value", inputs: { value: { node: "a", output: "value" } }, mode: "some future mode" },
      },
      ui: {
        a: { x: 0, y: 0, width: 320, height: 90, color: "#335", collapsed: true },
        b: { x: 400, y: 0, reroutes: { value: [[100, 50], [250.5, -20]] } },
        c: { x: 400, y: 300, reroutes: { value: [[1, 2]], not_linked: [[3, 4]], odd: "kept" } },
      },
    },
    "notes and groups lists that are not well-formed stay in meta as they are": {
      format: "latentgraph/workflow@1",
      meta: {
        notes: [{ id: "n1", text: "fine", x: 0, y: 0, width: 10, height: 10 }, { id: "n1", text: "same id", x: 0, y: 0, width: 10, height: 10 }],
        groups: [{ id: "g", title: "no size", x: 0, y: 0 }],
      },
      nodes: {},
      ui: {},
    },
    "empty notes and groups lists": { format: "latentgraph/workflow@1", meta: { notes: [], groups: [] }, nodes: {}, ui: {} },
    "notes and groups whose ids look like a node's canvas id": {
      format: "latentgraph/workflow@1",
      meta: {
        notes: [{ id: "x", text: "t", x: 0, y: 0, width: 10, height: 10 }],
        groups: [{ id: "x", title: "t", x: 0, y: 0, width: 10, height: 10 }],
      },
      nodes: { "note:x": { type: "int_constant", inputs: {} }, "group:x": { type: "int_constant", inputs: {} } },
      ui: { "note:x": { x: 0, y: 0 }, "group:x": { x: 1, y: 1 } },
    },
    "an older format tag is kept for the server to migrate": {
      format: "latentgraph/workflow@0", nodes: { a: { type: "t", inputs: {} } }, ui: {}, meta: {},
    },
  };

  it.each(Object.keys(edgeCases))("round-trips %s", (name) => {
    const original = edgeCases[name];
    expect(roundTrip(original)).toEqual(original);
  });

  it("turns notes and groups into canvas items of their own, behind and above the nodes", () => {
    const graph = workflowToGraph(edgeCases["bypassed and muted nodes, notes, groups and reroute points (the ComfyUI additions)"]);
    expect(graph.meta).toEqual({ name: "comfy things", tags: ["x"] });
    expect(graph.notes.map((n) => [n.id, n.type, n.position, n.width, n.height, n.data.id, n.data.text, n.data.color])).toEqual([
      ["note:n1", "lgnote", { x: -40, y: 10.5 }, 300, 120, "n1", "# Read me\n**bold** <b>not html</b>", undefined],
      ["note:n2", "lgnote", { x: 0, y: 500 }, 200, 80, "n2", "", "#223344"],
    ]);
    expect(graph.notes[1].data.extra).toEqual({ from_comfyui: { id: 12, bgcolor: "#353" } });
    expect(graph.groups.map((g) => [g.id, g.type, g.data.title, g.zIndex, g.dragHandle])).toEqual([
      ["group:g1", "lggroup", "Prompt", GROUP_Z, ".group-title"],
      ["group:g2", "lggroup", "", GROUP_Z, ".group-title"],
    ]);
    expect(graph.nodes.map((n) => n.data.mode)).toEqual(["bypass", "mute", "some future mode"]);
    expect(reroutesOf(graph.nodes[1].data.ui)).toEqual({ value: [[100, 50], [250.5, -20]] });
    expect(reroutesOf(graph.nodes[2].data.ui)).toEqual({ value: [[1, 2]], not_linked: [[3, 4]] }); // "odd" is kept, not shown
  });

  it("gives notes and groups canvas ids that no node has", () => {
    const graph = workflowToGraph(edgeCases["notes and groups whose ids look like a node's canvas id"]);
    const ids = [...graph.nodes, ...graph.notes, ...graph.groups].map((n) => n.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(graph.notes[0].data.id).toBe("x");
    expect(graph.groups[0].data.id).toBe("x");
  });

  it("writes where notes and groups were moved and resized to, and leaves meta alone otherwise", () => {
    const graph = workflowToGraph(edgeCases["bypassed and muted nodes, notes, groups and reroute points (the ComfyUI additions)"]);
    graph.notes[0].position = { x: 5, y: 6 };
    graph.groups[0].width = 900;
    graph.groups[0].data = { ...graph.groups[0].data, title: "Renamed", color: "#112233" };
    const back = graphToWorkflow(graph);
    expect((back.meta!.notes as unknown[])[0]).toEqual({ id: "n1", text: "# Read me\n**bold** <b>not html</b>", x: 5, y: 6, width: 300, height: 120 });
    expect((back.meta!.groups as unknown[])[0]).toEqual({ id: "g1", title: "Renamed", x: -60, y: -60, width: 900, height: 400, color: "#112233" });
    graph.notes = [];
    graph.groups = [];
    expect(graphToWorkflow(graph).meta).toEqual({ name: "comfy things", tags: ["x"] });
  });

  it("keeps a widget turned into an input in ui", () => {
    const graph = workflowToGraph(edgeCases["widget turned into an input, linked and not"]);
    const noise = graph.nodes.find((node) => node.id === "n")!;
    expect(socketInputs(noise.data)).toEqual(["seed"]);
    expect(noise.data.inputs).toEqual({ seed: 9 });
  });

  it("places nothing where the document gave no position, and writes no ui for it", () => {
    const graph = workflowToGraph(edgeCases["nodes without ui, odd ui entries, ids with punctuation"]);
    expect(graph.nodes.map((node) => node.data.unplaced)).toEqual([true, true, true]);
    const back = graphToWorkflow(graph);
    expect(back.ui).toEqual({ "node.with.dots": "not a position", "←": { x: "1", y: 2 } });
  });

  it("writes positions after a move and links after edits", () => {
    const graph = workflowToGraph(edgeCases["widget turned into an input, linked and not"]);
    graph.nodes[2].position = { x: 7, y: 8 };
    graph.edges.push(makeEdge("seed", "seed", "n", "seed"));
    const back = graphToWorkflow(graph);
    expect(back.ui!.n).toEqual({ x: 7, y: 8, socket_inputs: ["seed"] });
    expect(back.nodes.n.inputs.seed).toEqual({ node: "seed", output: "seed" });
  });

  it("does not share objects between the document and the graph", () => {
    const original = structuredClone(edgeCases["titles, meta and extra ui keys"]);
    const graph = workflowToGraph(original);
    (graph.meta.nested as { deep: unknown[] }).deep.push(3);
    (graph.nodes[0].data.ui as { colour: string }).colour = "red";
    expect(original).toEqual(edgeCases["titles, meta and extra ui keys"]);
  });

  it("gives one edge per input", () => {
    expect(edgeId("k", "seed")).not.toBe(edgeId("k", "steps"));
    expect(edgeId("k", "seed")).not.toBe(edgeId("seed", "k"));
  });
});

describe("parsing workflow text", () => {
  it("accepts a workflow and fills in the format", () => {
    expect(parseWorkflowText('{"nodes": {}}').format).toBe("latentgraph/workflow@1");
  });
  it.each([
    ["{", /not JSON/],
    ["[]", /JSON object/],
    ['{"nodes": []}', /nodes/],
    ['{"nodes": {"a": {"inputs": {}}}}', /"a" has no type/],
    ['{"nodes": {"a": {"type": "t", "inputs": [1]}}}', /inputs must be an object/],
    ['{"format": "comfyui", "nodes": {}}', /unknown format/],
  ])("refuses %s with a reason", (text, reason) => {
    expect(() => parseWorkflowText(text)).toThrow(reason);
  });
});

describe("fresh node ids", () => {
  it("uses the type name, then numbers it", () => {
    expect(freshNodeId("seed", new Set())).toBe("seed");
    expect(freshNodeId("seed", new Set(["seed", "seed_2"]))).toBe("seed_3");
  });
});
