// Helpers the browser tests share: the page, the store, dragging links, screenshots.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser } from "./browser.mjs";
import { ARTIFACTS, startServer } from "./server.mjs";

mkdirSync(ARTIFACTS, { recursive: true });

export const mod = process.platform === "darwin" ? "Meta" : "Control";

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** The graph as the store holds it: {nodes: {id: {type, inputs, title}}, edges: ["src.out->dst.in"]}. */
export async function graphState(page) {
  return page.evaluate(() => {
    const s = window.latentgraph.store.getState();
    return {
      nodes: Object.fromEntries(s.nodes.map((n) => [n.id, { type: n.data.type, inputs: n.data.inputs, title: n.data.title, ui: n.data.ui, selected: !!n.selected, position: n.position }])),
      edges: s.edges.map((e) => `${e.source}.${e.sourceHandle}->${e.target}.${e.targetHandle}`),
      dirty: s.dirty,
      savedName: s.savedName,
      errors: s.errors,
      workflowErrors: s.workflowErrors,
    };
  });
}

export const handle = (page, node, name, kind) =>
  page.locator(`.react-flow__handle.${kind}[data-nodeid="${node}"][data-handleid="${name}"]`);

/** Drag a link from an output handle to an input handle with the mouse. */
export async function dragLink(page, from, to) {
  const a = await handle(page, from.node, from.output, "source").boundingBox();
  const b = await handle(page, to.node, to.input, "target").boundingBox();
  if (!a || !b) throw new Error(`handle not visible: ${JSON.stringify(!a ? from : to)}`);
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 8 });
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 8 });
  await page.mouse.up();
}

/** Zoom the canvas so that the given nodes fill it (handles big enough to hit). */
export async function focusNodes(page, ids) {
  await page.evaluate((ids) => window.latentgraph.flow.fitView({ nodes: ids.map((id) => ({ id })), padding: 0.15, maxZoom: 1.2 }), ids);
  await page.waitForTimeout(150);
}

/** Drop a file on the canvas as a user dragging it from the desktop would. */
export async function dropFile(page, bytes, name, type) {
  await page.evaluate(async ({ data, name, type }) => {
    const file = new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], name, { type });
    const transfer = new DataTransfer();
    transfer.items.add(file);
    const target = document.querySelector(".react-flow__pane");
    const rect = target.getBoundingClientRect();
    const at = { clientX: rect.left + rect.width / 2, clientY: rect.top + rect.height / 2, bubbles: true, cancelable: true, dataTransfer: transfer };
    target.dispatchEvent(new DragEvent("dragover", at));
    target.dispatchEvent(new DragEvent("drop", at));
  }, { data: Buffer.from(bytes).toString("base64"), name, type });
}

/** Record, inside the page, every run state the nodes go through (progress, previews, cached). */
export async function recordRunStates(page) {
  await page.evaluate(() => {
    const seen = (window.__runStates = { statuses: {}, progress: [], previews: 0, progressBars: 0 });
    const earlier = window.latentgraph.store.getState().activeRun; // only the next run counts
    window.__stopRecording?.();
    window.__stopRecording = window.latentgraph.store.subscribe((s) => {
      if (s.activeRun === earlier) return;
      for (const [id, state] of Object.entries(s.runNodes)) {
        (seen.statuses[id] ??= []).at(-1) !== state.status && seen.statuses[id].push(state.status);
        if (state.total) seen.progress.push(`${id}:${state.step}/${state.total}`);
        if (state.preview) seen.previews++;
      }
    });
    new MutationObserver(() => {
      if (document.querySelector('[role="progressbar"]')) seen.progressBars++;
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
}

export const runStates = (page) => page.evaluate(() => window.__runStates);

/** A server (or $E2E_URL's) and a browser page on it, recording page errors into `pageErrors`;
 * `acceptDialogs` answers confirm() prompts ("Discard the unsaved changes?") with yes. */
export async function openSession(pageErrors, { acceptDialogs = true } = {}) {
  const server = process.env.E2E_URL ? null : await startServer();
  const baseUrl = process.env.E2E_URL ?? server.url;
  const browser = await launchBrowser();
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.on("pageerror", (error) => pageErrors.push(error.message));
  if (acceptDialogs) page.on("dialog", (dialog) => dialog.accept());
  return { server, browser, page, baseUrl };
}

export async function closeSession({ server, browser }) {
  await browser?.close();
  await server?.stop();
}
