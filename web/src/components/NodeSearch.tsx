/** The search popup: double-click the canvas (or drop a link on it), type, Enter adds the node. */
import { useEffect, useMemo, useState } from "react";
import { matchingPort, searchNodeTypes } from "../search";
import { addNode, closeSearch, connect, useEditor } from "../store";

export default function NodeSearch() {
  const search = useEditor((s) => s.search);
  const catalog = useEditor((s) => s.catalog);
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  useEffect(() => {
    setQuery("");
    setActive(0);
  }, [search]);
  const results = useMemo(() => {
    const found = searchNodeTypes(catalog, query);
    return search?.link ? found.filter((spec) => matchingPort(spec, search.link!) !== null) : found;
  }, [catalog, query, search]);
  if (!search) return null;

  const choose = (index: number) => {
    const spec = results[index];
    if (!spec) return;
    const id = addNode(spec.type, search.flow);
    const link = search.link;
    if (link) {
      const port = matchingPort(spec, link)!;
      if (link.handleType === "source") connect({ source: link.node, sourceHandle: link.handle, target: id, targetHandle: port });
      else connect({ source: id, sourceHandle: port, target: link.node, targetHandle: link.handle });
    }
    closeSearch();
  };

  const left = Math.min(search.screen.x, window.innerWidth - 340);
  const top = Math.min(search.screen.y, window.innerHeight - 380);
  return (
    <div className="popup-backdrop" onMouseDown={closeSearch}>
      <div className="node-search" style={{ left, top }} onMouseDown={(e) => e.stopPropagation()} role="dialog" aria-label="Add a node">
        <input
          className="field"
          autoFocus
          placeholder={search.link ? `Node taking ${search.link.portType}…` : "Add a node…"}
          value={query}
          aria-label="Node search"
          onChange={(e) => {
            setQuery(e.target.value);
            setActive(0);
          }}
          onKeyDown={(e) => {
            if (e.key === "Escape") closeSearch();
            else if (e.key === "ArrowDown") { e.preventDefault(); setActive((a) => Math.min(a + 1, results.length - 1)); }
            else if (e.key === "ArrowUp") { e.preventDefault(); setActive((a) => Math.max(a - 1, 0)); }
            else if (e.key === "Enter") choose(active);
          }}
        />
        <ul>
          {results.slice(0, 40).map((spec, i) => (
            <li key={spec.type} className={i === active ? "active" : ""} onMouseEnter={() => setActive(i)} onClick={() => choose(i)} title={spec.description}>
              <span className="palette-title">{spec.title}</span>
              <span className="palette-type">{spec.category} · {spec.type}</span>
            </li>
          ))}
          {!results.length && <li className="empty">No node matches.</li>}
        </ul>
      </div>
    </div>
  );
}
