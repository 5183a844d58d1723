// A real `kiln serve` (embedded worker included) in a temp directory for benchmarks that drive
// Kiln through its CLI, plus the few helpers those benchmarks share.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const KILN = path.join(ROOT, "bin/kiln.js");

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Seconds `fn` took (synchronous). */
export function time(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Writes `table` to stdout and to bench/results/NAME.md. */
export function writeResult(name, table) {
  console.log(table);
  mkdirSync(path.join(ROOT, "bench/results"), { recursive: true });
  writeFileSync(path.join(ROOT, `bench/results/${name}.md`), `${table}\n`);
}

/**
 * Starts a hub with its data under `dir` and waits until the CLI reaches it. Returns `env` (for
 * spawning `kiln` yourself), `kiln(...args)` (the CLI, synchronously; stdout as text), `api(path)`
 * (an authenticated GET, parsed) and `stop()`.
 */
export async function startKilnHub(dir) {
  const data = path.join(dir, "data");
  const port = await freePort();
  const hub = spawn(process.execPath, [KILN, "serve", "--data", data, "--listen", `127.0.0.1:${port}`], {
    stdio: "ignore",
    env: { ...process.env, KILN_LOG_LEVEL: "error" },
  });
  const env = { ...process.env, KILN_HUB: `http://127.0.0.1:${port}`, KILN_DATA: data };
  const kiln = (...args) =>
    execFileSync(process.execPath, [KILN, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    });
  const token = () => readFileSync(path.join(data, "admin-token"), "utf8").trim();
  const api = async (p) => {
    const res = await fetch(`${env.KILN_HUB}${p}`, { headers: { authorization: `Bearer ${token()}` } });
    if (!res.ok) throw new Error(`GET ${p}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const stop = async () => {
    hub.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1000));
    hub.kill("SIGKILL");
  };
  for (let i = 0; ; i++) {
    try {
      kiln("version");
      token();
      break;
    } catch (err) {
      if (i >= 100 || hub.exitCode !== null) {
        await stop();
        throw new Error(`the hub did not come up: ${err.message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { data, env, kiln, api, stop };
}
