/**
 * Which files the editor opens itself and which go to the server's ComfyUI converter
 * (`POST /api/workflows/import`), and what the converter's report says. Pure module.
 *
 * - Ours: a JSON object tagged "latentgraph/workflow@…", or untagged with a `nodes` object; a PNG
 *   whose `workflow` text chunk holds such a document.
 * - ComfyUI's UI format (what its editor saves): a `nodes` array (and `links`); its API format: an
 *   object of `{class_type, inputs}` entries; a PNG with a `workflow` or `prompt` text chunk that
 *   is not ours.
 */
import type { PngTextChunk } from "./png";
import type { ValidationError } from "./types";

export type DocumentKind = "latentgraph" | "comfyui-ui" | "comfyui-api";

export interface UnmappedNode {
  id: string;
  type: string;
  reason: string;
  links: unknown[];
}

export interface ValueProblem {
  id: string;
  type: string;
  input: string;
  value: unknown;
  message: string;
}

export interface MissingFile {
  id: string;
  type: string;
  input: string;
  kind: string;
  name: string;
}

/** Another problem the converter found with a node it mapped (an input it could not fill...). */
export interface NodeProblem {
  id: string;
  input: string | null;
  message: string;
}

/** The converter's report: what could not be mapped, values out of range, files not found, other
 * problems, notes. */
export interface ImportReport {
  format: string;
  ok: boolean;
  unmapped: UnmappedNode[];
  values: ValueProblem[];
  missing_files: MissingFile[];
  problems: NodeProblem[];
  notes: string[];
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

/** What a parsed JSON document is, or null when it is none of the formats. */
export function classifyDocument(value: unknown): DocumentKind | null {
  if (!isObject(value)) return null;
  if (typeof value.format === "string") return value.format.startsWith("latentgraph/workflow@") ? "latentgraph" : null;
  if (Array.isArray(value.nodes)) return "comfyui-ui";
  if (isObject(value.nodes)) return "latentgraph";
  const entries = Object.values(value);
  if (entries.length && entries.every((entry) => isObject(entry) && typeof entry.class_type === "string")) return "comfyui-api";
  return null;
}

/** What a PNG's text chunks carry: our workflow (its text), a ComfyUI workflow, or nothing. */
export function classifyPng(chunks: PngTextChunk[]): { kind: "latentgraph"; text: string } | { kind: "comfyui" } | null {
  const workflow = chunks.find((chunk) => chunk.keyword === "workflow");
  if (workflow) {
    try {
      if (classifyDocument(JSON.parse(workflow.text)) === "latentgraph") return { kind: "latentgraph", text: workflow.text };
    } catch {
      /* not JSON: the converter says what is wrong */
    }
  }
  return workflow || chunks.some((chunk) => chunk.keyword === "prompt") ? { kind: "comfyui" } : null;
}

const list = <T>(value: unknown, item: (entry: Record<string, unknown>) => T): T[] =>
  Array.isArray(value) ? value.filter(isObject).map(item) : [];
const text = (value: unknown) => (value === undefined || value === null ? "" : String(value));

/** The report as the server sent it, with every list present and ids as strings. */
export function normaliseReport(body: unknown): ImportReport {
  const r = isObject(body) ? body : {};
  const unmapped = list(r.unmapped, (e) => ({ id: text(e.id), type: text(e.type), reason: text(e.reason), links: Array.isArray(e.links) ? e.links : [] }));
  return {
    format: text(r.format),
    ok: typeof r.ok === "boolean" ? r.ok : unmapped.length === 0,
    unmapped,
    values: list(r.values, (e) => ({ id: text(e.id), type: text(e.type), input: text(e.input), value: e.value, message: text(e.message) })),
    missing_files: list(r.missing_files, (e) => ({ id: text(e.id), type: text(e.type), input: text(e.input), kind: text(e.kind), name: text(e.name) })),
    problems: list(r.problems, (e) => ({ id: text(e.id), input: e.input === undefined || e.input === null ? null : text(e.input), message: text(e.message) })),
    notes: Array.isArray(r.notes) ? r.notes.map(text) : [],
  };
}

/** Whether the report has nothing to tell (then no dialog shows). */
export function reportIsEmpty(report: ImportReport): boolean {
  return !report.unmapped.length && !report.values.length && !report.missing_files.length && !report.problems.length && !report.notes.length;
}

export function missingFileMessage(file: MissingFile): string {
  return `no ${file.kind || "file"} named “${file.name}” in Latentgraph's folders`;
}

/** The report's problems with nodes that made it into the workflow, as errors the canvas shows on
 * their inputs (cleared by editing the input, or by the next run). */
export function reportErrors(report: ImportReport): ValidationError[] {
  return [
    ...report.values.map((v) => ({ node: v.id, input: v.input || null, code: "import_value", message: v.message || `${v.input}: ${JSON.stringify(v.value)} is out of range` })),
    ...report.missing_files.map((m) => ({ node: m.id, input: m.input || null, code: "missing_file", message: missingFileMessage(m) })),
    ...report.problems.map((p) => ({ node: p.id, input: p.input || null, code: "import_problem", message: p.message })),
  ];
}

/** One line a link of an unmapped node reads as ("4 → 7.clip" or whatever the server sent). */
export function linkText(link: unknown): string {
  if (typeof link === "string" || typeof link === "number") return String(link);
  if (Array.isArray(link)) return link.map((part) => text(part)).join(" ");
  if (isObject(link)) {
    const from = [link.from_node ?? link.source ?? link.from, link.from_slot ?? link.output].filter((p) => p !== undefined).map(text).join(".");
    const to = [link.to_node ?? link.target ?? link.to, link.to_slot ?? link.input].filter((p) => p !== undefined).map(text).join(".");
    if (from || to) return `${from || "?"} → ${to || "?"}`;
  }
  return JSON.stringify(link);
}
