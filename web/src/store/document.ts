/**
 * Document slice: the workflow being edited (nodes, edges, notes, groups, format, meta, the `ui`
 * keys the engine ignores), its saved name and dirty flag, the clipboard, and every edit of the
 * graph. Edits call `remember()` (undo slice) first; they never talk to the server (session.ts
 * does that). Notes and groups are canvas items of their own (React Flow nodes of the types
 * "lgnote" and "lggroup"); the annotations slice edits them, this one opens, saves, moves, copies
 * and deletes them with the rest.
 */
import { applyEdgeChanges, applyNodeChanges, type Connection, type EdgeChange, type NodeChange, type XYPosition } from "@xyflow/react";
import { layeredLayout } from "../layout";
import { linkRefusal } from "../ports";
import type { Catalog, NodeMode, Workflow } from "../types";
import {
  canvasItemId,
  freshNodeId,
  GROUP_PREFIX,
  graphToWorkflow,
  makeEdge,
  NOTE_PREFIX,
  REROUTES_KEY,
  reroutesOf,
  SOCKET_INPUTS_KEY,
  socketInputs,
  workflowToGraph,
  type CanvasNode,
  type GraphEdge,
  type GraphNode,
  type GraphNodeData,
  type GroupNode,
  type NoteNode,
} from "../workflow";
import { carryMembers } from "./annotations";
import type { Slice } from "./state";

interface Clipboard {
  nodes: GraphNode[];
  edges: GraphEdge[];
  notes?: NoteNode[];
  groups?: GroupNode[];
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
  /** Markdown notes on the canvas (`meta.notes`). */
  notes: NoteNode[];
  /** Titled frames behind nodes (`meta.groups`). */
  groups: GroupNode[];
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

  /** React Flow's changes to graph nodes, notes and groups alike (a dragged group carries what
   * lies inside it). */
  onNodesChange(changes: NodeChange<CanvasNode>[]): void;
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
  /** Set (or clear, with undefined) the mode of some nodes: one undo step. */
  setMode(nodeIds: string[], mode: NodeMode | undefined): void;
  /** ComfyUI's bypass and mute keys: put the nodes (default: the selected ones) in `mode`, or back to
   * running normally when all of them are in it already. Returns how many nodes changed. */
  toggleMode(mode: NodeMode, nodeIds?: string[]): number;
  /** Turn a widget into an input handle, or back (dropping its link and keeping its value). */
  toggleSocket(nodeId: string, input: string): void;
  /** Delete the selected nodes, notes, groups (never the nodes inside a group) and links. */
  deleteSelected(): void;
  selectAll(): void;
  /** Copy the selected nodes, notes and groups; returns how many. */
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

/** Nodes without the reroute points of links that are gone or now come from another output
 * (`before` → `after`): a deleted or retargeted link drops its points. */
export function dropStaleReroutes(nodes: GraphNode[], before: GraphEdge[], after: GraphEdge[]): GraphNode[] {
  const now = new Map(after.map((edge) => [edge.id, edge]));
  const stale = new Map<string, string[]>();
  for (const edge of before) {
    const next = now.get(edge.id);
    if (next && next.source === edge.source && next.sourceHandle === edge.sourceHandle) continue;
    if (edge.targetHandle) (stale.get(edge.target) ?? stale.set(edge.target, []).get(edge.target)!).push(edge.targetHandle);
  }
  if (!stale.size) return nodes;
  return nodes.map((node) => {
    const inputs = stale.get(node.id);
    const reroutes = node.data.ui[REROUTES_KEY];
    if (!inputs || reroutes === null || typeof reroutes !== "object" || !inputs.some((i) => i in reroutes)) return node;
    return { ...node, data: { ...node.data, ui: withoutReroutes(node.data.ui, inputs) } };
  });
}

/** A node's ui entry without the reroute points of some inputs. */
export function withoutReroutes(ui: Record<string, unknown>, inputs: string[]): Record<string, unknown> {
  const reroutes = { ...(ui[REROUTES_KEY] as Record<string, unknown>) };
  for (const input of inputs) delete reroutes[input];
  const next = { ...ui };
  if (Object.keys(reroutes).length) next[REROUTES_KEY] = reroutes;
  else delete next[REROUTES_KEY];
  return next;
}

/** The state change that replaces the graph by an edit (marks the document dirty). */
export function graphChange(state: DocumentSlice, nodes: GraphNode[], edges: GraphEdge[]) {
  if (edges !== state.edges) nodes = dropStaleReroutes(nodes, state.edges, edges);
  return { nodes, edges, linkedInputs: edges === state.edges ? state.linkedInputs : linkedInputsOf(edges), dirty: true };
}

/** Offset every reroute point of a node by (dx, dy), keeping only the inputs in `keep`. */
function shiftReroutes(ui: Record<string, unknown>, dx: number, dy: number, keep: (input: string) => boolean): Record<string, unknown> {
  if (!(REROUTES_KEY in ui)) return ui;
  const shifted = Object.fromEntries(
    Object.entries(reroutesOf(ui)).filter(([input]) => keep(input)).map(([input, points]) => [input, points.map(([x, y]) => [x + dx, y + dy])]),
  );
  const next = { ...ui };
  if (Object.keys(shifted).length) next[REROUTES_KEY] = shifted;
  else delete next[REROUTES_KEY];
  return next;
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
    notes: [],
    groups: [],
    format: WORKFLOW_FORMAT,
    meta: {},
    extraUi: {},
    savedName: null,
    dirty: false,
    linkedInputs: {},
    clipboard: null,

    // ---- documents ------------------------------------------------------------------------------

    currentWorkflow: () => {
      const { nodes, edges, format, meta, extraUi, notes, groups, catalog } = get();
      return graphToWorkflow({ nodes, edges, format, meta, extraUi, notes, groups }, catalog);
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
        notes: graph.notes,
        groups: graph.groups,
        editingNote: null,
        groupDrag: null,
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
      const state = get();
      const noteIds = new Set(state.notes.map((n) => n.id));
      const groupIds = new Set(state.groups.map((g) => g.id));
      const forNodes: NodeChange<CanvasNode>[] = [];
      const forNotes: NodeChange<CanvasNode>[] = [];
      const forGroups: NodeChange<CanvasNode>[] = [];
      for (const change of changes) {
        const id = change.type === "add" ? change.item.id : change.id;
        (groupIds.has(id) ? forGroups : noteIds.has(id) ? forNotes : forNodes).push(change);
      }
      const structural = changes.some((c) => c.type === "remove" || c.type === "add" || c.type === "replace");
      const edited = changes.some((c) => c.type === "position" || (c.type === "dimensions" && c.setAttributes));
      if (structural) get().remember();
      let nodes = forNodes.length ? applyNodeChanges(forNodes as NodeChange<GraphNode>[], state.nodes) : state.nodes;
      let notes = forNotes.length ? applyNodeChanges(forNotes as NodeChange<NoteNode>[], state.notes) : state.notes;
      let groups = forGroups.length ? applyNodeChanges(forGroups as NodeChange<GroupNode>[], state.groups) : state.groups;
      // A group moved by a drag (not by a resize from its top or left) carries what lies inside it.
      const deltas = new Map<string, { dx: number; dy: number }>();
      for (const change of forGroups) {
        if (change.type !== "position" || !change.position || typeof change.dragging !== "boolean") continue;
        const before = state.groups.find((g) => g.id === change.id)!;
        const dx = change.position.x - before.position.x;
        const dy = change.position.y - before.position.y;
        if (dx || dy) deltas.set(change.id, { dx, dy });
      }
      if (deltas.size) {
        const moving = new Set(changes.filter((c) => c.type === "position").map((c) => (c as { id: string }).id));
        ({ nodes, notes, groups } = carryMembers({ nodes, notes, groups }, state, deltas, moving));
      }
      if (structural || edited) {
        const removed = new Set(forNodes.filter((c) => c.type === "remove").map((c) => (c as { id: string }).id));
        const edges = removed.size ? state.edges.filter((e) => !removed.has(e.source) && !removed.has(e.target)) : state.edges;
        set({ ...graphChange(get(), nodes, edges), notes, groups });
      } else {
        set({ nodes, notes, groups }); // selection and measured sizes: not an edit
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

    setMode: (nodeIds, mode) => {
      const ids = new Set(nodeIds);
      if (!get().nodes.some((n) => ids.has(n.id) && n.data.mode !== mode)) return;
      get().remember();
      setGraph(
        get().nodes.map((node) => {
          if (!ids.has(node.id) || node.data.mode === mode) return node;
          const data = { ...node.data };
          if (mode === undefined) delete data.mode;
          else data.mode = mode;
          return { ...node, data };
        }),
        get().edges,
      );
    },

    toggleMode: (mode, nodeIds) => {
      const ids = nodeIds ?? get().nodes.filter((n) => n.selected).map((n) => n.id);
      const targets = get().nodes.filter((n) => ids.includes(n.id));
      if (!targets.length) return 0;
      const all = targets.every((n) => n.data.mode === mode);
      get().setMode(targets.map((n) => n.id), all ? undefined : mode);
      return targets.length;
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
      const { nodes, edges, notes, groups } = get();
      const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
      const keptEdges = edges.filter((e) => !e.selected && !gone.has(e.source) && !gone.has(e.target));
      const keptNotes = notes.filter((n) => !n.selected);
      const keptGroups = groups.filter((g) => !g.selected);
      if (!gone.size && keptEdges.length === edges.length && keptNotes.length === notes.length && keptGroups.length === groups.length) return;
      get().remember();
      set({ ...graphChange(get(), nodes.filter((n) => !gone.has(n.id)), keptEdges), notes: keptNotes, groups: keptGroups });
    },

    selectAll: () => set((s) => ({
      nodes: s.nodes.map((n) => (n.selected ? n : { ...n, selected: true })),
      notes: s.notes.map((n) => (n.selected ? n : { ...n, selected: true })),
      groups: s.groups.map((g) => (g.selected ? g : { ...g, selected: true })),
    })),

    copySelected: () => {
      const { nodes, edges, notes, groups } = get();
      const chosen = nodes.filter((n) => n.selected);
      const ids = new Set(chosen.map((n) => n.id));
      const strip = <T extends CanvasNode>(items: T[]) =>
        structuredClone(items.map(({ id, type, position, data, width, height, zIndex, dragHandle }) => ({ id, type, position, data, width, height, zIndex, dragHandle }))) as T[];
      const clipboard: Clipboard = {
        nodes: structuredClone(chosen.map(({ id, type, position, data }) => ({ id, type, position, data }))) as GraphNode[],
        edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)).map((e) => ({ ...e, selected: false })),
        notes: strip(notes.filter((n) => n.selected)),
        groups: strip(groups.filter((g) => g.selected)),
      };
      const count = clipboard.nodes.length + clipboard.notes!.length + clipboard.groups!.length;
      if (count) set({ clipboard });
      return count;
    },

    paste: (at) => {
      const clip = get().clipboard;
      const clipNotes = clip?.notes ?? [];
      const clipGroups = clip?.groups ?? [];
      if (!clip || !(clip.nodes.length + clipNotes.length + clipGroups.length)) return 0;
      const taken = new Set(get().nodes.map((n) => n.id));
      const rename = new Map<string, string>();
      for (const node of clip.nodes) {
        const id = freshNodeId(node.data.type, taken);
        taken.add(id);
        rename.set(node.id, id);
      }
      const all: CanvasNode[] = [...clip.nodes, ...clipNotes, ...clipGroups];
      const minX = Math.min(...all.map((n) => n.position.x));
      const minY = Math.min(...all.map((n) => n.position.y));
      const dx = at ? at.x - minX : 40;
      const dy = at ? at.y - minY : 40;
      const linked = new Set(clip.edges.map((e) => `${e.target}\n${e.targetHandle}`));
      const pasted: GraphNode[] = clip.nodes.map((node) => ({
        ...structuredClone(node),
        id: rename.get(node.id)!,
        position: { x: node.position.x + dx, y: node.position.y + dy },
        data: { ...structuredClone(node.data), ui: shiftReroutes(structuredClone(node.data.ui), dx, dy, (input) => linked.has(`${node.id}\n${input}`)) },
        selected: true,
      }));
      const pastedEdges = clip.edges.map((e) => makeEdge(rename.get(e.source)!, e.sourceHandle!, rename.get(e.target)!, e.targetHandle!));
      const itemIds = new Set([...taken, ...get().notes.map((n) => n.id), ...get().groups.map((g) => g.id)]);
      const noteDocIds = new Set(get().notes.map((n) => n.data.id));
      const groupDocIds = new Set(get().groups.map((g) => g.data.id));
      const copyItem = <T extends NoteNode | GroupNode>(item: T, prefix: string, docIds: Set<string>): T => {
        const id = freshNodeId(item.type === "lgnote" ? "note" : "group", docIds);
        docIds.add(id);
        return {
          ...structuredClone(item),
          id: canvasItemId(prefix, id, itemIds),
          position: { x: item.position.x + dx, y: item.position.y + dy },
          data: { ...structuredClone(item.data), id },
          selected: true,
        };
      };
      const unselect = <T extends CanvasNode>(items: T[]) => items.map((n) => (n.selected ? { ...n, selected: false } : n));
      get().remember();
      set({
        ...graphChange(get(), [...unselect(get().nodes), ...pasted], [...get().edges, ...pastedEdges]),
        notes: [...unselect(get().notes), ...clipNotes.map((n) => copyItem(n, NOTE_PREFIX, noteDocIds))],
        groups: [...unselect(get().groups), ...clipGroups.map((g) => copyItem(g, GROUP_PREFIX, groupDocIds))],
      });
      // Next paste goes a step further, like most editors.
      const step = <T extends CanvasNode>(items: T[]) => items.map((n) => ({ ...n, position: { x: n.position.x + 40, y: n.position.y + 40 } }));
      set({ clipboard: { nodes: step(clip.nodes), edges: clip.edges, notes: step(clipNotes), groups: step(clipGroups) } });
      return all.length;
    },

    autoLayout: () => {
      const { nodes, edges } = get();
      const selected = nodes.filter((n) => n.selected);
      const subject = selected.length > 1 ? selected : nodes;
      if (!subject.length) return;
      const origin = { x: Math.min(...subject.map((n) => n.position.x)), y: Math.min(...subject.map((n) => n.position.y)) };
      const positions = layeredLayout(subject.map((n) => ({ id: n.id, ...sizeOf(n) })), edges, { origin });
      // The points of links that touch a moved node would now lead astray: they go.
      const rerouted = new Map<string, string[]>();
      for (const e of edges) {
        if ((positions.has(e.source) || positions.has(e.target)) && e.targetHandle) (rerouted.get(e.target) ?? rerouted.set(e.target, []).get(e.target)!).push(e.targetHandle);
      }
      get().remember();
      setGraph(
        nodes.map((n) => {
          const ui = rerouted.has(n.id) && REROUTES_KEY in n.data.ui ? withoutReroutes(n.data.ui, rerouted.get(n.id)!) : n.data.ui;
          if (!positions.has(n.id) && ui === n.data.ui) return n;
          return { ...n, position: positions.get(n.id) ?? n.position, data: ui === n.data.ui ? n.data : { ...n.data, ui } };
        }),
        edges,
      );
      get().requestFit();
    },
  };
};
