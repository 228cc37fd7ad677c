/**
 * The mask painter: a load_image node's picture, full size in a modal, with the mask drawn over it
 * in colour. Paint or erase with a round brush (size and hardness), clear, invert, undo; Save sends
 * the mask to the server, which writes it into a copy of the picture as its alpha channel, and the
 * node then names the copy. The mask is pixels of src/mask.ts; this file only draws and listens.
 */
import { useCallback, useEffect, useRef, useState, type PointerEvent as ReactPointerEvent } from "react";
import { imageViewUrl, inputImage } from "../api";
import {
  coverage,
  defaultBrushSize,
  dab,
  emptyMask,
  greyFromMask,
  invert,
  maskFromGrey,
  overlayPixels,
  stroke,
  undoDepth,
  type Brush,
  type Mask,
  type Rect,
} from "../mask";
import { saveMask } from "../session";
import { comboText, isTyping } from "../shortcuts";
import { closeMaskPainter, useEditor, type MaskTarget } from "../store";

const OVERLAY: [number, number, number] = [255, 64, 112];
const MAX_BRUSH = 512;

function loadPicture(url: string): Promise<HTMLImageElement> {
  const image = new Image();
  image.src = url;
  return image.decode().then(
    () => image,
    () => Promise.reject(new Error(`could not load ${url}`)),
  );
}

/** The mask the picture already holds (the server's `mask` view, an opaque grey picture). */
function readMask(picture: HTMLImageElement): Mask {
  const { naturalWidth: width, naturalHeight: height } = picture;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d", { willReadFrequently: true })!;
  g.drawImage(picture, 0, 0);
  return maskFromGrey(g.getImageData(0, 0, width, height).data, width, height);
}

function encodeMask(mask: Mask): Promise<Blob> {
  const canvas = document.createElement("canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  canvas.getContext("2d")!.putImageData(new ImageData(greyFromMask(mask), mask.width, mask.height), 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the mask could not be encoded"))), "image/png"));
}

/** How large the picture shows: as large as fits in most of the window. */
function displayScale(width: number, height: number): number {
  const maxWidth = Math.min(window.innerWidth * 0.86, 1600);
  const maxHeight = window.innerHeight * 0.66;
  return Math.min(maxWidth / width, maxHeight / height);
}

function Painter({ target }: { target: MaskTarget }) {
  const ref = inputImage(target.image);
  const rgbUrl = imageViewUrl(ref, "rgb");
  const [size, setSize] = useState<{ width: number; height: number; scale: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [brush, setBrush] = useState<Brush>({ size: 16, hardness: 1, mode: "paint" });
  const [undoCount, setUndoCount] = useState(0);
  const [covered, setCovered] = useState(0);
  const [saving, setSaving] = useState(false);
  const [cursor, setCursor] = useState<{ x: number; y: number } | null>(null);
  const mask = useRef<Mask>(emptyMask(0, 0));
  const history = useRef<Uint8Array[]>([]);
  const canvas = useRef<HTMLCanvasElement>(null);
  const drawing = useRef<{ x: number; y: number; pointer: number } | null>(null);

  useEffect(() => {
    let live = true;
    Promise.all([loadPicture(rgbUrl), loadPicture(imageViewUrl(ref, "mask"))]).then(
      ([picture, grey]) => {
        if (!live) return;
        const { naturalWidth: width, naturalHeight: height } = picture;
        if (grey.naturalWidth !== width || grey.naturalHeight !== height) {
          setError(`the mask is ${grey.naturalWidth}x${grey.naturalHeight} but the picture ${width}x${height}`);
          return;
        }
        mask.current = readMask(grey);
        setCovered(coverage(mask.current));
        setBrush((b) => ({ ...b, size: defaultBrushSize(width, height) }));
        setSize({ width, height, scale: displayScale(width, height) });
      },
      (e: Error) => live && setError(`Could not open ${target.image}: ${e.message}`),
    );
    return () => {
      live = false;
    };
  }, [rgbUrl]); // the picture's name is the whole of what it depends on

  const redraw = useCallback((rect: Rect | null) => {
    const g = canvas.current?.getContext("2d");
    const m = mask.current;
    if (!g || !rect || !rect.width || !rect.height) return;
    g.putImageData(new ImageData(overlayPixels(m, rect, OVERLAY), rect.width, rect.height), rect.x, rect.y);
  }, []);
  const redrawAll = useCallback(() => {
    redraw({ x: 0, y: 0, width: mask.current.width, height: mask.current.height });
    setCovered(coverage(mask.current));
  }, [redraw]);
  useEffect(() => {
    if (size) redrawAll();
  }, [size, redrawAll]);

  /** Keep a copy for undo before a change. */
  const remember = useCallback(() => {
    const m = mask.current;
    history.current = [...history.current, m.data.slice()].slice(-undoDepth(m.width, m.height));
    setUndoCount(history.current.length);
  }, []);
  const undo = useCallback(() => {
    const previous = history.current.pop();
    if (!previous) return;
    mask.current.data.set(previous);
    setUndoCount(history.current.length);
    redrawAll();
  }, [redrawAll]);
  const change = useCallback((edit: (m: Mask) => void) => {
    remember();
    edit(mask.current);
    redrawAll();
  }, [remember, redrawAll]);

  const save = useCallback(async () => {
    if (!size || saving) return;
    setSaving(true);
    try {
      const blob = await encodeMask(mask.current);
      if (await saveMask(target.nodeId, target.input, target.image, blob)) closeMaskPainter();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setSaving(false);
    }
  }, [size, saving, target]);

  const resize = (factor: number) => setBrush((b) => ({ ...b, size: Math.min(MAX_BRUSH, Math.max(1, Math.round(b.size * factor) || 1)) }));

  useEffect(() => {
    // Capture phase: the painter's keys come before the editor's (undo takes back a stroke, not a graph edit).
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      const typing = isTyping(e.target) && (e.target as HTMLInputElement).type !== "range";
      if (mod && e.key.toLowerCase() === "z" && !e.shiftKey) {
        if (typing) return;
        undo();
      } else if (mod && e.key.toLowerCase() === "s") {
        void save();
      } else if (!mod && !typing && e.key === "[") {
        resize(1 / 1.25);
      } else if (!mod && !typing && e.key === "]") {
        resize(1.25);
      } else if (!mod && !typing && e.key.toLowerCase() === "x") {
        setBrush((b) => ({ ...b, mode: b.mode === "paint" ? "erase" : "paint" }));
      } else {
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    };
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  }, [undo, save]);

  const toImage = (e: ReactPointerEvent<HTMLCanvasElement>) => {
    const box = e.currentTarget.getBoundingClientRect();
    return { x: ((e.clientX - box.left) * mask.current.width) / box.width, y: ((e.clientY - box.top) * mask.current.height) / box.height };
  };
  const onPointerDown = (e: ReactPointerEvent<HTMLCanvasElement>) => {
    if (e.button !== 0 || drawing.current) return;
    e.currentTarget.setPointerCapture(e.pointerId);
    const at = toImage(e);
    remember();
    drawing.current = { ...at, pointer: e.pointerId };
    redraw(dab(mask.current, at.x, at.y, brush));
  };
  const onPointerMove = (e: ReactPointerEvent<HTMLCanvasElement>) => {
    const box = e.currentTarget.getBoundingClientRect();
    setCursor({ x: e.clientX - box.left, y: e.clientY - box.top });
    const last = drawing.current;
    if (!last || last.pointer !== e.pointerId) return;
    const at = toImage(e);
    redraw(stroke(mask.current, last.x, last.y, at.x, at.y, brush));
    drawing.current = { ...at, pointer: e.pointerId };
  };
  const onPointerUp = (e: ReactPointerEvent<HTMLCanvasElement>) => {
    if (drawing.current?.pointer !== e.pointerId) return;
    drawing.current = null;
    setCovered(coverage(mask.current));
  };

  const shown = size ? { width: size.width * size.scale, height: size.height * size.scale } : undefined;
  return (
    <div className="dialog mask-painter" role="dialog" aria-label="Mask painter" onMouseDown={(e) => e.stopPropagation()}>
      <h2>
        Mask <span className="mask-file">{target.image}</span>
      </h2>
      <div className="mask-tools" role="toolbar" aria-label="Brush">
        <div className="mask-modes" role="group" aria-label="Brush mode">
          <button aria-pressed={brush.mode === "paint"} className={brush.mode === "paint" ? "active" : ""} title="Paint the area to repaint (X switches)" onClick={() => setBrush({ ...brush, mode: "paint" })}>
            Paint
          </button>
          <button aria-pressed={brush.mode === "erase"} className={brush.mode === "erase" ? "active" : ""} title="Erase the mask (X switches)" onClick={() => setBrush({ ...brush, mode: "erase" })}>
            Erase
          </button>
        </div>
        <label title="Brush diameter in image pixels ([ and ] change it)">
          Size
          <input type="range" min={1} max={MAX_BRUSH} value={brush.size} aria-label="Brush size" onChange={(e) => setBrush({ ...brush, size: Number(e.target.value) })} />
          <span className="mask-value">{brush.size} px</span>
        </label>
        <label title="How much of the brush paints at full strength; the rest fades out to its rim">
          Hardness
          <input type="range" min={0} max={100} value={Math.round(brush.hardness * 100)} aria-label="Brush hardness" onChange={(e) => setBrush({ ...brush, hardness: Number(e.target.value) / 100 })} />
          <span className="mask-value">{Math.round(brush.hardness * 100)}%</span>
        </label>
        <button onClick={undo} disabled={!undoCount} title={`Undo the last stroke (${comboText("mod+z")})`}>Undo</button>
        <button onClick={() => change((m) => m.data.fill(0))} disabled={!size} title="Remove the whole mask">Clear</button>
        <button onClick={() => change(invert)} disabled={!size} title="Repaint what was kept and keep what was to be repainted">Invert</button>
        <span className="mask-value" aria-live="polite">{Math.round(covered * 100)}% to repaint</span>
      </div>
      {error && <div className="node-errors" role="alert">{error}</div>}
      <div className="mask-stage" style={shown}>
        {!size && !error && <div className="empty">Loading…</div>}
        {size && (
          <>
            <img src={rgbUrl} alt={target.image} draggable={false} className={size.scale > 2 ? "pixelated" : ""} />
            <canvas
              ref={canvas}
              width={size.width}
              height={size.height}
              className={size.scale > 2 ? "pixelated" : ""}
              aria-label="Mask: drag to paint"
              onPointerDown={onPointerDown}
              onPointerMove={onPointerMove}
              onPointerUp={onPointerUp}
              onPointerCancel={onPointerUp}
              onPointerLeave={() => setCursor(null)}
            />
            {cursor && (
              <div
                className={`mask-cursor ${brush.mode}`}
                style={{ left: cursor.x, top: cursor.y, width: brush.size * size.scale, height: brush.size * size.scale }}
              />
            )}
          </>
        )}
      </div>
      <div className="dialog-actions">
        <span className="queue-meta">White on the saved mask, transparent in the saved picture: the area the sampler repaints.</span>
        <button onClick={closeMaskPainter}>Cancel</button>
        <button className="primary" onClick={() => void save()} disabled={!size || saving} title={`Save the mask into a copy of the picture (${comboText("mod+s")})`}>
          {saving ? "Saving…" : "Save"}
        </button>
      </div>
    </div>
  );
}

/** The painter, while one is open (the UI slice's `maskPainter`). */
export default function MaskPainter() {
  const target = useEditor((s) => s.maskPainter);
  if (!target) return null;
  return (
    <div className="popup-backdrop modal mask-backdrop">
      <Painter key={`${target.nodeId}/${target.input}/${target.image}`} target={target} />
    </div>
  );
}
