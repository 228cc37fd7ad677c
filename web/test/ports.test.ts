import { describe, expect, it } from "vitest";
import { accepts, linkRefusal, PORT_COLOURS, portColour } from "../src/ports";

describe("type compatibility", () => {
  it("links equal types", () => {
    for (const type of Object.keys(PORT_COLOURS)) expect(accepts(type, type)).toBe(true);
  });
  it("refuses different types", () => {
    expect(accepts("LATENT", "IMAGE")).toBe(false);
    expect(accepts("CLIP", "MODEL")).toBe(false);
    expect(accepts("INT", "FLOAT")).toBe(false); // narrowing would lose the fraction
    expect(accepts("STRING", "INT")).toBe(false);
    expect(accepts("INT", "ANY")).toBe(false); // an ANY output is not known to be an INT
  });
  it("lets an INT output feed a FLOAT input", () => {
    expect(accepts("FLOAT", "INT")).toBe(true);
  });
  it("lets an ANY input take everything", () => {
    for (const type of [...Object.keys(PORT_COLOURS), "CUSTOM_THING"]) expect(accepts("ANY", type)).toBe(true);
  });
  it("says why a link is refused, naming both ends and both types", () => {
    const reason = linkRefusal(
      { node: "checkpoint", output: "clip", type: "CLIP" },
      { node: "sampler", input: "model", type: "MODEL" },
    );
    expect(reason).toBe("sampler.model takes MODEL, but checkpoint.clip gives CLIP");
    expect(linkRefusal({ node: "a", output: "x", type: "INT" }, { node: "b", input: "y", type: "FLOAT" })).toBeNull();
    expect(linkRefusal({ node: "a", output: "x", type: "INT" }, { node: "a", input: "y", type: "INT" })).toMatch(/itself/);
  });
  it("colours every type, including ones a node library added", () => {
    expect(portColour("LATENT")).toBe(PORT_COLOURS.LATENT);
    expect(portColour("MY_TYPE")).toBe(portColour("MY_TYPE"));
    expect(portColour("MY_TYPE")).toMatch(/^hsl/);
    expect(new Set(Object.values(PORT_COLOURS)).size).toBe(Object.keys(PORT_COLOURS).length);
  });
});
