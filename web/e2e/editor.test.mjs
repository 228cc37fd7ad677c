// Browser tests: the built editor in headless Chromium against a real `latentgraph serve` with a
// demo checkpoint. One browser and one server for the whole file; the tests run in order and
// build on each other like a user session. Screenshots go to web/test-artifacts/.
//   npm run test:e2e            (starts its own server; E2E_URL=http://... uses a running one)
import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { closeSession, dragLink, dropFile, focusNodes, graphState, handle, mod, openSession, recordRunStates, runStates, screenshot } from "./helpers.mjs";
import { ARTIFACTS } from "./server.mjs";
import { join } from "node:path";

const DEFAULT_NODES = ["checkpoint", "positive", "negative", "latent", "sampler", "decode", "save"];
const PROMPT = "a green square on a white background";
let server, browser, page, baseUrl;
const pageErrors = [];

before(async () => {
  for (const name of readdirSync(ARTIFACTS)) if (/^\d\d-.*\.png$/.test(name)) rmSync(join(ARTIFACTS, name)); // last run's
  ({ server, browser, page, baseUrl } = await openSession(pageErrors));
});

after(() => closeSession({ server, browser }));

describe("the editor", { concurrency: false }, () => {
  it("opens the default txt2img workflow and connects", async () => {
    await page.goto(baseUrl);
    await page.locator(".lg-node").first().waitFor();
    for (const id of DEFAULT_NODES) await page.locator(`[data-node-id="${id}"]`).waitFor();
    await page.locator('.connection[data-state="open"]').waitFor();
    const graph = await graphState(page);
    assert.deepEqual(Object.keys(graph.nodes).sort(), [...DEFAULT_NODES].sort());
    assert.equal(graph.nodes.sampler.type, "ksampler");
    assert.ok(graph.edges.includes("checkpoint.model->sampler.model"));
    // Port colours: a MODEL handle and a CLIP handle differ.
    const colour = (node, name, kind) => handle(page, node, name, kind).evaluate((el) => getComputedStyle(el).backgroundColor);
    assert.notEqual(await colour("checkpoint", "model", "source"), await colour("checkpoint", "clip", "source"));
    assert.equal(await colour("checkpoint", "clip", "source"), await colour("positive", "clip", "target"));
    // The checkpoint dropdown lists the server's checkpoints.
    const options = await page.locator('[data-node-id="checkpoint"] select[name="checkpoint"] option').allTextContents();
    assert.ok(options.includes("latentgraph-demo.safetensors"), options.join(", "));
    await screenshot(page, "01-default-workflow");
  });

  it("adds a node from the palette and from the canvas search", async () => {
    await page.getByLabel("Search nodes").fill("seed");
    await page.locator('.palette-item[data-type="seed"]').click();
    await page.locator('[data-node-type="seed"]').waitFor();
    await page.getByLabel("Search nodes").fill("");
    // Double-click on empty canvas, type, Enter.
    const pane = await page.locator(".react-flow__pane").boundingBox();
    await page.mouse.dblclick(pane.x + 20, pane.y + 20);
    await page.getByLabel("Node search").fill("preview im");
    await page.getByLabel("Node search").press("Enter");
    await page.locator('[data-node-type="preview_image"]').waitFor();
    const graph = await graphState(page);
    assert.equal(graph.nodes.seed.type, "seed");
    assert.equal(graph.nodes.preview_image.type, "preview_image");
    await screenshot(page, "02-nodes-added");
  });

  it("links two nodes by dragging from an output to an input", async () => {
    await focusNodes(page, ["decode", "preview_image", "save"]);
    await page.evaluate(() => {
      const s = window.latentgraph.store.getState();
      const decode = s.nodes.find((n) => n.id === "decode");
      window.latentgraph.store.setState({ nodes: s.nodes.map((n) => (n.id === "preview_image" ? { ...n, position: { x: decode.position.x + 300, y: decode.position.y + 260 } } : n)) });
    });
    await focusNodes(page, ["decode", "preview_image"]);
    await dragLink(page, { node: "decode", output: "image" }, { node: "preview_image", input: "images" });
    assert.ok((await graphState(page)).edges.includes("decode.image->preview_image.images"));
    // An INT output onto a seed widget: the widget gives way to the link.
    await focusNodes(page, ["seed", "sampler"]);
    await dragLink(page, { node: "seed", output: "seed" }, { node: "sampler", input: "seed" });
    assert.ok((await graphState(page)).edges.includes("seed.seed->sampler.seed"));
    assert.equal(await page.locator('[data-node-id="sampler"] input[name="seed"]').count(), 0);
    await screenshot(page, "03-linked");
    // Undo takes the seed link back; the widget returns.
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press(`${mod}+z`);
    assert.ok(!(await graphState(page)).edges.includes("seed.seed->sampler.seed"));
    await page.locator('[data-node-id="sampler"] input[name="seed"]').waitFor();
  });

  it("refuses a link between mismatched types and says why", async () => {
    await focusNodes(page, ["checkpoint", "sampler"]);
    const before = (await graphState(page)).edges;
    await dragLink(page, { node: "checkpoint", output: "clip" }, { node: "sampler", input: "model" });
    const toast = page.locator(".toast.error").filter({ hasText: "Link refused" });
    await toast.waitFor();
    assert.match(await toast.textContent(), /sampler\.model takes MODEL, but checkpoint\.clip gives CLIP/);
    assert.deepEqual((await graphState(page)).edges, before);
    await screenshot(page, "04-mismatched-link-refused");
  });

  it("turns a widget into an input handle and back", async () => {
    await focusNodes(page, ["sampler"]);
    const row = page.locator('[data-node-id="sampler"] [data-input="steps"]');
    await row.hover();
    await row.getByRole("button", { name: "steps as input" }).click();
    assert.equal(await row.locator("input").count(), 0);
    assert.deepEqual((await graphState(page)).nodes.sampler.ui.socket_inputs, ["steps"]);
    await row.hover();
    await row.getByRole("button", { name: "steps as widget" }).click();
    await row.locator('input[name="steps"]').waitFor();
    assert.equal((await graphState(page)).nodes.sampler.ui.socket_inputs, undefined);
  });

  it("edits the prompt, the seed and a dropdown", async () => {
    await focusNodes(page, ["positive", "sampler", "latent"]);
    await page.locator('[data-node-id="positive"] textarea[name="text"]').fill(PROMPT);
    const seed = page.locator('[data-node-id="sampler"] input[name="seed"]');
    await seed.fill("1234");
    await seed.press("Enter");
    await page.locator('[data-node-id="sampler"] select[name="sampler"]').selectOption("euler");
    const steps = page.locator('[data-node-id="sampler"] input[name="steps"]');
    await steps.fill("4");
    await steps.press("Tab");
    const { nodes } = await graphState(page);
    assert.equal(nodes.positive.inputs.text, PROMPT);
    assert.equal(nodes.sampler.inputs.seed, 1234);
    assert.equal(nodes.sampler.inputs.sampler, "euler");
    assert.equal(nodes.sampler.inputs.steps, 4);
    // Bounds are kept: steps cannot go below 1.
    await steps.fill("-5");
    await steps.press("Tab");
    assert.equal((await graphState(page)).nodes.sampler.inputs.steps, 1);
    await steps.fill("6");
    await steps.press("Tab");
    // A small image keeps the CPU run short.
    for (const side of ["width", "height"]) {
      const field = page.locator(`[data-node-id="latent"] input[name="${side}"]`);
      await field.fill("128");
      await field.press("Tab");
    }
    assert.equal((await graphState(page)).nodes.latent.inputs.width, 128);
    await screenshot(page, "05-edited");
  });

  it("runs with Ctrl+Enter, shows progress and the image", async () => {
    // The seed node and preview are not needed; remove them with the keyboard.
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.evaluate(() => {
      const s = window.latentgraph.store.getState();
      window.latentgraph.store.setState({ nodes: s.nodes.map((n) => ({ ...n, selected: n.id === "seed" || n.id === "preview_image" })) });
    });
    await page.keyboard.press("Delete");
    assert.deepEqual(Object.keys((await graphState(page)).nodes).sort(), [...DEFAULT_NODES].sort());
    await recordRunStates(page);
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press(`${mod}+Enter`);
    await page.locator('[data-node-id="sampler"] [data-status]').waitFor({ timeout: 60000 });
    await page.waitForFunction(() => window.latentgraph.store.getState().outputs.save?.length > 0, null, { timeout: 120000 }).catch(async (error) => {
      await screenshot(page, "06-run-failed");
      throw new Error(`${error.message}\nrun states: ${JSON.stringify(await runStates(page))}\ngraph: ${JSON.stringify(await graphState(page))}`);
    });
    await focusNodes(page, ["sampler", "decode", "save"]);
    await page.locator('[data-node-id="save"] .node-images img').waitFor();
    await screenshot(page, "06-run-finished");
    const seen = await runStates(page);
    assert.ok(seen.statuses.sampler.includes("running"), JSON.stringify(seen.statuses));
    assert.ok(seen.progress.some((p) => p.startsWith("sampler:")), "sampler progress was shown");
    assert.ok(seen.progressBars > 0, "a progress bar was drawn");
    assert.ok(seen.previews > 0, "a step preview was shown");
    assert.equal(await page.locator('[data-node-id="save"] [data-status="done"]').count(), 1);
    // The image loads and shows in the gallery.
    const image = page.locator('[data-node-id="save"] .node-images img').first();
    assert.ok(await image.evaluate((img) => img.decode().then(() => img.naturalWidth > 0)));
    await page.locator(".gallery .tile img").first().waitFor();
  });

  it("re-runs only what a new seed changes and marks the cached nodes", async () => {
    await focusNodes(page, ["positive", "sampler", "latent"]);
    const seedBefore = (await graphState(page)).nodes.sampler.inputs.seed;
    await page.locator('[data-node-id="sampler"]').getByRole("button", { name: "randomize seed" }).click();
    assert.notEqual((await graphState(page)).nodes.sampler.inputs.seed, seedBefore);
    await recordRunStates(page);
    await page.getByRole("button", { name: /Run/ }).click();
    await page.waitForFunction(() => window.__runStates.statuses.save?.includes("done"), null, { timeout: 120000 });
    const { statuses } = await runStates(page);
    for (const id of ["checkpoint", "positive", "negative", "latent"]) assert.deepEqual(statuses[id], ["cached"], id);
    for (const id of ["sampler", "decode", "save"]) assert.ok(statuses[id].includes("running") && statuses[id].at(-1) === "done", id);
    await page.locator('[data-node-id="positive"] [data-status="cached"]').waitFor();
    await screenshot(page, "07-rerun-with-cached-nodes");
  });

  it("runs nothing when nothing changed", async () => {
    await recordRunStates(page);
    await page.keyboard.press(`${mod}+Enter`);
    await page.waitForFunction(() => window.__runStates.statuses.save?.includes("cached"), null, { timeout: 60000 });
    const { statuses } = await runStates(page);
    assert.ok(Object.values(statuses).every((list) => !list.includes("running")), JSON.stringify(statuses));
  });

  it("enlarges a gallery image and offers its download", async () => {
    await page.getByRole("tab", { name: "Gallery" }).click();
    // Three runs so far, each with its image (the cached one reports the image it kept).
    await page.waitForFunction(() => document.querySelectorAll(".gallery .tile").length === 3, null, { timeout: 10000 });
    await page.locator(".gallery .tile img").first().click();
    const lightbox = page.getByRole("dialog", { name: "Image" });
    await lightbox.waitFor();
    const href = await lightbox.getByRole("link", { name: "Download" }).getAttribute("href");
    const response = await page.request.get(new URL(href, baseUrl).href);
    assert.equal(response.status(), 200);
    assert.equal(response.headers()["content-type"], "image/png");
    await screenshot(page, "08-lightbox");
    await lightbox.getByRole("button", { name: "Close" }).click();
  });

  it("saves the workflow on the server and opens it again", async () => {
    await page.getByRole("button", { name: "Save as" }).click();
    await page.getByLabel("Save name").fill("e2e circle");
    await page.getByRole("button", { name: "Save", exact: true }).last().click();
    await page.locator(".toast").filter({ hasText: "Saved" }).waitFor();
    const saved = await graphState(page);
    assert.equal(saved.savedName, "e2e-circle");
    assert.equal(saved.dirty, false);
    await page.getByRole("button", { name: "New" }).click();
    await page.waitForFunction(() => window.latentgraph.store.getState().nodes.length === 0);
    await page.getByRole("button", { name: "Open" }).click();
    await page.locator('.workflow-item[data-name="e2e-circle"]').click();
    await page.locator('[data-node-id="sampler"]').waitFor();
    const reopened = await graphState(page);
    assert.equal(reopened.nodes.positive.inputs.text, PROMPT);
    assert.equal(reopened.nodes.sampler.inputs.seed, saved.nodes.sampler.inputs.seed);
    assert.deepEqual(reopened.edges.sort(), saved.edges.sort());
    await screenshot(page, "09-reopened");
  });

  it("downloads the workflow as JSON", async () => {
    const download = page.waitForEvent("download");
    await page.getByRole("button", { name: "Download" }).click();
    const file = await download;
    assert.match(file.suggestedFilename(), /\.json$/);
    const saved = JSON.parse(readFileSync(await file.path(), "utf8"));
    assert.equal(saved.format, "latentgraph/workflow@1");
    assert.equal(saved.nodes.positive.inputs.text, PROMPT);
    assert.deepEqual(saved.nodes.sampler.inputs.model, { node: "checkpoint", output: "model" });
    assert.deepEqual(Object.keys(saved.ui).sort(), [...DEFAULT_NODES].sort());
  });

  it("restores the graph from a generated PNG dropped on the canvas", async () => {
    const src = await page.locator(".gallery .tile img").first().getAttribute("data-full");
    const png = await (await page.request.get(new URL(src, baseUrl).href)).body();
    await page.getByRole("button", { name: "New" }).click();
    await page.waitForFunction(() => window.latentgraph.store.getState().nodes.length === 0);
    await dropFile(page, png, "generated.png", "image/png");
    await page.locator('[data-node-id="sampler"]').waitFor();
    const { nodes, edges } = await graphState(page);
    assert.deepEqual(Object.keys(nodes).sort(), [...DEFAULT_NODES].sort());
    assert.equal(nodes.positive.inputs.text, PROMPT);
    assert.ok(edges.includes("sampler.latent->decode.latent"));
    await screenshot(page, "10-imported-from-png");
  });

  it("imports a workflow JSON file", async () => {
    const json = JSON.stringify({ format: "latentgraph/workflow@1", meta: { name: "imported" }, nodes: { a: { type: "int_constant", inputs: { value: 3 } }, show: { type: "show_value", inputs: { value: { node: "a", output: "value" } } } } });
    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "Import" }).click();
    await (await chooser).setFiles({ name: "imported.json", mimeType: "application/json", buffer: Buffer.from(json) });
    await page.locator('[data-node-id="show"]').waitFor();
    assert.deepEqual((await graphState(page)).edges, ["a.value->show.value"]);
    await page.keyboard.press(`${mod}+z`); // back to the PNG's graph
    await page.locator('[data-node-id="sampler"]').waitFor();
  });

  it("shows the server's validation errors on the failing node and input", async () => {
    await focusNodes(page, ["save", "decode"]);
    await page.locator('[data-node-id="save"] input[name="filename_prefix"]').fill("");
    await page.keyboard.press(`${mod}+Enter`);
    const message = page.locator('[data-node-id="save"] [data-input="filename_prefix"] .input-error');
    await message.waitFor();
    assert.ok((await message.textContent()).length > 0);
    assert.ok(await page.locator('[data-node-id="save"] .lg-node.has-error, .lg-node.has-error[data-node-id="save"]').count());
    const { errors } = await graphState(page);
    assert.ok(errors.save?.inputs.filename_prefix?.length, JSON.stringify(errors));
    await screenshot(page, "11-validation-error");
    // Fixing the input clears its error.
    await page.locator('[data-node-id="save"] input[name="filename_prefix"]').fill("fixed");
    assert.equal(await message.count(), 0);
  });

  it("keeps unsaved changes across a reload", async () => {
    await focusNodes(page, ["positive"]);
    await page.locator('[data-node-id="positive"] textarea[name="text"]').fill("kept after reload");
    await page.waitForTimeout(600);
    await page.reload();
    await page.locator('[data-node-id="positive"]').waitFor();
    assert.equal((await graphState(page)).nodes.positive.inputs.text, "kept after reload");
  });

  it("copies, pastes, deletes and lays out nodes with the keyboard", async () => {
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.evaluate(() => {
      const s = window.latentgraph.store.getState();
      window.latentgraph.store.setState({ nodes: s.nodes.map((n) => ({ ...n, selected: n.id === "positive" || n.id === "checkpoint" })) });
    });
    await page.keyboard.press(`${mod}+c`);
    await page.keyboard.press(`${mod}+v`);
    let graph = await graphState(page);
    assert.ok(graph.nodes.clip_text_encode && graph.nodes.checkpoint_loader, Object.keys(graph.nodes).join(","));
    assert.ok(graph.edges.includes("checkpoint_loader.clip->clip_text_encode.clip"), "the link between pasted nodes comes along");
    await page.keyboard.press("Delete");
    graph = await graphState(page);
    assert.equal(graph.nodes.clip_text_encode, undefined);
    await page.keyboard.press(`${mod}+z`);
    assert.ok((await graphState(page)).nodes.clip_text_encode);
    await page.keyboard.press(`${mod}+Shift+z`);
    assert.equal((await graphState(page)).nodes.clip_text_encode, undefined);
    await page.keyboard.press("Shift+L");
    graph = await graphState(page);
    assert.ok(graph.nodes.checkpoint.position.x < graph.nodes.positive.position.x);
    assert.ok(graph.nodes.positive.position.x < graph.nodes.sampler.position.x);
    assert.ok(graph.nodes.sampler.position.x < graph.nodes.decode.position.x);
    await screenshot(page, "12-arranged");
  });

  it("cancels a running run from the queue panel", async () => {
    await page.locator('[data-node-id="save"] input[name="filename_prefix"]').fill("cancelled");
    await focusNodes(page, ["sampler"]);
    const steps = page.locator('[data-node-id="sampler"] input[name="steps"]');
    await steps.fill("1000");
    await steps.press("Tab");
    await recordRunStates(page);
    await page.keyboard.press(`${mod}+Enter`);
    await page.getByRole("tab", { name: /Queue/ }).click();
    const stop = page.locator(".queue-item.status-running").getByRole("button", { name: "Stop" });
    await stop.waitFor({ timeout: 60000 });
    await page.waitForFunction(() => window.__runStates.progress.length > 0, null, { timeout: 60000 });
    await screenshot(page, "13-queue-running");
    await stop.click();
    await page.locator(".queue-item").first().waitFor({ state: "detached", timeout: 30000 });
    await page.getByRole("tab", { name: "Gallery" }).click();
    await page.locator(".gallery-line.status-cancelled").first().waitFor({ timeout: 30000 });
  });

  it("uploads an image for a load_image node", async () => {
    const pane = await page.locator(".react-flow__pane").boundingBox();
    await page.mouse.dblclick(pane.x + 20, pane.y + 20);
    await page.getByLabel("Node search").fill("load image");
    await page.getByLabel("Node search").press("Enter");
    await focusNodes(page, ["load_image"]);
    const node = page.locator('[data-node-id="load_image"]');
    const png = readFileSync(join(ARTIFACTS, "01-default-workflow.png"));
    const chooser = page.waitForEvent("filechooser");
    await node.getByRole("button", { name: "upload image" }).click();
    await (await chooser).setFiles({ name: "my picture.png", mimeType: "image/png", buffer: png });
    await page.waitForFunction(() => typeof window.latentgraph.store.getState().nodes.find((n) => n.id === "load_image")?.data.inputs.image === "string");
    const name = (await graphState(page)).nodes.load_image.inputs.image;
    assert.match(name, /\.png$/);
    const preview = node.locator("img.input-preview");
    await preview.waitFor();
    assert.ok(await preview.evaluate((img) => img.decode().then(() => img.naturalWidth > 0)));
    // The dropdown offers the uploaded file once the catalog is fetched again.
    await page.waitForFunction((name) => [...document.querySelectorAll('[data-node-id="load_image"] select option')].some((o) => o.value === name && !o.textContent.includes("missing")), name);
    await screenshot(page, "14-image-uploaded");
  });

  it("clears the pending runs from the queue", async () => {
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.evaluate(() => {
      const s = window.latentgraph.store.getState();
      window.latentgraph.store.setState({ nodes: s.nodes.map((n) => ({ ...n, selected: n.id === "load_image" })) });
    });
    await page.keyboard.press("Delete");
    await page.getByRole("tab", { name: /Queue/ }).click();
    for (let i = 0; i < 3; i++) await page.keyboard.press(`${mod}+Enter`);
    await page.locator(".queue-item.status-queued").first().waitFor({ timeout: 30000 });
    await page.getByRole("button", { name: "Clear queue" }).click();
    await page.locator(".queue-item.status-queued").first().waitFor({ state: "detached", timeout: 30000 });
    await page.locator(".queue-item.status-running").getByRole("button", { name: "Stop" }).click();
    await page.locator(".queue-item").first().waitFor({ state: "detached", timeout: 30000 });
  });

  it("shows a lost connection and reconnects by itself", { skip: process.env.E2E_URL ? "E2E_URL: the server is not ours to restart" : false }, async () => {
    await page.locator('.connection[data-state="open"]').waitFor();
    await page.evaluate(() => {
      window.__badge = [];
      new MutationObserver(() => window.__badge.push(document.querySelector(".connection").dataset.state))
        .observe(document.querySelector(".connection"), { attributes: true });
    });
    await server.restart({ downMs: 1500 });
    await page.locator('.connection[data-state="open"]').waitFor({ timeout: 30000 });
    const badge = await page.evaluate(() => window.__badge);
    assert.ok(badge.includes("closed"), `the badge went ${badge.join(" → ")}`);
    await screenshot(page, "15-reconnected");
    await page.getByRole("tab", { name: "Gallery" }).click();
    await page.locator(".gallery .tile img").first().waitFor(); // history survived the restart
  });

  it("raised no page errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
