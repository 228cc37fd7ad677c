/**
 * The editor's one store: the graph (nodes, edges, document fields), its undo history, the
 * catalog, and what the server last told us about runs. Actions here are plain state changes; the
 * canvas and panels call them and never talk to the server themselves (see session.ts for that).
 */
import { applyEdgeChanges, applyNodeChanges, type Connection, type EdgeChange, type NodeChange, type XYPosition } from "@xyflow/react";
import { create } from "zustand";
import { imagesOf } from "./api";
import type { LiveRun, QueueState, RunEvent, RunSummary } from "./api";
import { layeredLayout } from "./layout";
import { linkRefusal, PRIMITIVE_PORTS } from "./ports";
import type { Catalog, ImageRef, InputSpec, ValidationError, Workflow } from "./types";
import {
  freshNodeId,
  graphToWorkflow,
  makeEdge,
  SOCKET_INPUTS_KEY,
  socketInputs,
  workflowToGraph,
  type GraphEdge,
  type GraphNode,
  type GraphNodeData,
} from "./workflow";

export type NodeRunStatus = "queued" | "running" | "cached" | "done" | "failed" | "skipped" | "cancelled";

export interface NodeRunState {
  status: NodeRunStatus;
  step?: number;
  total?: number;
  preview?: string;
  seconds?: number;
  message?: string;
}

export interface NodeErrors {
  messages: string[]; // problems of the node as a whole
  inputs: Record<string, string[]>;
}

export interface Toast {
  id: number;
  kind: "error" | "info";
  text: string;
}

export type SeedControl = "fixed" | "increment" | "decrement" | "randomize";
export const SEED_CONTROL_KEY = "seed_control";
const MAX_SEED = Number.MAX_SAFE_INTEGER;

interface Snapshot {
  nodes: GraphNode[];
  edges: GraphEdge[];
  meta: Record<string, unknown>;
}

interface Clipboard {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface EditorState {
  catalog: Catalog;
  catalogLoaded: boolean;
  nodes: GraphNode[];
  edges: GraphEdge[];
  format: string;
  meta: Record<string, unknown>;
  extraUi: Record<string, unknown>;
  /** Name the workflow is saved under on the server, if any. */
  savedName: string | null;
  dirty: boolean;
  /** Input names that hold a link, per node, joined with "\n" (cheap to compare in selectors). */
  linkedInputs: Record<string, string>;
  past: Snapshot[];
  future: Snapshot[];
  clipboard: Clipboard | null;

  errors: Record<string, NodeErrors>;
  workflowErrors: string[];
  /** The run the canvas shows: the latest one the server started. */
  activeRun: string | null;
  runNodes: Record<string, NodeRunState>;
  /** Images each output node made in the latest run that reached it. */
  outputs: Record<string, ImageRef[]>;
  connection: "connecting" | "open" | "closed";
  queue: QueueState;
  history: RunSummary[];
  toasts: Toast[];
  /** Bumped when the canvas should fit the view (a workflow was opened). */
  fitRequest: number;
}

const HISTORY_LIMIT = 100;
let toastCounter = 0;
let lastCoalesceKey: string | null = null;
let lastCoalesceTime = 0;

function linkedInputsOf(edges: GraphEdge[]): Record<string, string> {
  const byNode: Record<string, string[]> = {};
  for (const edge of edges) if (edge.targetHandle) (byNode[edge.target] ??= []).push(edge.targetHandle);
  return Object.fromEntries(Object.entries(byNode).map(([node, names]) => [node, names.sort().join("\n")]));
}

export const useEditor = create<EditorState>(() => ({
  catalog: {},
  catalogLoaded: false,
  nodes: [],
  edges: [],
  format: "latentgraph/workflow@1",
  meta: {},
  extraUi: {},
  savedName: null,
  dirty: false,
  linkedInputs: {},
  past: [],
  future: [],
  clipboard: null,
  errors: {},
  workflowErrors: [],
  activeRun: null,
  runNodes: {},
  outputs: {},
  connection: "connecting",
  queue: { running: [], pending: [] },
  history: [],
  toasts: [],
  fitRequest: 0,
}));

const get = useEditor.getState;
const set = useEditor.setState;

// ---- helpers ------------------------------------------------------------------------------------

/** The catalog's input spec, or a guess for a node type the catalog does not know. */
export function inputSpecOf(nodeId: string, input: string): InputSpec | undefined {
  const node = get().nodes.find((n) => n.id === nodeId);
  return node ? get().catalog[node.data.type]?.inputs.find((i) => i.name === input) : undefined;
}

export function outputTypeOf(nodeId: string, output: string): string | undefined {
  const node = get().nodes.find((n) => n.id === nodeId);
  return node ? get().catalog[node.data.type]?.outputs.find((o) => o.name === output)?.type : undefined;
}

/** Whether a widget input is shown as a widget (else as an input handle). */
export function isWidget(spec: InputSpec): boolean {
  return !spec.link_only && (PRIMITIVE_PORTS.has(spec.type) || spec.choices !== undefined);
}

function snapshot(): Snapshot {
  const { nodes, edges, meta } = get();
  return { nodes, edges, meta };
}

/** Record the present state for undo before a change. Changes with the same key within a second
 * (typing in one field) make one undo step. */
function remember(coalesceKey?: string) {
  const now = Date.now();
  if (coalesceKey && coalesceKey === lastCoalesceKey && now - lastCoalesceTime < 1000) {
    lastCoalesceTime = now;
    return;
  }
  lastCoalesceKey = coalesceKey ?? null;
  lastCoalesceTime = now;
  set((s) => ({ past: [...s.past.slice(-HISTORY_LIMIT + 1), snapshot()], future: [] }));
}

function setGraph(nodes: GraphNode[], edges: GraphEdge[], extra: Partial<EditorState> = {}) {
  const s = get();
  set({
    nodes,
    edges,
    linkedInputs: edges === s.edges ? s.linkedInputs : linkedInputsOf(edges),
    dirty: true,
    ...extra,
  });
}

function updateNodeData(id: string, update: (data: GraphNodeData) => GraphNodeData) {
  setGraph(get().nodes.map((node) => (node.id === id ? { ...node, data: update(node.data) } : node)), get().edges);
}

export function toast(text: string, kind: Toast["kind"] = "info") {
  const id = ++toastCounter;
  set((s) => ({ toasts: [...s.toasts.slice(-2), { id, kind, text }] }));
  setTimeout(() => dismissToast(id), kind === "error" ? 8000 : 3000);
}

export function dismissToast(id: number) {
  set((s) => ({ toasts: s.toasts.filter((t) => t.id !== id) }));
}

// ---- catalog and documents ----------------------------------------------------------------------

export function setCatalog(catalog: Catalog) {
  set({ catalog, catalogLoaded: true });
}

/** The graph as a workflow document. */
export function currentWorkflow(): Workflow {
  const { nodes, edges, format, meta, extraUi, catalog } = get();
  return graphToWorkflow({ nodes, edges, format, meta, extraUi }, catalog);
}

const DEFAULT_SIZE = { width: 260, height: 160 };

function sizeOf(node: GraphNode) {
  return { width: node.measured?.width ?? node.width ?? DEFAULT_SIZE.width, height: node.measured?.height ?? node.height ?? DEFAULT_SIZE.height };
}

function estimatedHeight(node: GraphNode, catalog: Catalog) {
  const spec = catalog[node.data.type];
  if (!spec) return DEFAULT_SIZE.height;
  const rows = spec.inputs.length + spec.outputs.length;
  const text = spec.inputs.filter((i) => i.multiline).length;
  return 48 + rows * 30 + text * 60;
}

/** Open a workflow document (undoable). Nodes it gives no position are laid out. */
export function openWorkflow(workflow: Workflow, options: { savedName?: string | null; dirty?: boolean; keepHistory?: boolean } = {}) {
  const graph = workflowToGraph(workflow);
  let nodes = graph.nodes;
  if (nodes.some((node) => node.data.unplaced)) {
    const catalog = get().catalog;
    const positions = layeredLayout(
      nodes.map((node) => ({ id: node.id, width: DEFAULT_SIZE.width, height: estimatedHeight(node, catalog) })),
      graph.edges,
    );
    nodes = nodes.map((node) =>
      node.data.unplaced ? { ...node, position: positions.get(node.id)!, data: { ...node.data, unplaced: undefined } } : node,
    );
    nodes.forEach((node) => delete node.data.unplaced);
  }
  if (options.keepHistory !== false && get().nodes.length) remember();
  set((s) => ({
    nodes,
    edges: graph.edges,
    linkedInputs: linkedInputsOf(graph.edges),
    format: graph.format,
    meta: graph.meta,
    extraUi: graph.extraUi,
    savedName: options.savedName ?? null,
    dirty: options.dirty ?? false,
    errors: {},
    workflowErrors: [],
    runNodes: {},
    outputs: {},
    fitRequest: s.fitRequest + 1,
  }));
}

export function newWorkflow() {
  openWorkflow({ format: "latentgraph/workflow@1", nodes: {}, ui: {}, meta: { name: "Untitled" } });
}

export function markSaved(name: string) {
  set((s) => ({ savedName: name, dirty: false, meta: { ...s.meta, name: s.meta.name ?? name } }));
}

export function setWorkflowName(name: string) {
  remember("meta.name");
  set((s) => ({ meta: { ...s.meta, name }, dirty: true }));
}

// ---- canvas changes -----------------------------------------------------------------------------

export function onNodesChange(changes: NodeChange<GraphNode>[]) {
  const structural = changes.some((c) => c.type === "remove" || c.type === "add" || c.type === "replace");
  const moved = changes.some((c) => c.type === "position");
  if (structural) remember();
  const nodes = applyNodeChanges(changes, get().nodes);
  if (structural || moved) {
    const removed = new Set(changes.filter((c) => c.type === "remove").map((c) => (c as { id: string }).id));
    const edges = removed.size ? get().edges.filter((e) => !removed.has(e.source) && !removed.has(e.target)) : get().edges;
    setGraph(nodes, edges);
  } else {
    set({ nodes }); // selection and measured sizes: not an edit
  }
}

export function onEdgesChange(changes: EdgeChange<GraphEdge>[]) {
  const structural = changes.some((c) => c.type !== "select");
  if (structural) {
    remember();
    setGraph(get().nodes, applyEdgeChanges(changes, get().edges));
  } else {
    set({ edges: applyEdgeChanges(changes, get().edges) });
  }
}

/** Called when a drag starts, so the move is one undo step. */
export function beginMove() {
  remember();
}

/** Whether a connection may be made, and if not, why. */
export function connectionRefusal(connection: Connection | GraphEdge): string | null {
  const { source, target, sourceHandle, targetHandle } = connection;
  if (!sourceHandle || !targetHandle) return "pick an output and an input";
  const outputType = outputTypeOf(source, sourceHandle) ?? "ANY";
  const inputType = inputSpecOf(target, targetHandle)?.type ?? "ANY";
  return linkRefusal({ node: source, output: sourceHandle, type: outputType }, { node: target, input: targetHandle, type: inputType });
}

/** Link an output to an input, replacing the input's earlier link. Refused links show a toast. */
export function connect(connection: Connection): boolean {
  const reason = connectionRefusal(connection);
  if (reason) {
    toast(`Link refused: ${reason}`, "error");
    return false;
  }
  const { source, sourceHandle, target, targetHandle } = connection;
  remember();
  const edge = makeEdge(source, sourceHandle!, target, targetHandle!);
  clearInputError(target, targetHandle!);
  setGraph(get().nodes, [...get().edges.filter((e) => e.id !== edge.id), edge]);
  return true;
}

/** Add a node of a catalog type at a flow position; returns its id. */
export function addNode(type: string, position: XYPosition): string {
  const spec = get().catalog[type];
  const taken = new Set(get().nodes.map((n) => n.id));
  const id = freshNodeId(type, taken);
  const inputs: Record<string, unknown> = {};
  for (const input of spec?.inputs ?? []) {
    if (input.link_only) continue;
    if (input.default !== undefined) inputs[input.name] = input.default;
    else if (input.choices?.length) inputs[input.name] = input.choices[0];
  }
  remember();
  const node: GraphNode = { id, type: "lg", position, data: { type, inputs, ui: {} }, selected: true };
  setGraph([...get().nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), node], get().edges);
  return id;
}

export function setInput(nodeId: string, input: string, value: unknown) {
  remember(`${nodeId}.${input}`);
  clearInputError(nodeId, input);
  updateNodeData(nodeId, (data) => ({ ...data, inputs: { ...data.inputs, [input]: value } }));
}

export function setTitle(nodeId: string, title: string) {
  remember();
  updateNodeData(nodeId, (data) => {
    const next = { ...data };
    if (title.trim()) next.title = title.trim();
    else delete next.title;
    return next;
  });
}

export function setNodeUi(nodeId: string, key: string, value: unknown, coalesce = false) {
  remember(coalesce ? `${nodeId}.ui.${key}` : undefined);
  updateNodeData(nodeId, (data) => {
    const ui = { ...data.ui };
    if (value === undefined) delete ui[key];
    else ui[key] = value;
    return { ...data, ui };
  });
}

/** Turn a widget into an input handle, or back (dropping its link and keeping its value). */
export function toggleSocket(nodeId: string, input: string) {
  const node = get().nodes.find((n) => n.id === nodeId);
  if (!node) return;
  const sockets = socketInputs(node.data);
  const linked = get().edges.some((e) => e.target === nodeId && e.targetHandle === input);
  const isSocket = sockets.includes(input) || linked;
  remember();
  const nextSockets = isSocket ? sockets.filter((s) => s !== input) : [...sockets, input];
  const edges = isSocket ? get().edges.filter((e) => !(e.target === nodeId && e.targetHandle === input)) : get().edges;
  const nodes = get().nodes.map((n) => {
    if (n.id !== nodeId) return n;
    const ui = { ...n.data.ui };
    if (nextSockets.length) ui[SOCKET_INPUTS_KEY] = nextSockets;
    else delete ui[SOCKET_INPUTS_KEY];
    const inputs = { ...n.data.inputs };
    if (isSocket && inputs[input] === undefined) {
      const spec = get().catalog[n.data.type]?.inputs.find((i) => i.name === input);
      if (spec?.default !== undefined) inputs[input] = spec.default;
    }
    return { ...n, data: { ...n.data, ui, inputs } };
  });
  setGraph(nodes, edges);
}

export function deleteSelected() {
  const { nodes, edges } = get();
  const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
  const keptEdges = edges.filter((e) => !e.selected && !gone.has(e.source) && !gone.has(e.target));
  if (!gone.size && keptEdges.length === edges.length) return;
  remember();
  setGraph(nodes.filter((n) => !gone.has(n.id)), keptEdges);
}

export function selectAll() {
  set((s) => ({ nodes: s.nodes.map((n) => (n.selected ? n : { ...n, selected: true })) }));
}

export function copySelected(): number {
  const { nodes, edges } = get();
  const chosen = nodes.filter((n) => n.selected);
  const ids = new Set(chosen.map((n) => n.id));
  set({
    clipboard: {
      nodes: structuredClone(chosen.map(({ id, type, position, data }) => ({ id, type, position, data }))) as GraphNode[],
      edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)).map((e) => ({ ...e, selected: false })),
    },
  });
  return chosen.length;
}

/** Paste the clipboard with fresh ids; its top-left lands at `at` (or 40px down-right). */
export function paste(at?: XYPosition): number {
  const clip = get().clipboard;
  if (!clip?.nodes.length) return 0;
  const taken = new Set(get().nodes.map((n) => n.id));
  const rename = new Map<string, string>();
  for (const node of clip.nodes) {
    const id = freshNodeId(node.data.type, taken);
    taken.add(id);
    rename.set(node.id, id);
  }
  const minX = Math.min(...clip.nodes.map((n) => n.position.x));
  const minY = Math.min(...clip.nodes.map((n) => n.position.y));
  const dx = at ? at.x - minX : 40;
  const dy = at ? at.y - minY : 40;
  const pasted: GraphNode[] = clip.nodes.map((node) => ({
    ...structuredClone(node),
    id: rename.get(node.id)!,
    position: { x: node.position.x + dx, y: node.position.y + dy },
    selected: true,
  }));
  const pastedEdges = clip.edges.map((e) => makeEdge(rename.get(e.source)!, e.sourceHandle!, rename.get(e.target)!, e.targetHandle!));
  remember();
  setGraph(
    [...get().nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...pasted],
    [...get().edges, ...pastedEdges],
  );
  // Next paste goes a step further, like most editors.
  set({ clipboard: { nodes: clip.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })), edges: clip.edges } });
  return pasted.length;
}

export function undo() {
  const { past, future } = get();
  const previous = past[past.length - 1];
  if (!previous) return;
  lastCoalesceKey = null;
  set({ past: past.slice(0, -1), future: [snapshot(), ...future], ...previous, linkedInputs: linkedInputsOf(previous.edges), dirty: true });
}

export function redo() {
  const { past, future } = get();
  const next = future[0];
  if (!next) return;
  lastCoalesceKey = null;
  set({ past: [...past, snapshot()], future: future.slice(1), ...next, linkedInputs: linkedInputsOf(next.edges), dirty: true });
}

/** Lay out all nodes (or only the selected ones, when several are selected) in layers. */
export function autoLayout() {
  const { nodes, edges } = get();
  const selected = nodes.filter((n) => n.selected);
  const subject = selected.length > 1 ? selected : nodes;
  if (!subject.length) return;
  const origin = { x: Math.min(...subject.map((n) => n.position.x)), y: Math.min(...subject.map((n) => n.position.y)) };
  const positions = layeredLayout(subject.map((n) => ({ id: n.id, ...sizeOf(n) })), edges, { origin });
  remember();
  setGraph(nodes.map((n) => (positions.has(n.id) ? { ...n, position: positions.get(n.id)! } : n)), edges, { fitRequest: get().fitRequest + 1 });
}

// ---- seeds --------------------------------------------------------------------------------------

export function seedControlOf(data: GraphNodeData, input: string): SeedControl {
  const controls = data.ui[SEED_CONTROL_KEY] as Record<string, SeedControl> | undefined;
  return controls?.[input] ?? "fixed";
}

export function setSeedControl(nodeId: string, input: string, control: SeedControl) {
  const node = get().nodes.find((n) => n.id === nodeId);
  if (!node) return;
  const controls = { ...((node.data.ui[SEED_CONTROL_KEY] as Record<string, SeedControl>) ?? {}) };
  if (control === "fixed") delete controls[input];
  else controls[input] = control;
  setNodeUi(nodeId, SEED_CONTROL_KEY, Object.keys(controls).length ? controls : undefined);
}

export function randomSeed(): number {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return (words[0] & 0x1fffff) * 2 ** 32 + words[1]; // uniform in [0, 2^53)
}

/** After a run is queued: apply each seed widget's after-run rule (increment, randomize...). */
export function advanceSeeds() {
  const { nodes, catalog, linkedInputs } = get();
  let changed = false;
  const next = nodes.map((node) => {
    const spec = catalog[node.data.type];
    if (!spec) return node;
    let inputs = node.data.inputs;
    for (const input of spec.inputs) {
      if (input.widget !== "seed" || (linkedInputs[node.id] ?? "").split("\n").includes(input.name)) continue;
      const control = seedControlOf(node.data, input.name);
      const current = typeof inputs[input.name] === "number" ? (inputs[input.name] as number) : 0;
      const max = Math.min(input.maximum ?? MAX_SEED, MAX_SEED);
      const min = input.minimum ?? 0;
      let value = current;
      if (control === "increment") value = current >= max ? min : current + 1;
      else if (control === "decrement") value = current <= min ? max : current - 1;
      else if (control === "randomize") value = min + (randomSeed() % (max - min + 1));
      if (value !== current) {
        inputs = { ...inputs, [input.name]: value };
        changed = true;
      }
    }
    return inputs === node.data.inputs ? node : { ...node, data: { ...node.data, inputs } };
  });
  if (changed) {
    remember();
    setGraph(next, get().edges);
  }
}

// ---- validation errors --------------------------------------------------------------------------

export function showValidationErrors(list: ValidationError[]) {
  const errors: Record<string, NodeErrors> = {};
  const workflowErrors: string[] = [];
  for (const error of list) {
    if (!error.node || !get().nodes.some((n) => n.id === error.node)) {
      workflowErrors.push(error.message);
      continue;
    }
    const entry = (errors[error.node] ??= { messages: [], inputs: {} });
    if (error.input) (entry.inputs[error.input] ??= []).push(error.message);
    else entry.messages.push(error.message);
  }
  set({ errors, workflowErrors });
}

function clearInputError(nodeId: string, input: string) {
  const entry = get().errors[nodeId];
  if (!entry?.inputs[input]) return;
  const inputs = { ...entry.inputs };
  delete inputs[input];
  const errors = { ...get().errors };
  if (!entry.messages.length && !Object.keys(inputs).length) delete errors[nodeId];
  else errors[nodeId] = { ...entry, inputs };
  set({ errors });
}

// ---- server state -------------------------------------------------------------------------------

export function setConnection(connection: EditorState["connection"]) {
  set({ connection });
}

export function setQueue(queue: QueueState) {
  set({ queue });
}

export function setHistory(history: RunSummary[]) {
  set({ history });
}

/** Follow one executor event on the canvas. */
export function applyRunEvent(event: RunEvent) {
  const { data } = event;
  const node = typeof data.node === "string" ? data.node : undefined;
  const patchNode = (id: string, patch: Partial<NodeRunState>) =>
    set((s) => ({ runNodes: { ...s.runNodes, [id]: { ...(s.runNodes[id] ?? { status: "queued" }), ...patch } } }));
  if (event.type === "run_started") {
    const runNodes: Record<string, NodeRunState> = {};
    for (const id of (data.to_run as string[] | undefined) ?? []) runNodes[id] = { status: "queued" };
    for (const id of (data.cached as string[] | undefined) ?? []) runNodes[id] = { status: "cached" };
    set({ activeRun: event.run_id, runNodes, errors: {}, workflowErrors: [] });
    return;
  }
  if (event.run_id !== get().activeRun || !node) {
    return;
  }
  switch (event.type) {
    case "node_started":
      patchNode(node, { status: "running", step: undefined, total: undefined, preview: undefined });
      break;
    case "node_progress":
      patchNode(node, { status: "running", step: data.step as number, total: data.total as number, ...(data.preview ? { preview: data.preview } : {}) });
      break;
    case "node_cached": {
      patchNode(node, { status: "cached" });
      break;
    }
    case "node_finished": {
      patchNode(node, { status: "done", seconds: data.seconds as number, step: undefined, total: undefined });
      const images = imagesOf(data.results);
      if (images.length) set((s) => ({ outputs: { ...s.outputs, [node]: images } }));
      break;
    }
    case "node_failed": {
      const message = `${data.error_type ?? "error"}: ${data.message ?? "the node failed"}`;
      patchNode(node, { status: "failed", message });
      set((s) => ({ errors: { ...s.errors, [node]: { messages: [message], inputs: {} } } }));
      break;
    }
    case "node_skipped":
      patchNode(node, { status: "skipped", message: `skipped: ${data.failed ?? "an input"} failed` });
      break;
  }
}

const LIVE_STATUS: Record<string, NodeRunStatus> = {
  waiting: "queued", queued: "queued", running: "running", cached: "cached", finished: "done", done: "done", failed: "failed", skipped: "skipped",
};

/** Show a run already in progress (the server's snapshot after a page load or a reconnect). */
export function showLiveRun(run: LiveRun) {
  const runNodes: Record<string, NodeRunState> = {};
  for (const [id, state] of Object.entries(run.nodes)) {
    runNodes[id] = { status: LIVE_STATUS[state.status] ?? "queued", step: state.step, total: state.total };
  }
  if (run.progress && runNodes[run.progress.node]) {
    runNodes[run.progress.node] = { ...runNodes[run.progress.node], step: run.progress.step, total: run.progress.total, preview: run.preview ?? undefined };
  }
  set({ activeRun: run.run_id, runNodes });
}

/** When a run ends: the node it stopped in shows "cancelled", nodes it never reached lose their
 * mark; cached and done stay until the next run starts. */
export function finishRun(event: RunEvent) {
  if (event.run_id !== get().activeRun) return;
  const runNodes: Record<string, NodeRunState> = {};
  for (const [id, state] of Object.entries(get().runNodes)) {
    if (state.status === "running") runNodes[id] = { status: "cancelled" };
    else if (state.status !== "queued") runNodes[id] = state;
  }
  set({ runNodes });
  const results = event.data.results;
  if (results && typeof results === "object") {
    for (const [node, value] of Object.entries(results as Record<string, unknown>)) {
      const images = imagesOf(value);
      if (images.length) set((s) => ({ outputs: { ...s.outputs, [node]: images } }));
    }
  }
}
