/**
 * Reading the workflow a PNG carries. The server's save_image writes it as a text chunk with the
 * keyword "workflow" (tEXt when the JSON is Latin-1, as Python's json.dumps output is; iTXt or zTXt
 * when another writer compressed it or needed UTF-8). Pure module: bytes in, text out.
 */

export const WORKFLOW_PNG_KEY = "workflow";
const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

export interface PngTextChunk {
  kind: "tEXt" | "zTXt" | "iTXt";
  keyword: string;
  text: string;
}

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const latin1 = (bytes: Uint8Array) => new TextDecoder("latin1").decode(bytes);
const utf8 = (bytes: Uint8Array) => new TextDecoder("utf-8").decode(bytes);

/** Every text chunk of a PNG, in file order. Throws if the bytes are not a PNG. */
export async function readPngTextChunks(bytes: Uint8Array): Promise<PngTextChunk[]> {
  if (!isPng(bytes)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks: PngTextChunk[] = [];
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const kind = latin1(bytes.subarray(offset + 4, offset + 8));
    const start = offset + 8;
    const end = start + length;
    if (end > bytes.length) break; // truncated file: keep what was read
    const body = bytes.subarray(start, end);
    const zero = body.indexOf(0);
    if (kind === "tEXt" && zero > 0) {
      chunks.push({ kind, keyword: latin1(body.subarray(0, zero)), text: latin1(body.subarray(zero + 1)) });
    } else if (kind === "zTXt" && zero > 0) {
      // keyword \0 method(1) compressed-text
      const text = latin1(await inflate(body.subarray(zero + 2)));
      chunks.push({ kind, keyword: latin1(body.subarray(0, zero)), text });
    } else if (kind === "iTXt" && zero > 0) {
      // keyword \0 compressed(1) method(1) language \0 translated keyword \0 text
      const compressed = body[zero + 1] === 1;
      const languageEnd = body.indexOf(0, zero + 3);
      const translatedEnd = languageEnd < 0 ? -1 : body.indexOf(0, languageEnd + 1);
      if (translatedEnd >= 0) {
        const raw = body.subarray(translatedEnd + 1);
        const text = utf8(compressed ? await inflate(raw) : raw);
        chunks.push({ kind, keyword: latin1(body.subarray(0, zero)), text });
      }
    } else if (kind === "IEND") {
      break;
    }
    offset = end + 4; // skip the CRC
  }
  return chunks;
}

/** The workflow JSON text a PNG carries, or null when it has none. */
export async function workflowTextFromPng(bytes: Uint8Array): Promise<string | null> {
  const chunks = await readPngTextChunks(bytes);
  return chunks.find((chunk) => chunk.keyword === WORKFLOW_PNG_KEY)?.text ?? null;
}
