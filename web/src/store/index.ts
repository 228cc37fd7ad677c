/**
 * The editor's one store (zustand), composed of slices, one file each:
 *
 * | slice         | state                                                        |
 * |---------------|--------------------------------------------------------------|
 * | catalog.ts    | node types from the server                                   |
 * | document.ts   | nodes, edges, notes, groups, meta, saved name, dirty, clipboard; graph edits, bypass/mute |
 * | annotations.ts| note text, group titles and colours, group drags, reroute points |
 * | undo.ts       | undo/redo snapshots of the document                           |
 * | seeds.ts      | seed control-after-generate (no state: rules live in node ui) |
 * | run.ts        | the followed run: node statuses, progress, previews, outputs, errors |
 * | queue.ts      | connection, queue, run history (gallery)                     |
 * | ui.ts         | toasts, search popup, lightbox, dialogs, mask painter, side panel, fit requests |
 *
 * Components read state with `useEditor((s) => s.field)` and call the actions exported below
 * (the same functions as `useEditor.getState().action`). Actions are plain state changes; talking
 * to the server is session.ts's job.
 */
import { create } from "zustand";
import { createAnnotationsSlice } from "./annotations";
import { createCatalogSlice } from "./catalog";
import { createDocumentSlice } from "./document";
import { createQueueSlice } from "./queue";
import { createRunSlice } from "./run";
import { createSeedsSlice } from "./seeds";
import type { EditorState } from "./state";
import { createUiSlice } from "./ui";
import { createUndoSlice } from "./undo";

export const useEditor = create<EditorState>()((...a) => ({
  ...createCatalogSlice(...a),
  ...createDocumentSlice(...a),
  ...createAnnotationsSlice(...a),
  ...createUndoSlice(...a),
  ...createSeedsSlice(...a),
  ...createRunSlice(...a),
  ...createQueueSlice(...a),
  ...createUiSlice(...a),
}));

// Actions (and queries) as plain functions: they are created once with the store and stay the same.
export const {
  // catalog
  setCatalog,
  inputSpecOf,
  outputTypeOf,
  // document
  currentWorkflow,
  openWorkflow,
  newWorkflow,
  markSaved,
  setWorkflowName,
  onNodesChange,
  onEdgesChange,
  beginMove,
  connectionRefusal,
  connect,
  addNode,
  setInput,
  setTitle,
  setNodeUi,
  setMode,
  toggleMode,
  toggleSocket,
  deleteSelected,
  selectAll,
  copySelected,
  paste,
  autoLayout,
  // annotations
  addNote,
  editNote,
  setNoteText,
  addGroup,
  setGroupTitle,
  setItemColor,
  deleteItem,
  beginDrag,
  endDrag,
  addReroute,
  beginRerouteDrag,
  moveReroute,
  removeReroute,
  clearReroutes,
  // undo
  undo,
  redo,
  // seeds
  setSeedControl,
  advanceSeeds,
  // run
  showValidationErrors,
  applyRunEvent,
  showLiveRun,
  finishRun,
  // queue
  setConnection,
  setQueue,
  setRunHistory,
  // ui
  toast,
  dismissToast,
  openSearch,
  closeSearch,
  openLightbox,
  closeLightbox,
  openDialog,
  closeDialog,
  showImportReport,
  openContextMenu,
  closeContextMenu,
  focusNodes,
  openMaskPainter,
  closeMaskPainter,
  showPanel,
  requestFit,
} = useEditor.getState();

export type { EditorState } from "./state";
export { isWidget } from "./catalog";
export type { OpenOptions } from "./document";
export type { ConnectionState } from "./queue";
export type { NodeErrors, NodeRunState, NodeRunStatus } from "./run";
export { randomSeed, SEED_CONTROL_KEY, seedControlOf, type SeedControl } from "./seeds";
export type { ContextMenuState, ContextTarget, DialogKind, MaskTarget, PanelKind, PendingLink, SearchPopup, Toast } from "./ui";
export { ITEM_COLOURS, type GroupMembers, type PointRef } from "./annotations";
