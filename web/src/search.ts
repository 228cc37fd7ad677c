/** Finding node types by text (palette and search popup) and by the port a dragged link carries. */
import { accepts } from "./ports";
import type { Catalog, NodeTypeSpec } from "./types";
import type { PendingLink } from "./store";

/** Catalog entries matching a query, best first; every word must match somewhere. */
export function searchNodeTypes(catalog: Catalog, query: string): NodeTypeSpec[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const scored: [number, NodeTypeSpec][] = [];
  for (const spec of Object.values(catalog)) {
    const title = spec.title.toLowerCase();
    const type = spec.type.toLowerCase();
    const haystack = `${title} ${type} ${spec.category.toLowerCase()} ${spec.description.toLowerCase()}`;
    if (!words.every((w) => haystack.includes(w))) continue;
    let score = 0;
    const first = words[0] ?? "";
    if (first && title.startsWith(first)) score -= 100;
    else if (first && (title.includes(first) || type.includes(first))) score -= 50;
    scored.push([score, spec]);
  }
  return scored.sort((a, b) => a[0] - b[0] || a[1].title.localeCompare(b[1].title)).map(([, spec]) => spec);
}

/** The input (when the link comes from an output) or output (from an input) a type offers it. */
export function matchingPort(spec: NodeTypeSpec, link: PendingLink): string | null {
  if (link.handleType === "source") return spec.inputs.find((input) => accepts(input.type, link.portType))?.name ?? null;
  return spec.outputs.find((output) => accepts(link.portType, output.type))?.name ?? null;
}

/** Catalog grouped by category (sorted), each group sorted by title. */
export function groupByCategory(specs: NodeTypeSpec[]): [string, NodeTypeSpec[]][] {
  const groups = new Map<string, NodeTypeSpec[]>();
  for (const spec of specs) {
    const list = groups.get(spec.category) ?? [];
    list.push(spec);
    groups.set(spec.category, list);
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([c, list]) => [c, list.sort((a, b) => a.title.localeCompare(b.title))]);
}
