/** The top bar: workflow name and file actions, editing actions, Run, and the connection state. */
import { useReactFlow } from "@xyflow/react";
import { useRef } from "react";
import { downloadJson, importFile, run, save } from "../session";
import { autoLayout, newWorkflow, redo, setWorkflowName, undo, useEditor } from "../store";
import { withShortcut } from "../shortcuts";
import { openDialog } from "../ui";

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
        <button onClick={() => openDialog("open")} title={withShortcut("Open a saved workflow", "open")}>Open</button>
        <button onClick={() => (savedName ? save() : openDialog("save-as"))} title={withShortcut("Save on the server", "save")}>Save</button>
        <button onClick={() => openDialog("save-as")} title={withShortcut("Save under a new name", "saveAs")}>Save as</button>
        <button onClick={downloadJson} title="Download the workflow as a JSON file">Download</button>
        <button onClick={() => fileInput.current?.click()} title="Import a workflow JSON file or a PNG made by Latentgraph (or drop it on the canvas)">Import</button>
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
        <button onClick={undo} disabled={!canUndo} title={withShortcut("Undo", "undo")} aria-label="Undo">↶</button>
        <button onClick={redo} disabled={!canRedo} title={withShortcut("Redo", "redo")} aria-label="Redo">↷</button>
        <button onClick={autoLayout} title={withShortcut("Arrange nodes in layers (the selection, if several are selected)", "layout")}>Arrange</button>
        <button onClick={() => flow.fitView({ padding: 0.12, duration: 200, maxZoom: 1 })} title={withShortcut("Zoom to fit", "fit")}>Fit</button>
      </nav>
      <span className="spacer" />
      <ConnectionBadge />
      <button className="run-button" onClick={() => run()} title={withShortcut("Queue a run of this workflow", "run")}>
        ▶ Run{pending ? <span className="badge" title="runs queued or running">{pending}</span> : null}
      </button>
    </header>
  );
}
