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
