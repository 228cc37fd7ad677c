/** The node palette: every catalog type, searchable, grouped by category; drag or click to add. */
import { useReactFlow } from "@xyflow/react";
import { useMemo, useState } from "react";
import { groupByCategory, searchNodeTypes } from "../search";
import { addNode, useEditor } from "../store";
import { NODE_DRAG_TYPE } from "./Canvas";

export default function Palette() {
  const catalog = useEditor((s) => s.catalog);
  const [query, setQuery] = useState("");
  const [closed, setClosed] = useState<Set<string>>(new Set());
  const flow = useReactFlow();
  const groups = useMemo(() => groupByCategory(searchNodeTypes(catalog, query)), [catalog, query]);

  const addAtCentre = (type: string) => {
    const pane = document.querySelector(".canvas")?.getBoundingClientRect();
    const centre = pane ? { x: pane.left + pane.width / 2 - 130, y: pane.top + pane.height / 2 - 80 } : { x: 400, y: 300 };
    addNode(type, flow.screenToFlowPosition(centre));
  };

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
