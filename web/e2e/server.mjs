// Starting a real Latentgraph server for the browser tests: a temporary models/input/output tree
// with a tiny SD1.x checkpoint under the shipped workflows' checkpoint name (tests/sd_tiny.py),
// `latentgraph serve` on a free loopback port, and the built editor (latentgraph/web) it serves at /.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(WEB, "..");
const EDITOR = join(REPO, "latentgraph", "web"); // where `npm run build` puts the editor
export const ARTIFACTS = join(WEB, "test-artifacts");
export const DEMO_CHECKPOINT = "latentgraph-demo.safetensors";
const VENV = process.env.LATENTGRAPH_VENV ?? join(REPO, ".venv");

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

async function waitUntilUp(url, child, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the server exited with code ${child.exitCode}`);
    try {
      const response = await fetch(`${url}/api/nodes`);
      if (response.ok) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the server did not answer within ${timeoutMs / 1000} s`);
}

/** Put the bundled demo model (models/checkpoints/latentgraph-demo.safetensors) in `checkpoints`;
 * where it is absent, or E2E_TINY_MODEL=1, write the tiny test checkpoint under its name instead. */
function installDemoCheckpoint(checkpoints) {
  mkdirSync(checkpoints, { recursive: true });
  const bundled = join(REPO, "models", "checkpoints", DEMO_CHECKPOINT);
  if (existsSync(bundled) && process.env.E2E_TINY_MODEL !== "1") {
    symlinkSync(bundled, join(checkpoints, DEMO_CHECKPOINT));
    return "bundled";
  }
  const script = `import sys; sys.path.insert(0, ${JSON.stringify(join(REPO, "tests"))}); from sd_tiny import write_tiny_checkpoint; write_tiny_checkpoint(sys.argv[1])`;
  const made = spawnSync(join(VENV, "bin", "python"), ["-c", script, join(checkpoints, DEMO_CHECKPOINT)], { encoding: "utf8" });
  if (made.status !== 0) throw new Error(`could not write the tiny checkpoint: ${made.stderr}`);
  return "tiny";
}

export async function startServer({ log = process.env.E2E_SERVER_LOG === "1" } = {}) {
  if (!existsSync(join(EDITOR, "index.html"))) {
    const build = spawnSync("npm", ["run", "build"], { cwd: WEB, stdio: "inherit" });
    if (build.status !== 0) throw new Error("npm run build failed");
  }
  const root = mkdtempSync(join(tmpdir(), "latentgraph-e2e-"));
  const folders = { models: join(root, "models"), input: join(root, "input"), output: join(root, "output"), user: join(root, "user"), temp: join(root, "temp") };
  for (const folder of Object.values(folders)) mkdirSync(folder, { recursive: true });
  const model = installDemoCheckpoint(join(folders.models, "checkpoints"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const args = [
    "serve", "--host", "127.0.0.1", "--port", String(port),
    "--models-dir", folders.models, "--input-dir", folders.input, "--output-dir", folders.output,
    "--user-dir", folders.user, "--temp-dir", folders.temp, "--web-dir", EDITOR,
    "--device", "cpu", "--log-level", "warning",
    "--max-steps", "1000", // the cancel tests queue a 1000-step run that must still be going when stopped
  ];
  const env = { ...process.env };
  delete env.LATENTGRAPH_TOKEN; // a loopback server needs none, and the browser would not send it
  let output = "";
  let child = null;
  const launch = async () => {
    child = spawn(join(VENV, "bin", "latentgraph"), args, { cwd: root, env, stdio: ["ignore", log ? "inherit" : "pipe", log ? "inherit" : "pipe"] });
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    try {
      await waitUntilUp(url, child, 60000);
    } catch (error) {
      child.kill("SIGTERM");
      throw new Error(`${error.message}\n${output.slice(-4000)}`);
    }
  };
  const halt = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => { child.once("exit", r); setTimeout(r, 5000); });
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  };
  await launch();
  const stop = async () => {
    await halt();
    rmSync(root, { recursive: true, force: true });
  };
  /** Stop the server, keep its folders, and start it again on the same port (a restart). */
  const restart = async ({ downMs = 0 } = {}) => {
    await halt();
    await new Promise((r) => setTimeout(r, downMs));
    await launch();
  };
  return { url, root, folders, model, stop, restart, output: () => output };
}
