// Summarises the V8 CPU profiles that `BENCH_PROFILE=1 npm run bench` leaves behind:
//   node bench/profile-summary.js DIR [TOP]
// For each .cpuprofile in DIR: self time by package or Kiln source folder, and the top functions.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

const dir = process.argv[2];
const top = Number(process.argv[3] ?? "15");
if (!dir) {
  console.error("usage: node bench/profile-summary.js DIR [TOP]");
  process.exit(2);
}

/** Where a frame's code lives: a package in node_modules, a folder of Kiln's dist/, node itself, or V8. */
function area(url, name) {
  if (!url) return name.startsWith("(") ? name : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  const kiln = /\/dist\/([^/]+)\//.exec(url);
  if (kiln) return `kiln ${kiln[1]}/`;
  if (url.startsWith("node:")) return url;
  return url;
}

for (const file of readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"))) {
  const profile = JSON.parse(readFileSync(path.join(dir, file), "utf8"));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const areas = new Map();
  const functions = new Map();
  for (const [id, us] of self) {
    const { callFrame: f } = byId.get(id);
    const a = area(f.url, f.functionName);
    areas.set(a, (areas.get(a) ?? 0) + us);
    const fn = `${f.functionName || "(anonymous)"} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ""}`;
    functions.set(fn, (functions.get(fn) ?? 0) + us);
  }
  const idle = areas.get("(idle)") ?? 0;
  const busy = total - idle;
  const pct = (us) => `${((100 * us) / busy).toFixed(1).padStart(5)} %`;
  console.log(`\n== ${file}: ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s`);
  console.log("  by area (share of busy time):");
  for (const [a, us] of [...areas]
    .filter(([a]) => a !== "(idle)")
    .sort((x, y) => y[1] - x[1])
    .slice(0, top)) {
    console.log(`    ${pct(us)}  ${a}`);
  }
  console.log("  top functions (self time):");
  for (const [fn, us] of [...functions]
    .filter(([f]) => !f.startsWith("(idle)"))
    .sort((x, y) => y[1] - x[1])
    .slice(0, top)) {
    console.log(`    ${pct(us)}  ${fn}`);
  }
}
