/**
 * Canvas geometry for groups and reroute points (pure: numbers in, numbers out).
 *
 * - Group membership is by geometry, as in ComfyUI: a node, note or group whose top-left corner
 *   lies inside a group's rectangle moves with it (decided when a drag starts).
 * - A link with reroute points is drawn as one curve per stretch (source → first point → … →
 *   target), each the same horizontal-tangent cubic Bézier React Flow draws for a plain link, so a
 *   link without points looks as it always did and one with points passes through them smoothly.
 */

export interface XY {
  x: number;
  y: number;
}

export interface Rect extends XY {
  width: number;
  height: number;
}

/** Whether a point lies inside a rectangle (left and top edges included, right and bottom not). */
export function containsPoint(rect: Rect, point: XY): boolean {
  return point.x >= rect.x && point.y >= rect.y && point.x < rect.x + rect.width && point.y < rect.y + rect.height;
}

/** The ids of the items whose top-left corner lies inside `rect` (the item with `exclude` left out). */
export function itemsInside(rect: Rect, items: { id: string; position: XY }[], exclude?: string): string[] {
  return items.filter((item) => item.id !== exclude && containsPoint(rect, item.position)).map((item) => item.id);
}

/** The smallest rectangle holding every rectangle, widened by `padding` and by `header` at the
 * top (room for a group's title bar). Null for no rectangles. */
export function boundsAround(rects: Rect[], padding = 0, header = 0): Rect | null {
  if (!rects.length) return null;
  const left = Math.min(...rects.map((r) => r.x));
  const top = Math.min(...rects.map((r) => r.y));
  const right = Math.max(...rects.map((r) => r.x + r.width));
  const bottom = Math.max(...rects.map((r) => r.y + r.height));
  return { x: left - padding, y: top - padding - header, width: right - left + 2 * padding, height: bottom - top + 2 * padding + header };
}

/** How far a Bézier control point sits from its end, for a stretch going `distance` to the right
 * (React Flow's rule for its default edges: half the distance forwards, a curl backwards). */
export function controlOffset(distance: number, curvature = 0.25): number {
  return distance >= 0 ? 0.5 * distance : curvature * 25 * Math.sqrt(-distance);
}

/** One stretch: leaves `a` to the right, enters `b` from the left. */
function stretch(a: XY, b: XY): string {
  const offset = controlOffset(b.x - a.x);
  return `C${a.x + offset},${a.y} ${b.x - offset},${b.y} ${b.x},${b.y}`;
}

/** SVG path through the points in order (the link's source first, its target last). */
export function routedPath(points: XY[]): string {
  if (!points.length) return "";
  let path = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length; i++) path += ` ${stretch(points[i - 1], points[i])}`;
  return path;
}

function distanceToSegment(p: XY, a: XY, b: XY): number {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const length2 = dx * dx + dy * dy;
  const t = length2 ? Math.max(0, Math.min(1, ((p.x - a.x) * dx + (p.y - a.y) * dy) / length2)) : 0;
  return Math.hypot(p.x - (a.x + t * dx), p.y - (a.y + t * dy));
}

/**
 * Where a new point goes in a link's list of reroute points: `line` is the whole route (source,
 * the points, target); the answer is the index in the points list (0 = right after the source)
 * of the stretch nearest to `point`.
 */
export function insertionIndex(line: XY[], point: XY): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let i = 0; i + 1 < line.length; i++) {
    const d = distanceToSegment(point, line[i], line[i + 1]);
    if (d < bestDistance) {
      bestDistance = d;
      best = i;
    }
  }
  return best;
}
