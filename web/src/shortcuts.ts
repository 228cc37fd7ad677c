/** Keyboard shortcuts, one table: the handler and the tooltips both read it. */

export const isMac = typeof navigator !== "undefined" && /Mac|iPhone|iPad/.test(navigator.platform);
const mod = isMac ? "⌘" : "Ctrl";

export const SHORTCUTS = {
  run: `${mod}+Enter`,
  save: `${mod}+S`,
  saveAs: `${mod}+Shift+S`,
  open: `${mod}+O`,
  undo: `${mod}+Z`,
  redo: `${mod}+Shift+Z / ${mod}+Y`,
  copy: `${mod}+C`,
  paste: `${mod}+V`,
  selectAll: `${mod}+A`,
  delete: "Delete / Backspace",
  layout: "Shift+L",
  fit: "Shift+F",
  search: "Double-click the canvas / Space",
} as const;

/** "Label (shortcut)" for a title attribute. */
export function withShortcut(label: string, key: keyof typeof SHORTCUTS): string {
  return `${label} (${SHORTCUTS[key]})`;
}
