/**
 * The shape of the one editor store: the union of its slices. Each slice file declares its own
 * state and actions and a creator; index.ts composes them. Slices reach each other through `get()`.
 */
import type { StateCreator } from "zustand";
import type { AnnotationsSlice } from "./annotations";
import type { CatalogSlice } from "./catalog";
import type { DocumentSlice } from "./document";
import type { QueueSlice } from "./queue";
import type { RunSlice } from "./run";
import type { SeedsSlice } from "./seeds";
import type { UiSlice } from "./ui";
import type { UndoSlice } from "./undo";

export type EditorState = CatalogSlice & DocumentSlice & AnnotationsSlice & UndoSlice & SeedsSlice & RunSlice & QueueSlice & UiSlice;

/** A slice creator: sees (and may set) the whole store, returns its own part. */
export type Slice<T> = StateCreator<EditorState, [], [], T>;
