/**
 * UI slice: transient state that is not part of the document and not saved: toasts, the node
 * search popup, the lightbox, the modal dialog, the mask painter, the side panel's tab, and
 * requests to fit the view.
 */
import type { XYPosition } from "@xyflow/react";
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

export type DialogKind = "open" | "save-as";

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
  maskPainter: MaskTarget | null;
  panel: PanelKind;
  /** Bumped when the canvas should fit the view (a workflow was opened, nodes were arranged). */
  fitRequest: number;

  /** Show a message for a few seconds (errors longer); at most three at a time. */
  toast(text: string, kind?: Toast["kind"]): void;
  dismissToast(id: number): void;
  openSearch(search: SearchPopup): void;
  closeSearch(): void;
  openLightbox(image: ImageRef, runId?: string): void;
  closeLightbox(): void;
  openDialog(dialog: DialogKind): void;
  closeDialog(): void;
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
    maskPainter: null,
    panel: "gallery",
    fitRequest: 0,

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
    openMaskPainter: (maskPainter) => set({ maskPainter, search: null }),
    closeMaskPainter: () => set({ maskPainter: null }),
    showPanel: (panel) => set({ panel }),
    requestFit: () => set((s) => ({ fitRequest: s.fitRequest + 1 })),
  };
};
