import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a server started with `latentgraph serve` (default port 8188,
// override with LATENTGRAPH_SERVER=http://127.0.0.1:PORT).
const server = process.env.LATENTGRAPH_SERVER ?? "http://127.0.0.1:8188";

export default defineConfig({
  plugins: [react()],
  base: "./",
  // Built into the Python package, so a source checkout and an installed wheel serve it alike.
  build: { outDir: "../latentgraph/web", emptyOutDir: true, chunkSizeWarningLimit: 1000 },
  server: {
    proxy: {
      "/api": { target: server, ws: true },
      "/ws": { target: server, ws: true },
    },
  },
  test: { include: ["test/**/*.test.ts"], environment: "node" },
});
