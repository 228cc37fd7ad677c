import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { isPng, readPngTextChunks, workflowTextFromPng } from "../src/png";
import { chunk, concat, latin1, png, tEXt, utf8 } from "./pngs";

const WORKFLOW = JSON.stringify({
  format: "latentgraph/workflow@1",
  nodes: { a: { type: "int_constant", inputs: { value: 3 } } },
  ui: { a: { x: 0, y: 0 } },
});

describe("PNG workflow extraction", () => {
  it("reads the workflow from a tEXt chunk", async () => {
    expect(await workflowTextFromPng(png(tEXt("parameters", "other"), tEXt("workflow", WORKFLOW)))).toBe(WORKFLOW);
  });

  it("decodes tEXt as Latin-1", async () => {
    expect(await workflowTextFromPng(png(tEXt("workflow", "café")))).toBe("café");
  });

  it("reads an uncompressed and a compressed iTXt chunk as UTF-8", async () => {
    const text = '{"meta": {"name": "ünïcode ✓"}, "nodes": {}}';
    for (const compressed of [false, true]) {
      const payload = compressed ? new Uint8Array(deflateSync(Buffer.from(text, "utf8"))) : utf8(text);
      const body = concat(latin1("workflow"), new Uint8Array([0, compressed ? 1 : 0, 0]), latin1("en"), new Uint8Array([0]), utf8("Workflow"), new Uint8Array([0]), payload);
      expect(await workflowTextFromPng(png(chunk("iTXt", body)))).toBe(text);
    }
  });

  it("reads a zTXt chunk", async () => {
    const body = concat(latin1("workflow"), new Uint8Array([0, 0]), new Uint8Array(deflateSync(Buffer.from(WORKFLOW, "latin1"))));
    expect(await workflowTextFromPng(png(chunk("zTXt", body)))).toBe(WORKFLOW);
  });

  it("returns null for a PNG without a workflow", async () => {
    expect(await workflowTextFromPng(png(tEXt("Software", "paint")))).toBeNull();
    expect(await readPngTextChunks(png(tEXt("Software", "paint")))).toEqual([{ kind: "tEXt", keyword: "Software", text: "paint" }]);
  });

  it("refuses bytes that are not a PNG", async () => {
    expect(isPng(utf8("{}"))).toBe(false);
    await expect(workflowTextFromPng(utf8("GIF89a......"))).rejects.toThrow(/not a PNG/);
  });

  it("keeps what it read from a truncated file", async () => {
    const whole = png(tEXt("workflow", WORKFLOW));
    const cut = whole.subarray(0, whole.length - 30);
    expect(await workflowTextFromPng(cut)).toBe(WORKFLOW);
  });

  it("works on a view into a larger buffer", async () => {
    const whole = png(tEXt("workflow", WORKFLOW));
    const padded = new Uint8Array(whole.length + 10);
    padded.set(whole, 5);
    expect(await workflowTextFromPng(padded.subarray(5, 5 + whole.length))).toBe(WORKFLOW);
  });
});
