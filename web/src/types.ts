/** Shapes shared by the editor: the node catalog the server publishes and the workflow JSON format. */

export const WORKFLOW_FORMAT = "latentgraph/workflow@1";

/** One input of a node type, as the catalog describes it. */
export interface InputSpec {
  name: string;
  type: string; // port type: MODEL, LATENT, INT, STRING, ANY, ...
  required: boolean;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusive_minimum?: number;
  exclusive_maximum?: number;
  step?: number;
  min_length?: number;
  max_length?: number;
  choices?: string[] | number[];
  multiline?: boolean;
  widget?: string; // "seed", "image", ...
  link_only: boolean;
  description?: string;
}

export interface OutputSpec {
  name: string;
  type: string;
  description?: string;
}

/** One node type of the catalog (`latentgraph nodes`, GET /api/nodes). */
export interface NodeTypeSpec {
  type: string;
  version: number;
  category: string;
  title: string;
  description: string;
  output_node: boolean;
  cacheable?: boolean;
  inputs: InputSpec[];
  outputs: OutputSpec[];
}

export type Catalog = Record<string, NodeTypeSpec>;

/** A link in the workflow JSON: exactly the keys `node` and `output`. */
export interface LinkRef {
  node: string;
  output: string;
}

/** How a node takes part in a run: "bypass" passes its matching input through, "mute" does not
 * run it (nor what only it feeds); absent, it runs. */
export type NodeMode = "bypass" | "mute";

export interface WorkflowNode {
  type: string;
  inputs: Record<string, unknown>;
  title?: string;
  /** A NodeMode; another string is kept as it came (the server names it). */
  mode?: NodeMode | string;
}

export interface Workflow {
  format: string;
  nodes: Record<string, WorkflowNode>;
  ui?: Record<string, unknown>;
  meta?: Record<string, unknown>;
}

/** A validation problem as the engine reports it. `node`/`input` are null for whole-workflow problems. */
export interface ValidationError {
  node: string | null;
  input: string | null;
  code: string;
  message: string;
}

/** Reference to an image the server can show (`save_pngs` results). */
export interface ImageRef {
  filename: string;
  subfolder: string;
  type: string; // "output" | "temp" | "input"
}

/** The same test as engine.workflow.as_link: an object with exactly `node` and `output` strings. */
export function asLink(value: unknown): LinkRef | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const keys = Object.keys(value);
  if (keys.length !== 2) return null;
  const { node, output } = value as Record<string, unknown>;
  return typeof node === "string" && typeof output === "string" ? { node, output } : null;
}
