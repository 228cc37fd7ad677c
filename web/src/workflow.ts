/**
 * Graph ↔ workflow JSON, both ways, losslessly.
 *
 * The canvas holds React Flow nodes and edges; the files, the API and the PNGs hold the workflow
 * document ("latentgraph/workflow@1"). A node keeps its id, type, title and literal inputs in its
 * data; every link becomes an edge (source handle = output name, target handle = input name).
 * What the canvas does not show is carried along untouched so that import → export gives back the
 * same document: `meta`, the format tag, `ui` keys of a node other than x/y (including
 * `socket_inputs`, the widgets the user turned into input handles, and `reroutes`, the points a
 * link passes through), `ui` entries that name no node, and links to nodes that do not exist (the
 * server's validation names those).
 *
 * Notes (`meta.notes`) and groups (`meta.groups`) become canvas items of their own (NoteNode,
 * GroupNode: React Flow nodes of the types "lgnote" and "lggroup", with ids of their own so they
 * never clash with a graph node's); a list that is not well-formed stays in `meta` untouched. A
 * node's `mode` ("bypass", "mute") rides in its data.
 *
 * Pure module: no React, no HTTP.
 */
import type { Edge, Node } from "@xyflow/react";
import { asLink, WORKFLOW_FORMAT, type Catalog, type LinkRef, type Workflow, type WorkflowNode } from "./types";

/** ui key listing the widget inputs shown as input handles instead of widgets. */
export const SOCKET_INPUTS_KEY = "socket_inputs";
/** ui key of a node: input name → the points ([x, y], source to target) its link passes through. */
export const REROUTES_KEY = "reroutes";

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
  /** "bypass" or "mute" (WorkflowNode.mode); absent: the node runs. */
  mode?: string;
}

export type GraphNode = Node<GraphNodeData, "lg">;
export type GraphEdge = Edge;

/** A markdown note on the canvas: one entry of `meta.notes`. */
export interface NoteData extends Record<string, unknown> {
  /** Its id in `meta.notes` (the canvas item's id is NOTE_PREFIX + this, or more if that is taken). */
  id: string;
  text: string;
  color?: string;
  /** Keys of the entry the editor does not know, kept as they came. */
  extra: Record<string, unknown>;
}

/** A titled frame behind nodes: one entry of `meta.groups`. */
export interface GroupData extends Record<string, unknown> {
  id: string;
  title: string;
  color?: string;
  extra: Record<string, unknown>;
}

export type NoteNode = Node<NoteData, "lgnote">;
export type GroupNode = Node<GroupData, "lggroup">;
/** Anything React Flow shows as a node: graph nodes, notes and groups. */
export type CanvasNode = GraphNode | NoteNode | GroupNode;

export const NOTE_PREFIX = "note:";
export const GROUP_PREFIX = "group:";
export const NOTE_SIZE = { width: 280, height: 160 };
export const GROUP_SIZE = { width: 480, height: 320 };
/** Groups sit behind everything, edges included, and stay behind nodes when selected. */
export const GROUP_Z = -1000;
/** Only a group's title bar drags it: its inside belongs to the canvas (pan, box-select, double-click). */
export const GROUP_DRAG_HANDLE = ".group-title";

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
  format: string;
  /** The document's meta, less the notes and groups that became canvas items. */
  meta: Record<string, unknown>;
  /** ui entries that name no node (kept as they are). */
  extraUi: Record<string, unknown>;
  notes: NoteNode[];
  groups: GroupNode[];
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

const isNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);

/** The reroute points of a node's ui entry, per input; malformed entries are left out. */
export function reroutesOf(ui: Record<string, unknown>): Record<string, [number, number][]> {
  const value = ui[REROUTES_KEY];
  if (value === null || typeof value !== "object" || Array.isArray(value)) return {};
  const points: Record<string, [number, number][]> = {};
  for (const [input, list] of Object.entries(value as Record<string, unknown>)) {
    if (!Array.isArray(list)) continue;
    const good = list.filter((p): p is [number, number] => Array.isArray(p) && p.length === 2 && isNumber(p[0]) && isNumber(p[1]));
    if (good.length) points[input] = good;
  }
  return points;
}

const ITEM_KEYS = { note: ["id", "text", "x", "y", "width", "height", "color"], group: ["id", "title", "x", "y", "width", "height", "color"] };

/** `meta.notes` / `meta.groups` as canvas items, or null when the list is not well-formed (then it
 * stays in meta as it is). */
function canvasItems(value: unknown, kind: "note" | "group"): Record<string, unknown>[] | null {
  if (!Array.isArray(value)) return null;
  const ids = new Set<string>();
  const textKey = kind === "note" ? "text" : "title";
  for (const entry of value) {
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) return null;
    const e = entry as Record<string, unknown>;
    if (typeof e.id !== "string" || ids.has(e.id) || typeof e[textKey] !== "string") return null;
    if (![e.x, e.y, e.width, e.height].every(isNumber) || (e.width as number) <= 0 || (e.height as number) <= 0) return null;
    if (e.color !== undefined && typeof e.color !== "string") return null;
    ids.add(e.id);
  }
  return value as Record<string, unknown>[];
}

function extraKeys(entry: Record<string, unknown>, kind: "note" | "group"): Record<string, unknown> {
  const known = ITEM_KEYS[kind];
  return Object.fromEntries(Object.entries(entry).filter(([key]) => !known.includes(key)).map(([k, v]) => [k, structuredClone(v)]));
}

/** A canvas item id for a note or group id: the prefix and the id, made unique against `taken`. */
export function canvasItemId(prefix: string, id: string, taken: Set<string>): string {
  let candidate = prefix + id;
  while (taken.has(candidate)) candidate += "~";
  taken.add(candidate);
  return candidate;
}

export function makeNote(rfId: string, entry: { id: string; text: string; x: number; y: number; width: number; height: number; color?: string }, extra: Record<string, unknown> = {}): NoteNode {
  const data: NoteData = { id: entry.id, text: entry.text, extra };
  if (entry.color !== undefined) data.color = entry.color;
  return { id: rfId, type: "lgnote", position: { x: entry.x, y: entry.y }, width: entry.width, height: entry.height, data };
}

export function makeGroup(rfId: string, entry: { id: string; title: string; x: number; y: number; width: number; height: number; color?: string }, extra: Record<string, unknown> = {}): GroupNode {
  const data: GroupData = { id: entry.id, title: entry.title, extra };
  if (entry.color !== undefined) data.color = entry.color;
  return {
    id: rfId, type: "lggroup", position: { x: entry.x, y: entry.y }, width: entry.width, height: entry.height, data,
    zIndex: GROUP_Z, dragHandle: GROUP_DRAG_HANDLE,
  };
}

/** A canvas item's size: what the user resized it to, else what React Flow measured, else the default. */
export function itemSize(node: CanvasNode, fallback = NOTE_SIZE): { width: number; height: number } {
  return { width: node.width ?? node.measured?.width ?? fallback.width, height: node.height ?? node.measured?.height ?? fallback.height };
}

function noteEntry(note: NoteNode): Record<string, unknown> {
  const { width, height } = itemSize(note, NOTE_SIZE);
  const entry: Record<string, unknown> = { id: note.data.id, text: note.data.text, x: note.position.x, y: note.position.y, width, height };
  if (note.data.color !== undefined) entry.color = note.data.color;
  return { ...entry, ...structuredClone(note.data.extra) };
}

function groupEntry(group: GroupNode): Record<string, unknown> {
  const { width, height } = itemSize(group, GROUP_SIZE);
  const entry: Record<string, unknown> = { id: group.data.id, title: group.data.title, x: group.position.x, y: group.position.y, width, height };
  if (group.data.color !== undefined) entry.color = group.data.color;
  return { ...entry, ...structuredClone(group.data.extra) };
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
    if (spec.mode !== undefined) data.mode = spec.mode;
    if (Object.keys(dangling).length) data.dangling = dangling;
    if (!placed) data.unplaced = true;
    nodes.push({ id, type: "lg", position: { x: x as number, y: y as number }, data });
  }
  const extraUi: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(ui)) {
    if (!present.has(key) || !isPosition(value)) extraUi[key] = structuredClone(value);
  }
  const meta = structuredClone(workflow.meta ?? {});
  const taken = new Set(ids);
  const noteEntries = canvasItems(meta.notes, "note");
  const groupEntries = canvasItems(meta.groups, "group");
  const notes = (noteEntries ?? []).map((e) => makeNote(canvasItemId(NOTE_PREFIX, e.id as string, taken), e as never, extraKeys(e, "note")));
  const groups = (groupEntries ?? []).map((e) => makeGroup(canvasItemId(GROUP_PREFIX, e.id as string, taken), e as never, extraKeys(e, "group")));
  // An empty list stays in meta (so it comes back as it was); items are written back on export.
  if (noteEntries?.length) delete meta.notes;
  if (groupEntries?.length) delete meta.groups;
  return { nodes, edges, format: workflow.format ?? WORKFLOW_FORMAT, meta, extraUi, notes, groups };
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
    if (data.mode !== undefined) spec.mode = data.mode;
    nodes[node.id] = spec;
    if (!data.unplaced) ui[node.id] = { x: node.position.x, y: node.position.y, ...structuredClone(data.ui) };
  }
  for (const [key, value] of Object.entries(graph.extraUi)) {
    if (!(key in ui)) ui[key] = structuredClone(value);
  }
  const meta = structuredClone(graph.meta);
  if (graph.notes?.length) meta.notes = graph.notes.map(noteEntry);
  if (graph.groups?.length) meta.groups = graph.groups.map(groupEntry);
  return { format: graph.format, meta, nodes, ui };
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
