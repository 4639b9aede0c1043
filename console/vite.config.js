// Builds the console into crates/server/console-dist, which the server compiles in
// (crates/server/src/http/console.rs lists the files: names carry no hash, so the list is
// fixed; the server sends them with `Cache-Control: no-cache`).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "../crates/server/console-dist",
    emptyOutDir: true,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 100000,
    rollupOptions: {
      output: {
        entryFileNames: "assets/console.js",
        chunkFileNames: "assets/console-[name].js",
        assetFileNames: (info) =>
          (info.names ?? [info.name]).some((n) => n && n.endsWith(".css"))
            ? "assets/console.css"
            : "assets/[name][extname]",
      },
    },
  },
});
