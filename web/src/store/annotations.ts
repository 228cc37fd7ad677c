/**
 * Annotations slice: what a ComfyUI workflow carries besides its nodes, as the editor edits it:
 * notes (markdown text boxes, `meta.notes`), groups (titled, coloured frames that carry the nodes
 * inside them, `meta.groups`) and reroute points on links (`ui[target].reroutes[input]`). The notes
 * and groups themselves live in the document slice (they open and save with the workflow); every
 * edit here records an undo step first.
 */
import type { XYPosition } from "@xyflow/react";
import { boundsAround, containsPoint, itemsInside, type Rect } from "../geometry";
import {
  canvasItemId,
  freshNodeId,
  GROUP_PREFIX,
  GROUP_SIZE,
  itemSize,
  makeGroup,
  makeNote,
  NOTE_PREFIX,
  NOTE_SIZE,
  REROUTES_KEY,
  reroutesOf,
  type CanvasNode,
  type GraphNode,
  type GroupNode,
  type NoteNode,
} from "../workflow";
import type { EditorState, Slice } from "./state";

/** A reroute point: the node whose input the link feeds, the input, and its place in the list. */
export interface PointRef {
  node: string;
  input: string;
  index: number;
}

/** What a group carries when it moves. */
export interface GroupMembers {
  items: string[];
  points: PointRef[];
}

/** Colours a group or note can take from its menu (any "#rrggbb" is kept). */
export const ITEM_COLOURS: { name: string; value: string }[] = [
  { name: "red", value: "#a34b4b" },
  { name: "brown", value: "#8a6238" },
  { name: "green", value: "#4c8a56" },
  { name: "blue", value: "#4a64a8" },
  { name: "pale blue", value: "#4f86a8" },
  { name: "cyan", value: "#3a8a8a" },
  { name: "purple", value: "#8a4aa3" },
  { name: "yellow", value: "#a8913a" },
  { name: "grey", value: "#5c6370" },
];

/** Room around the selection when a group is made for it, and the title bar's height. */
export const GROUP_PADDING = 24;
export const GROUP_HEADER = 34;

export interface AnnotationsSlice {
  /** The note whose text is being edited (its canvas id), if any. */
  editingNote: string | null;
  /** What each group being dragged carries, decided when the drag starts. */
  groupDrag: Record<string, GroupMembers> | null;

  /** Add a note at a canvas position, selected and open for editing; returns its canvas id. */
  addNote(position: XYPosition, text?: string): string;
  editNote(id: string | null): void;
  setNoteText(id: string, text: string): void;
  /** A group around the selected nodes and notes, or (nothing selected) one at `position`. */
  addGroup(position?: XYPosition, title?: string): string | null;
  setGroupTitle(id: string, title: string): void;
  /** Colour of a note or group; undefined goes back to the default. */
  setItemColor(id: string, color: string | undefined): void;
  /** Delete a note or group (a group's nodes stay). */
  deleteItem(id: string): void;
  /** A drag of these canvas items starts: one undo step, and what each dragged group carries. */
  beginDrag(ids: string[]): void;
  endDrag(): void;

  /** Insert a point into the link feeding `input` of `node`, at `index` of its list. */
  addReroute(node: string, input: string, index: number, point: XYPosition): void;
  /** A point's drag starts: one undo step for the whole drag. */
  beginRerouteDrag(): void;
  /** Move a point (no undo step of its own: see beginRerouteDrag). */
  moveReroute(node: string, input: string, index: number, point: XYPosition): void;
  removeReroute(node: string, input: string, index: number): void;
  clearReroutes(node: string, input: string): void;
}

function rectOf(item: CanvasNode, fallback = GROUP_SIZE): Rect {
  return { ...item.position, ...itemSize(item, fallback) };
}

/** What lies inside a group: items whose top-left corner is in its rectangle, and reroute points. */
export function membersOf(group: GroupNode, state: Pick<EditorState, "nodes" | "notes" | "groups">): GroupMembers {
  const rect = rectOf(group);
  const items = itemsInside(rect, [...state.nodes, ...state.notes, ...state.groups], group.id);
  const points: PointRef[] = [];
  for (const node of state.nodes) {
    for (const [input, list] of Object.entries(reroutesOf(node.data.ui))) {
      list.forEach(([x, y], index) => containsPoint(rect, { x, y }) && points.push({ node: node.id, input, index }));
    }
  }
  return { items, points };
}

type Items = { nodes: GraphNode[]; notes: NoteNode[]; groups: GroupNode[] };

/**
 * Move what the moved groups carry by as much as each group moved. `current` holds the items after
 * React Flow's changes; `before` the state before them (its `groupDrag`, else the geometry there,
 * says what each group carries); items in `moving` moved by themselves already.
 */
export function carryMembers(
  current: Items,
  before: Pick<EditorState, "nodes" | "notes" | "groups" | "groupDrag">,
  deltas: Map<string, { dx: number; dy: number }>,
  moving: Set<string>,
): Items {
  const shift = new Map<string, { dx: number; dy: number }>();
  const pointShift = new Map<string, Map<string, Map<number, { dx: number; dy: number }>>>();
  for (const [groupId, delta] of deltas) {
    const group = before.groups.find((g) => g.id === groupId);
    if (!group) continue;
    const members = before.groupDrag?.[groupId] ?? membersOf(group, before);
    for (const id of members.items) if (!moving.has(id) && !shift.has(id)) shift.set(id, delta);
    for (const { node, input, index } of members.points) {
      const inputs = pointShift.get(node) ?? pointShift.set(node, new Map()).get(node)!;
      const indexes = inputs.get(input) ?? inputs.set(input, new Map()).get(input)!;
      if (!indexes.has(index)) indexes.set(index, delta);
    }
  }
  const move = <T extends CanvasNode>(item: T): T => {
    const d = shift.get(item.id);
    return d ? { ...item, position: { x: item.position.x + d.dx, y: item.position.y + d.dy } } : item;
  };
  const nodes = current.nodes.map((node) => {
    const moved = move(node);
    const inputs = pointShift.get(node.id);
    if (!inputs) return moved;
    const reroutes = { ...(node.data.ui[REROUTES_KEY] as Record<string, unknown>) };
    for (const [input, list] of Object.entries(reroutesOf(node.data.ui))) {
      const indexes = inputs.get(input);
      if (indexes) reroutes[input] = list.map(([x, y], i) => (indexes.has(i) ? [x + indexes.get(i)!.dx, y + indexes.get(i)!.dy] : [x, y]));
    }
    return { ...moved, data: { ...moved.data, ui: { ...moved.data.ui, [REROUTES_KEY]: reroutes } } };
  });
  return { nodes, notes: current.notes.map(move), groups: current.groups.map(move) };
}

export const createAnnotationsSlice: Slice<AnnotationsSlice> = (set, get) => {
  const takenIds = () => new Set([...get().nodes, ...get().notes, ...get().groups].map((n) => n.id));
  const updateNote = (id: string, update: (note: NoteNode) => NoteNode) =>
    set((s) => ({ notes: s.notes.map((n) => (n.id === id ? update(n) : n)), dirty: true }));
  const updateGroup = (id: string, update: (group: GroupNode) => GroupNode) =>
    set((s) => ({ groups: s.groups.map((g) => (g.id === id ? update(g) : g)), dirty: true }));
  const updateReroutes = (node: string, input: string, change: (points: [number, number][]) => [number, number][]) => {
    const target = get().nodes.find((n) => n.id === node);
    if (!target) return;
    const points = change(reroutesOf(target.data.ui)[input] ?? []);
    const reroutes = { ...((target.data.ui[REROUTES_KEY] as Record<string, unknown> | undefined) ?? {}) };
    if (points.length) reroutes[input] = points;
    else delete reroutes[input];
    const ui = { ...target.data.ui };
    if (Object.keys(reroutes).length) ui[REROUTES_KEY] = reroutes;
    else delete ui[REROUTES_KEY];
    set((s) => ({ nodes: s.nodes.map((n) => (n.id === node ? { ...n, data: { ...n.data, ui } } : n)), dirty: true }));
  };
  const unselectAll = () => ({
    nodes: get().nodes.map((n) => (n.selected ? { ...n, selected: false } : n)),
    notes: get().notes.map((n) => (n.selected ? { ...n, selected: false } : n)),
    groups: get().groups.map((g) => (g.selected ? { ...g, selected: false } : g)),
  });

  return {
    editingNote: null,
    groupDrag: null,

    addNote: (position, text = "") => {
      const docId = freshNodeId("note", new Set(get().notes.map((n) => n.data.id)));
      const note = { ...makeNote(canvasItemId(NOTE_PREFIX, docId, takenIds()), { id: docId, text, ...position, ...NOTE_SIZE }), selected: true };
      get().remember();
      const cleared = unselectAll();
      set({ ...cleared, notes: [...cleared.notes, note], editingNote: note.id, dirty: true });
      return note.id;
    },

    editNote: (id) => set({ editingNote: id }),

    setNoteText: (id, text) => {
      const note = get().notes.find((n) => n.id === id);
      if (!note || note.data.text === text) return;
      get().remember();
      updateNote(id, (n) => ({ ...n, data: { ...n.data, text } }));
    },

    addGroup: (position, title = "Group") => {
      const { nodes, notes } = get();
      const chosen: CanvasNode[] = [...nodes.filter((n) => n.selected), ...notes.filter((n) => n.selected)];
      const around = boundsAround(chosen.map((item) => rectOf(item, item.type === "lgnote" ? NOTE_SIZE : { width: 240, height: 160 })), GROUP_PADDING, GROUP_HEADER);
      const rect = around ?? (position ? { ...position, ...GROUP_SIZE } : null);
      if (!rect) return null;
      const docId = freshNodeId("group", new Set(get().groups.map((g) => g.data.id)));
      const group = { ...makeGroup(canvasItemId(GROUP_PREFIX, docId, takenIds()), { id: docId, title, ...rect }), selected: !around };
      get().remember();
      set((s) => ({ groups: [...s.groups, group], dirty: true }));
      return group.id;
    },

    setGroupTitle: (id, title) => {
      const group = get().groups.find((g) => g.id === id);
      if (!group || group.data.title === title) return;
      get().remember();
      updateGroup(id, (g) => ({ ...g, data: { ...g.data, title } }));
    },

    setItemColor: (id, color) => {
      const item = [...get().notes, ...get().groups].find((n) => n.id === id);
      if (!item || item.data.color === color) return;
      get().remember();
      const recolour = <T extends NoteNode | GroupNode>(n: T): T => {
        const data = { ...n.data };
        if (color === undefined) delete data.color;
        else data.color = color;
        return { ...n, data };
      };
      if (item.type === "lgnote") updateNote(id, recolour);
      else updateGroup(id, recolour);
    },

    deleteItem: (id) => {
      if (!get().notes.some((n) => n.id === id) && !get().groups.some((g) => g.id === id)) return;
      get().remember();
      set((s) => ({ notes: s.notes.filter((n) => n.id !== id), groups: s.groups.filter((g) => g.id !== id), dirty: true }));
    },

    beginDrag: (ids) => {
      get().remember();
      const dragged = get().groups.filter((g) => ids.includes(g.id));
      set({ groupDrag: dragged.length ? Object.fromEntries(dragged.map((g) => [g.id, membersOf(g, get())])) : null });
    },

    endDrag: () => set({ groupDrag: null }),

    addReroute: (node, input, index, point) => {
      get().remember();
      updateReroutes(node, input, (points) => {
        const at = Math.max(0, Math.min(index, points.length));
        return [...points.slice(0, at), [point.x, point.y], ...points.slice(at)];
      });
    },

    beginRerouteDrag: () => get().remember(),

    moveReroute: (node, input, index, point) =>
      updateReroutes(node, input, (points) => points.map((p, i) => (i === index ? [point.x, point.y] : p))),

    removeReroute: (node, input, index) => {
      get().remember();
      updateReroutes(node, input, (points) => points.filter((_, i) => i !== index));
    },

    clearReroutes: (node, input) => {
      get().remember();
      updateReroutes(node, input, () => []);
    },
  };
};
