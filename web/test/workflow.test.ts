import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Catalog, Workflow } from "../src/types";
import {
  edgeId,
  freshNodeId,
  graphToWorkflow,
  makeEdge,
  parseWorkflowText,
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
    "an older format tag is kept for the server to migrate": {
      format: "latentgraph/workflow@0", nodes: { a: { type: "t", inputs: {} } }, ui: {}, meta: {},
    },
  };

  it.each(Object.keys(edgeCases))("round-trips %s", (name) => {
    const original = edgeCases[name];
    expect(roundTrip(original)).toEqual(original);
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
