import { defineConfig } from "vite";

// The gateway serves dist/index.html at "/" and dist/assets/* at "/assets".
export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 300 },
  server: { proxy: { "/api": "http://127.0.0.1:8080" } },
});
