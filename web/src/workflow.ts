/**
 * Graph ↔ workflow JSON, both ways, losslessly.
 *
 * The canvas holds React Flow nodes and edges; the files, the API and the PNGs hold the workflow
 * document ("latentgraph/workflow@1"). A node keeps its id, type, title and literal inputs in its
 * data; every link becomes an edge (source handle = output name, target handle = input name).
 * What the canvas does not show is carried along untouched so that import → export gives back the
 * same document: `meta`, the format tag, `ui` keys of a node other than x/y (including
 * `socket_inputs`, the widgets the user turned into input handles), `ui` entries that name no node,
 * and links to nodes that do not exist (the server's validation names those).
 *
 * Pure module: no React, no HTTP.
 */
import type { Edge, Node } from "@xyflow/react";
import { asLink, WORKFLOW_FORMAT, type Catalog, type LinkRef, type Workflow, type WorkflowNode } from "./types";

/** ui key listing the widget inputs shown as input handles instead of widgets. */
export const SOCKET_INPUTS_KEY = "socket_inputs";

export interface GraphNodeData extends Record<string, unknown> {
  type: string;
  title?: string;
  /** Literal input values by input name (linked inputs are edges). */
  inputs: Record<string, unknown>;
  /** The node's ui entry without x and y, kept as it came (socket_inputs, sizes, colours...). */
  ui: Record<string, unknown>;
  /** Links whose source node is not in the workflow, kept so nothing is lost. */
  dangling?: Record<string, LinkRef>;
  /** True when the document gave no position: the editor lays the node out, export writes no ui. */
  unplaced?: boolean;
}

export type GraphNode = Node<GraphNodeData, "lg">;
export type GraphEdge = Edge;

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
  format: string;
  meta: Record<string, unknown>;
  /** ui entries that name no node (kept as they are). */
  extraUi: Record<string, unknown>;
}

/** Id of the edge feeding `input` of node `target` (an input takes at most one link). */
export function edgeId(target: string, input: string): string {
  return `${target}\u2190${input}`;
}

export function makeEdge(source: string, output: string, target: string, input: string): GraphEdge {
  return { id: edgeId(target, input), source, sourceHandle: output, target, targetHandle: input };
}

/** Names of the widget inputs a node shows as input handles. */
export function socketInputs(data: GraphNodeData): string[] {
  const value = data.ui[SOCKET_INPUTS_KEY];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function isPosition(entry: unknown): entry is { x: number; y: number } {
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) return false;
  const { x, y } = entry as Record<string, unknown>;
  return typeof x === "number" && typeof y === "number" && Number.isFinite(x) && Number.isFinite(y);
}

/** A workflow document as canvas nodes and edges. The document is not modified. */
export function workflowToGraph(workflow: Workflow): Graph {
  const ui = workflow.ui ?? {};
  const ids = Object.keys(workflow.nodes);
  const present = new Set(ids);
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  for (const id of ids) {
    const spec = workflow.nodes[id];
    const inputs: Record<string, unknown> = {};
    const dangling: Record<string, LinkRef> = {};
    for (const [name, value] of Object.entries(spec.inputs ?? {})) {
      const link = asLink(value);
      if (link === null) inputs[name] = structuredClone(value);
      else if (present.has(link.node)) edges.push(makeEdge(link.node, link.output, id, name));
      else dangling[name] = link;
    }
    const entry = Object.prototype.hasOwnProperty.call(ui, id) ? ui[id] : undefined;
    const placed = isPosition(entry);
    const { x, y, ...rest } = placed ? (structuredClone(entry) as Record<string, unknown>) : { x: 0, y: 0 };
    const data: GraphNodeData = { type: spec.type, inputs, ui: rest };
    if (spec.title !== undefined) data.title = spec.title;
    if (Object.keys(dangling).length) data.dangling = dangling;
    if (!placed) data.unplaced = true;
    nodes.push({ id, type: "lg", position: { x: x as number, y: y as number }, data });
  }
  const extraUi: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(ui)) {
    if (!present.has(key) || !isPosition(value)) extraUi[key] = structuredClone(value);
  }
  return {
    nodes,
    edges,
    format: workflow.format ?? WORKFLOW_FORMAT,
    meta: structuredClone(workflow.meta ?? {}),
    extraUi,
  };
}

/**
 * Canvas nodes and edges as a workflow document. With a catalog, each node's inputs are written in
 * the order its type declares them (then any others), so saved files read like the node.
 */
export function graphToWorkflow(graph: Graph, catalog?: Catalog): Workflow {
  const linksByTarget = new Map<string, Map<string, LinkRef>>();
  for (const edge of graph.edges) {
    if (!edge.sourceHandle || !edge.targetHandle) continue;
    let links = linksByTarget.get(edge.target);
    if (!links) linksByTarget.set(edge.target, (links = new Map()));
    links.set(edge.targetHandle, { node: edge.source, output: edge.sourceHandle });
  }
  const nodes: Record<string, WorkflowNode> = {};
  const ui: Record<string, unknown> = {};
  for (const node of graph.nodes) {
    const { data } = node;
    const values: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(data.inputs)) {
      if (value !== undefined) values[name] = structuredClone(value);
    }
    for (const [name, link] of Object.entries(data.dangling ?? {})) values[name] = { ...link };
    for (const [name, link] of linksByTarget.get(node.id) ?? []) values[name] = link; // a link wins over a kept literal
    const declared = catalog?.[data.type]?.inputs.map((input) => input.name) ?? [];
    const inputs: Record<string, unknown> = {};
    for (const name of [...declared, ...Object.keys(values)]) {
      if (name in values && !(name in inputs)) inputs[name] = values[name];
    }
    const spec: WorkflowNode = { type: data.type, inputs };
    if (data.title !== undefined) spec.title = data.title;
    nodes[node.id] = spec;
    if (!data.unplaced) ui[node.id] = { x: node.position.x, y: node.position.y, ...structuredClone(data.ui) };
  }
  for (const [key, value] of Object.entries(graph.extraUi)) {
    if (!(key in ui)) ui[key] = structuredClone(value);
  }
  return { format: graph.format, meta: structuredClone(graph.meta), nodes, ui };
}

/** Problems that make a value not a workflow document at all (the server checks the rest). */
export function workflowShapeProblem(value: unknown): string | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "a workflow is a JSON object";
  const doc = value as Record<string, unknown>;
  if (typeof doc.format === "string" && !doc.format.startsWith("latentgraph/workflow@")) {
    return `unknown format ${JSON.stringify(doc.format)}`;
  }
  const nodes = doc.nodes;
  if (nodes === null || typeof nodes !== "object" || Array.isArray(nodes)) return "the workflow has no \"nodes\" object";
  for (const [id, node] of Object.entries(nodes as Record<string, unknown>)) {
    if (node === null || typeof node !== "object" || typeof (node as WorkflowNode).type !== "string") {
      return `node ${JSON.stringify(id)} has no type`;
    }
    const inputs = (node as WorkflowNode).inputs;
    if (inputs !== undefined && (inputs === null || typeof inputs !== "object" || Array.isArray(inputs))) {
      return `node ${JSON.stringify(id)}: inputs must be an object`;
    }
  }
  return null;
}

/** Parse JSON text as a workflow document, or throw an Error that says what is wrong. */
export function parseWorkflowText(text: string): Workflow {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`not JSON: ${(error as Error).message}`);
  }
  const problem = workflowShapeProblem(value);
  if (problem) throw new Error(problem);
  const doc = value as Workflow;
  return { ...doc, format: doc.format ?? WORKFLOW_FORMAT };
}

/** A fresh node id from a type name: "ksampler", then "ksampler_2", "ksampler_3"... */
export function freshNodeId(type: string, taken: Set<string> | ((id: string) => boolean)): string {
  const has = typeof taken === "function" ? taken : (id: string) => taken.has(id);
  if (!has(type)) return type;
  for (let n = 2; ; n++) if (!has(`${type}_${n}`)) return `${type}_${n}`;
}
