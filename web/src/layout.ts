/**
 * Auto-layout: a layered layout by topological depth. Each node goes in the column of its longest
 * path from a source; within a column nodes are ordered by the mean row of the nodes feeding them
 * (one barycentre sweep), then stacked with their measured heights. Pure: ids in, positions out.
 */

export interface LayoutNode {
  id: string;
  width: number;
  height: number;
}

export interface LayoutEdge {
  source: string;
  target: string;
}

export interface LayoutOptions {
  columnGap?: number;
  rowGap?: number;
  origin?: { x: number; y: number };
}

export function layeredLayout(
  nodes: LayoutNode[],
  edges: LayoutEdge[],
  { columnGap = 80, rowGap = 40, origin = { x: 0, y: 0 } }: LayoutOptions = {},
): Map<string, { x: number; y: number }> {
  const index = new Map(nodes.map((node, i) => [node.id, i]));
  const parents = new Map<string, string[]>(nodes.map((node) => [node.id, []]));
  const children = new Map<string, string[]>(nodes.map((node) => [node.id, []]));
  for (const edge of edges) {
    if (!index.has(edge.source) || !index.has(edge.target) || edge.source === edge.target) continue;
    parents.get(edge.target)!.push(edge.source);
    children.get(edge.source)!.push(edge.target);
  }

  // Longest-path depth by Kahn's order; nodes on a cycle (the server refuses those) keep depth 0.
  const depth = new Map<string, number>(nodes.map((node) => [node.id, 0]));
  const waiting = new Map(nodes.map((node) => [node.id, parents.get(node.id)!.length]));
  const queue = nodes.filter((node) => waiting.get(node.id) === 0).map((node) => node.id);
  for (let head = 0; head < queue.length; head++) {
    const id = queue[head];
    for (const child of children.get(id)!) {
      depth.set(child, Math.max(depth.get(child)!, depth.get(id)! + 1));
      const left = waiting.get(child)! - 1;
      waiting.set(child, left);
      if (left === 0) queue.push(child);
    }
  }

  const columns: LayoutNode[][] = [];
  for (const node of nodes) (columns[depth.get(node.id)!] ??= []).push(node);

  const row = new Map<string, number>();
  const positions = new Map<string, { x: number; y: number }>();
  let x = origin.x;
  for (const column of columns) {
    if (!column) continue;
    const key = (node: LayoutNode) => {
      const rows = parents.get(node.id)!.map((p) => row.get(p)).filter((r): r is number => r !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : index.get(node.id)!;
    };
    const ordered = [...column].sort((a, b) => key(a) - key(b) || index.get(a.id)! - index.get(b.id)!);
    let y = origin.y;
    ordered.forEach((node, i) => {
      row.set(node.id, i);
      positions.set(node.id, { x, y });
      y += node.height + rowGap;
    });
    x += Math.max(...column.map((node) => node.width)) + columnGap;
  }
  return positions;
}
