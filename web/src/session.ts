/**
 * The editor's conversation with the server: start-up, running, saving and opening, importing
 * files, following events, and keeping an unsaved draft in localStorage. Glue between api.ts and
 * the store; components call these functions.
 */
import * as api from "./api";
import { classifyDocument, classifyPng, reportErrors } from "./importing";
import { isPng, readPngTextChunks } from "./png";
import {
  advanceSeeds,
  applyRunEvent,
  showLiveRun,
  currentWorkflow,
  finishRun,
  markSaved,
  openDialog,
  openWorkflow,
  setCatalog,
  setConnection,
  setQueue,
  setInput,
  setRunHistory,
  showImportReport,
  showValidationErrors,
  toast,
  useEditor,
} from "./store";
import type { Workflow } from "./types";
import { parseWorkflowText } from "./workflow";

const DRAFT_KEY = "latentgraph.draft";

interface Draft {
  workflow: Workflow;
  savedName: string | null;
  dirty: boolean;
}

function readDraft(): Draft | null {
  try {
    const text = localStorage.getItem(DRAFT_KEY);
    if (!text) return null;
    const draft = JSON.parse(text) as Draft;
    return draft.workflow && typeof draft.workflow === "object" ? draft : null;
  } catch {
    return null;
  }
}

/** Keep the graph in localStorage (debounced), so a reload loses nothing. */
function persistDrafts() {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const watched = (s: ReturnType<typeof useEditor.getState>) => ({ nodes: s.nodes, edges: s.edges, notes: s.notes, groups: s.groups, meta: s.meta, savedName: s.savedName, dirty: s.dirty });
  let last = watched(useEditor.getState());
  const write = () => {
    const { savedName, dirty } = useEditor.getState();
    try {
      localStorage.setItem(DRAFT_KEY, JSON.stringify({ workflow: currentWorkflow(), savedName, dirty } satisfies Draft));
    } catch {
      /* storage full or disabled: the draft is a convenience */
    }
  };
  useEditor.subscribe((s) => {
    const now = watched(s);
    if ((Object.keys(now) as (keyof typeof now)[]).every((key) => now[key] === last[key])) return;
    last = now;
    clearTimeout(timer);
    timer = setTimeout(write, 300);
  });
  window.addEventListener("beforeunload", () => {
    clearTimeout(timer);
    write();
  });
}

export async function refreshCatalog() {
  setCatalog(await api.fetchCatalog());
}

export async function refreshQueueAndHistory() {
  try {
    const [queue, history] = await Promise.all([api.fetchQueue(), api.fetchHistory()]);
    setQueue(queue);
    setRunHistory(history);
  } catch (error) {
    console.warn("queue/history", error);
  }
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshQueueAndHistory, 150);
}

function onEvent(event: api.RunEvent) {
  applyRunEvent(event);
  if (event.type === "run_finished" || event.type === "run_cancelled") {
    finishRun(event);
    refreshSoon();
  } else if (event.type === "run_started" || event.type === "run_queued") {
    refreshSoon();
  }
}

/** Start the editor: catalog, the draft or the default workflow, live events. */
export async function start() {
  try {
    await refreshCatalog();
  } catch (error) {
    toast(`Could not load the node catalog: ${(error as Error).message}`, "error");
  }
  const draft = readDraft();
  if (draft) {
    openWorkflow(draft.workflow, { savedName: draft.savedName, dirty: draft.dirty, keepHistory: false });
  } else {
    try {
      openWorkflow(await api.loadDefaultWorkflow(), { keepHistory: false });
    } catch (error) {
      toast(`Could not load the default workflow: ${(error as Error).message}`, "error");
    }
  }
  persistDrafts();
  api.connectEvents({
    onEvent,
    onQueue: (queue) => {
      setQueue(queue);
      refreshSoon(); // a run left the queue or finished: the history has news
    },
    onSnapshot: (queue, running) => {
      setQueue(queue);
      if (running[0]) showLiveRun(running[0]);
      refreshQueueAndHistory();
      refreshCatalog().catch(() => undefined);
    },
    onState: setConnection,
  });
  refreshQueueAndHistory();
}

/** Queue the graph. Validation errors from the server are shown on the nodes. */
export async function run(): Promise<boolean> {
  const workflow = currentWorkflow();
  try {
    const result = await api.submitRun(workflow);
    if (!result.ok) {
      showValidationErrors(result.errors);
      toast(result.message, "error");
      return false;
    }
    showValidationErrors([]);
    advanceSeeds();
    refreshSoon();
    return true;
  } catch (error) {
    toast(`Run failed to start: ${(error as Error).message}`, "error");
    return false;
  }
}

export async function cancel(runId: string) {
  try {
    await api.cancelRun(runId);
  } catch (error) {
    toast(`Cancel: ${(error as Error).message}`, "error");
  }
  refreshSoon();
}

export async function clearQueue() {
  try {
    await api.clearQueue();
  } catch (error) {
    toast(`Clear queue: ${(error as Error).message}`, "error");
  }
  refreshSoon();
}

/** A file-system-safe name from a title: "My portrait v2" → "my-portrait-v2". */
export function slugify(title: string): string {
  return title.trim().toLowerCase().replace(/\.json$/, "").replace(/[^a-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "workflow";
}

export async function save(name?: string): Promise<boolean> {
  const target = name ?? useEditor.getState().savedName;
  if (!target) return false;
  try {
    const workflow = currentWorkflow();
    workflow.meta = { ...workflow.meta, name: (workflow.meta?.name as string | undefined) ?? target };
    await api.saveWorkflow(target, workflow);
    markSaved(target);
    toast(`Saved as “${target}”`);
    return true;
  } catch (error) {
    toast(`Save failed: ${(error as Error).message}`, "error");
    return false;
  }
}

/** Save under the name it was saved under before; asks for a name if there is none yet. */
export async function saveOrAskName(): Promise<boolean> {
  if (useEditor.getState().savedName) return save();
  openDialog("save-as");
  return false;
}

export async function openSaved(info: api.SavedWorkflowInfo) {
  try {
    const workflow = await api.loadWorkflow(info);
    openWorkflow(workflow, { savedName: info.bundled ? null : info.name });
    toast(`Opened “${info.title ?? info.name}”`);
  } catch (error) {
    toast(`Open failed: ${(error as Error).message}`, "error");
  }
}

export function downloadJson() {
  const workflow = currentWorkflow();
  const name = slugify(String(workflow.meta?.name ?? useEditor.getState().savedName ?? "workflow"));
  const blob = new Blob([JSON.stringify(workflow, null, 2) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${name}.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Open a ComfyUI workflow through the server's converter, and show its report. */
async function importComfyUi(bytes: Uint8Array, contentType: "application/json" | "image/png", fileName: string): Promise<boolean> {
  const { workflow, report } = await api.importWorkflow(bytes, contentType);
  const meta = { ...(workflow.meta ?? {}) };
  if (typeof meta.name !== "string" || !meta.name) meta.name = fileName.replace(/\.(json|png)$/i, "");
  openWorkflow({ ...workflow, meta }, { dirty: true });
  const present = new Set(useEditor.getState().nodes.map((n) => n.id));
  showValidationErrors(reportErrors(report).filter((error) => error.node !== null && present.has(error.node)));
  showImportReport(fileName, report);
  const unmapped = report.unmapped.length;
  if (unmapped) toast(`Imported ${fileName} from ComfyUI: ${unmapped} node${unmapped === 1 ? "" : "s"} could not be mapped`, "error");
  else toast(`Imported ${fileName} from ComfyUI`);
  return true;
}

/** Open a workflow from bytes: our JSON or PNG, or ComfyUI's (converted by the server). */
export async function importBytes(bytes: Uint8Array, fileName: string): Promise<boolean> {
  try {
    let text: string;
    if (isPng(bytes)) {
      const found = classifyPng(await readPngTextChunks(bytes));
      if (!found) throw new Error("this PNG carries no workflow");
      if (found.kind === "comfyui") return await importComfyUi(bytes, "image/png", fileName);
      text = found.text;
    } else {
      text = new TextDecoder().decode(bytes);
      let value: unknown = null;
      try {
        value = JSON.parse(text);
      } catch {
        /* parseWorkflowText says so */
      }
      const kind = classifyDocument(value);
      if (kind === "comfyui-ui" || kind === "comfyui-api") return await importComfyUi(bytes, "application/json", fileName);
    }
    const workflow = parseWorkflowText(text);
    openWorkflow(workflow, { dirty: true });
    toast(`Imported ${fileName}`);
    return true;
  } catch (error) {
    toast(`Could not import ${fileName}: ${(error as Error).message}`, "error");
    return false;
  }
}

export async function importFile(file: File): Promise<boolean> {
  return importBytes(new Uint8Array(await file.arrayBuffer()), file.name);
}

/** Open the workflow that made an image (read from the PNG itself). */
export async function openWorkflowOfImage(url: string, label: string) {
  try {
    await importBytes(await api.fetchBytes(url), label);
  } catch (error) {
    toast(`Could not read ${label}: ${(error as Error).message}`, "error");
  }
}

/** Send a painted mask to the server, which writes it into a copy of `original` as its alpha;
 * the node's image input then names the copy (one undo step). False, with a message, on failure. */
export async function saveMask(nodeId: string, input: string, original: string, mask: Blob): Promise<boolean> {
  try {
    const name = await api.uploadMask(mask, original);
    await refreshCatalog().catch(() => undefined); // the copy is among the choices before the node names it
    setInput(nodeId, input, name);
    toast(`Mask saved: ${name}`);
    return true;
  } catch (error) {
    toast(`Saving the mask failed: ${(error as Error).message}`, "error");
    return false;
  }
}

export async function uploadInputImage(file: File): Promise<string | null> {
  try {
    const name = await api.uploadImage(file);
    refreshCatalog().catch(() => undefined);
    return name;
  } catch (error) {
    toast(`Upload failed: ${(error as Error).message}`, "error");
    return null;
  }
}
