/** Modal dialogs: open a workflow from the server, save under a name; and the toasts. */
import { useEffect, useState } from "react";
import { listWorkflows, type SavedWorkflowInfo } from "../api";
import { openSaved, save, slugify } from "../session";
import { closeDialog, dismissToast, useEditor } from "../store";

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

export function Dialogs() {
  const dialog = useEditor((s) => s.dialog);
  if (!dialog) return null;
  return (
    <div className="popup-backdrop modal" onMouseDown={closeDialog} onKeyDown={(e) => e.key === "Escape" && closeDialog()}>
      {dialog === "open" ? <OpenDialog /> : <SaveAsDialog />}
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
