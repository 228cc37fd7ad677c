// The mask painter's pixels (src/mask.ts) with exact numbers, and its place among the editor's keys.
import { describe, expect, it, vi } from "vitest";

vi.mock("../src/session", () => ({ run: vi.fn(async () => true), saveOrAskName: vi.fn(async () => true) }));

import {
  brushStrength,
  coverage,
  dab,
  defaultBrushSize,
  emptyMask,
  greyFromMask,
  invert,
  maskFromGrey,
  overlayPixels,
  stroke,
  strokePoints,
  undoDepth,
  type Brush,
  type Mask,
} from "../src/mask";
import { handleShortcut, type KeyEventLike, type ShortcutContext } from "../src/shortcuts";
import { addNode, closeMaskPainter, openMaskPainter, useEditor } from "../src/store";

const hard = (size: number, mode: Brush["mode"] = "paint"): Brush => ({ size, hardness: 1, mode });
const at = (mask: Mask, x: number, y: number) => mask.data[y * mask.width + x];
const painted = (mask: Mask) => mask.data.reduce((n, v) => n + (v > 0 ? 1 : 0), 0);

describe("the brush", () => {
  it("is full strength inside its hardness and falls off linearly to the rim", () => {
    expect(brushStrength(0, 4, 1)).toBe(1);
    expect(brushStrength(3.99, 4, 1)).toBe(1);
    expect(brushStrength(4, 4, 1)).toBe(0);
    expect(brushStrength(5, 10, 0.5)).toBe(1);
    expect(brushStrength(7.5, 10, 0.5)).toBe(0.5);
    expect(brushStrength(9, 10, 0)).toBeCloseTo(0.1, 12);
    expect(brushStrength(0, 0, 1)).toBe(0);
  });

  it("paints a hard dab on the pixels whose centres lie inside it", () => {
    const mask = emptyMask(20, 20);
    const rect = dab(mask, 10, 10, hard(8));
    expect(rect).toEqual({ x: 6, y: 6, width: 8, height: 8 });
    // Pixel centres (i + 0.5) within 4 of (10, 10): 13 a quadrant.
    expect(painted(mask)).toBe(52);
    expect([...new Set(mask.data)].sort((a, b) => a - b)).toEqual([0, 255]);
    expect([at(mask, 6, 10), at(mask, 13, 10), at(mask, 5, 10), at(mask, 14, 10)]).toEqual([255, 255, 0, 0]);
    expect([at(mask, 6, 6), at(mask, 7, 7)]).toEqual([0, 255]);
  });

  it("paints a soft dab by its distance, and never builds up over itself", () => {
    const mask = emptyMask(20, 20);
    dab(mask, 10, 10, { size: 8, hardness: 0, mode: "paint" });
    expect(at(mask, 10, 10)).toBe(Math.round((1 - Math.SQRT1_2 / 4) * 255)); // 210
    expect(at(mask, 12, 10)).toBe(Math.round((1 - Math.hypot(2.5, 0.5) / 4) * 255));
    const once = mask.data.slice();
    dab(mask, 10, 10, { size: 8, hardness: 0, mode: "paint" });
    expect(mask.data).toEqual(once);
    dab(mask, 10, 10, hard(2)); // a hard dab in the middle raises only what it covers
    expect(at(mask, 10, 10)).toBe(255);
    expect(at(mask, 12, 10)).toBe(once[10 * 20 + 12]);
  });

  it("erases down to the brush's inverse strength", () => {
    const mask = emptyMask(20, 20);
    dab(mask, 10, 10, hard(12));
    dab(mask, 10, 10, hard(4, "erase"));
    expect([at(mask, 10, 10), at(mask, 9, 9), at(mask, 12, 10), at(mask, 14, 10)]).toEqual([0, 0, 255, 255]);
    dab(mask, 10, 10, { size: 12, hardness: 0, mode: "erase" });
    expect(at(mask, 14, 10)).toBe(255 - Math.round((1 - Math.hypot(4.5, 0.5) / 6) * 255));
    expect(at(mask, 0, 0)).toBe(0);
  });

  it("stays inside the picture at its edges", () => {
    const mask = emptyMask(10, 6);
    expect(dab(mask, 0, 0, hard(4))).toEqual({ x: 0, y: 0, width: 2, height: 2 });
    expect(painted(mask)).toBe(3); // (0,0), (1,0), (0,1): the centre of (1,1) is 2.12 away
    expect(dab(mask, -10, 3, hard(4))).toBeNull();
    expect(dab(mask, 11.5, 3, hard(4))).toEqual({ x: 9, y: 1, width: 1, height: 4 });
  });
});

describe("strokes", () => {
  it("puts dabs at most an eighth of the brush apart, ending where the pointer is", () => {
    const points = strokePoints(0, 0, 10, 0, 16);
    expect(points.length).toBe(5);
    expect(points.at(-1)).toEqual([10, 0]);
    expect(points[0]).toEqual([2, 0]);
    expect(strokePoints(3, 4, 3, 4, 8)).toEqual([[3, 4]]);
    expect(strokePoints(0, 0, 3, 4, 2)).toHaveLength(5); // a pixel apart at least
  });

  it("paints a band along its path and nothing beyond", () => {
    const mask = emptyMask(40, 20);
    dab(mask, 2, 10, hard(4));
    const rect = stroke(mask, 2, 10, 30, 10, hard(4));
    expect(rect).toEqual({ x: 1, y: 8, width: 31, height: 4 }); // its first dab is a pixel on
    for (let x = 1; x < 31; x++) {
      for (let y = 0; y < 20; y++) expect(at(mask, x, y), `${x},${y}`).toBe(y >= 8 && y <= 11 ? 255 : 0);
    }
    for (let x = 32; x < 40; x++) expect(at(mask, x, 10)).toBe(0);
  });
});

describe("whole-mask operations and the pictures exchanged with the server", () => {
  it("inverts and measures coverage", () => {
    const mask = emptyMask(4, 2);
    mask.data.set([0, 255, 51, 0, 0, 0, 0, 0]);
    expect(coverage(mask)).toBeCloseTo(306 / (255 * 8), 12);
    invert(mask);
    expect([...mask.data]).toEqual([255, 0, 204, 255, 255, 255, 255, 255]);
    expect(coverage(emptyMask(0, 0))).toBe(0);
  });

  it("writes an opaque grey picture and reads one back exactly", () => {
    const mask = emptyMask(3, 2);
    mask.data.set([0, 1, 127, 128, 254, 255]);
    const grey = greyFromMask(mask);
    expect([...grey.slice(8, 12)]).toEqual([127, 127, 127, 255]);
    expect([...grey.filter((_, i) => i % 4 === 3)]).toEqual([255, 255, 255, 255, 255, 255]);
    expect(maskFromGrey(grey, 3, 2)).toEqual(mask);
    expect(() => maskFromGrey(grey, 2, 2)).toThrow("expected 2x2 RGBA pixels, got 6");
  });

  it("tints a region of the overlay with the mask as alpha", () => {
    const mask = emptyMask(3, 3);
    mask.data.set([0, 0, 0, 0, 9, 200, 0, 77, 255]);
    expect([...overlayPixels(mask, { x: 1, y: 1, width: 2, height: 2 }, [255, 64, 112])]).toEqual([
      255, 64, 112, 9, 255, 64, 112, 200, 255, 64, 112, 77, 255, 64, 112, 255,
    ]);
  });

  it("picks a brush for the picture and bounds the undo copies", () => {
    expect(defaultBrushSize(64, 48)).toBe(4);
    expect(defaultBrushSize(512, 512)).toBe(43);
    expect(defaultBrushSize(8192, 8192)).toBe(128);
    expect(defaultBrushSize(8, 8)).toBe(2);
    expect(undoDepth(512, 512)).toBe(30);
    expect(undoDepth(8192, 8192)).toBe(3); // 64 MB a copy
    expect(undoDepth(100_000, 100_000)).toBe(1);
  });
});

describe("the painter among the editor's keys", () => {
  const context = (): ShortcutContext => ({ pointer: { x: 0, y: 0 }, toFlow: (p) => p, fitView: () => undefined, bodyHasFocus: () => true });
  const press = (key: string, ctrlKey = false): KeyEventLike & { defaultPrevented: boolean } => {
    const event = { key, ctrlKey, metaKey: false, shiftKey: false, target: { tagName: "BODY" } as unknown as EventTarget, defaultPrevented: false,
      preventDefault: () => (event.defaultPrevented = true) };
    return event;
  };

  it("keeps graph edits from its keys while open; Escape closes it", () => {
    addNode("load_image", { x: 0, y: 0 });
    const nodes = useEditor.getState().nodes;
    openMaskPainter({ nodeId: "load_image", input: "image", image: "photo.png" });
    expect(useEditor.getState().maskPainter).toEqual({ nodeId: "load_image", input: "image", image: "photo.png" });
    expect(handleShortcut(press("z", true), context())).toBeNull();
    expect(handleShortcut(press("a", true), context())).toBeNull();
    expect(handleShortcut(press(" "), context())).toBeNull();
    expect(useEditor.getState().nodes).toBe(nodes);
    expect(handleShortcut(press("Escape"), context())).toBe("close");
    expect(useEditor.getState().maskPainter).toBeNull();
    openMaskPainter({ nodeId: "load_image", input: "image", image: "photo.png" });
    closeMaskPainter();
    expect(useEditor.getState().maskPainter).toBeNull();
  });
});
