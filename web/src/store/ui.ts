/**
 * UI slice: transient state that is not part of the document and not saved: toasts, the node
 * search popup, the context menu, the lightbox, the modal dialog (and the import report it may
 * show), the mask painter, the side panel's tab, and requests to fit or focus the view.
 */
import type { XYPosition } from "@xyflow/react";
import { reportIsEmpty, type ImportReport } from "../importing";
import type { ImageRef } from "../types";
import type { Slice } from "./state";

export interface Toast {
  id: number;
  kind: "error" | "info";
  text: string;
}

/** Where a dragged link came from, when it was dropped on empty canvas (search offers matches). */
export interface PendingLink {
  node: string;
  handle: string;
  handleType: "source" | "target";
  portType: string;
}

export interface SearchPopup {
  screen: XYPosition; // where the popup shows
  flow: XYPosition; // where the node goes
  link?: PendingLink;
}

export type DialogKind = "open" | "save-as" | "import-report";

/** What a right-click was on. An edge target says where a new reroute point would go. */
export type ContextTarget =
  | { kind: "pane" }
  | { kind: "node"; id: string }
  | { kind: "note"; id: string }
  | { kind: "group"; id: string }
  | { kind: "edge"; id: string; node: string; input: string; insert: { index: number; point: XYPosition } }
  | { kind: "reroute"; node: string; input: string; index: number };

export interface ContextMenuState {
  screen: XYPosition;
  flow: XYPosition;
  target: ContextTarget;
}

/** The image input the mask painter edits: the node, its input, and the image it had when opened. */
export interface MaskTarget {
  nodeId: string;
  input: string;
  image: string;
}
export type PanelKind = "queue" | "gallery";

export interface UiSlice {
  toasts: Toast[];
  search: SearchPopup | null;
  lightbox: { image: ImageRef; runId?: string } | null;
  dialog: DialogKind | null;
  /** The converter's report on the file imported last (shown by the "import-report" dialog). */
  importReport: { fileName: string; report: ImportReport } | null;
  contextMenu: ContextMenuState | null;
  maskPainter: MaskTarget | null;
  panel: PanelKind;
  /** Bumped when the canvas should fit the view (a workflow was opened, nodes were arranged). */
  fitRequest: number;
  /** Nodes the view should show (a click in the import report); `n` tells requests apart. */
  focusRequest: { ids: string[]; n: number } | null;

  /** Show a message for a few seconds (errors longer); at most three at a time. */
  toast(text: string, kind?: Toast["kind"]): void;
  dismissToast(id: number): void;
  openSearch(search: SearchPopup): void;
  closeSearch(): void;
  openLightbox(image: ImageRef, runId?: string): void;
  closeLightbox(): void;
  openDialog(dialog: DialogKind): void;
  closeDialog(): void;
  /** Keep an import's report and show it, unless it has nothing to say. */
  showImportReport(fileName: string, report: ImportReport): void;
  openContextMenu(menu: ContextMenuState): void;
  closeContextMenu(): void;
  /** Zoom to these nodes and select them. */
  focusNodes(ids: string[]): void;
  openMaskPainter(target: MaskTarget): void;
  closeMaskPainter(): void;
  showPanel(panel: PanelKind): void;
  requestFit(): void;
}

export const createUiSlice: Slice<UiSlice> = (set, get) => {
  let toastCounter = 0;
  return {
    toasts: [],
    search: null,
    lightbox: null,
    dialog: null,
    importReport: null,
    contextMenu: null,
    maskPainter: null,
    panel: "gallery",
    fitRequest: 0,
    focusRequest: null,

    toast: (text, kind = "info") => {
      const id = ++toastCounter;
      set((s) => ({ toasts: [...s.toasts.slice(-2), { id, kind, text }] }));
      setTimeout(() => get().dismissToast(id), kind === "error" ? 8000 : 3000);
    },
    dismissToast: (id) => set((s) => ({ toasts: s.toasts.filter((t) => t.id !== id) })),
    openSearch: (search) => set({ search }),
    closeSearch: () => set({ search: null }),
    openLightbox: (image, runId) => set({ lightbox: { image, runId } }),
    closeLightbox: () => set({ lightbox: null }),
    openDialog: (dialog) => set({ dialog }),
    closeDialog: () => set({ dialog: null }),
    showImportReport: (fileName, report) =>
      set({ importReport: { fileName, report }, ...(reportIsEmpty(report) ? {} : { dialog: "import-report" as const }) }),
    openContextMenu: (contextMenu) => set({ contextMenu, search: null }),
    closeContextMenu: () => set({ contextMenu: null }),
    focusNodes: (ids) => {
      const chosen = new Set(ids);
      set((s) => ({
        nodes: s.nodes.map((n) => (chosen.has(n.id) !== !!n.selected ? { ...n, selected: chosen.has(n.id) } : n)),
        focusRequest: { ids, n: (s.focusRequest?.n ?? 0) + 1 },
      }));
    },
    openMaskPainter: (maskPainter) => set({ maskPainter, search: null }),
    closeMaskPainter: () => set({ maskPainter: null }),
    showPanel: (panel) => set({ panel }),
    requestFit: () => set((s) => ({ fitRequest: s.fitRequest + 1 })),
  };
};
