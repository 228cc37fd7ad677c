/**
 * Document slice: the workflow being edited (nodes, edges, format, meta, the `ui` keys the engine
 * ignores), its saved name and dirty flag, the clipboard, and every edit of the graph. Edits call
 * `remember()` (undo slice) first; they never talk to the server (session.ts does that).
 */
import { applyEdgeChanges, applyNodeChanges, type Connection, type EdgeChange, type NodeChange, type XYPosition } from "@xyflow/react";
import { layeredLayout } from "../layout";
import { linkRefusal } from "../ports";
import type { Catalog, Workflow } from "../types";
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
} from "../workflow";
import type { Slice } from "./state";

interface Clipboard {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface OpenOptions {
  savedName?: string | null;
  dirty?: boolean;
  /** false: the opened workflow replaces the undo history's present without an undo step. */
  keepHistory?: boolean;
}

export interface DocumentSlice {
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
  clipboard: Clipboard | null;

  /** The graph as a workflow document. */
  currentWorkflow(): Workflow;
  /** Open a workflow document (undoable). Nodes it gives no position are laid out. */
  openWorkflow(workflow: Workflow, options?: OpenOptions): void;
  newWorkflow(): void;
  markSaved(name: string): void;
  setWorkflowName(name: string): void;

  onNodesChange(changes: NodeChange<GraphNode>[]): void;
  onEdgesChange(changes: EdgeChange<GraphEdge>[]): void;
  /** Called when a drag starts, so the move is one undo step. */
  beginMove(): void;
  /** Whether a connection may be made, and if not, why. */
  connectionRefusal(connection: Connection | GraphEdge): string | null;
  /** Link an output to an input, replacing the input's earlier link. Refused links show a toast. */
  connect(connection: Connection): boolean;
  /** Add a node of a catalog type at a flow position; returns its id. */
  addNode(type: string, position: XYPosition): string;
  setInput(nodeId: string, input: string, value: unknown): void;
  setTitle(nodeId: string, title: string): void;
  setNodeUi(nodeId: string, key: string, value: unknown, coalesce?: boolean): void;
  /** Turn a widget into an input handle, or back (dropping its link and keeping its value). */
  toggleSocket(nodeId: string, input: string): void;
  deleteSelected(): void;
  selectAll(): void;
  copySelected(): number;
  /** Paste the clipboard with fresh ids; its top-left lands at `at` (or 40px down-right). */
  paste(at?: XYPosition): number;
  /** Lay out all nodes (or only the selected ones, when several are selected) in layers. */
  autoLayout(): void;
}

export const WORKFLOW_FORMAT = "latentgraph/workflow@1";

export function linkedInputsOf(edges: GraphEdge[]): Record<string, string> {
  const byNode: Record<string, string[]> = {};
  for (const edge of edges) if (edge.targetHandle) (byNode[edge.target] ??= []).push(edge.targetHandle);
  return Object.fromEntries(Object.entries(byNode).map(([node, names]) => [node, names.sort().join("\n")]));
}

/** The state change that replaces the graph by an edit (marks the document dirty). */
export function graphChange(state: DocumentSlice, nodes: GraphNode[], edges: GraphEdge[]) {
  return { nodes, edges, linkedInputs: edges === state.edges ? state.linkedInputs : linkedInputsOf(edges), dirty: true };
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

export const createDocumentSlice: Slice<DocumentSlice> = (set, get) => {
  const setGraph = (nodes: GraphNode[], edges: GraphEdge[]) => set(graphChange(get(), nodes, edges));
  const updateNodeData = (id: string, update: (data: GraphNodeData) => GraphNodeData) =>
    setGraph(get().nodes.map((node) => (node.id === id ? { ...node, data: update(node.data) } : node)), get().edges);

  return {
    nodes: [],
    edges: [],
    format: WORKFLOW_FORMAT,
    meta: {},
    extraUi: {},
    savedName: null,
    dirty: false,
    linkedInputs: {},
    clipboard: null,

    // ---- documents ------------------------------------------------------------------------------

    currentWorkflow: () => {
      const { nodes, edges, format, meta, extraUi, catalog } = get();
      return graphToWorkflow({ nodes, edges, format, meta, extraUi }, catalog);
    },

    openWorkflow: (workflow, options = {}) => {
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
      if (options.keepHistory !== false && get().nodes.length) get().remember();
      get().clearRunState();
      set({
        nodes,
        edges: graph.edges,
        linkedInputs: linkedInputsOf(graph.edges),
        format: graph.format,
        meta: graph.meta,
        extraUi: graph.extraUi,
        savedName: options.savedName ?? null,
        dirty: options.dirty ?? false,
      });
      get().requestFit();
    },

    newWorkflow: () => get().openWorkflow({ format: WORKFLOW_FORMAT, nodes: {}, ui: {}, meta: { name: "Untitled" } }),

    markSaved: (name) => set((s) => ({ savedName: name, dirty: false, meta: { ...s.meta, name: s.meta.name ?? name } })),

    setWorkflowName: (name) => {
      get().remember("meta.name");
      set((s) => ({ meta: { ...s.meta, name }, dirty: true }));
    },

    // ---- canvas changes -------------------------------------------------------------------------

    onNodesChange: (changes) => {
      const structural = changes.some((c) => c.type === "remove" || c.type === "add" || c.type === "replace");
      const moved = changes.some((c) => c.type === "position");
      if (structural) get().remember();
      const nodes = applyNodeChanges(changes, get().nodes);
      if (structural || moved) {
        const removed = new Set(changes.filter((c) => c.type === "remove").map((c) => (c as { id: string }).id));
        const edges = removed.size ? get().edges.filter((e) => !removed.has(e.source) && !removed.has(e.target)) : get().edges;
        setGraph(nodes, edges);
      } else {
        set({ nodes }); // selection and measured sizes: not an edit
      }
    },

    onEdgesChange: (changes) => {
      const structural = changes.some((c) => c.type !== "select");
      if (structural) {
        get().remember();
        setGraph(get().nodes, applyEdgeChanges(changes, get().edges));
      } else {
        set({ edges: applyEdgeChanges(changes, get().edges) });
      }
    },

    beginMove: () => get().remember(),

    connectionRefusal: (connection) => {
      const { source, target, sourceHandle, targetHandle } = connection;
      if (!sourceHandle || !targetHandle) return "pick an output and an input";
      const outputType = get().outputTypeOf(source, sourceHandle) ?? "ANY";
      const inputType = get().inputSpecOf(target, targetHandle)?.type ?? "ANY";
      return linkRefusal({ node: source, output: sourceHandle, type: outputType }, { node: target, input: targetHandle, type: inputType });
    },

    connect: (connection) => {
      const reason = get().connectionRefusal(connection);
      if (reason) {
        get().toast(`Link refused: ${reason}`, "error");
        return false;
      }
      const { source, sourceHandle, target, targetHandle } = connection;
      get().remember();
      const edge = makeEdge(source, sourceHandle!, target, targetHandle!);
      get().clearInputError(target, targetHandle!);
      setGraph(get().nodes, [...get().edges.filter((e) => e.id !== edge.id), edge]);
      return true;
    },

    // ---- node edits -----------------------------------------------------------------------------

    addNode: (type, position) => {
      const spec = get().catalog[type];
      const taken = new Set(get().nodes.map((n) => n.id));
      const id = freshNodeId(type, taken);
      const inputs: Record<string, unknown> = {};
      for (const input of spec?.inputs ?? []) {
        if (input.link_only) continue;
        if (input.default !== undefined) inputs[input.name] = input.default;
        else if (input.choices?.length) inputs[input.name] = input.choices[0];
      }
      get().remember();
      const node: GraphNode = { id, type: "lg", position, data: { type, inputs, ui: {} }, selected: true };
      setGraph([...get().nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), node], get().edges);
      return id;
    },

    setInput: (nodeId, input, value) => {
      get().remember(`${nodeId}.${input}`);
      get().clearInputError(nodeId, input);
      updateNodeData(nodeId, (data) => ({ ...data, inputs: { ...data.inputs, [input]: value } }));
    },

    setTitle: (nodeId, title) => {
      get().remember();
      updateNodeData(nodeId, (data) => {
        const next = { ...data };
        if (title.trim()) next.title = title.trim();
        else delete next.title;
        return next;
      });
    },

    setNodeUi: (nodeId, key, value, coalesce = false) => {
      get().remember(coalesce ? `${nodeId}.ui.${key}` : undefined);
      updateNodeData(nodeId, (data) => {
        const ui = { ...data.ui };
        if (value === undefined) delete ui[key];
        else ui[key] = value;
        return { ...data, ui };
      });
    },

    toggleSocket: (nodeId, input) => {
      const node = get().nodes.find((n) => n.id === nodeId);
      if (!node) return;
      const sockets = socketInputs(node.data);
      const linked = get().edges.some((e) => e.target === nodeId && e.targetHandle === input);
      const isSocket = sockets.includes(input) || linked;
      get().remember();
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
    },

    // ---- selection, clipboard, layout -----------------------------------------------------------

    deleteSelected: () => {
      const { nodes, edges } = get();
      const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
      const keptEdges = edges.filter((e) => !e.selected && !gone.has(e.source) && !gone.has(e.target));
      if (!gone.size && keptEdges.length === edges.length) return;
      get().remember();
      setGraph(nodes.filter((n) => !gone.has(n.id)), keptEdges);
    },

    selectAll: () => set((s) => ({ nodes: s.nodes.map((n) => (n.selected ? n : { ...n, selected: true })) })),

    copySelected: () => {
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
    },

    paste: (at) => {
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
      get().remember();
      setGraph(
        [...get().nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...pasted],
        [...get().edges, ...pastedEdges],
      );
      // Next paste goes a step further, like most editors.
      set({ clipboard: { nodes: clip.nodes.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } })), edges: clip.edges } });
      return pasted.length;
    },

    autoLayout: () => {
      const { nodes, edges } = get();
      const selected = nodes.filter((n) => n.selected);
      const subject = selected.length > 1 ? selected : nodes;
      if (!subject.length) return;
      const origin = { x: Math.min(...subject.map((n) => n.position.x)), y: Math.min(...subject.map((n) => n.position.y)) };
      const positions = layeredLayout(subject.map((n) => ({ id: n.id, ...sizeOf(n) })), edges, { origin });
      get().remember();
      setGraph(nodes.map((n) => (positions.has(n.id) ? { ...n, position: positions.get(n.id)! } : n)), edges);
      get().requestFit();
    },
  };
};
