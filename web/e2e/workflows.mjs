// Workflows the browser tests build.

/** A workflow of `count` primitive nodes (constants feeding chains of math nodes, every 10th
 * column ending in a show_value), laid out in columns: big enough to measure the canvas. */
export function bigWorkflow(count = 500) {
  const nodes = {};
  const ui = {};
  const rows = 20;
  for (let i = 0; i < count; i++) {
    const column = Math.floor(i / rows);
    const row = i % rows;
    const id = `n${i}`;
    if (column === 0) nodes[id] = { type: "int_constant", inputs: { value: i } };
    else if (column % 5 === 4) nodes[id] = { type: "show_value", inputs: { value: { node: `n${i - rows}`, output: "value" } } };
    else if (column % 5 === 0) nodes[id] = { type: "int_math", inputs: { a: { node: `n${i - 2 * rows}`, output: "value" }, b: row, operation: "add" } };
    else nodes[id] = { type: "int_math", inputs: { a: { node: `n${i - rows}`, output: "value" }, b: { node: `n${(i - rows + 1) % rows + (column - 1) * rows}`, output: "value" }, operation: "multiply" } };
    ui[id] = { x: column * 300, y: row * 200 };
  }
  return { format: "latentgraph/workflow@1", meta: { name: `${count} nodes` }, nodes, ui };
}

/**
 * The demo txt2img as ComfyUI's editor saves it (UI format, schema 0.4): checkpoint → two prompts
 * → KSampler on a 64x64 latent → VAE decode (its VAE through a Reroute node) → ImageScale to
 * 48x48 → SaveImage; a second branch ImageScaleBy 0.5 → SaveImage; the prompts in a group; a
 * markdown Note (with HTML in it that must stay text). Node ids are ComfyUI's numbers.
 */
export function comfyDemoWorkflow({ prefix = "comfy_e2e", seed = 42, steps = 3, checkpoint = "latentgraph-demo.safetensors", extraNodes = [], extraLinks = [] } = {}) {
  const out = (name, type, links) => ({ name, type, links, slot_index: 0 });
  const input = (name, type, link) => ({ name, type, link });
  const node = (id, type, pos, size, fields) => ({ id, type, pos, size, flags: {}, order: id, mode: 0, properties: { "Node name for S&R": type }, ...fields });
  const nodes = [
    node(4, "CheckpointLoaderSimple", [20, 420], [315, 98], {
      outputs: [out("MODEL", "MODEL", [1]), { ...out("CLIP", "CLIP", [3, 5]), slot_index: 1 }, { ...out("VAE", "VAE", [8]), slot_index: 2 }],
      widgets_values: [checkpoint],
    }),
    node(6, "CLIPTextEncode", [420, 140], [400, 160], {
      title: "Positive", inputs: [input("clip", "CLIP", 3)], outputs: [out("CONDITIONING", "CONDITIONING", [4])],
      widgets_values: ["a red circle on a blue background"], color: "#232", bgcolor: "#353",
    }),
    node(7, "CLIPTextEncode", [420, 380], [400, 160], {
      title: "Negative", inputs: [input("clip", "CLIP", 5)], outputs: [out("CONDITIONING", "CONDITIONING", [6])],
      widgets_values: ["blurry"],
    }),
    node(5, "EmptyLatentImage", [420, 640], [315, 106], { outputs: [out("LATENT", "LATENT", [2])], widgets_values: [64, 64, 1] }),
    node(3, "KSampler", [900, 200], [315, 262], {
      inputs: [input("model", "MODEL", 1), input("positive", "CONDITIONING", 4), input("negative", "CONDITIONING", 6), input("latent_image", "LATENT", 2)],
      outputs: [out("LATENT", "LATENT", [7])],
      widgets_values: [seed, "fixed", steps, 7, "euler", "normal", 1],
    }),
    node(10, "Reroute", [1000, 620], [75, 26], {
      inputs: [input("", "*", 8)], outputs: [out("", "VAE", [10])], properties: { showOutputText: false, horizontal: false },
    }),
    node(8, "VAEDecode", [1300, 200], [210, 46], {
      inputs: [input("samples", "LATENT", 7), input("vae", "VAE", 10)], outputs: [out("IMAGE", "IMAGE", [9, 12])],
    }),
    node(12, "ImageScale", [1600, 120], [315, 130], {
      inputs: [input("image", "IMAGE", 9)], outputs: [out("IMAGE", "IMAGE", [11])], widgets_values: ["nearest-exact", 48, 48, "disabled"],
    }),
    node(9, "SaveImage", [2000, 120], [315, 270], { inputs: [input("images", "IMAGE", 11)], widgets_values: [prefix] }),
    node(13, "ImageScaleBy", [1600, 520], [315, 82], {
      inputs: [input("image", "IMAGE", 12)], outputs: [out("IMAGE", "IMAGE", [13])], widgets_values: ["nearest-exact", 0.5],
    }),
    node(14, "SaveImage", [2000, 520], [315, 270], { inputs: [input("images", "IMAGE", 13)], widgets_values: [`${prefix}_branch`] }),
    node(11, "Note", [20, 60], [340, 160], {
      widgets_values: ["# Demo\n**bold** and *italic* with `code`\n- first\n- second\n<img src=x onerror=\"window.__pwned=1\"> stays text"],
      color: "#432", bgcolor: "#653",
    }),
    ...extraNodes,
  ];
  const links = [
    [1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
    [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 10, 0, "VAE"],
    [10, 10, 0, 8, 1, "VAE"], [9, 8, 0, 12, 0, "IMAGE"], [11, 12, 0, 9, 0, "IMAGE"], [12, 8, 0, 13, 0, "IMAGE"],
    [13, 13, 0, 14, 0, "IMAGE"], ...extraLinks,
  ];
  return {
    last_node_id: Math.max(...nodes.map((n) => n.id)),
    last_link_id: Math.max(...links.map((l) => l[0])),
    nodes,
    links,
    groups: [{ title: "Prompts", bounding: [400, 60, 440, 500], color: "#3f789e", font_size: 24, flags: {} }],
    config: {},
    extra: { ds: { scale: 1, offset: [0, 0] } },
    version: 0.4,
  };
}
