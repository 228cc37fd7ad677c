import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { isPng, readPngTextChunks, workflowTextFromPng } from "../src/png";

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(kind: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(Buffer.from(kind, "latin1"), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const latin1 = (text: string) => new Uint8Array(Buffer.from(text, "latin1"));
const utf8 = (text: string) => new Uint8Array(Buffer.from(text, "utf8"));

/** A valid 1x1 RGB PNG with the given extra chunks between IHDR and IDAT. */
function png(...extra: Uint8Array[]): Uint8Array {
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, 1);
  new DataView(ihdr.buffer).setUint32(4, 1);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const pixels = deflateSync(Buffer.from([0, 255, 0, 0]));
  return concat(
    new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    ...extra,
    chunk("IDAT", new Uint8Array(pixels)),
    chunk("IEND", new Uint8Array()),
  );
}
const tEXt = (keyword: string, text: string) => chunk("tEXt", concat(latin1(keyword), new Uint8Array([0]), latin1(text)));

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
