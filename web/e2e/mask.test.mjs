// Browser test: the mask painter. A picture uploaded on a load_image node, a mask painted, erased,
// undone, inverted and saved (the server writes it into a copy's alpha), the node showing it, a run
// reading the mask through load_image, the shipped inpaint workflow run on it with the demo model,
// and that workflow saved and reopened with its mask. Its own server and browser; screenshots in
// test-artifacts/mask-*.png.
//   npm run test:e2e            (starts its own server; E2E_URL=http://... uses a running one)
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { closeSession, focusNodes, graphState, mod, openSession, screenshot } from "./helpers.mjs";

const WIDTH = 64;
const HEIGHT = 48;
let server, browser, page, baseUrl;
const pageErrors = [];
let picture; // the uploaded picture's RGBA pixels
let maskName; // the masked copy's input name
let savedMask; // the mask painted, as saved

/** The picture and load_image's MASK output, each shown by a preview node: the mask reaches the
 * engine exactly as painted. */
const WORKFLOW = {
  format: "latentgraph/workflow@1",
  meta: { name: "mask painter" },
  nodes: {
    load: { type: "load_image", inputs: {} },
    as_image: { type: "mask_to_image", inputs: { mask: { node: "load", output: "mask" } } },
    mask_preview: { type: "preview_image", inputs: { images: { node: "as_image", output: "image" } } },
    picture_preview: { type: "preview_image", inputs: { images: { node: "load", output: "image" } } },
  },
  ui: { load: { x: 0, y: 0 }, as_image: { x: 340, y: 0 }, mask_preview: { x: 640, y: 0 }, picture_preview: { x: 640, y: 320 } },
};

before(async () => {
  ({ server, browser, page, baseUrl } = await openSession(pageErrors));
});

after(() => closeSession({ server, browser }));

/** A picture with colour everywhere (gradients and blocks), as PNG bytes and RGBA pixels. */
async function makePicture() {
  const { png, pixels } = await page.evaluate(async ({ width, height }) => {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const g = canvas.getContext("2d");
    const image = g.createImageData(width, height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = (y * width + x) * 4;
        image.data.set([(x * 4) % 256, (y * 5) % 256, (x * y) % 256, 255], i);
      }
    }
    g.putImageData(image, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return { png: btoa(text), pixels: [...image.data] };
  }, { width: WIDTH, height: HEIGHT });
  return { png: Buffer.from(png, "base64"), pixels };
}

/** RGBA pixels of an image URL (or an <img>), read back through a canvas. */
function pixelsOf(url) {
  return page.evaluate(async (url) => {
    const image = new Image();
    image.src = url;
    await image.decode();
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    g.drawImage(image, 0, 0);
    return { width: canvas.width, height: canvas.height, data: [...g.getImageData(0, 0, canvas.width, canvas.height).data] };
  }, url);
}

const channel = (pixels, c) => pixels.filter((_, i) => i % 4 === c);
const at = (mask, x, y) => mask[y * WIDTH + x];

/** The mask as the painter holds it: the alpha of its overlay canvas, one value a pixel. */
const painterMask = () => page.locator(".mask-stage canvas").evaluate((canvas) =>
  [...canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data].filter((_, i) => i % 4 === 3));

/** Drag on the painter from image point a to b (image pixels). */
async function drag(a, b) {
  const box = await page.locator(".mask-stage canvas").boundingBox();
  const screen = ([x, y]) => [box.x + (x * box.width) / WIDTH, box.y + (y * box.height) / HEIGHT];
  await page.mouse.move(...screen(a));
  await page.mouse.down();
  await page.mouse.move(...screen(b), { steps: 12 });
  await page.mouse.up();
}

describe("the mask painter", { concurrency: false }, () => {
  it("opens a picture uploaded on a load_image node", async () => {
    await page.goto(baseUrl);
    await page.locator(".lg-node").first().waitFor();
    await page.locator('.connection[data-state="open"]').waitFor();
    await page.evaluate((workflow) => window.latentgraph.openWorkflow(workflow), WORKFLOW);
    await focusNodes(page, ["load"]);
    const node = page.locator('[data-node-id="load"]');
    assert.equal(await node.getByRole("button", { name: "edit mask" }).isDisabled(), true); // nothing to paint on yet

    const made = await makePicture();
    picture = made.pixels;
    const chooser = page.waitForEvent("filechooser");
    await node.getByRole("button", { name: "upload image" }).click();
    await (await chooser).setFiles({ name: "photo.png", mimeType: "image/png", buffer: made.png });
    await page.waitForFunction(() => typeof window.latentgraph.store.getState().nodes.find((n) => n.id === "load")?.data.inputs.image === "string");
    const uploaded = (await graphState(page)).nodes.load.inputs.image;
    assert.match(uploaded, /^photo-[0-9a-f]{16}\.png$/);

    await node.getByRole("button", { name: "edit mask" }).click();
    const painter = page.getByRole("dialog", { name: "Mask painter" });
    await painter.locator(".mask-stage canvas").waitFor();
    assert.match(await painter.locator("h2").textContent(), new RegExp(uploaded));
    assert.ok((await painterMask()).every((v) => v === 0), "a picture without alpha opens with an empty mask");
    const shown = await pixelsOf(await painter.locator(".mask-stage img").getAttribute("src"));
    assert.deepEqual(shown.data, picture);
  });

  it("paints, erases, undoes and inverts", async () => {
    const painter = page.getByRole("dialog", { name: "Mask painter" });
    await painter.getByLabel("Brush size").fill("8");
    assert.equal(await painter.getByLabel("Brush hardness").inputValue(), "100");
    await drag([8, 24], [40, 24]);
    const band = await painterMask();
    assert.ok(band.every((v) => v === 0 || v === 255), "a hard brush paints 0 or 255");
    for (let y = 0; y < HEIGHT; y++) {
      for (let x = 0; x < WIDTH; x++) {
        if (x >= 9 && x <= 39 && y >= 21 && y <= 26) assert.equal(at(band, x, y), 255, `${x},${y} in the stroke`);
        if (y < 19 || y > 28 || x < 3 || x > 45) assert.equal(at(band, x, y), 0, `${x},${y} outside the stroke`);
      }
    }
    await painter.getByText(/\d+% to repaint/).filter({ hasNotText: /^0%/ }).waitFor();
    await screenshot(page, "mask-painted");

    await painter.getByRole("button", { name: "Erase" }).click();
    assert.equal(await painter.getByRole("button", { name: "Erase" }).getAttribute("aria-pressed"), "true");
    await drag([24, 10], [24, 38]);
    const erased = await painterMask();
    for (let y = 20; y <= 27; y++) assert.equal(at(erased, 24, y), 0, `erased at 24,${y}`);
    assert.equal(at(erased, 12, 24), 255);

    const graphBefore = (await graphState(page)).nodes;
    await page.keyboard.press(`${mod}+z`); // the painter's undo, not the graph's
    assert.deepEqual(await painterMask(), band);
    assert.deepEqual((await graphState(page)).nodes, graphBefore);

    await painter.getByRole("button", { name: "Invert" }).click();
    assert.deepEqual(await painterMask(), band.map((v) => 255 - v));
    await painter.getByRole("button", { name: "Invert" }).click();
    assert.deepEqual(await painterMask(), band);

    // A soft dab: grey levels between 0 and 255, which the server must keep exactly.
    await painter.getByRole("button", { name: "Paint" }).click();
    await painter.getByLabel("Brush hardness").fill("0");
    await painter.getByLabel("Brush size").fill("12");
    await drag([52, 10], [53, 10]);
    const soft = await painterMask();
    assert.ok(soft.some((v) => v > 0 && v < 255), "a soft brush paints grey");
    assert.equal(at(soft, 52, 40), 0);
    savedMask = soft;
  });

  it("saves the mask into a copy of the picture, and the node shows it", async () => {
    const painter = page.getByRole("dialog", { name: "Mask painter" });
    await painter.getByRole("button", { name: "Save" }).click();
    await painter.waitFor({ state: "detached" });
    const graph = await graphState(page);
    maskName = graph.nodes.load.inputs.image;
    assert.match(maskName, /^photo-masked-[0-9a-f]{16}\.png$/);
    assert.equal(graph.dirty, true);

    // The copy: the painted mask in its alpha (255 - mask), the picture's colours kept exactly.
    const file = await pixelsOf(`/api/images/input/${maskName}`);
    assert.deepEqual([file.width, file.height], [WIDTH, HEIGHT]);
    assert.deepEqual(channel(file.data, 3), savedMask.map((v) => 255 - v));
    const rgb = await pixelsOf(`/api/images/input/${maskName}?channel=rgb`);
    assert.deepEqual(rgb.data, picture, "colours kept under the transparent pixels");
    const grey = await pixelsOf(`/api/images/input/${maskName}?channel=mask`);
    assert.deepEqual(channel(grey.data, 0), savedMask);

    // The node shows the picture with the mask tinted over it.
    const overlay = page.locator('[data-node-id="load"] .mask-overlay');
    await overlay.waitFor();
    assert.equal(await overlay.getAttribute("data-mask"), maskName);
    assert.match(await overlay.evaluate((el) => getComputedStyle(el).maskImage), new RegExp(`${maskName}\\?channel=mask`));
    const preview = page.locator('[data-node-id="load"] img.input-preview');
    assert.ok(await preview.evaluate((img) => img.decode().then(() => img.naturalWidth === 64)));
    await page.waitForFunction((name) => [...document.querySelectorAll('[data-node-id="load"] select option')].some((o) => o.value === name && !o.textContent.includes("missing")), maskName);
    await focusNodes(page, ["load"]);
    await screenshot(page, "mask-on-node");
  });

  it("runs a workflow that reads the mask through load_image", async () => {
    await focusNodes(page, ["load", "as_image", "mask_preview", "picture_preview"]);
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press(`${mod}+Enter`);
    const maskImage = page.locator('[data-node-id="mask_preview"] .node-images img');
    await maskImage.first().waitFor({ timeout: 60000 }).catch(async (error) => {
      await screenshot(page, "mask-run-failed");
      const state = await page.evaluate(() => { const s = window.latentgraph.store.getState(); return { runNodes: s.runNodes, errors: s.errors, workflowErrors: s.workflowErrors }; });
      throw new Error(`${error.message}\n${JSON.stringify(state)}`);
    });
    const seen = await pixelsOf(await maskImage.first().getAttribute("src"));
    assert.deepEqual(channel(seen.data, 0), savedMask, "load_image's MASK output is the painted mask");
    const pictureImage = page.locator('[data-node-id="picture_preview"] .node-images img');
    await pictureImage.first().waitFor({ timeout: 60000 });
    assert.deepEqual((await pixelsOf(await pictureImage.first().getAttribute("src"))).data, picture);
    await screenshot(page, "mask-run");
  });

  it("inpaints the painted area with the shipped inpaint workflow, keeping the rest", async () => {
    await page.getByRole("button", { name: "Open" }).click();
    await page.locator('.workflow-item[data-name="inpaint"]').click();
    await page.locator('[data-node-id="composite"]').waitFor();
    await focusNodes(page, ["image", "sampler"]);
    await page.locator('[data-node-id="image"] select[name="image"]').selectOption(maskName);
    const steps = page.locator('[data-node-id="sampler"] input[name="steps"]');
    await steps.fill("4"); // a short CPU run
    await steps.press("Tab");
    await page.locator('[data-node-id="image"] .mask-overlay').waitFor();
    await focusNodes(page, ["image", "inpaint", "sampler", "composite", "save"]);
    await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press(`${mod}+Enter`);
    const result = page.locator('[data-node-id="save"] .node-images img');
    await page.waitForFunction(() => window.latentgraph.store.getState().outputs.save?.length > 0, null, { timeout: 120000 }).catch(async (error) => {
      await screenshot(page, "mask-inpaint-failed");
      const state = await page.evaluate(() => { const s = window.latentgraph.store.getState(); return { runNodes: s.runNodes, errors: s.errors, workflowErrors: s.workflowErrors }; });
      throw new Error(`${error.message}\n${JSON.stringify(state)}`);
    });
    await focusNodes(page, ["sampler", "decode", "composite", "save"]); // near enough for nodes to draw their images
    await result.first().waitFor();
    const made = await pixelsOf(await result.first().getAttribute("src"));
    assert.deepEqual([made.width, made.height], [WIDTH, HEIGHT]);
    let kept = 0;
    let changed = 0;
    for (let i = 0; i < savedMask.length; i++) {
      const same = [0, 1, 2].every((c) => made.data[i * 4 + c] === picture[i * 4 + c]);
      if (savedMask[i] === 0) {
        assert.ok(same, `pixel ${i % WIDTH},${Math.floor(i / WIDTH)} outside the mask was changed`);
        kept++;
      } else if (savedMask[i] === 255 && !same) changed++;
    }
    const inside = savedMask.filter((v) => v === 255).length;
    assert.ok(kept > 0 && changed > inside / 2, `${changed} of ${inside} masked pixels repainted`);
    await screenshot(page, "mask-inpainted");
  });

  it("saves the workflow, which reopens with its mask", async () => {
    await page.getByRole("button", { name: "Save as" }).click();
    await page.getByLabel("Save name").fill("masked photo");
    await page.getByRole("button", { name: "Save", exact: true }).last().click();
    await page.locator(".toast").filter({ hasText: "Saved" }).waitFor();
    const stored = await page.evaluate(() => fetch("/api/workflows/masked-photo").then((r) => r.json()));
    assert.equal((stored.workflow ?? stored).nodes.image.inputs.image, maskName);

    await page.reload();
    await page.locator('[data-node-id="image"]').waitFor();
    await page.getByRole("button", { name: "New" }).click();
    await page.waitForFunction(() => window.latentgraph.store.getState().nodes.length === 0);
    await page.getByRole("button", { name: "Open" }).click();
    await page.locator('.workflow-item[data-name="masked-photo"]').click();
    await page.locator('[data-node-id="image"]').waitFor();
    assert.equal((await graphState(page)).nodes.image.inputs.image, maskName);
    await focusNodes(page, ["image"]);
    await page.locator('[data-node-id="image"] .mask-overlay').waitFor();

    // Opening the painter again starts from the saved mask; Escape leaves it unchanged.
    await page.locator('[data-node-id="image"]').getByRole("button", { name: "edit mask" }).click();
    const painter = page.getByRole("dialog", { name: "Mask painter" });
    await painter.locator(".mask-stage canvas").waitFor();
    await page.waitForFunction(() => document.querySelector(".mask-value[aria-live]")?.textContent !== "0% to repaint");
    assert.deepEqual(await painterMask(), savedMask);
    await screenshot(page, "mask-reopened");
    await page.keyboard.press("Escape");
    await painter.waitFor({ state: "detached" });
    assert.equal((await graphState(page)).nodes.image.inputs.image, maskName);
  });

  it("raised no page errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
