/** The node palette: every catalog type, searchable, grouped by category, and the canvas's own
 * items (a note, a group); drag or click to add. */
import { useReactFlow } from "@xyflow/react";
import { useMemo, useState } from "react";
import { groupByCategory, searchNodeTypes } from "../search";
import { addGroup, addNode, addNote, useEditor } from "../store";
import { ITEM_DRAG_TYPE, NODE_DRAG_TYPE } from "./Canvas";

const CANVAS_ITEMS = [
  { item: "note", title: "Note", description: "Markdown text on the canvas (double-click it to edit)" },
  { item: "group", title: "Group", description: "A titled frame; dragging its title moves the nodes inside it. Around the selected nodes, if any" },
] as const;

export default function Palette() {
  const catalog = useEditor((s) => s.catalog);
  const [query, setQuery] = useState("");
  const [closed, setClosed] = useState<Set<string>>(new Set());
  const flow = useReactFlow();
  const groups = useMemo(() => groupByCategory(searchNodeTypes(catalog, query)), [catalog, query]);

  const centre = () => {
    const pane = document.querySelector(".canvas")?.getBoundingClientRect();
    return flow.screenToFlowPosition(pane ? { x: pane.left + pane.width / 2 - 130, y: pane.top + pane.height / 2 - 80 } : { x: 400, y: 300 });
  };
  const addAtCentre = (type: string) => addNode(type, centre());
  const addItem = (item: "note" | "group") => (item === "note" ? addNote(centre()) : addGroup(centre()));
  const words = query.trim().toLowerCase();
  const items = CANVAS_ITEMS.filter((i) => !words || `${i.title} ${i.description}`.toLowerCase().includes(words));

  return (
    <aside className="palette" aria-label="Node palette">
      <input
        className="field search"
        type="search"
        placeholder="Search nodes…"
        value={query}
        aria-label="Search nodes"
        onChange={(e) => setQuery(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && groups[0]) addAtCentre(groups[0][1][0].type);
        }}
      />
      <div className="palette-list">
        {items.length > 0 && (
          <section className="palette-group">
            <div className="palette-category static">canvas</div>
            {items.map((i) => (
              <div
                key={i.item}
                className="palette-item canvas-item"
                role="button"
                tabIndex={0}
                draggable
                data-item={i.item}
                title={`${i.description}\n\nDrag onto the canvas, or click to add in the middle`}
                onDragStart={(e) => {
                  e.dataTransfer.setData(ITEM_DRAG_TYPE, i.item);
                  e.dataTransfer.effectAllowed = "copy";
                }}
                onClick={() => addItem(i.item)}
                onKeyDown={(e) => e.key === "Enter" && addItem(i.item)}
              >
                <span className="palette-title">{i.title}</span>
              </div>
            ))}
          </section>
        )}
        {groups.map(([category, specs]) => {
          const open = query !== "" || !closed.has(category);
          return (
            <section key={category} className="palette-group">
              <button
                className="palette-category"
                aria-expanded={open}
                onClick={() => setClosed((c) => { const next = new Set(c); if (next.has(category)) next.delete(category); else next.add(category); return next; })}
              >
                <span>{open ? "▾" : "▸"}</span> {category} <span className="count">{specs.length}</span>
              </button>
              {open &&
                specs.map((spec) => (
                  <div
                    key={spec.type}
                    className="palette-item"
                    role="button"
                    tabIndex={0}
                    draggable
                    data-type={spec.type}
                    title={`${spec.description}\n\n${spec.type} — drag onto the canvas, or click to add in the middle`}
                    onDragStart={(e) => {
                      e.dataTransfer.setData(NODE_DRAG_TYPE, spec.type);
                      e.dataTransfer.effectAllowed = "copy";
                    }}
                    onClick={() => addAtCentre(spec.type)}
                    onKeyDown={(e) => e.key === "Enter" && addAtCentre(spec.type)}
                  >
                    <span className="palette-title">{spec.title}</span>
                    <span className="palette-type">{spec.type}</span>
                  </div>
                ))}
            </section>
          );
        })}
        {!groups.length && <div className="empty">{Object.keys(catalog).length ? "No node matches." : "Loading the catalog…"}</div>}
      </div>
    </aside>
  );
}
