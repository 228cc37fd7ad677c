/** The right panel: the queue (running and pending runs) and the gallery of finished runs. */
import { imageUrl, thumbnailUrl, type RunSummary } from "../api";
import { cancel, clearQueue, openWorkflowOfImage } from "../session";
import { keysText } from "../shortcuts";
import { closeLightbox, openLightbox, showPanel, useEditor } from "../store";
import { IMAGE_DRAG_TYPE } from "./Canvas";

function when(run: RunSummary): string {
  const t = run.finished ?? run.started ?? run.created;
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}

function QueueList() {
  const queue = useEditor((s) => s.queue);
  const runNodes = useEditor((s) => s.runNodes);
  const activeRun = useEditor((s) => s.activeRun);
  const done = Object.values(runNodes).filter((n) => n.status === "done" || n.status === "cached").length;
  const total = Object.keys(runNodes).length;
  return (
    <div className="queue">
      <div className="panel-actions">
        <span>{queue.running.length} running · {queue.pending.length} pending</span>
        <button onClick={clearQueue} disabled={!queue.pending.length} title="Remove every pending run">Clear queue</button>
      </div>
      {[...queue.running, ...queue.pending].map((run) => (
        <div key={run.id} className={`queue-item status-${run.status}`} data-run-id={run.id}>
          <div>
            <div className="queue-name">{run.name ?? "Untitled"} <span className="run-id">#{run.id.slice(0, 8)}</span></div>
            <div className="queue-meta">
              {run.status}
              {run.id === activeRun && run.status === "running" && total ? ` · ${done}/${total} nodes` : ""}
            </div>
          </div>
          <button onClick={() => cancel(run.id)} title={run.status === "running" ? "Stop this run" : "Remove from the queue"}>
            {run.status === "running" ? "Stop" : "Cancel"}
          </button>
        </div>
      ))}
      {!queue.running.length && !queue.pending.length && <div className="empty">Nothing queued. Run with {keysText("run")}.</div>}
    </div>
  );
}

/** Finished runs, newest first: each image a tile (click to enlarge, drag onto the canvas to load
 * its workflow); runs without images as one line with their status. */
function Gallery() {
  const runHistory = useEditor((s) => s.runHistory);
  const finished = runHistory.filter((run) => run.status !== "queued" && run.status !== "running");
  return (
    <div className="gallery">
      {finished.map((run) =>
        run.images.length ? (
          run.images.map((image, i) => {
            const url = imageUrl(image);
            return (
              <figure key={`${run.id}/${i}`} className="tile" data-run-id={run.id}>
                <img
                  src={thumbnailUrl(image)}
                  data-full={url}
                  alt={image.filename}
                  loading="lazy"
                  title={`${image.filename}: click to enlarge, drag onto the canvas to load its workflow`}
                  onClick={() => openLightbox(image, run.id)}
                  draggable
                  onDragStart={(e) => e.dataTransfer.setData(IMAGE_DRAG_TYPE, JSON.stringify({ url, label: image.filename }))}
                />
                <figcaption>
                  <span>{run.name ?? "Untitled"}</span>
                  <span>{when(run)}</span>
                </figcaption>
              </figure>
            );
          })
        ) : (
          <div key={run.id} className={`gallery-line status-${run.status}`} data-run-id={run.id} title={run.error ?? undefined}>
            <span>{run.name ?? "Untitled"}</span>
            <span className={`run-status status-${run.status}`}>{run.status === "succeeded" ? "no images" : run.status}</span>
            <span className="queue-meta">{when(run)}</span>
          </div>
        ),
      )}
      {!finished.length && <div className="empty">Finished runs and their images show here.</div>}
    </div>
  );
}

export default function SidePanel() {
  const panel = useEditor((s) => s.panel);
  const pending = useEditor((s) => s.queue.pending.length + s.queue.running.length);
  return (
    <aside className="side-panel">
      <div className="tabs" role="tablist">
        <button role="tab" aria-selected={panel === "gallery"} className={panel === "gallery" ? "active" : ""} onClick={() => showPanel("gallery")}>Gallery</button>
        <button role="tab" aria-selected={panel === "queue"} className={panel === "queue" ? "active" : ""} onClick={() => showPanel("queue")}>
          Queue{pending ? ` (${pending})` : ""}
        </button>
      </div>
      {panel === "queue" ? <QueueList /> : <Gallery />}
    </aside>
  );
}

export function Lightbox() {
  const lightbox = useEditor((s) => s.lightbox);
  if (!lightbox) return null;
  const url = imageUrl(lightbox.image);
  const close = closeLightbox;
  return (
    <div className="lightbox" role="dialog" aria-label="Image" onClick={close} onKeyDown={(e) => e.key === "Escape" && close()}>
      <img src={url} alt={lightbox.image.filename} onClick={(e) => e.stopPropagation()} />
      <div className="lightbox-bar" onClick={(e) => e.stopPropagation()}>
        <span>{lightbox.image.filename}</span>
        <a className="button" href={url} download={lightbox.image.filename}>Download</a>
        <button onClick={() => { close(); openWorkflowOfImage(url, lightbox.image.filename); }}>Load its workflow</button>
        <button onClick={close} autoFocus>Close</button>
      </div>
    </div>
  );
}
