/**
 * The mask painter's pixels (pure): a mask is one byte a pixel, 255 = repaint, the convention of
 * load_image's MASK output. Brush dabs, strokes between pointer positions, invert, and the
 * conversions to and from the pictures the server exchanges (an opaque grey picture: a canvas
 * keeps opaque pixels exactly, where it would round partly transparent ones).
 */

export interface Mask {
  width: number;
  height: number;
  /** Row-major, one byte a pixel: 0 keep, 255 repaint. */
  data: Uint8Array;
}

export interface Brush {
  /** Diameter in image pixels. */
  size: number;
  /** 0..1: the part of the radius painted at full strength; beyond it the strength falls off linearly to the rim. */
  hardness: number;
  mode: "paint" | "erase";
}

/** The pixels a change touched, to redraw only those. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export function emptyMask(width: number, height: number): Mask {
  return { width, height, data: new Uint8Array(width * height) };
}

/** Strength 0..1 of a brush of `radius` and `hardness` at `distance` from its centre. */
export function brushStrength(distance: number, radius: number, hardness: number): number {
  if (radius <= 0 || distance >= radius) return 0;
  const full = radius * Math.min(Math.max(hardness, 0), 1);
  if (distance <= full) return 1;
  return (radius - distance) / (radius - full);
}

/** One dab of the brush centred at (x, y) in image coordinates (pixel i's centre is at i + 0.5).
 * Painting raises each pixel to the brush's strength (never above it: strokes over strokes do not
 * build up), erasing lowers it to 1 - strength. Returns the pixels it may have changed, or null. */
export function dab(mask: Mask, x: number, y: number, brush: Brush): Rect | null {
  const radius = brush.size / 2;
  const x0 = Math.max(0, Math.floor(x - radius));
  const y0 = Math.max(0, Math.floor(y - radius));
  const x1 = Math.min(mask.width, Math.ceil(x + radius));
  const y1 = Math.min(mask.height, Math.ceil(y + radius));
  if (x0 >= x1 || y0 >= y1) return null;
  const { data, width } = mask;
  for (let py = y0; py < y1; py++) {
    const dy = py + 0.5 - y;
    for (let px = x0; px < x1; px++) {
      const dx = px + 0.5 - x;
      const strength = brushStrength(Math.hypot(dx, dy), radius, brush.hardness);
      if (strength <= 0) continue;
      const i = py * width + px;
      const level = Math.round(strength * 255);
      if (brush.mode === "paint") {
        if (data[i] < level) data[i] = level;
      } else if (data[i] > 255 - level) data[i] = 255 - level;
    }
  }
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** Dabs from (x0, y0) to (x1, y1), a quarter of the radius apart (at least a pixel), the first
 * point left out (the previous stroke segment painted it). */
export function strokePoints(x0: number, y0: number, x1: number, y1: number, size: number): [number, number][] {
  const spacing = Math.max(1, size / 8);
  const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / spacing));
  const points: [number, number][] = [];
  for (let s = 1; s <= steps; s++) points.push([x0 + ((x1 - x0) * s) / steps, y0 + ((y1 - y0) * s) / steps]);
  return points;
}

/** A stroke segment: its dabs, and the rectangle around all they touched. */
export function stroke(mask: Mask, x0: number, y0: number, x1: number, y1: number, brush: Brush): Rect | null {
  let box: Rect | null = null;
  for (const [x, y] of strokePoints(x0, y0, x1, y1, brush.size)) box = union(box, dab(mask, x, y, brush));
  return box;
}

export function union(a: Rect | null, b: Rect | null): Rect | null {
  if (!a) return b;
  if (!b) return a;
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return { x, y, width: Math.max(a.x + a.width, b.x + b.width) - x, height: Math.max(a.y + a.height, b.y + b.height) - y };
}

export function invert(mask: Mask): void {
  const { data } = mask;
  for (let i = 0; i < data.length; i++) data[i] = 255 - data[i];
}

/** How much of the picture is to be repainted, 0..1 (a soft pixel counts by its value). */
export function coverage(mask: Mask): number {
  let total = 0;
  for (const value of mask.data) total += value;
  return mask.data.length ? total / (255 * mask.data.length) : 0;
}

/** The mask from an RGBA picture of it (the server's `mask` view, drawn on a canvas): its red channel. */
export function maskFromGrey(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number): Mask {
  if (rgba.length !== width * height * 4) throw new Error(`expected ${width}x${height} RGBA pixels, got ${rgba.length / 4}`);
  const mask = emptyMask(width, height);
  for (let i = 0; i < mask.data.length; i++) mask.data[i] = rgba[i * 4];
  return mask;
}

/** The opaque grey picture of the mask (white = repaint) that the server reads, as RGBA pixels. */
export function greyFromMask(mask: Mask): Uint8ClampedArray<ArrayBuffer> {
  const rgba = new Uint8ClampedArray(mask.data.length * 4);
  for (let i = 0; i < mask.data.length; i++) {
    const v = mask.data[i];
    rgba[i * 4] = v;
    rgba[i * 4 + 1] = v;
    rgba[i * 4 + 2] = v;
    rgba[i * 4 + 3] = 255;
  }
  return rgba;
}

/** Overlay pixels for a region of the mask: `colour` with the mask as its alpha. */
export function overlayPixels(mask: Mask, rect: Rect, colour: [number, number, number]): Uint8ClampedArray<ArrayBuffer> {
  const rgba = new Uint8ClampedArray(rect.width * rect.height * 4);
  let o = 0;
  for (let y = rect.y; y < rect.y + rect.height; y++) {
    for (let x = rect.x; x < rect.x + rect.width; x++) {
      rgba[o] = colour[0];
      rgba[o + 1] = colour[1];
      rgba[o + 2] = colour[2];
      rgba[o + 3] = mask.data[y * mask.width + x];
      o += 4;
    }
  }
  return rgba;
}

/** A brush size that suits a picture: about a twelfth of its shorter side, 2 to 128 pixels. */
export function defaultBrushSize(width: number, height: number): number {
  return Math.min(128, Math.max(2, Math.round(Math.min(width, height) / 12)));
}

/** Undo steps that fit in `budget` bytes of copies (at least one). */
export function undoDepth(width: number, height: number, budget = 192 << 20): number {
  return Math.max(1, Math.min(30, Math.floor(budget / Math.max(1, width * height))));
}
