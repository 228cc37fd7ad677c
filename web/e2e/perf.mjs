// Canvas performance with a 500-node workflow: time to first render and frame times during a
// programmatic pan, measured with requestAnimationFrame in headless Chromium.
//   node e2e/perf.mjs [--url http://127.0.0.1:PORT]   (without --url it starts a server)
// Prints a table and writes test-artifacts/perf.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser } from "./browser.mjs";
import { startServer, ARTIFACTS } from "./server.mjs";
import { bigWorkflow } from "./workflows.mjs";

const COUNT = Number(process.env.PERF_NODES ?? 500);

function stats(deltas) {
  const sorted = [...deltas].sort((a, b) => a - b);
  const mean = deltas.reduce((a, b) => a + b, 0) / deltas.length;
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { frames: deltas.length, mean_ms: +mean.toFixed(2), p50_ms: +pick(0.5).toFixed(2), p95_ms: +pick(0.95).toFixed(2), max_ms: +sorted.at(-1).toFixed(2), over_33ms: deltas.filter((d) => d > 33.4).length };
}

/** Pan as a user does, dragging the empty canvas with the mouse (synthetic events, one move per
 * frame) in a circle of 300 px around the middle of the graph, so the view keeps passing over
 * nodes at any zoom. Returns the intervals between frames. */
async function pan(page, zoom, frames = 180) {
  return page.evaluate(async ({ zoom, frames }) => {
    const flow = window.latentgraph.flow;
    const bounds = flow.getNodesBounds(flow.getNodes());
    const paneBox = document.querySelector(".react-flow").getBoundingClientRect();
    flow.setViewport({ x: paneBox.width / 2 - (bounds.x + bounds.width / 2) * zoom, y: paneBox.height / 2 - (bounds.y + bounds.height / 2) * zoom, zoom });
    await new Promise((r) => setTimeout(r, 300));
    const pane = document.querySelector(".react-flow__pane");
    const start = { x: paneBox.left + paneBox.width / 2, y: paneBox.top + paneBox.height / 2 };
    const at = (i) => ({ clientX: start.x + 300 * Math.cos(i / 30) - 300, clientY: start.y + 300 * Math.sin(i / 30) });
    const fire = (target, type, i) => target.dispatchEvent(new MouseEvent(type, { bubbles: true, cancelable: true, view: window, button: 0, buttons: type === "mouseup" ? 0 : 1, ...at(i) }));
    fire(pane, "mousedown", 0);
    const before = flow.getViewport();
    let panned = false;
    const deltas = [];
    let last = performance.now();
    for (let i = 1; i <= frames; i++) {
      await new Promise((resolve) => requestAnimationFrame((now) => {
        deltas.push(now - last);
        last = now;
        fire(window, "mousemove", i);
        if (i === Math.floor(frames / 4)) {
          const now = flow.getViewport();
          panned = Math.hypot(now.x - before.x, now.y - before.y) > 100;
        }
        resolve();
      }));
    }
    fire(window, "mouseup", frames);
    const moved = flow.getViewport();
    if (Math.abs(moved.zoom - zoom) > 1e-6) throw new Error("the drag zoomed");
    if (!panned) throw new Error("the drag did not pan the canvas");
    return deltas.slice(2); // the first frames include the jump to the start position
  }, { zoom, frames });
}

export async function measure(baseUrl) {
  const { context, close } = await launchBrowser();
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(baseUrl);
    await page.waitForSelector(".lg-node");
    const workflow = bigWorkflow(COUNT);

    // 1. Opening the workflow in a running editor: store update to painted nodes.
    const openMs = await page.evaluate(async (workflow) => {
      const start = performance.now();
      window.latentgraph.openWorkflow(workflow);
      await new Promise((resolve) => {
        const check = () => (document.querySelector('[data-node-id="n0"]') ? requestAnimationFrame(() => resolve()) : requestAnimationFrame(check));
        check();
      });
      return performance.now() - start;
    }, workflow);
    await page.waitForTimeout(500);
    await page.screenshot({ path: join(ARTIFACTS, "perf-500-nodes.png") });

    // 2. A page load with the 500-node draft in localStorage: navigation to painted nodes.
    await page.waitForTimeout(600); // the draft is written 300 ms after a change
    await page.reload();
    await page.waitForSelector('[data-node-id="n0"]', { timeout: 30000 });
    const loadMs = await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now()))));
    const rendered = await page.locator(".react-flow__node").count();

    const results = {
      nodes: COUNT,
      open_in_editor_ms: +openMs.toFixed(1),
      page_load_to_first_render_ms: +loadMs.toFixed(1),
      nodes_in_dom_after_fit: rendered,
      pan_zoom_1: stats(await pan(page, 1)),
      pan_zoom_0_5: stats(await pan(page, 0.5)),
      pan_zoom_0_2_all_visible: stats(await pan(page, 0.2)),
    };
    await page.screenshot({ path: join(ARTIFACTS, "perf-500-nodes-zoomed-out.png") });
    return results;
  } finally {
    await close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const urlArg = process.argv.indexOf("--url");
  mkdirSync(ARTIFACTS, { recursive: true });
  const server = urlArg > 0 ? null : await startServer();
  const baseUrl = urlArg > 0 ? process.argv[urlArg + 1] : server.url;
  try {
    const results = await measure(baseUrl);
    writeFileSync(join(ARTIFACTS, "perf.json"), JSON.stringify(results, null, 2) + "\n");
    console.log(JSON.stringify(results, null, 2));
  } finally {
    await server?.stop();
  }
}
