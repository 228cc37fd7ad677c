/** The top bar: workflow name and file actions, editing actions, Run, and the connection state. */
import { useReactFlow } from "@xyflow/react";
import { useRef } from "react";
import { downloadJson, importFile, run, saveOrAskName } from "../session";
import { autoLayout, newWorkflow, openDialog, redo, setWorkflowName, undo, useEditor } from "../store";
import { tooltip } from "../shortcuts";

export function ConnectionBadge() {
  const connection = useEditor((s) => s.connection);
  const text = connection === "open" ? "connected" : connection === "connecting" ? "connecting…" : "offline, reconnecting…";
  return (
    <span className={`connection connection-${connection}`} data-state={connection} title="Live connection to the server">
      <span className="dot" /> {text}
    </span>
  );
}

export default function Toolbar() {
  const name = useEditor((s) => String(s.meta.name ?? ""));
  const savedName = useEditor((s) => s.savedName);
  const dirty = useEditor((s) => s.dirty);
  const canUndo = useEditor((s) => s.past.length > 0);
  const canRedo = useEditor((s) => s.future.length > 0);
  const pending = useEditor((s) => s.queue.pending.length + s.queue.running.length);
  const fileInput = useRef<HTMLInputElement>(null);
  const flow = useReactFlow();

  return (
    <header className="toolbar">
      <span className="brand" title="Latentgraph">◆ Latentgraph</span>
      <input
        className="field workflow-name"
        value={name}
        placeholder="Untitled"
        aria-label="Workflow name"
        title={savedName ? `Saved on the server as “${savedName}”` : "Not saved on the server yet"}
        onChange={(e) => setWorkflowName(e.target.value)}
      />
      <span className={`dirty ${dirty ? "" : "clean"}`} title={dirty ? "Unsaved changes (kept in this browser until saved)" : "Saved"}>{dirty ? "●" : ""}</span>
      <nav className="toolbar-group" aria-label="Workflow">
        <button onClick={() => { if (!dirty || confirm("Discard the unsaved changes?")) newWorkflow(); }} title="New empty workflow">New</button>
        <button onClick={() => openDialog("open")} title={tooltip("open")}>Open</button>
        <button onClick={() => saveOrAskName()} title={tooltip("save")}>Save</button>
        <button onClick={() => openDialog("save-as")} title={tooltip("saveAs")}>Save as</button>
        <button onClick={downloadJson} title="Download the workflow as a JSON file">Download</button>
        <button onClick={() => fileInput.current?.click()} title="Import a workflow: a JSON or PNG made by Latentgraph or by ComfyUI (or drop it on the canvas)">Import</button>
        <input
          ref={fileInput}
          type="file"
          accept=".json,application/json,image/png"
          hidden
          aria-label="Import file"
          onChange={(e) => {
            const file = e.target.files?.[0];
            if (file) importFile(file);
            e.target.value = "";
          }}
        />
      </nav>
      <nav className="toolbar-group" aria-label="Edit">
        <button onClick={undo} disabled={!canUndo} title={tooltip("undo")} aria-label="Undo">↶</button>
        <button onClick={redo} disabled={!canRedo} title={tooltip("redo")} aria-label="Redo">↷</button>
        <button onClick={autoLayout} title={tooltip("layout")}>Arrange</button>
        <button onClick={() => flow.fitView({ padding: 0.12, duration: 200, maxZoom: 1 })} title={tooltip("fit")}>Fit</button>
      </nav>
      <span className="spacer" />
      <ConnectionBadge />
      <button className="run-button" onClick={() => run()} title={tooltip("run")}>
        ▶ Run{pending ? <span className="badge" title="runs queued or running">{pending}</span> : null}
      </button>
    </header>
  );
}
