/** Queue slice: what the server reports about runs as a whole: the live connection, the queue
 * (running and pending runs) and the run history the gallery shows. Set by session.ts. */
import type { QueueState, RunSummary } from "../api";
import type { Slice } from "./state";

export type ConnectionState = "connecting" | "open" | "closed";

export interface QueueSlice {
  connection: ConnectionState;
  queue: QueueState;
  /** Runs the server remembers, newest first (the gallery). */
  runHistory: RunSummary[];
  setConnection(connection: ConnectionState): void;
  setQueue(queue: QueueState): void;
  setRunHistory(runs: RunSummary[]): void;
}

export const createQueueSlice: Slice<QueueSlice> = (set) => ({
  connection: "connecting",
  queue: { running: [], pending: [] },
  runHistory: [],
  setConnection: (connection) => set({ connection }),
  setQueue: (queue) => set({ queue }),
  setRunHistory: (runHistory) => set({ runHistory }),
});
