import "@xyflow/react/dist/style.css";
import "./styles.css";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import App from "./App";
import { start } from "./session";
import { openWorkflow, useEditor } from "./store";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
start();

// Tests and the console reach the store here (read-only use is the idea).
const global = window as unknown as { latentgraph?: Record<string, unknown> };
global.latentgraph = { ...global.latentgraph, store: useEditor, openWorkflow };
