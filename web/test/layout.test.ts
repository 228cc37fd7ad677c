import { describe, expect, it } from "vitest";
import { layeredLayout } from "../src/layout";

const box = (id: string, height = 100) => ({ id, width: 200, height });

describe("layered auto-layout", () => {
  it("puts each node one column after its deepest input", () => {
    const positions = layeredLayout(
      [box("save"), box("decode"), box("ckpt"), box("sampler"), box("prompt")],
      [
        { source: "ckpt", target: "prompt" },
        { source: "prompt", target: "sampler" },
        { source: "ckpt", target: "sampler" },
        { source: "sampler", target: "decode" },
        { source: "ckpt", target: "decode" },
        { source: "decode", target: "save" },
      ],
      { columnGap: 50 },
    );
    const x = (id: string) => positions.get(id)!.x;
    expect([x("ckpt"), x("prompt"), x("sampler"), x("decode"), x("save")]).toEqual([0, 250, 500, 750, 1000]);
  });

  it("stacks a column without overlap", () => {
    const positions = layeredLayout([box("a", 80), box("b", 300), box("c", 10)], [], { rowGap: 20 });
    expect([...positions.values()].map((p) => p.y)).toEqual([0, 100, 420]);
  });

  it("survives cycles and links to unknown nodes", () => {
    const positions = layeredLayout([box("a"), box("b")], [
      { source: "a", target: "b" }, { source: "b", target: "a" }, { source: "ghost", target: "a" },
    ]);
    expect(positions.size).toBe(2);
  });

  it("lays out 500 nodes quickly", () => {
    const nodes = Array.from({ length: 500 }, (_, i) => box(`n${i}`));
    const edges = nodes.slice(1).map((node, i) => ({ source: `n${Math.floor(i / 2)}`, target: node.id }));
    const start = performance.now();
    const positions = layeredLayout(nodes, edges);
    expect(performance.now() - start).toBeLessThan(200);
    expect(positions.size).toBe(500);
  });
});
