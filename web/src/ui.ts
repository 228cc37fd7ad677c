/** Transient UI state that is not part of the graph: dialogs, the search popup, the lightbox. */
import type { XYPosition } from "@xyflow/react";
import { create } from "zustand";
import type { ImageRef } from "./types";

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

export interface UiState {
  search: SearchPopup | null;
  lightbox: { image: ImageRef; runId?: string } | null;
  dialog: null | "open" | "save-as";
  panel: "queue" | "gallery";
}

export const useUi = create<UiState>(() => ({ search: null, lightbox: null, dialog: null, panel: "gallery" }));

export const openSearch = (search: SearchPopup) => useUi.setState({ search });
export const closeSearch = () => useUi.setState({ search: null });
export const openLightbox = (image: ImageRef, runId?: string) => useUi.setState({ lightbox: { image, runId } });
export const closeLightbox = () => useUi.setState({ lightbox: null });
export const openDialog = (dialog: UiState["dialog"]) => useUi.setState({ dialog });
export const closeDialog = () => useUi.setState({ dialog: null });
export const showPanel = (panel: UiState["panel"]) => useUi.setState({ panel });
