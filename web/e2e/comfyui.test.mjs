// Browser tests: ComfyUI workflows in the editor. A ComfyUI PNG and a UI-format JSON dropped on
// the canvas open (through POST /api/workflows/import) with their group, note and reroute point,
// and run; a bypassed node and a muted branch change what runs; the import report lists what the
// converter could not do; notes, groups, reroute points and modes made in the editor survive a
// save and reopen. Its own server and browser; the tests build on each other like a session.
//   npm run test:e2e            (starts its own server; E2E_URL=http://... uses a running one)
import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { closeSession, dropFile, focusNodes, graphState, mod, openSession, screenshot } from "./helpers.mjs";
import { comfyDemoWorkflow } from "./workflows.mjs";

let server, browser, page, baseUrl;
const pageErrors = [];

before(async () => {
  ({ server, browser, page, baseUrl } = await openSession(pageErrors));
});

after(() => closeSession({ server, browser }));

// ---- a PNG as ComfyUI writes it: a picture with the workflow in a tEXt chunk -------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(kind, body) {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(kind, 4, "latin1");
  body.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}
/** An 8x8 grey PNG carrying `texts` ({keyword: text}) as tEXt chunks. */
function pngWithText(texts) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(8, 0);
  ihdr.writeUInt32BE(8, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.concat(Array.from({ length: 8 }, () => Buffer.from([0, ...Array(24).fill(128)])));
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    ...Object.entries(texts).map(([keyword, text]) => chunk("tEXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")]))),
    chunk("IDAT", deflateSync(rows)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// ---- page helpers -----------------------------------------------------------------------------

const workflow = () => page.evaluate(() => window.latentgraph.store.getState().currentWorkflow());
const storeState = (pick) => page.evaluate(pick);

/** Queue a run with the keyboard and wait until it finished; its summary from the server. */
async function runAndWait(name) {
  await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
  const before = await storeState(() => window.latentgraph.store.getState().activeRun);
  await page.keyboard.press(`${mod}+Enter`);
  const runId = await page.waitForFunction((before) => {
    const s = window.latentgraph.store.getState();
    return s.activeRun && s.activeRun !== before ? s.activeRun : null;
  }, before, { timeout: 60000 }).then((h) => h.jsonValue());
  let summary = null;
  for (const deadline = Date.now() + 180000; !summary; await new Promise((r) => setTimeout(r, 300))) {
    if (Date.now() > deadline) {
      await screenshot(page, `comfy-${name}-failed`);
      throw new Error(`run ${runId} did not finish\n${JSON.stringify(await graphState(page))}`);
    }
    const response = await page.request.get(new URL(`/api/runs/${encodeURIComponent(runId)}`, baseUrl).href);
    const run = response.ok() ? await response.json() : null;
    if (run && ["succeeded", "failed", "cancelled", "interrupted"].includes(run.status)) summary = run;
  }
  assert.equal(summary.status, "succeeded", JSON.stringify(summary).slice(0, 2000));
  await page.waitForFunction((id) => window.latentgraph.store.getState().runHistory.some((r) => r.id === id && r.status === "succeeded"), runId, { timeout: 30000 });
  return { runId, summary };
}

/** The images a finished run saved, with their sizes, read by the browser from the server. */
async function runImages(runId) {
  return page.evaluate(async (runId) => {
    const run = window.latentgraph.store.getState().runHistory.find((r) => r.id === runId);
    return Promise.all(run.images.map(async (image) => {
      const img = new Image();
      img.src = `/api/images/${image.type}/${[image.subfolder, image.filename].filter(Boolean).map(encodeURIComponent).join("/")}`;
      await img.decode();
      return { filename: image.filename, width: img.naturalWidth, height: img.naturalHeight };
    }));
  }, runId);
}

/** Where a point at `fraction` of a link's length is on screen. */
async function pointOnLink(edgeId, fraction = 0.5) {
  return page.evaluate(({ edgeId, fraction }) => {
    const path = [...document.querySelectorAll(".routed-edge")].find((g) => g.dataset.edge === edgeId)?.querySelector("path.react-flow__edge-path");
    if (!path) throw new Error(`no link ${edgeId}`);
    const p = path.getPointAtLength(path.getTotalLength() * fraction);
    const m = path.getScreenCTM();
    return { x: m.a * p.x + m.c * p.y + m.e, y: m.b * p.x + m.d * p.y + m.f };
  }, { edgeId, fraction });
}

const DEMO_TYPES = {
  3: "ksampler", 4: "checkpoint_loader", 5: "empty_latent", 6: "clip_text_encode", 7: "clip_text_encode",
  8: "vae_decode", 9: "save_image", 12: "image_scale", 13: "image_scale_by", 14: "save_image",
};

async function expectDemoGraph() {
  const { nodes, edges } = await graphState(page);
  assert.deepEqual(Object.fromEntries(Object.entries(nodes).map(([id, n]) => [id, n.type])), Object.fromEntries(Object.entries(DEMO_TYPES).map(([k, v]) => [String(k), v])));
  assert.ok(edges.includes("4.vae->8.vae"), "the Reroute node became a point on the link it carried");
  // The group, its title and colour; the note, rendered as markdown, its HTML as text.
  const group = page.locator('.lg-group[data-group-id="group-1"]');
  assert.equal(await group.locator(".group-name").textContent(), "Prompts");
  const note = page.locator(".lg-note").first();
  assert.equal(await note.locator("h1").textContent(), "Demo");
  assert.equal(await note.locator("strong").textContent(), "bold");
  assert.equal(await note.locator("li").count(), 2);
  assert.match(await note.textContent(), /<img src=x onerror="window.__pwned=1"> stays text/);
  assert.equal(await page.locator(".lg-note img").count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  // The reroute point on the VAE link, where the Reroute node was.
  await page.locator('.reroute-point[data-node="8"][data-input="vae"]').waitFor();
  const doc = await workflow();
  assert.equal(doc.ui["8"].reroutes.vae.length, 1);
}

describe("ComfyUI workflows in the editor", { concurrency: false }, () => {
  it("opens a ComfyUI PNG dropped on the canvas, with its group, note and reroute point", async () => {
    await page.goto(baseUrl);
    await page.locator(".lg-node").first().waitFor();
    await page.locator('.connection[data-state="open"]').waitFor();
    const png = pngWithText({ workflow: JSON.stringify(comfyDemoWorkflow()) });
    await dropFile(page, png, "ComfyUI_00001_.png", "image/png");
    await page.locator('[data-node-id="3"]').waitFor();
    await page.locator(".toast").filter({ hasText: "Imported ComfyUI_00001_.png from ComfyUI" }).waitFor();
    await expectDemoGraph();
    assert.equal(await page.getByRole("dialog", { name: "Import report" }).count(), 0, "nothing to report: no dialog");
    // Everything inside the group sits behind the nodes: a click on a node in it selects the node.
    await focusNodes(page, ["6", "7"]);
    await page.locator('[data-node-id="7"] .node-header').click();
    assert.equal((await graphState(page)).nodes["7"].selected, true);
    await page.evaluate(() => window.latentgraph.flow.fitView({ padding: 0.05 }));
    await screenshot(page, "comfy-01-png-imported");
  });

  it("runs it: both branches save an image, the scaled one 48x48", async () => {
    const { runId } = await runAndWait("run");
    const images = await runImages(runId);
    assert.deepEqual(images.map((i) => [i.filename.startsWith("comfy_e2e_branch") ? "branch" : "main", i.width, i.height]).sort(), [["branch", 32, 32], ["main", 48, 48]]);
    await page.getByRole("tab", { name: "Gallery" }).click();
    await page.locator(".gallery .tile img").first().waitFor();
    await screenshot(page, "comfy-02-ran");
  });

  it("bypasses the ImageScale node with the keyboard: the decoded image goes to SaveImage as it is", async () => {
    await focusNodes(page, ["12", "9"]);
    await page.locator('[data-node-id="12"] .node-header').click();
    await page.keyboard.press(`${mod}+b`);
    const node = page.locator('.lg-node.mode-bypass[data-node-id="12"]');
    await node.waitFor();
    assert.equal(await node.locator(".node-mode").textContent(), "bypassed");
    assert.ok(Number(await node.evaluate((el) => getComputedStyle(el).opacity)) < 1);
    assert.equal((await workflow()).nodes["12"].mode, "bypass");
    const { runId } = await runAndWait("bypass");
    const main = (await runImages(runId)).find((i) => !i.filename.startsWith("comfy_e2e_branch"));
    assert.deepEqual([main.width, main.height], [64, 64]);
    assert.deepEqual(await storeState(() => window.latentgraph.store.getState().runNodes["12"]), { status: "disabled", message: "bypassed" });
    await screenshot(page, "comfy-03-bypassed");
  });

  it("mutes a branch from the node's menu: it and what only it feeds do not run", async () => {
    await focusNodes(page, ["13", "14"]);
    await page.locator('[data-node-id="13"] .node-header').click({ button: "right" });
    await page.getByRole("menu").getByRole("menuitem", { name: /^Mute/ }).click();
    await page.locator('.lg-node.mode-mute[data-node-id="13"]').waitFor();
    const { runId } = await runAndWait("mute");
    const images = await runImages(runId);
    assert.ok(images.length >= 1 && images.every((i) => !i.filename.startsWith("comfy_e2e_branch")), JSON.stringify(images));
    const runNodes = await storeState(() => window.latentgraph.store.getState().runNodes);
    assert.deepEqual(runNodes["13"], { status: "disabled", message: "muted" });
    assert.deepEqual(runNodes["14"], { status: "disabled", message: "needs muted node '13'" });
    await page.locator('[data-node-id="14"] .node-note').filter({ hasText: "needs muted node '13'" }).waitFor();
    await screenshot(page, "comfy-04-muted-branch");
  });

  it("lists what could not be imported: an unknown node, a value out of range, a missing model", async () => {
    const broken = comfyDemoWorkflow({ checkpoint: "sd_xl_base_1.0.safetensors", steps: 0 });
    broken.nodes.push({ id: 20, type: "SomeCustomNode", pos: [1600, 800], size: [200, 60], flags: {}, order: 20, mode: 0, inputs: [{ name: "image", type: "IMAGE", link: 20 }], widgets_values: [] });
    broken.nodes.find((n) => n.id === 8).outputs[0].links.push(20);
    broken.links.push([20, 8, 0, 20, 0, "IMAGE"]);
    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "Import" }).click();
    await (await chooser).setFiles({ name: "broken.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(broken)) });
    const dialog = page.getByRole("dialog", { name: "Import report" });
    await dialog.waitFor();
    assert.match(await dialog.locator("[data-ok]").textContent(), /^1 node of this ComfyUI workflow could not be mapped\. Kept on the canvas/);
    const unmapped = await dialog.locator('[data-section="unmapped"] tbody tr').allTextContents();
    assert.equal(unmapped.length, 1);
    assert.match(unmapped[0], /^20SomeCustomNode/);
    assert.match(await dialog.locator('[data-section="values"]').textContent(), /steps/);
    assert.match(await dialog.locator('[data-section="missing_files"]').textContent(), /sd_xl_base_1\.0\.safetensors/);
    await screenshot(page, "comfy-05-import-report");
    // A node id in the report shows the node; the problem is on its input.
    await dialog.locator('[data-section="missing_files"] button').first().click();
    await page.getByRole("dialog", { name: "Import report" }).waitFor({ state: "detached" });
    assert.equal((await graphState(page)).nodes["4"].selected, true);
    assert.match(await page.locator('[data-node-id="4"] .input-error').first().textContent(), /sd_xl_base_1\.0\.safetensors/);
    // The node it could not map stays where it was, as a node of a type the server does not know.
    assert.equal((await graphState(page)).nodes["20"].type, "SomeCustomNode");
  });

  it("opens a UI-format JSON dropped on the canvas, and runs it", async () => {
    const json = JSON.stringify(comfyDemoWorkflow({ prefix: "comfy_json", seed: 7 }), null, 2);
    await dropFile(page, Buffer.from(json), "workflow.json", "application/json");
    await page.waitForFunction(() => window.latentgraph.store.getState().nodes.find((n) => n.id === "3")?.data.inputs.seed === 7);
    await expectDemoGraph();
    const { runId } = await runAndWait("json");
    const images = await runImages(runId);
    assert.equal(images.length, 2);
    assert.ok(images.every((i) => i.filename.startsWith("comfy_json")), JSON.stringify(images));
  });

  it("keeps notes, groups, reroute points and modes made in the editor through a save and reopen", async () => {
    await page.evaluate(() => window.latentgraph.store.setState({ toasts: [] }));
    await page.evaluate(() => window.latentgraph.flow.fitView({ padding: 0.05 }));
    // A note from the canvas menu, written in markdown.
    const pane = await page.locator(".react-flow__pane").boundingBox();
    await page.mouse.click(pane.x + pane.width - 60, pane.y + 40, { button: "right" });
    await page.getByRole("menuitem", { name: "Add a note" }).click();
    const editor = page.getByLabel("Note text");
    await editor.waitFor();
    await editor.fill("## Saved note\nwith **bold** and [a link](https://example.org)");
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.locator(".lg-note h2").filter({ hasText: "Saved note" }).waitFor();
    assert.equal(await page.locator('.lg-note a[href="https://example.org"]').count(), 1);
    // A group around two selected nodes, renamed.
    await focusNodes(page, ["9", "14"]);
    await page.locator('[data-node-id="9"] .node-header').click();
    await page.locator('[data-node-id="14"] .node-header').click({ modifiers: [mod] });
    await page.keyboard.press(`${mod}+g`);
    const group = page.locator('.lg-group[data-group-id="group"]');
    await group.waitFor();
    await group.locator(".group-title").dblclick();
    await page.getByLabel("Group title").fill("Sampling");
    await page.getByLabel("Group title").press("Enter");
    await group.locator(".group-name").filter({ hasText: "Sampling" }).waitFor();
    // Resized from its corner while selected: wider and taller, its nodes where they were.
    await group.locator(".group-title").click();
    const corner = await group.locator(".react-flow__resize-control.handle.bottom.right").boundingBox();
    const sized = async () => (await workflow()).meta.groups.find((g) => g.id === "group");
    const [sizeBefore, nodesBefore] = [await sized(), (await graphState(page)).nodes];
    await page.mouse.move(corner.x + corner.width / 2, corner.y + corner.height / 2);
    await page.mouse.down();
    await page.mouse.move(corner.x + 40, corner.y + 30, { steps: 4 });
    await page.mouse.move(corner.x + 80, corner.y + 50, { steps: 4 });
    await page.mouse.up();
    const sizeAfter = await sized();
    assert.ok(sizeAfter.width > sizeBefore.width + 20 && sizeAfter.height > sizeBefore.height + 10, `${JSON.stringify(sizeBefore)} → ${JSON.stringify(sizeAfter)}`);
    assert.deepEqual([sizeAfter.x, sizeAfter.y], [sizeBefore.x, sizeBefore.y]);
    for (const id of ["9", "14"]) assert.deepEqual((await graphState(page)).nodes[id].position, nodesBefore[id].position);
    // A reroute point added by double-clicking a link, then dragged.
    await focusNodes(page, ["3", "8"]);
    const at = await pointOnLink("8\u2190latent");
    await page.mouse.dblclick(at.x, at.y);
    const point = page.locator('.reroute-point[data-node="8"][data-input="latent"]');
    await point.waitFor();
    const [added] = (await workflow()).ui["8"].reroutes.latent;
    const box = await point.boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2 + 30, { steps: 5 });
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2 + 60, { steps: 5 });
    await page.mouse.up();
    const zoom = await page.evaluate(() => window.latentgraph.flow.getZoom());
    const [moved] = (await workflow()).ui["8"].reroutes.latent;
    assert.ok(Math.abs(moved[0] - added[0]) < 2 && Math.abs(moved[1] - added[1] - 60 / zoom) < 2, `${added} → ${moved} at zoom ${zoom}`);
    // Dragging the "Prompts" group by its title carries the two prompts, not the others.
    await focusNodes(page, ["group:group-1", "5"]);
    const groupAt = () => page.evaluate(() => window.latentgraph.store.getState().groups.find((g) => g.data.id === "group-1").position);
    const before = (await graphState(page)).nodes;
    const groupBefore = await groupAt();
    const title = await page.locator('.lg-group[data-group-id="group-1"] .group-title').boundingBox();
    await page.mouse.move(title.x + 30, title.y + title.height / 2);
    await page.mouse.down();
    await page.mouse.move(title.x + 60, title.y + title.height / 2 + 20, { steps: 5 });
    await page.mouse.move(title.x + 90, title.y + title.height / 2 + 40, { steps: 5 });
    await page.mouse.up();
    const after = (await graphState(page)).nodes;
    const groupAfter = await groupAt();
    const dx = groupAfter.x - groupBefore.x;
    const dy = groupAfter.y - groupBefore.y;
    assert.ok(dx > 20 && dy > 10, `the group moved by ${dx}, ${dy}`);
    for (const id of ["6", "7"]) {
      const moved = [after[id].position.x - before[id].position.x, after[id].position.y - before[id].position.y];
      assert.ok(Math.abs(moved[0] - dx) < 1e-6 && Math.abs(moved[1] - dy) < 1e-6, `${id} moved by ${moved} with its group (${dx}, ${dy})`);
    }
    for (const id of ["5", "3", "4"]) assert.deepEqual(after[id].position, before[id].position, `${id} stayed`);
    // Bypass from the node's menu too.
    await focusNodes(page, ["12"]);
    await page.locator('[data-node-id="12"] .node-header').click({ button: "right" });
    await page.getByRole("menuitem", { name: /^Bypass/ }).click();
    await page.evaluate(() => window.latentgraph.flow.fitView({ padding: 0.05 }));
    await screenshot(page, "comfy-06-edited");

    const edited = await workflow();
    assert.equal(edited.nodes["12"].mode, "bypass");
    assert.deepEqual(edited.meta.groups.map((g) => g.title), ["Prompts", "Sampling"]);
    assert.deepEqual(edited.meta.notes.map((n) => n.text), [comfyDemoWorkflow().nodes.find((n) => n.type === "Note").widgets_values[0], "## Saved note\nwith **bold** and [a link](https://example.org)"]);
    await page.getByRole("button", { name: "Save as" }).click();
    await page.getByLabel("Save name").fill("comfy e2e");
    await page.getByRole("button", { name: "Save", exact: true }).last().click();
    await page.locator(".toast").filter({ hasText: "Saved" }).waitFor();
    const saved = await workflow();
    await page.getByRole("button", { name: "New" }).click();
    await page.waitForFunction(() => window.latentgraph.store.getState().groups.length === 0);
    await page.getByRole("button", { name: "Open" }).click();
    await page.locator('.workflow-item[data-name="comfy-e2e"]').click();
    await page.locator('.lg-group[data-group-id="group"]').waitFor();
    assert.deepEqual(await workflow(), saved);
    await page.locator(".lg-note h2").filter({ hasText: "Saved note" }).waitFor();
    await page.locator('.reroute-point[data-node="8"][data-input="latent"]').waitFor();
    await page.locator('.lg-node.mode-bypass[data-node-id="12"]').waitFor();
    await screenshot(page, "comfy-07-reopened");
  });

  it("raised no page errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
