/** Port types: which outputs may feed which inputs, and the colour each type has everywhere. */

export const PRIMITIVE_PORTS = new Set(["INT", "FLOAT", "STRING", "BOOLEAN"]);

/** Same rule as engine.ports.accepts: exact match, ANY takes everything, a FLOAT input takes INT. */
export function accepts(inputPort: string, outputPort: string): boolean {
  return inputPort === outputPort || inputPort === "ANY" || (inputPort === "FLOAT" && outputPort === "INT");
}

/** Why a link is refused, in words the user can act on; null when it is allowed. */
export function linkRefusal(
  from: { node: string; output: string; type: string },
  to: { node: string; input: string; type: string },
): string | null {
  if (from.node === to.node) return "a node cannot feed itself";
  if (accepts(to.type, from.type)) return null;
  return `${to.node}.${to.input} takes ${to.type}, but ${from.node}.${from.output} gives ${from.type}`;
}

export const PORT_COLOURS: Record<string, string> = {
  MODEL: "#b39ddb",
  CLIP: "#ffd54f",
  VAE: "#ef5350",
  CONDITIONING: "#ffa726",
  LATENT: "#f06292",
  IMAGE: "#64b5f6",
  MASK: "#81c784",
  NOISE: "#bcaaa4",
  SIGMAS: "#4dd0e1",
  SAMPLER: "#7986cb",
  CONTROL_NET: "#26a69a",
  UPSCALE_MODEL: "#a1887f",
  INT: "#aed581",
  FLOAT: "#4db6ac",
  STRING: "#e0e0e0",
  BOOLEAN: "#ce93d8",
  ANY: "#9e9e9e",
};

/** Colour of a port type; types a node library added get a stable colour from their name. */
export function portColour(type: string): string {
  const known = PORT_COLOURS[type];
  if (known) return known;
  let hash = 0;
  for (const ch of type) hash = (hash * 31 + ch.charCodeAt(0)) | 0;
  return `hsl(${Math.abs(hash) % 360} 60% 65%)`;
}
