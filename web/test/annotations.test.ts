import { beforeEach, describe, expect, it } from "vitest";
import {
  autoLayout,
  addGroup,
  addNote,
  addReroute,
  beginDrag,
  beginRerouteDrag,
  clearReroutes,
  connect,
  copySelected,
  currentWorkflow,
  deleteItem,
  deleteSelected,
  endDrag,
  moveReroute,
  onEdgesChange,
  onNodesChange,
  openWorkflow,
  paste,
  redo,
  removeReroute,
  setCatalog,
  setGroupTitle,
  setItemColor,
  setNoteText,
  toggleMode,
  toggleSocket,
  undo,
  useEditor,
} from "../src/store";
import type { Catalog, NodeTypeSpec, Workflow } from "../src/types";

const spec = (type: string, inputs: NodeTypeSpec["inputs"], outputs: [string, string][]): NodeTypeSpec => ({
  type, version: 1, category: "test", title: type, description: type, output_node: outputs.length === 0,
  inputs, outputs: outputs.map(([name, t]) => ({ name, type: t })),
});
const CATALOG: Catalog = Object.fromEntries([
  spec("int_constant", [{ name: "value", type: "INT", required: true, link_only: false, default: 0 }], [["value", "INT"]]),
  spec("show_value", [{ name: "value", type: "INT", required: true, link_only: true }], []),
].map((s) => [s.type, s]));

/** Constants a, b (inside group g, with a note and a small group), c outside; show nodes fed by
 * them, one link with a reroute point inside g and one outside. */
const DOC: Workflow = {
  format: "latentgraph/workflow@1",
  meta: {
    name: "annotated",
    notes: [{ id: "n", text: "hello", x: 100, y: 200, width: 200, height: 100 }],
    groups: [
      { id: "g", title: "Inputs", x: -50, y: -50, width: 700, height: 400, color: "#4c8a56" },
      { id: "inner", title: "Inner", x: 10, y: 10, width: 50, height: 50 },
    ],
  },
  nodes: {
    a: { type: "int_constant", inputs: { value: 1 } },
    b: { type: "int_constant", inputs: { value: 2 } },
    c: { type: "int_constant", inputs: { value: 3 } },
    show: { type: "show_value", inputs: { value: { node: "a", output: "value" } } },
    show2: { type: "show_value", inputs: { value: { node: "c", output: "value" } } },
  },
  ui: {
    a: { x: 0, y: 0 },
    b: { x: 300, y: 100 },
    c: { x: 800, y: 0 },
    show: { x: 1200, y: 0, reroutes: { value: [[300, 300], [1000, 50]] } },
    show2: { x: 1200, y: 400 },
  },
};

const state = () => useEditor.getState();
const node = (id: string) => state().nodes.find((n) => n.id === id)!;
const group = (id: string) => state().groups.find((g) => g.data.id === id)!;
const note = (id: string) => state().notes.find((n) => n.data.id === id)!;
const select = (...ids: string[]) =>
  useEditor.setState((s) => ({
    nodes: s.nodes.map((n) => ({ ...n, selected: ids.includes(n.id) })),
    notes: s.notes.map((n) => ({ ...n, selected: ids.includes(n.id) })),
    groups: s.groups.map((g) => ({ ...g, selected: ids.includes(g.id) })),
  }));
const points = (id: string) => (currentWorkflow().ui![id] as { reroutes?: Record<string, number[][]> }).reroutes;
const drag = (id: string, x: number, y: number) => onNodesChange([{ type: "position", id, position: { x, y }, dragging: true }]);

beforeEach(() => {
  setCatalog(CATALOG);
  useEditor.setState({ nodes: [], edges: [], notes: [], groups: [], past: [], future: [], clipboard: null, toasts: [] });
  openWorkflow(structuredClone(DOC), { keepHistory: false });
});

describe("notes, groups and reroute points in the store", () => {
  it("opens them and gives the document back unchanged", () => {
    expect(currentWorkflow()).toEqual(DOC);
    expect(state().notes.map((n) => n.id)).toEqual(["note:n"]);
    expect(state().groups.map((g) => g.id)).toEqual(["group:g", "group:inner"]);
  });

  it("drags a group with what lay inside it when the drag began, and undoes that in one step", () => {
    beginDrag(["group:g"]);
    drag("group:g", 50, -50); // 100 to the right
    drag("group:g", 350, -40); // 300 more: its rectangle now covers c, which stays behind
    endDrag();
    expect(group("g").position).toEqual({ x: 350, y: -40 });
    expect(node("a").position).toEqual({ x: 400, y: 10 });
    expect(node("b").position).toEqual({ x: 700, y: 110 });
    expect(node("c").position).toEqual({ x: 800, y: 0 });
    expect(note("n").position).toEqual({ x: 500, y: 210 });
    expect(group("inner").position).toEqual({ x: 410, y: 20 });
    expect(points("show")).toEqual({ value: [[700, 310], [1000, 50]] });
    expect(node("show").position).toEqual({ x: 1200, y: 0 });
    expect(state().dirty).toBe(true);
    undo();
    expect(currentWorkflow()).toEqual(DOC);
  });

  it("moves a dragged member once, and a group moved by keys carries what is inside it", () => {
    select("group:g", "a");
    beginDrag(["group:g", "a"]);
    onNodesChange([
      { type: "position", id: "group:g", position: { x: -40, y: -50 }, dragging: true },
      { type: "position", id: "a", position: { x: 10, y: 0 }, dragging: true },
    ]);
    endDrag();
    expect(node("a").position).toEqual({ x: 10, y: 0 });
    expect(node("b").position).toEqual({ x: 310, y: 100 });
    onNodesChange([{ type: "position", id: "group:g", position: { x: -40, y: -45 }, dragging: false }]); // an arrow key
    expect(node("b").position).toEqual({ x: 310, y: 105 });
  });

  it("resizes a group (from any side) without moving its nodes", () => {
    onNodesChange([
      { type: "position", id: "group:g", position: { x: -100, y: -80 } },
      { type: "dimensions", id: "group:g", dimensions: { width: 750, height: 430 }, resizing: true, setAttributes: true },
    ]);
    expect(node("a").position).toEqual({ x: 0, y: 0 });
    expect((currentWorkflow().meta!.groups as unknown[])[0]).toEqual({ id: "g", title: "Inputs", x: -100, y: -80, width: 750, height: 430, color: "#4c8a56" });
    expect(state().dirty).toBe(true);
  });

  it("makes a group around the selection, renames, recolours and deletes it, keeping its nodes", () => {
    select("a", "b", "note:n");
    const id = addGroup()!;
    // Nodes not measured yet count as 240x160; the note has its size. Padding 24, title bar 34.
    expect(state().groups.find((g) => g.id === id)!.position).toEqual({ x: -24, y: -58 });
    expect((currentWorkflow().meta!.groups as unknown[])[2]).toEqual({ id: "group", title: "Group", x: -24, y: -58, width: 588, height: 382 });
    setGroupTitle(id, "Seeds");
    setItemColor(id, "#8a4aa3");
    expect((currentWorkflow().meta!.groups as { title: string; color: string }[])[2]).toMatchObject({ title: "Seeds", color: "#8a4aa3" });
    setItemColor(id, undefined);
    expect((currentWorkflow().meta!.groups as object[])[2]).not.toHaveProperty("color");
    select(id);
    deleteSelected();
    expect(state().groups.map((g) => g.id)).toEqual(["group:g", "group:inner"]);
    expect(Object.keys(currentWorkflow().nodes)).toEqual(["a", "b", "c", "show", "show2"]);
    onNodesChange([{ type: "remove", id: "group:g" }]); // the Delete key, through React Flow
    expect(state().groups.map((g) => g.id)).toEqual(["group:inner"]);
    expect(state().nodes).toHaveLength(5);
    expect(addGroup({ x: 5, y: 6 })).toBe("group:group"); // nothing selected: an empty group there
  });

  it("adds, edits, recolours and deletes notes, one undo step each", () => {
    const id = addNote({ x: 7, y: 8 });
    expect(state().editingNote).toBe(id);
    setNoteText(id, "**new**");
    setItemColor(id, "#a34b4b");
    expect((currentWorkflow().meta!.notes as unknown[])[1]).toEqual({ id: "note", text: "**new**", x: 7, y: 8, width: 280, height: 160, color: "#a34b4b" });
    undo();
    undo();
    expect((currentWorkflow().meta!.notes as unknown[])[1]).toEqual({ id: "note", text: "", x: 7, y: 8, width: 280, height: 160 });
    redo();
    deleteItem("note:n");
    expect((currentWorkflow().meta!.notes as { id: string }[]).map((n) => n.id)).toEqual(["note"]);
    deleteItem(id);
    expect(currentWorkflow().meta).not.toHaveProperty("notes");
  });

  it("adds, moves and removes reroute points", () => {
    addReroute("show2", "value", 0, { x: 1000, y: 200 });
    addReroute("show2", "value", 1, { x: 1100, y: 300 });
    addReroute("show2", "value", 1, { x: 1050, y: 250 });
    expect(points("show2")).toEqual({ value: [[1000, 200], [1050, 250], [1100, 300]] });
    const steps = state().past.length;
    beginRerouteDrag();
    moveReroute("show2", "value", 1, { x: 1, y: 2 });
    moveReroute("show2", "value", 1, { x: 3, y: 4 });
    expect(state().past.length).toBe(steps + 1); // a drag is one step
    removeReroute("show2", "value", 0);
    expect(points("show2")).toEqual({ value: [[3, 4], [1100, 300]] });
    clearReroutes("show2", "value");
    expect(currentWorkflow().ui!.show2).toEqual({ x: 1200, y: 400 });
    undo();
    undo();
    undo();
    expect(points("show2")).toEqual({ value: [[1000, 200], [1050, 250], [1100, 300]] });
  });

  it("drops a link's points when the link is deleted or fed from elsewhere, not otherwise", () => {
    expect(connect({ source: "a", sourceHandle: "value", target: "show", targetHandle: "value" })).toBe(true); // the same link again
    expect(points("show")).toEqual({ value: [[300, 300], [1000, 50]] });
    connect({ source: "b", sourceHandle: "value", target: "show", targetHandle: "value" });
    expect(points("show")).toBeUndefined();
    undo();
    onEdgesChange([{ type: "remove", id: state().edges.find((e) => e.target === "show")!.id }]);
    expect(points("show")).toBeUndefined();
    undo();
    select("a");
    deleteSelected(); // the source goes, and its link with it
    expect(points("show")).toBeUndefined();
  });

  it("bypasses and mutes the selection, and toggles back when all of it is in that mode", () => {
    select("a", "b");
    expect(toggleMode("bypass")).toBe(2);
    expect(currentWorkflow().nodes.a).toEqual({ type: "int_constant", inputs: { value: 1 }, mode: "bypass" });
    toggleMode("bypass");
    expect(currentWorkflow().nodes.a).toEqual({ type: "int_constant", inputs: { value: 1 } });
    toggleMode("mute", ["a"]);
    toggleMode("mute"); // a is muted, b not: both muted
    expect([currentWorkflow().nodes.a.mode, currentWorkflow().nodes.b.mode]).toEqual(["mute", "mute"]);
    toggleMode("bypass");
    expect([currentWorkflow().nodes.a.mode, currentWorkflow().nodes.b.mode]).toEqual(["bypass", "bypass"]);
    select();
    expect(toggleMode("bypass")).toBe(0);
    undo();
    expect([currentWorkflow().nodes.a.mode, currentWorkflow().nodes.b.mode]).toEqual(["mute", "mute"]);
  });

  it("copies and pastes notes, groups and the points of the links copied along", () => {
    select("a", "show", "note:n", "group:inner", "c");
    expect(copySelected()).toBe(5);
    expect(paste({ x: 0, y: 1000 })).toBe(5);
    const doc = currentWorkflow();
    // The top-left item (a at 0,0) lands at 0,1000: everything moves by (0, 1000).
    expect(doc.nodes.show_value).toEqual({ type: "show_value", inputs: { value: { node: "int_constant", output: "value" } } });
    expect(doc.ui!.show_value).toEqual({ x: 1200, y: 1000, reroutes: { value: [[300, 1300], [1000, 1050]] } });
    expect((doc.meta!.notes as unknown[])[1]).toEqual({ id: "note", text: "hello", x: 100, y: 1200, width: 200, height: 100 });
    expect((doc.meta!.groups as unknown[])[2]).toEqual({ id: "group", title: "Inner", x: 10, y: 1010, width: 50, height: 50 });
    // A node pasted without the source of its link gets neither the link nor its points.
    select("show");
    copySelected();
    paste({ x: 0, y: 0 });
    expect(currentWorkflow().ui!.show_value_2).toEqual({ x: 0, y: 0 });
  });

  it("arranging nodes drops the points of the links it moved, and leaves notes and groups alone", () => {
    autoLayout();
    expect(points("show")).toBeUndefined();
    expect(currentWorkflow().meta).toEqual(DOC.meta);
    undo();
    expect(points("show")).toEqual({ value: [[300, 300], [1000, 50]] });
  });

  it("turning a linked widget back into a widget drops the link's points", () => {
    connect({ source: "a", sourceHandle: "value", target: "b", targetHandle: "value" });
    addReroute("b", "value", 0, { x: 100, y: 50 });
    expect(points("b")).toEqual({ value: [[100, 50]] });
    toggleSocket("b", "value");
    expect(currentWorkflow().nodes.b.inputs.value).toBe(2);
    expect(points("b")).toBeUndefined();
  });
});
