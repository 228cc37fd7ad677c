/** Undo slice: snapshots of the document (nodes, edges, notes, groups, meta) before each edit, and
 * undo/redo. Document, annotation and seed actions call `remember()` before they change the graph. */
import type { GraphEdge, GraphNode, GroupNode, NoteNode } from "../workflow";
import { linkedInputsOf } from "./document";
import type { Slice } from "./state";

export interface Snapshot {
  nodes: GraphNode[];
  edges: GraphEdge[];
  notes: NoteNode[];
  groups: GroupNode[];
  meta: Record<string, unknown>;
}

export interface UndoSlice {
  past: Snapshot[];
  future: Snapshot[];
  /** Record the present document for undo before a change. Changes with the same key within a
   * second (typing in one field) make one undo step. */
  remember(coalesceKey?: string): void;
  undo(): void;
  redo(): void;
}

const HISTORY_LIMIT = 100;
const COALESCE_MS = 1000;

export const createUndoSlice: Slice<UndoSlice> = (set, get) => {
  let lastCoalesceKey: string | null = null;
  let lastCoalesceTime = 0;
  const snapshot = (): Snapshot => {
    const { nodes, edges, notes, groups, meta } = get();
    return { nodes, edges, notes, groups, meta };
  };
  return {
    past: [],
    future: [],

    remember: (coalesceKey) => {
      const now = Date.now();
      if (coalesceKey && coalesceKey === lastCoalesceKey && now - lastCoalesceTime < COALESCE_MS) {
        lastCoalesceTime = now;
        return;
      }
      lastCoalesceKey = coalesceKey ?? null;
      lastCoalesceTime = now;
      set((s) => ({ past: [...s.past.slice(-HISTORY_LIMIT + 1), snapshot()], future: [] }));
    },

    undo: () => {
      const { past, future } = get();
      const previous = past[past.length - 1];
      if (!previous) return;
      lastCoalesceKey = null;
      set({ past: past.slice(0, -1), future: [snapshot(), ...future], ...previous, linkedInputs: linkedInputsOf(previous.edges), dirty: true });
    },

    redo: () => {
      const { past, future } = get();
      const next = future[0];
      if (!next) return;
      lastCoalesceKey = null;
      set({ past: [...past, snapshot()], future: future.slice(1), ...next, linkedInputs: linkedInputsOf(next.edges), dirty: true });
    },
  };
};
