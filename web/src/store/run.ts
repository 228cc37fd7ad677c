/**
 * Run slice: what the canvas shows about runs: the run it follows, each node's status, progress
 * and preview, the images output nodes made, and the errors (validation errors from the server,
 * node failures). Fed by session.ts from the websocket; components only read it.
 */
import { imagesOf, type LiveRun, type RunEvent } from "../api";
import type { ImageRef, ValidationError } from "../types";
import type { Slice } from "./state";

/** "disabled": the node's mode, or a muted node it needs, keeps it from running (`message` says which). */
export type NodeRunStatus = "queued" | "running" | "cached" | "done" | "failed" | "skipped" | "cancelled" | "disabled";

export interface NodeRunState {
  status: NodeRunStatus;
  step?: number;
  total?: number;
  preview?: string;
  seconds?: number;
  message?: string;
}

export interface NodeErrors {
  messages: string[]; // problems of the node as a whole
  inputs: Record<string, string[]>;
}

export interface RunSlice {
  errors: Record<string, NodeErrors>;
  workflowErrors: string[];
  /** The run the canvas shows: the latest one the server started. */
  activeRun: string | null;
  runNodes: Record<string, NodeRunState>;
  /** Images each output node made in the latest run that reached it. */
  outputs: Record<string, ImageRef[]>;

  /** Show the server's validation errors on their nodes and inputs (an empty list clears them). */
  showValidationErrors(list: ValidationError[]): void;
  /** Drop an input's errors (it was edited or linked). */
  clearInputError(nodeId: string, input: string): void;
  /** Forget errors, statuses and images (another workflow was opened). */
  clearRunState(): void;
  /** Follow one executor event on the canvas. */
  applyRunEvent(event: RunEvent): void;
  /** Show a run already in progress (the server's snapshot after a page load or a reconnect). */
  showLiveRun(run: LiveRun): void;
  /** When a run ends: the node it stopped in shows "cancelled", nodes it never reached lose their
   * mark; cached and done stay until the next run starts. */
  finishRun(event: RunEvent): void;
}

/** The nodes a run leaves out because of modes ({node: "bypassed" | "muted" | "needs muted node 'x'"}). */
function disabledStates(disabled: unknown): Record<string, NodeRunState> {
  const states: Record<string, NodeRunState> = {};
  if (disabled && typeof disabled === "object" && !Array.isArray(disabled)) {
    for (const [id, reason] of Object.entries(disabled as Record<string, unknown>)) states[id] = { status: "disabled", message: String(reason) };
  }
  return states;
}

const LIVE_STATUS: Record<string, NodeRunStatus> = {
  waiting: "queued", queued: "queued", running: "running", cached: "cached", finished: "done", done: "done", failed: "failed", skipped: "skipped",
};

export const createRunSlice: Slice<RunSlice> = (set, get) => {
  const patchNode = (id: string, patch: Partial<NodeRunState>) =>
    set((s) => ({ runNodes: { ...s.runNodes, [id]: { ...(s.runNodes[id] ?? { status: "queued" }), ...patch } } }));
  const addOutputs = (node: string, results: unknown) => {
    const images = imagesOf(results);
    if (images.length) set((s) => ({ outputs: { ...s.outputs, [node]: images } }));
  };

  return {
    errors: {},
    workflowErrors: [],
    activeRun: null,
    runNodes: {},
    outputs: {},

    showValidationErrors: (list) => {
      const errors: Record<string, NodeErrors> = {};
      const workflowErrors: string[] = [];
      for (const error of list) {
        if (!error.node || !get().nodes.some((n) => n.id === error.node)) {
          workflowErrors.push(error.message);
          continue;
        }
        const entry = (errors[error.node] ??= { messages: [], inputs: {} });
        if (error.input) (entry.inputs[error.input] ??= []).push(error.message);
        else entry.messages.push(error.message);
      }
      set({ errors, workflowErrors });
    },

    clearInputError: (nodeId, input) => {
      const entry = get().errors[nodeId];
      if (!entry?.inputs[input]) return;
      const inputs = { ...entry.inputs };
      delete inputs[input];
      const errors = { ...get().errors };
      if (!entry.messages.length && !Object.keys(inputs).length) delete errors[nodeId];
      else errors[nodeId] = { ...entry, inputs };
      set({ errors });
    },

    clearRunState: () => set({ errors: {}, workflowErrors: [], runNodes: {}, outputs: {} }),

    applyRunEvent: (event) => {
      const { data } = event;
      const node = typeof data.node === "string" ? data.node : undefined;
      if (event.type === "run_started") {
        const runNodes: Record<string, NodeRunState> = disabledStates(data.disabled);
        for (const id of (data.to_run as string[] | undefined) ?? []) runNodes[id] = { status: "queued" };
        for (const id of (data.cached as string[] | undefined) ?? []) runNodes[id] = { status: "cached" };
        set({ activeRun: event.run_id, runNodes, errors: {}, workflowErrors: [] });
        return;
      }
      if (event.run_id !== get().activeRun || !node) return;
      switch (event.type) {
        case "node_started":
          patchNode(node, { status: "running", step: undefined, total: undefined, preview: undefined });
          break;
        case "node_progress":
          patchNode(node, { status: "running", step: data.step as number, total: data.total as number, ...(data.preview ? { preview: data.preview } : {}) });
          break;
        case "node_cached":
          patchNode(node, { status: "cached" });
          break;
        case "node_finished":
          patchNode(node, { status: "done", seconds: data.seconds as number, step: undefined, total: undefined });
          addOutputs(node, data.results);
          break;
        case "node_failed": {
          const message = `${data.error_type ?? "error"}: ${data.message ?? "the node failed"}`;
          patchNode(node, { status: "failed", message });
          set((s) => ({ errors: { ...s.errors, [node]: { messages: [message], inputs: {} } } }));
          break;
        }
        case "node_skipped":
          patchNode(node, { status: "skipped", message: `skipped: ${data.failed ?? "an input"} failed` });
          break;
      }
    },

    showLiveRun: (run) => {
      const runNodes: Record<string, NodeRunState> = disabledStates(run.disabled);
      for (const [id, state] of Object.entries(run.nodes)) {
        runNodes[id] = { status: LIVE_STATUS[state.status] ?? "queued", step: state.step, total: state.total };
      }
      if (run.progress && runNodes[run.progress.node]) {
        runNodes[run.progress.node] = { ...runNodes[run.progress.node], step: run.progress.step, total: run.progress.total, preview: run.preview ?? undefined };
      }
      set({ activeRun: run.run_id, runNodes });
    },

    finishRun: (event) => {
      if (event.run_id !== get().activeRun) return;
      const runNodes: Record<string, NodeRunState> = {};
      for (const [id, state] of Object.entries(get().runNodes)) {
        if (state.status === "running") runNodes[id] = { status: "cancelled" };
        else if (state.status !== "queued") runNodes[id] = state;
      }
      set({ runNodes });
      const results = event.data.results;
      if (results && typeof results === "object") {
        for (const [node, value] of Object.entries(results as Record<string, unknown>)) addOutputs(node, value);
      }
    },
  };
};
