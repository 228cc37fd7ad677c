import { getBezierPath, Position } from "@xyflow/system";
import { describe, expect, it } from "vitest";
import { boundsAround, containsPoint, controlOffset, insertionIndex, itemsInside, routedPath } from "../src/geometry";

describe("group geometry", () => {
  const rect = { x: 10, y: 20, width: 100, height: 50 };

  it("holds a point from its left and top edges up to (not on) its right and bottom ones", () => {
    expect(containsPoint(rect, { x: 10, y: 20 })).toBe(true);
    expect(containsPoint(rect, { x: 109.9, y: 69.9 })).toBe(true);
    expect(containsPoint(rect, { x: 110, y: 30 })).toBe(false);
    expect(containsPoint(rect, { x: 50, y: 70 })).toBe(false);
    expect(containsPoint(rect, { x: 9.9, y: 30 })).toBe(false);
  });

  it("takes in the items whose top-left corner is inside, however far they reach out", () => {
    const items = [
      { id: "in", position: { x: 100, y: 60 } }, // reaches far beyond, but starts inside
      { id: "out", position: { x: 0, y: 30 } }, // overlaps, but starts outside
      { id: "self", position: { x: 10, y: 20 } },
    ];
    expect(itemsInside(rect, items, "self")).toEqual(["in"]);
  });

  it("frames rectangles with padding and room for a title", () => {
    expect(boundsAround([])).toBeNull();
    expect(boundsAround([{ x: 0, y: 0, width: 10, height: 10 }, { x: 50, y: -20, width: 30, height: 5 }], 4, 20)).toEqual({
      x: -4, y: -44, width: 88, height: 58,
    });
  });
});

describe("links through reroute points", () => {
  it("draws a link without points exactly as React Flow's default edge", () => {
    for (const [sx, sy, tx, ty] of [[0, 0, 300, 120], [500, 40, 100, -60], [10, 10, 10, 10]]) {
      const [expected] = getBezierPath({ sourceX: sx, sourceY: sy, sourcePosition: Position.Right, targetX: tx, targetY: ty, targetPosition: Position.Left });
      expect(routedPath([{ x: sx, y: sy }, { x: tx, y: ty }])).toBe(expected);
    }
  });

  it("passes through every point, leaving each one level", () => {
    const path = routedPath([{ x: 0, y: 0 }, { x: 100, y: 50 }, { x: 300, y: 0 }]);
    expect(path).toBe("M0,0 C50,0 50,50 100,50 C200,50 200,0 300,0");
    // A stretch going backwards curls out by React Flow's rule.
    expect(controlOffset(-100)).toBeCloseTo(0.25 * 25 * 10);
    expect(routedPath([{ x: 0, y: 0 }, { x: -100, y: 0 }])).toBe("M0,0 C62.5,0 -162.5,0 -100,0");
  });

  it("puts a new point in the stretch nearest to where it was added", () => {
    const line = [{ x: 0, y: 0 }, { x: 100, y: 0 }, { x: 100, y: 100 }, { x: 300, y: 100 }];
    expect(insertionIndex(line, { x: 50, y: 5 })).toBe(0); // before the first point
    expect(insertionIndex(line, { x: 95, y: 60 })).toBe(1); // between the two points
    expect(insertionIndex(line, { x: 250, y: 120 })).toBe(2); // after the last point
    expect(insertionIndex([{ x: 0, y: 0 }, { x: 10, y: 0 }], { x: 999, y: 999 })).toBe(0);
  });
});
