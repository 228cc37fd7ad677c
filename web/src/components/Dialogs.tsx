/** Modal dialogs: open a workflow from the server, save under a name, the report on an imported
 * ComfyUI workflow; and the toasts. */
import { useEffect, useState } from "react";
import { listWorkflows, type SavedWorkflowInfo } from "../api";
import { linkText, missingFileMessage } from "../importing";
import { openSaved, save, slugify } from "../session";
import { closeDialog, dismissToast, focusNodes, useEditor } from "../store";

function OpenDialog() {
  const [list, setList] = useState<SavedWorkflowInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const dirty = useEditor((s) => s.dirty);
  useEffect(() => {
    listWorkflows().then(setList, (e: Error) => setError(e.message));
  }, []);
  const groups: [string, SavedWorkflowInfo[]][] = [
    ["Saved", (list ?? []).filter((w) => !w.bundled)],
    ["Examples", (list ?? []).filter((w) => w.bundled)],
  ];
  return (
    <div className="dialog" role="dialog" aria-label="Open a workflow" onMouseDown={(e) => e.stopPropagation()}>
      <h2>Open a workflow</h2>
      {error && <div className="node-errors">{error}</div>}
      {!list && !error && <div className="empty">Loading…</div>}
      {groups.map(([label, items]) =>
        items.length ? (
          <section key={label}>
            <h3>{label}</h3>
            <ul className="workflow-list">
              {items.map((w) => (
                <li key={`${label}/${w.name}`}>
                  <button
                    className="workflow-item"
                    data-name={w.name}
                    onClick={() => {
                      if (dirty && !confirm("Discard the unsaved changes?")) return;
                      closeDialog();
                      openSaved(w);
                    }}
                  >
                    <span className="palette-title">{w.title ?? w.name}</span>
                    <span className="palette-type">{w.name}{w.description ? ` — ${w.description}` : ""}</span>
                  </button>
                </li>
              ))}
            </ul>
          </section>
        ) : null,
      )}
      {list && !list.length && <div className="empty">No workflows on the server yet.</div>}
      <div className="dialog-actions">
        <button onClick={closeDialog}>Close</button>
      </div>
    </div>
  );
}

function SaveAsDialog() {
  const meta = useEditor((s) => s.meta);
  const savedName = useEditor((s) => s.savedName);
  const [name, setName] = useState(savedName ?? slugify(String(meta.name ?? "workflow")));
  const submit = async () => {
    const target = slugify(name);
    if (await save(target)) closeDialog();
  };
  return (
    <form
      className="dialog"
      role="dialog"
      aria-label="Save the workflow"
      onMouseDown={(e) => e.stopPropagation()}
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <h2>Save as</h2>
      <label>
        Name on the server
        <input className="field" autoFocus value={name} onChange={(e) => setName(e.target.value)} aria-label="Save name" />
      </label>
      <div className="queue-meta">Saved as {slugify(name)}.json</div>
      <div className="dialog-actions">
        <button type="button" onClick={closeDialog}>Cancel</button>
        <button type="submit" className="primary">Save</button>
      </div>
    </form>
  );
}

/** A node id in the report: a button that shows the node, when the workflow has it. */
function NodeRef({ id }: { id: string }) {
  const present = useEditor((s) => s.nodes.some((n) => n.id === id));
  if (!present) return <code>{id}</code>;
  return (
    <button className="link-button" title="Show this node" onClick={() => { closeDialog(); focusNodes([id]); }}>
      <code>{id}</code>
    </button>
  );
}

function display(value: unknown): string {
  const text = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

/** What the ComfyUI converter could not do: unmapped nodes, values out of range, missing files,
 * other problems, notes. */
function ImportReportDialog() {
  const imported = useEditor((s) => s.importReport);
  if (!imported) return null;
  const { report, fileName } = imported;
  const format = report.format === "comfyui-ui" ? "ComfyUI workflow" : report.format === "comfyui-api" ? "ComfyUI API prompt" : report.format || "workflow";
  return (
    <div className="dialog import-report" role="dialog" aria-label="Import report" onMouseDown={(e) => e.stopPropagation()}>
      <h2>Imported {fileName}</h2>
      <div className={report.ok ? "queue-meta" : "node-errors"} data-ok={report.ok}>
        {report.ok
          ? `Every node of this ${format} was mapped.`
          : `${report.unmapped.length} node${report.unmapped.length === 1 ? "" : "s"} of this ${format} could not be mapped. ` +
            `Kept on the canvas as ${report.unmapped.length === 1 ? "a node" : "nodes"} of an unknown type (dashed), ${report.unmapped.length === 1 ? "it keeps" : "they keep"} the workflow from running until replaced, muted or deleted.`}
      </div>
      {report.unmapped.length > 0 && (
        <section data-section="unmapped">
          <h3>Nodes not mapped</h3>
          <table>
            <thead><tr><th>id</th><th>type</th><th>why</th><th>links</th></tr></thead>
            <tbody>
              {report.unmapped.map((u, i) => (
                <tr key={i}>
                  <td><NodeRef id={u.id} /></td>
                  <td><code>{u.type}</code></td>
                  <td>{u.reason}</td>
                  <td>{u.links.map(linkText).join(", ")}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {report.values.length > 0 && (
        <section data-section="values">
          <h3>Values out of range</h3>
          <table>
            <thead><tr><th>node</th><th>input</th><th>value</th><th>what</th></tr></thead>
            <tbody>
              {report.values.map((v, i) => (
                <tr key={i}>
                  <td><NodeRef id={v.id} /> <span className="palette-type">{v.type}</span></td>
                  <td>{v.input}</td>
                  <td><code>{display(v.value)}</code></td>
                  <td>{v.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {report.missing_files.length > 0 && (
        <section data-section="missing_files">
          <h3>Files not found</h3>
          <table>
            <thead><tr><th>node</th><th>input</th><th>file</th></tr></thead>
            <tbody>
              {report.missing_files.map((m, i) => (
                <tr key={i} title={missingFileMessage(m)}>
                  <td><NodeRef id={m.id} /> <span className="palette-type">{m.type}</span></td>
                  <td>{m.input}</td>
                  <td><code>{m.name}</code> <span className="palette-type">{m.kind}</span></td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {report.problems.length > 0 && (
        <section data-section="problems">
          <h3>Other problems</h3>
          <table>
            <thead><tr><th>node</th><th>input</th><th>what</th></tr></thead>
            <tbody>
              {report.problems.map((p, i) => (
                <tr key={i}>
                  <td><NodeRef id={p.id} /></td>
                  <td>{p.input ?? ""}</td>
                  <td>{p.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {report.notes.length > 0 && (
        <section data-section="notes">
          <h3>Notes</h3>
          <ul className="report-notes">
            {report.notes.map((note, i) => <li key={i}>{note}</li>)}
          </ul>
        </section>
      )}
      <div className="dialog-actions">
        <button className="primary" onClick={closeDialog} autoFocus>Close</button>
      </div>
    </div>
  );
}

export function Dialogs() {
  const dialog = useEditor((s) => s.dialog);
  if (!dialog) return null;
  return (
    <div className="popup-backdrop modal" onMouseDown={closeDialog} onKeyDown={(e) => e.key === "Escape" && closeDialog()}>
      {dialog === "open" ? <OpenDialog /> : dialog === "save-as" ? <SaveAsDialog /> : <ImportReportDialog />}
    </div>
  );
}

export function Toasts() {
  const toasts = useEditor((s) => s.toasts);
  const workflowErrors = useEditor((s) => s.workflowErrors);
  return (
    <div className="toasts" aria-live="polite">
      {workflowErrors.map((message, i) => (
        <div key={`w${i}`} className="toast error" role="alert">{message}</div>
      ))}
      {toasts.map((t) => (
        <div key={t.id} className={`toast ${t.kind}`} role={t.kind === "error" ? "alert" : "status"} onClick={() => dismissToast(t.id)}>
          {t.text}
        </div>
      ))}
    </div>
  );
}
