// PNG files for the tests: chunks with their CRCs, a 1x1 picture with extra text chunks.
import { deflateSync } from "node:zlib";

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
export function chunk(kind: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(Buffer.from(kind, "latin1"), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}
export const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
export const latin1 = (text: string) => new Uint8Array(Buffer.from(text, "latin1"));
export const utf8 = (text: string) => new Uint8Array(Buffer.from(text, "utf8"));

/** A valid 1x1 RGB PNG with the given extra chunks between IHDR and IDAT. */
export function png(...extra: Uint8Array[]): Uint8Array {
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
export const tEXt = (keyword: string, text: string) => chunk("tEXt", concat(latin1(keyword), new Uint8Array([0]), latin1(text)));

