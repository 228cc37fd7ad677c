/**
 * Keyboard shortcuts, one table. The key handler (`handleShortcut`, installed by App.tsx), the
 * canvas's delete keys, the tooltips, the hints and the README's key list all read it: a new
 * shortcut is one entry here.
 *
 * Key combinations are written "mod+shift+z": `mod` is Ctrl or ⌘ (either counts, on any system).
 * A modifier the combination names must be held and one it does not name must not be; `mod?` and
 * `shift?` mean either. Alt is not looked at. The key is a letter or a `KeyboardEvent.key` name
 * ("Enter", "Escape", "Delete"; "Space" for " "), compared without case.
 */
import type { XYPosition } from "@xyflow/react";
import { run, saveOrAskName } from "./session";
import {
  addGroup,
  autoLayout,
  closeContextMenu,
  closeDialog,
  closeLightbox,
  closeMaskPainter,
  closeSearch,
  copySelected,
  openDialog,
  openSearch,
  paste,
  redo,
  selectAll,
  toggleMode,
  undo,
  useEditor,
} from "./store";

/** What a shortcut's action may use besides the store (App.tsx provides it). */
export interface ShortcutContext {
  /** The mouse's last position on screen. */
  pointer: XYPosition;
  /** Screen to canvas coordinates. */
  toFlow(point: XYPosition): XYPosition;
  fitView(): void;
  /** Whether no element has the focus (the page body has it). */
  bodyHasFocus(): boolean;
}

export interface Shortcut {
  /** Key combinations (tooltips show them all, joined with " / "). */
  keys: string[];
  /** What it does: the tooltip's text and the help line. */
  label: string;
  /** A mouse gesture that does the same, named before the keys. */
  gesture?: string;
  /** Fires also while typing in a field, or with a dialog or the search popup open. */
  anywhere?: boolean;
  /** Leave the browser's default action alone (copying selected text, for one). */
  keepDefault?: boolean;
  /** A further condition for it to fire. */
  when?(ctx: ShortcutContext): boolean;
  /** What it does. Absent where React Flow handles the keys itself (Canvas passes it `keys`). */
  action?(ctx: ShortcutContext): void;
}

const TABLE = {
  close: {
    keys: ["mod?+shift?+Escape"],
    label: "Close the search popup, the menu, the dialog or the image",
    anywhere: true,
    keepDefault: true,
    action: () => {
      closeSearch();
      closeContextMenu();
      closeLightbox();
      closeDialog();
      closeMaskPainter();
    },
  },
  run: { keys: ["mod+shift?+Enter"], label: "Queue a run of this workflow", anywhere: true, action: () => void run() },
  save: { keys: ["mod+s"], label: "Save on the server", anywhere: true, action: () => void saveOrAskName() },
  saveAs: { keys: ["mod+shift+s"], label: "Save under a new name", anywhere: true, action: () => openDialog("save-as") },
  open: { keys: ["mod+shift?+o"], label: "Open a saved workflow", anywhere: true, action: () => openDialog("open") },
  undo: { keys: ["mod+z"], label: "Undo", action: () => undo() },
  redo: { keys: ["mod+shift+z", "mod+shift?+y"], label: "Redo", action: () => redo() },
  copy: { keys: ["mod+shift?+c"], label: "Copy the selected nodes", keepDefault: true, action: () => void copySelected() },
  paste: { keys: ["mod+shift?+v"], label: "Paste at the mouse", action: (ctx) => void paste(ctx.toFlow(ctx.pointer)) },
  selectAll: { keys: ["mod+shift?+a"], label: "Select all nodes", action: () => selectAll() },
  delete: { keys: ["Delete", "Backspace"], label: "Delete the selected nodes, notes, groups and links" },
  bypass: {
    keys: ["mod+b"],
    label: "Bypass the selected nodes (their inputs pass through), or stop bypassing them",
    action: () => void toggleMode("bypass"),
  },
  mute: {
    keys: ["mod+m"],
    label: "Mute the selected nodes (they and what only they feed do not run), or unmute them",
    action: () => void toggleMode("mute"),
  },
  group: {
    keys: ["mod+g"],
    label: "Group the selected nodes (none selected: a new group at the mouse)",
    action: (ctx) => void addGroup(ctx.toFlow(ctx.pointer)),
  },
  layout: {
    keys: ["shift+l"],
    label: "Arrange nodes in layers (the selection, if several are selected)",
    keepDefault: true,
    action: () => autoLayout(),
  },
  fit: { keys: ["shift+f"], label: "Zoom to fit", keepDefault: true, action: (ctx) => ctx.fitView() },
  search: {
    keys: ["shift?+Space"],
    label: "Add a node",
    gesture: "Double-click the canvas",
    when: (ctx) => ctx.bodyHasFocus(),
    action: (ctx) => openSearch({ screen: ctx.pointer, flow: ctx.toFlow(ctx.pointer) }),
  },
} satisfies Record<string, Shortcut>;

export type ShortcutId = keyof typeof TABLE;
export const SHORTCUTS: Readonly<Record<ShortcutId, Shortcut>> = TABLE;

// ---- key combinations ---------------------------------------------------------------------------

export const isMac = typeof navigator !== "undefined" && /Mac|iPhone|iPad/.test(navigator.platform ?? "");

interface Combo {
  key: string;
  /** true: must be held, false: must not be, null: either. */
  mod: boolean | null;
  shift: boolean | null;
}

export function parseCombo(combo: string): Combo {
  const parts = combo.split("+");
  const name = parts.pop()!.toLowerCase();
  const parsed: Combo = { key: name === "space" ? " " : name, mod: false, shift: false };
  for (const part of parts) {
    const either = part.endsWith("?");
    const modifier = either ? part.slice(0, -1) : part;
    if (modifier !== "mod" && modifier !== "shift") throw new Error(`unknown modifier "${part}" in "${combo}"`);
    parsed[modifier] = either ? null : true;
  }
  return parsed;
}

/** The part of a keyboard event the handler reads. */
export type KeyEventLike = Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "shiftKey" | "target" | "preventDefault">;

export function comboMatches(combo: string, event: Pick<KeyEventLike, "key" | "ctrlKey" | "metaKey" | "shiftKey">): boolean {
  const { key, mod, shift } = parseCombo(combo);
  return (
    event.key.toLowerCase() === key &&
    (mod === null || mod === (event.ctrlKey || event.metaKey)) &&
    (shift === null || shift === event.shiftKey)
  );
}

/** A combination as people read it: "Ctrl+Shift+Z" (⌘ on a Mac); optional modifiers left out. */
export function comboText(combo: string, mac = isMac): string {
  const { key, mod, shift } = parseCombo(combo);
  const name = key === " " ? "Space" : key.length === 1 ? key.toUpperCase() : combo.split("+").pop()!;
  return [mod ? (mac ? "⌘" : "Ctrl") : "", shift ? "Shift" : "", name].filter(Boolean).join("+");
}

/** A shortcut's keys: "Ctrl+Shift+Z / Ctrl+Y". */
export function keysText(id: ShortcutId, mac = isMac): string {
  return SHORTCUTS[id].keys.map((combo) => comboText(combo, mac)).join(" / ");
}

/** Its keys, after its gesture if it has one: "Double-click the canvas / Space". */
export function shortcutText(id: ShortcutId, mac = isMac): string {
  return [SHORTCUTS[id].gesture, keysText(id, mac)].filter(Boolean).join(" / ");
}

/** A button's title: "Undo (Ctrl+Z)". */
export function tooltip(id: ShortcutId, mac = isMac): string {
  return `${SHORTCUTS[id].label} (${shortcutText(id, mac)})`;
}

// ---- the handler --------------------------------------------------------------------------------

/** Whether the event comes from a text field (where keys are typing). */
export function isTyping(target: EventTarget | null): boolean {
  const element = target as HTMLElement | null;
  return !!element && (element.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(element.tagName));
}

/** Whether a dialog, the mask painter or the search popup holds the keyboard. */
function overlayOpen(): boolean {
  const { dialog, search, maskPainter } = useEditor.getState();
  return !!dialog || !!search || !!maskPainter;
}

/** Run the shortcut a key event matches, if any may fire now; returns its id. */
export function handleShortcut(
  event: KeyEventLike,
  ctx: ShortcutContext,
  table: Readonly<Record<string, Shortcut>> = SHORTCUTS,
): string | null {
  const busy = isTyping(event.target) || overlayOpen();
  for (const [id, shortcut] of Object.entries(table)) {
    if (!shortcut.action || !shortcut.keys.some((combo) => comboMatches(combo, event))) continue;
    if ((busy && !shortcut.anywhere) || (shortcut.when && !shortcut.when(ctx))) continue;
    if (!shortcut.keepDefault) event.preventDefault();
    shortcut.action(ctx);
    return id;
  }
  return null;
}
