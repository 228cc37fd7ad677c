/**
 * Every HTTP and websocket call the editor makes, and the shapes it reads back. The rest of the
 * app sees only the functions and types here, so a change in the server's API is met in this file.
 */
import { normaliseReport, type ImportReport } from "./importing";
import type { Catalog, ImageRef, NodeTypeSpec, ValidationError, Workflow } from "./types";

export type { ImportReport } from "./importing";

/** Where the server is: the page's own origin, or VITE_LATENTGRAPH_SERVER when developing. */
const BASE: string = (import.meta.env?.VITE_LATENTGRAPH_SERVER as string | undefined) ?? "";

export type RunStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled" | "interrupted";

export interface RunSummary {
  id: string;
  status: RunStatus;
  created?: number; // seconds since the epoch
  started?: number | null;
  finished?: number | null;
  images: ImageRef[];
  workflow?: Workflow;
  error?: string | null;
  name?: string | null;
}

export interface QueueState {
  running: RunSummary[];
  pending: RunSummary[];
}

export interface SavedWorkflowInfo {
  name: string;
  /** Shipped with Latentgraph (read-only), as opposed to saved by a user. */
  bundled: boolean;
  title?: string;
  description?: string;
}

/** An executor event as the websocket delivers it. `preview` is an image URL when present. */
export interface RunEvent {
  type: string;
  run_id: string;
  timestamp: number;
  data: Record<string, unknown> & { node?: string; preview?: string };
}

export class ApiError extends Error {
  constructor(message: string, readonly status: number, readonly body: unknown) {
    super(message);
  }
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] = "application/json";
  }
  const response = await fetch(BASE + path, init);
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  if (!response.ok) throw new ApiError(messageOf(parsed) ?? `${method} ${path}: HTTP ${response.status}`, response.status, parsed);
  return parsed as T;
}

/** The human message inside an error body ({detail: "..."}, {message}, {error}). */
function messageOf(body: unknown): string | null {
  if (typeof body === "string" && body) return body;
  if (body && typeof body === "object") {
    const record = body as Record<string, unknown>;
    for (const key of ["detail", "message", "error"]) {
      const value = record[key];
      if (typeof value === "string") return value;
      if (value && typeof value === "object" && typeof (value as Record<string, unknown>).message === "string") {
        return (value as Record<string, string>).message;
      }
    }
  }
  return null;
}

/** Validation errors inside a 422 body, whichever envelope holds them. */
export function validationErrorsOf(body: unknown): ValidationError[] | null {
  const candidates: unknown[] = [body];
  if (body && typeof body === "object") {
    const record = body as Record<string, unknown>;
    candidates.push(record.errors, record.detail);
    if (record.detail && typeof record.detail === "object") candidates.push((record.detail as Record<string, unknown>).errors);
  }
  for (const candidate of candidates) {
    if (Array.isArray(candidate) && candidate.every((e) => e && typeof e === "object" && "message" in e)) {
      return candidate.map((e) => ({
        node: (e.node as string | null) ?? null,
        input: (e.input as string | null) ?? null,
        code: String(e.code ?? "invalid"),
        message: String(e.message),
      }));
    }
  }
  return null;
}

// ---- node catalog -------------------------------------------------------------------------------

export async function fetchCatalog(): Promise<Catalog> {
  const body = await request<NodeTypeSpec[] | { nodes: NodeTypeSpec[] } | Record<string, NodeTypeSpec>>("GET", "/api/nodes");
  const list = Array.isArray(body) ? body : Array.isArray((body as { nodes?: unknown }).nodes) ? (body as { nodes: NodeTypeSpec[] }).nodes : Object.values(body);
  return Object.fromEntries(list.map((spec) => [spec.type, spec]));
}

// ---- workflows ----------------------------------------------------------------------------------

function workflowInfo(entry: unknown): SavedWorkflowInfo {
  if (typeof entry === "string") return { name: entry, bundled: false };
  const record = entry as Record<string, unknown>;
  return {
    name: String(record.name ?? record.id),
    bundled: Boolean(record.bundled ?? (record.source === "bundled" || record.kind === "bundled" || record.readonly)),
    title: (record.title as string | undefined) ?? ((record.meta as Record<string, string> | undefined)?.name),
    description: (record.description as string | undefined) ?? ((record.meta as Record<string, string> | undefined)?.description),
  };
}

export async function listWorkflows(): Promise<SavedWorkflowInfo[]> {
  const body = await request<unknown>("GET", "/api/workflows");
  const list = Array.isArray(body) ? body : ((body as { workflows?: unknown[] }).workflows ?? []);
  return list.map(workflowInfo);
}

function unwrapWorkflow(body: unknown): Workflow {
  const record = body as Record<string, unknown>;
  return (record && typeof record === "object" && "workflow" in record && !("nodes" in record) ? record.workflow : body) as Workflow;
}

export async function loadWorkflow(info: SavedWorkflowInfo | string): Promise<Workflow> {
  const name = typeof info === "string" ? info : info.name;
  return unwrapWorkflow(await request<unknown>("GET", `/api/workflows/${encodeURIComponent(name)}`));
}

export async function saveWorkflow(name: string, workflow: Workflow): Promise<void> {
  await request("PUT", `/api/workflows/${encodeURIComponent(name)}`, workflow);
}

/** Convert a ComfyUI workflow (its JSON, UI or API format, or a PNG carrying one) on the server:
 * the workflow in our format, and the converter's report. A 400 (neither format) throws. */
export async function importWorkflow(bytes: Uint8Array, contentType: "application/json" | "image/png"): Promise<{ workflow: Workflow; report: ImportReport }> {
  const response = await fetch(`${BASE}/api/workflows/import`, {
    method: "POST",
    headers: { "content-type": contentType },
    body: bytes as BodyInit,
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  if (!response.ok) throw new ApiError(messageOf(parsed) ?? `POST /api/workflows/import: HTTP ${response.status}`, response.status, parsed);
  const body = parsed as { workflow?: Workflow; report?: unknown };
  if (!body || typeof body !== "object" || !body.workflow) throw new ApiError("the server sent no workflow", response.status, parsed);
  return { workflow: body.workflow, report: normaliseReport(body.report) };
}

/** The workflow a first visit opens: the bundled txt2img (or whatever the server calls default). */
export async function loadDefaultWorkflow(): Promise<Workflow> {
  const names = await listWorkflows();
  const pick = names.find((w) => w.name.replace(/\.json$/, "") === "txt2img") ?? names.find((w) => w.bundled) ?? names[0];
  if (!pick) throw new Error("the server has no workflows");
  return loadWorkflow(pick);
}

// ---- runs and queue -----------------------------------------------------------------------------

/** Every image reference ({filename, subfolder, type}) anywhere inside a run's results or an event's data. */
export function imagesOf(value: unknown): ImageRef[] {
  const images: ImageRef[] = [];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (typeof o.filename === "string") images.push({ filename: o.filename, subfolder: String(o.subfolder ?? ""), type: String(o.type ?? "output") });
      else Object.values(o).forEach(walk);
    }
  };
  walk(value);
  return images;
}

function runSummary(entry: unknown): RunSummary {
  const record = entry as Record<string, unknown>;
  const images = imagesOf(record.images ?? record.results ?? record.outputs);
  return {
    id: String(record.id ?? record.run_id),
    status: (record.status as RunStatus) ?? "queued",
    created: record.created as number | undefined ?? record.created_at as number | undefined,
    started: record.started as number | undefined ?? record.started_at as number | undefined,
    finished: record.finished as number | undefined ?? record.finished_at as number | undefined,
    images,
    workflow: record.workflow as Workflow | undefined,
    error: (record.error as string | undefined) ?? null,
    name: (record.name as string | undefined) ?? ((record.workflow as Workflow | undefined)?.meta?.name as string | undefined) ?? null,
  };
}

export type SubmitResult = { ok: true; run: RunSummary } | { ok: false; errors: ValidationError[]; message: string };

/** This tab's id: the server sends the events of runs submitted with it to its websocket. */
export function clientId(): string {
  const key = "latentgraph.client_id";
  let id = sessionStorage.getItem(key);
  if (!id) {
    id = `editor-${crypto.randomUUID()}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

export async function submitRun(workflow: Workflow): Promise<SubmitResult> {
  try {
    const body = await request<unknown>("POST", "/api/runs", { workflow, client_id: clientId() });
    return { ok: true, run: runSummary(body) };
  } catch (error) {
    if (error instanceof ApiError && (error.status === 422 || error.status === 400)) {
      const errors = validationErrorsOf(error.body);
      if (errors) return { ok: false, errors, message: `${errors.length} problem${errors.length === 1 ? "" : "s"} in the workflow` };
    }
    throw error;
  }
}

export function queueState(body: Record<string, unknown>): QueueState {
  return {
    running: ((body.running as unknown[]) ?? []).map(runSummary),
    pending: ((body.pending as unknown[]) ?? (body.queued as unknown[]) ?? []).map(runSummary),
  };
}

export async function fetchQueue(): Promise<QueueState> {
  return queueState(await request<Record<string, unknown>>("GET", "/api/queue"));
}

export async function fetchHistory(limit = 50): Promise<RunSummary[]> {
  const body = await request<unknown>("GET", `/api/runs?limit=${limit}`);
  const list = Array.isArray(body) ? body : ((body as { runs?: unknown[] }).runs ?? []);
  return list.map(runSummary);
}

export async function cancelRun(id: string): Promise<void> {
  await request("POST", `/api/runs/${encodeURIComponent(id)}/cancel`);
}

export async function clearQueue(): Promise<void> {
  await request("DELETE", "/api/queue");
}

// ---- images and models --------------------------------------------------------------------------

export function imageUrl(ref: ImageRef): string {
  const path = [ref.subfolder, ref.filename].filter(Boolean).map(encodeURIComponent).join("/");
  return `${BASE}/api/images/${encodeURIComponent(ref.type || "output")}/${path}`;
}

/** An image's colours without its alpha (`rgb`), or what load_image's MASK output will be, as a
 * grey picture (`mask`, white = repaint): what the mask painter and the load_image node show. */
export function imageViewUrl(ref: ImageRef, channel: "rgb" | "mask"): string {
  return `${imageUrl(ref)}?channel=${channel}`;
}

/** An input image by the name a load_image node takes ("subfolder/file.png" included). */
export function inputImage(name: string): ImageRef {
  const slash = name.lastIndexOf("/");
  return { filename: name.slice(slash + 1), subfolder: slash < 0 ? "" : name.slice(0, slash), type: "input" };
}

/** A small JPEG of an image (the server makes and keeps it), for galleries. */
export function thumbnailUrl(ref: ImageRef, size = 256): string {
  const path = [ref.subfolder, ref.filename].filter(Boolean).map(encodeURIComponent).join("/");
  return `${BASE}/api/thumbnails/${encodeURIComponent(ref.type || "output")}/${path}?size=${size}`;
}

/** Put an image in the server's input folder; resolves to the name a load_image node takes. */
export async function uploadImage(file: File): Promise<string> {
  const form = new FormData();
  form.append("file", file, file.name);
  const body = await request<Record<string, unknown>>("POST", "/api/images", form);
  return String(body.name ?? body.filename ?? file.name);
}

/** Merge a mask (an opaque grey PNG, white = repaint) into a copy of the input image `original`
 * as its alpha channel, on the server: the browser's canvas would lose the colours under the fully
 * transparent pixels. Resolves to the copy's name, for the load_image node. */
export async function uploadMask(mask: Blob, original: string): Promise<string> {
  const form = new FormData();
  form.append("file", mask, "mask.png");
  form.append("original", original);
  form.append("channel", "luminance");
  const body = await request<Record<string, unknown>>("POST", "/api/images/mask", form);
  return String(body.name);
}

export async function fetchBytes(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new ApiError(`GET ${url}: HTTP ${response.status}`, response.status, null);
  return new Uint8Array(await response.arrayBuffer());
}

// ---- live events --------------------------------------------------------------------------------

export type ConnectionState = "connecting" | "open" | "closed";

/** A run in progress as the server's snapshot describes it (sent on every (re)connect). */
export interface LiveRun {
  run_id: string;
  status: string;
  nodes: Record<string, { status: string; step?: number; total?: number }>;
  progress: { node: string; step: number; total: number } | null;
  preview: string | null;
  /** Nodes its modes keep from running: node → why ("bypassed", "muted", "needs muted node 'x'"). */
  disabled?: Record<string, string>;
}

export interface EventHandlers {
  onEvent: (event: RunEvent) => void;
  onQueue: (queue: QueueState) => void;
  onSnapshot: (queue: QueueState, running: LiveRun[]) => void;
  onState: (state: ConnectionState) => void;
}

function previewUrl(preview: unknown): string | undefined {
  if (typeof preview === "string") {
    return preview.startsWith("data:") || preview.startsWith("/") || preview.startsWith("http") ? preview : `data:image/jpeg;base64,${preview}`;
  }
  if (preview && typeof preview === "object") {
    const p = preview as Record<string, unknown>;
    const url = p.url ?? p.data_url ?? (typeof p.data === "string" ? `data:${p.mime ?? "image/jpeg"};base64,${p.data}` : undefined);
    if (typeof url === "string") return url.startsWith("/") ? BASE + url : url;
  }
  return undefined;
}

function normaliseEvent(record: Record<string, unknown>): RunEvent {
  const data = { ...((record.data as Record<string, unknown>) ?? {}) } as RunEvent["data"];
  if ("preview" in data) {
    const url = previewUrl(data.preview);
    if (url) data.preview = url;
    else delete data.preview;
  }
  return { type: String(record.type), run_id: String(record.run_id ?? ""), timestamp: Number(record.timestamp ?? Date.now() / 1000), data };
}

/**
 * Follow the server's websocket: the snapshot sent on connect, queue changes, and the events of
 * every run (this tab's and others'). Reconnects by itself (1 s, doubling to 10 s). Returns a
 * function that closes it for good.
 */
export function connectEvents(handlers: EventHandlers): () => void {
  let socket: WebSocket | null = null;
  let closed = false;
  let delay = 1000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const origin = BASE || window.location.origin;
  const url = `${origin.replace(/^http/, "ws")}/ws?client_id=${encodeURIComponent(clientId())}`;

  const onMessage = (text: string) => {
    const message = JSON.parse(text) as Record<string, unknown>;
    const data = (message.data ?? {}) as Record<string, unknown>;
    switch (message.type) {
      case "snapshot": {
        const running = ((data.runs as Record<string, unknown>[] | undefined) ?? []).map((run) => ({
          run_id: String(run.run_id),
          status: String(run.status),
          nodes: (run.nodes as LiveRun["nodes"]) ?? {},
          progress: (run.progress as LiveRun["progress"]) ?? null,
          preview: previewUrl(run.preview) ?? null,
          disabled: (run.disabled as Record<string, string> | undefined) ?? {},
        }));
        handlers.onSnapshot(queueState((data.queue as Record<string, unknown>) ?? {}), running);
        break;
      }
      case "queue":
        handlers.onQueue(queueState(data));
        break;
      case "pong":
      case "error":
        if (message.type === "error") console.warn("server:", data);
        break;
      default:
        if (typeof message.type === "string" && "run_id" in message) handlers.onEvent(normaliseEvent(message));
    }
  };

  const open = () => {
    handlers.onState("connecting");
    socket = new WebSocket(url);
    socket.onopen = () => {
      delay = 1000;
      socket?.send(JSON.stringify({ type: "subscribe", runs: "*" }));
      handlers.onState("open");
    };
    socket.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      try {
        onMessage(message.data);
      } catch (error) {
        console.warn("bad websocket message", error);
      }
    };
    socket.onclose = () => {
      socket = null;
      if (closed) return;
      handlers.onState("closed");
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
    socket.onerror = () => socket?.close();
  };
  open();
  return () => {
    closed = true;
    clearTimeout(timer);
    socket?.close();
  };
}
