/** Catalog slice: the node types the server offers (`GET /api/nodes`), and what it says about a
 * node's inputs and outputs. */
import { PRIMITIVE_PORTS } from "../ports";
import type { Catalog, InputSpec } from "../types";
import type { Slice } from "./state";

export interface CatalogSlice {
  catalog: Catalog;
  catalogLoaded: boolean;
  setCatalog(catalog: Catalog): void;
  /** The catalog's spec of a node's input (undefined for a type the catalog does not know). */
  inputSpecOf(nodeId: string, input: string): InputSpec | undefined;
  outputTypeOf(nodeId: string, output: string): string | undefined;
}

/** Whether a widget input is shown as a widget (else as an input handle). */
export function isWidget(spec: InputSpec): boolean {
  return !spec.link_only && (PRIMITIVE_PORTS.has(spec.type) || spec.choices !== undefined);
}

export const createCatalogSlice: Slice<CatalogSlice> = (set, get) => ({
  catalog: {},
  catalogLoaded: false,

  setCatalog: (catalog) => set({ catalog, catalogLoaded: true }),

  inputSpecOf: (nodeId, input) => {
    const node = get().nodes.find((n) => n.id === nodeId);
    return node ? get().catalog[node.data.type]?.inputs.find((i) => i.name === input) : undefined;
  },

  outputTypeOf: (nodeId, output) => {
    const node = get().nodes.find((n) => n.id === nodeId);
    return node ? get().catalog[node.data.type]?.outputs.find((o) => o.name === output)?.type : undefined;
  },
});
