import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it, vi } from "vitest";

// The two shortcuts that talk to the server: replaced by spies (everything else acts on the store).
vi.mock("../src/session", () => ({ run: vi.fn(async () => true), saveOrAskName: vi.fn(async () => true) }));

import * as session from "../src/session";
import {
  comboMatches,
  comboText,
  handleShortcut,
  keysText,
  parseCombo,
  SHORTCUTS,
  shortcutText,
  tooltip,
  type KeyEventLike,
  type Shortcut,
  type ShortcutContext,
  type ShortcutId,
} from "../src/shortcuts";
import { addNode, useEditor } from "../src/store";

const WEB = join(__dirname, "..");
const state = () => useEditor.getState();
const ids = Object.keys(SHORTCUTS) as ShortcutId[];

type Target = { tagName: string; isContentEditable?: boolean };
const BODY: Target = { tagName: "BODY" };
const INPUT: Target = { tagName: "INPUT" };

/** A keydown event: "ctrl+shift+z", "meta+Enter", "Space", "shift+l" (target: where it happened). */
function press(combo: string, target: Target | null = BODY) {
  const parts = combo.split("+");
  let key = parts.pop()!;
  const shiftKey = parts.includes("shift");
  if (key === "Space") key = " ";
  else if (key.length === 1 && shiftKey) key = key.toUpperCase(); // what browsers report
  const event = {
    key,
    ctrlKey: parts.includes("ctrl"),
    metaKey: parts.includes("meta"),
    shiftKey,
    target: target as unknown as EventTarget,
    defaultPrevented: false,
    preventDefault() {
      event.defaultPrevented = true;
    },
  };
  return event satisfies KeyEventLike;
}

function context(overrides: Partial<ShortcutContext> = {}): ShortcutContext {
  return {
    pointer: { x: 10, y: 20 },
    toFlow: (p) => ({ x: p.x * 2, y: p.y * 2 }),
    fitView: vi.fn(),
    bodyHasFocus: () => true,
    ...overrides,
  };
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : /\.tsx?$/.test(name) ? [path] : [];
  });
}

beforeEach(() => {
  vi.clearAllMocks();
  useEditor.setState({ nodes: [], edges: [], notes: [], groups: [], past: [], future: [], clipboard: null, dialog: null, search: null, lightbox: null });
  addNode("a", { x: 0, y: 0 });
  addNode("b", { x: 300, y: 0 });
});

describe("the shortcut table", () => {
  it("reads its key combinations, with mod, shift and either", () => {
    expect(parseCombo("mod+shift+z")).toEqual({ key: "z", mod: true, shift: true });
    expect(parseCombo("shift?+Space")).toEqual({ key: " ", mod: false, shift: null });
    expect(parseCombo("mod?+shift?+Escape")).toEqual({ key: "escape", mod: null, shift: null });
    expect(() => parseCombo("alt+x")).toThrow(/unknown modifier/);
    for (const id of ids) for (const combo of SHORTCUTS[id].keys) expect(() => parseCombo(combo)).not.toThrow();
  });

  it("matches Ctrl and ⌘ alike as mod, and refuses a modifier mismatch", () => {
    expect(comboMatches("mod+z", press("ctrl+z"))).toBe(true);
    expect(comboMatches("mod+z", press("meta+z"))).toBe(true);
    expect(comboMatches("mod+z", press("z"))).toBe(false); // mod missing
    expect(comboMatches("mod+z", press("ctrl+shift+z"))).toBe(false); // shift not named
    expect(comboMatches("shift+l", press("l"))).toBe(false); // shift missing
    expect(comboMatches("shift+l", press("ctrl+shift+l"))).toBe(false); // mod not named
    expect(comboMatches("mod+shift?+Enter", press("ctrl+shift+Enter"))).toBe(true);
    expect(comboMatches("shift?+Space", press("Space"))).toBe(true);
  });

  it("gives every key event at most one shortcut", () => {
    const keys = new Set(ids.flatMap((id) => SHORTCUTS[id].keys.map((combo) => combo.split("+").pop()!)));
    for (const key of keys) {
      for (const mods of ["", "ctrl+", "meta+", "shift+", "ctrl+shift+", "meta+shift+"]) {
        const event = press(`${mods}${key}`);
        const matching = ids.filter((id) => SHORTCUTS[id].keys.some((combo) => comboMatches(combo, event)));
        expect(matching.length, `${mods}${key}: ${matching}`).toBeLessThanOrEqual(1);
      }
    }
  });

  it("names each shortcut's keys for people, Ctrl or ⌘", () => {
    expect(comboText("mod+shift+s", false)).toBe("Ctrl+Shift+S");
    expect(comboText("mod+shift+s", true)).toBe("⌘+Shift+S");
    expect(comboText("mod+shift?+Enter", false)).toBe("Ctrl+Enter");
    expect(keysText("redo", false)).toBe("Ctrl+Shift+Z / Ctrl+Y");
    expect(keysText("delete", false)).toBe("Delete / Backspace");
    expect(shortcutText("search", false)).toBe("Double-click the canvas / Space");
    expect(tooltip("undo", false)).toBe("Undo (Ctrl+Z)");
  });
});

describe("the key handler", () => {
  it("dispatches a matching entry's action, whatever the table", () => {
    const action = vi.fn();
    const table: Record<string, Shortcut> = { hello: { keys: ["mod+h"], label: "Hello", action } };
    const ctx = context();
    const event = press("ctrl+h");
    expect(handleShortcut(event, ctx, table)).toBe("hello");
    expect(action).toHaveBeenCalledWith(ctx);
    expect(event.defaultPrevented).toBe(true);

    expect(handleShortcut(press("h"), ctx, table)).toBeNull(); // mod missing
    expect(handleShortcut(press("ctrl+shift+h"), ctx, table)).toBeNull(); // shift not in the combination
    expect(handleShortcut(press("ctrl+j"), ctx, table)).toBeNull();
    expect(action).toHaveBeenCalledTimes(1);
  });

  it("leaves the browser's default where the entry says so, and skips entries without an action", () => {
    const action = vi.fn();
    const table: Record<string, Shortcut> = {
      canvas: { keys: ["Delete"], label: "handled elsewhere" },
      gentle: { keys: ["shift+g"], label: "Gentle", keepDefault: true, action },
    };
    expect(handleShortcut(press("Delete"), context(), table)).toBeNull();
    const event = press("shift+g");
    expect(handleShortcut(event, context(), table)).toBe("gentle");
    expect(event.defaultPrevented).toBe(false);
  });

  it("runs the table's actions on the store", () => {
    const ctx = context();
    expect(handleShortcut(press("ctrl+a"), ctx)).toBe("selectAll");
    expect(state().nodes.every((n) => n.selected)).toBe(true);

    expect(handleShortcut(press("ctrl+z"), ctx)).toBe("undo");
    expect(state().nodes.map((n) => n.id)).toEqual(["a"]);
    expect(handleShortcut(press("ctrl+shift+z"), ctx)).toBe("redo");
    expect(state().nodes.map((n) => n.id)).toEqual(["a", "b"]);
    handleShortcut(press("meta+z"), ctx);
    expect(handleShortcut(press("ctrl+y"), ctx)).toBe("redo");
    expect(state().nodes).toHaveLength(2);

    const fits = state().fitRequest;
    expect(handleShortcut(press("shift+l"), ctx)).toBe("layout");
    expect(state().fitRequest).toBe(fits + 1);
    expect(handleShortcut(press("shift+f"), ctx)).toBe("fit");
    expect(ctx.fitView).toHaveBeenCalledTimes(1);
  });

  it("bypasses, mutes and groups the selection", () => {
    useEditor.setState({ nodes: state().nodes.map((n) => ({ ...n, selected: n.id === "a" })) });
    expect(handleShortcut(press("ctrl+b"), context())).toBe("bypass");
    expect(state().nodes.map((n) => n.data.mode)).toEqual(["bypass", undefined]);
    expect(handleShortcut(press("meta+b"), context())).toBe("bypass");
    expect(state().nodes[0].data.mode).toBeUndefined();
    const mute = press("ctrl+m");
    expect(handleShortcut(mute, context())).toBe("mute");
    expect(mute.defaultPrevented).toBe(true);
    expect(state().nodes[0].data.mode).toBe("mute");
    expect(handleShortcut(press("ctrl+g"), context())).toBe("group");
    expect(state().groups).toHaveLength(1);
    expect(state().groups[0].position).toEqual({ x: -24, y: -58 }); // around a (240x160 until measured)
    useEditor.setState({ nodes: state().nodes.map((n) => ({ ...n, selected: false })) });
    handleShortcut(press("ctrl+g"), context({ pointer: { x: 50, y: 60 } }));
    expect(state().groups[1].position).toEqual({ x: 100, y: 120 }); // nothing selected: at the mouse
  });

  it("copies and pastes at the mouse", () => {
    useEditor.setState({ nodes: state().nodes.map((n) => ({ ...n, selected: n.id === "a" })) });
    const copy = press("ctrl+c");
    expect(handleShortcut(copy, context())).toBe("copy");
    expect(copy.defaultPrevented).toBe(false); // the browser copies selected text too
    expect(state().clipboard?.nodes.map((n) => n.id)).toEqual(["a"]);
    expect(handleShortcut(press("ctrl+v"), context({ pointer: { x: 50, y: 60 } }))).toBe("paste");
    expect(state().nodes.find((n) => n.id === "a_2")?.position).toEqual({ x: 100, y: 120 });
  });

  it("opens the search popup with Space only while no element has the focus", () => {
    expect(handleShortcut(press("Space"), context({ bodyHasFocus: () => false }))).toBeNull();
    expect(state().search).toBeNull();
    const event = press("Space");
    expect(handleShortcut(event, context())).toBe("search");
    expect(event.defaultPrevented).toBe(true);
    expect(state().search).toEqual({ screen: { x: 10, y: 20 }, flow: { x: 20, y: 40 } });
  });

  it("runs, saves and opens, even from a text field", () => {
    for (const target of [BODY, INPUT, { tagName: "TEXTAREA" }]) {
      vi.clearAllMocks();
      const run = press("ctrl+Enter", target);
      expect(handleShortcut(run, context())).toBe("run");
      expect(run.defaultPrevented).toBe(true);
      expect(session.run).toHaveBeenCalledTimes(1);
      expect(handleShortcut(press("meta+s", target), context())).toBe("save");
      expect(session.saveOrAskName).toHaveBeenCalledTimes(1);
      expect(handleShortcut(press("ctrl+shift+s", target), context())).toBe("saveAs");
      expect(state().dialog).toBe("save-as");
      expect(handleShortcut(press("ctrl+o", target), context())).toBe("open");
      expect(state().dialog).toBe("open");
      const escape = press("Escape", target);
      expect(handleShortcut(escape, context())).toBe("close");
      expect(state().dialog).toBeNull();
      expect(escape.defaultPrevented).toBe(false);
    }
  });

  it("leaves editing keys to a text field being typed in", () => {
    useEditor.setState({ clipboard: { nodes: [state().nodes[0]], edges: [] } });
    const before = state();
    for (const target of [INPUT, { tagName: "TEXTAREA" }, { tagName: "SELECT" }, { tagName: "DIV", isContentEditable: true }]) {
      for (const combo of ["ctrl+z", "ctrl+shift+z", "ctrl+y", "ctrl+c", "ctrl+v", "ctrl+a", "ctrl+b", "ctrl+m", "ctrl+g", "shift+l", "shift+f", "Space"]) {
        const event = press(combo, target);
        expect(handleShortcut(event, context()), `${combo} in ${target.tagName}`).toBeNull();
        expect(event.defaultPrevented).toBe(false);
      }
    }
    expect(state().nodes).toBe(before.nodes);
    expect(state().clipboard).toBe(before.clipboard);
    expect(state().search).toBeNull();
  });

  it("leaves editing keys alone while a dialog or the search popup is open; Escape closes them", () => {
    const nodes = state().nodes;
    useEditor.setState({ dialog: "open" });
    expect(handleShortcut(press("ctrl+z"), context())).toBeNull();
    expect(handleShortcut(press("Escape"), context())).toBe("close");
    expect(state().dialog).toBeNull();
    useEditor.setState({ search: { screen: { x: 0, y: 0 }, flow: { x: 0, y: 0 } } });
    expect(handleShortcut(press("ctrl+a"), context())).toBeNull();
    expect(handleShortcut(press("ctrl+shift+Escape"), context())).toBe("close");
    expect(state().search).toBeNull();
    expect(state().nodes).toBe(nodes);
  });
});

describe("one source for what the keys are", () => {
  it("takes every tooltip and hint that names a key from the table", () => {
    for (const file of sourceFiles(join(WEB, "src"))) {
      if (file.endsWith("shortcuts.ts")) continue;
      const text = readFileSync(file, "utf8");
      expect(text, file).not.toMatch(/Ctrl\+|Cmd\+|⌘|Shift\+[A-Z]|withShortcut|press Space/);
    }
    const toolbar = readFileSync(join(WEB, "src", "components", "Toolbar.tsx"), "utf8");
    const used = [...toolbar.matchAll(/title=\{tooltip\("(\w+)"\)\}/g)].map((m) => m[1]);
    expect(used.sort()).toEqual(["fit", "layout", "open", "redo", "run", "save", "saveAs", "undo"]);
    for (const id of ids) expect(tooltip(id, false)).toBe(`${SHORTCUTS[id].label} (${shortcutText(id, false)})`);
  });

  it("hands the keys it does not handle itself to the canvas", () => {
    const canvas = readFileSync(join(WEB, "src", "components", "Canvas.tsx"), "utf8");
    for (const id of ids.filter((id) => !SHORTCUTS[id].action)) expect(canvas).toContain(`SHORTCUTS.${id}.keys`);
  });

  it("lists every shortcut in the README as the table has it", () => {
    const readme = readFileSync(join(WEB, "README.md"), "utf8");
    for (const id of ids) expect(readme).toContain(`| ${shortcutText(id, false)} | ${SHORTCUTS[id].label} |`);
  });
});
