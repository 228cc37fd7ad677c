// Browser test: a ControlNet preprocessor (canny) shows the map it made on its own node, and the map
// stays out of the gallery, which keeps to what output nodes saved. Its own server and browser.
//   npm run test:e2e            (starts its own server; E2E_URL=http://... uses a running one)
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { closeSession, focusNodes, mod, openSession, screenshot } from "./helpers.mjs";

const WIDTH = 64;
const HEIGHT = 48;
const BORDER = 40; // the picture is black left of this column and white from it on
let server, browser, page, baseUrl;
const pageErrors = [];

before(async () => {
  ({ server, browser, page, baseUrl } = await openSession(pageErrors, { acceptDialogs: false }));
});

after(() => closeSession({ server, browser }));

/** Draw the picture in the page, upload it as a user's image would be, and return its input name. */
async function uploadPicture() {
  return page.evaluate(async ({ width, height, border }) => {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const g = canvas.getContext("2d");
    g.fillStyle = "#000";
    g.fillRect(0, 0, width, height);
    g.fillStyle = "#fff";
    g.fillRect(border, 0, width - border, height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("file", blob, "step.png");
    const response = await fetch("/api/images", { method: "POST", body: form });
    if (!response.ok) throw new Error(`upload failed: ${response.status} ${await response.text()}`);
    return (await response.json()).name;
  }, { width: WIDTH, height: HEIGHT, border: BORDER });
}

/** The white pixels of each column of a loaded <img> (read back through a canvas). */
async function whitePerColumn(locator) {
  return locator.evaluate(async (img) => {
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const g = canvas.getContext("2d");
    g.drawImage(img, 0, 0);
    const { data } = g.getImageData(0, 0, canvas.width, canvas.height);
    const columns = new Array(canvas.width).fill(0);
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] === 255 && data[i + 1] === 255 && data[i + 2] === 255) columns[(i / 4) % canvas.width]++;
      else if (data[i] || data[i + 1] || data[i + 2]) throw new Error(`a grey pixel: ${data.slice(i, i + 3)}`);
    }
    return { width: canvas.width, height: canvas.height, columns };
  });
}

describe("a preprocessor node", { concurrency: false }, () => {
  it("shows its map on the node, and only output nodes' images in the gallery", async () => {
    await page.goto(baseUrl);
    await page.locator(".lg-node").first().waitFor();
    await page.locator('.connection[data-state="open"]').waitFor();
    const name = await uploadPicture();
    await page.evaluate((name) => window.latentgraph.openWorkflow({
      format: "latentgraph/workflow@1",
      meta: { name: "canny map" },
      nodes: {
        load: { type: "load_image", inputs: { image: name } },
        edges: { type: "canny", inputs: { image: { node: "load", output: "image" }, low_threshold: 100, high_threshold: 200 } },
        save: { type: "save_image", inputs: { images: { node: "load", output: "image" }, filename_prefix: "photo" } },
        // Only something downstream makes the preprocessor run: here a preview of the same map.
        show: { type: "preview_image", inputs: { images: { node: "edges", output: "image" } } },
      },
      ui: { load: { x: 0, y: 0 }, edges: { x: 340, y: 0 }, save: { x: 700, y: 0 }, show: { x: 700, y: 320 } },
    }), name);
    await page.locator('[data-node-id="edges"]').waitFor();
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press(`${mod}+Enter`);
    const map = page.locator('[data-node-id="edges"] .node-images img');
    await map.first().waitFor({ timeout: 60000 }).catch(async (error) => {
      await screenshot(page, "preprocessor-failed");
      const state = await page.evaluate(() => { const s = window.latentgraph.store.getState(); return { runNodes: s.runNodes, errors: s.errors, workflowErrors: s.workflowErrors }; });
      throw new Error(`${error.message}\n${JSON.stringify(state)}`);
    });
    assert.equal(await map.count(), 1);
    assert.match(await map.getAttribute("src"), /\/api\/images\/temp\/canny_\d{5}_\.png$/);
    // The map drawn on the node: one white edge line down the column before the border, black elsewhere.
    const seen = await whitePerColumn(map);
    assert.deepEqual([seen.width, seen.height], [WIDTH, HEIGHT]);
    const lit = seen.columns.flatMap((count, x) => (count ? [[x, count]] : []));
    assert.deepEqual(lit, [[BORDER - 1, HEIGHT]]);
    await focusNodes(page, ["load", "edges", "save", "show"]);
    await screenshot(page, "preprocessor-map-on-node");

    // The gallery lists the run's saved photo and the preview node's image, not the canny map.
    await page.getByRole("tab", { name: "Gallery" }).click();
    await page.waitForFunction(() => window.latentgraph.store.getState().runHistory.some((r) => r.name === "canny map" && r.status === "succeeded"), null, { timeout: 30000 });
    const images = await page.evaluate(() => window.latentgraph.store.getState().runHistory.find((r) => r.name === "canny map").images.map((i) => `${i.type}/${i.filename}`));
    assert.equal(images.length, 2, images.join(", "));
    assert.ok(images.some((i) => /^output\/photo_\d{5}_\.png$/.test(i)) && images.some((i) => /^temp\/preview_\d{5}_\.png$/.test(i)), images.join(", "));
  });

  it("raised no page errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
