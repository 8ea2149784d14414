// Type-checks and bundles the web chat (clients/web/src) with this SDK into
// services/gateway/web/app.js, the file the gateway serves next to index.html and style.css:
// package data of the gateway, so the wheel and the image carry the page.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, "..", "..", "web");
const out = join(here, "..", "..", "..", "services", "gateway", "web");
execFileSync(join(here, "..", "node_modules", ".bin", "tsc"), ["-p", join(web, "tsconfig.json")], { stdio: "inherit" });
await build({
  entryPoints: [join(web, "src", "app.ts")],
  outfile: join(out, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
});
console.log(`built ${join(out, "app.js")}`);
