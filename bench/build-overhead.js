// The overhead Kiln adds to a build: `kiln build` (waiting until the build is complete and
// tagged) of a small debhelper package, against `dpkg-buildpackage -b` of the same source on the
// same machine. Target: at most 1.5 s of overhead. Writes bench/results/build-overhead.md.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const KILN = path.join(ROOT, "bin/kiln.js");
const FIXTURE = path.join(ROOT, "test/fixtures/packages/hello-c");
const RUNS = Number(process.env.BENCH_BUILD_RUNS ?? 5);

const freePort = () =>
  new Promise((resolve) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });

function time(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-build-"));
  chmodSync(dir, 0o755);
  const data = path.join(dir, "data");
  const port = await freePort();
  const hub = spawn(process.execPath, [KILN, "serve", "--data", data, "--listen", `127.0.0.1:${port}`], {
    stdio: "ignore",
    env: { ...process.env, KILN_LOG_LEVEL: "error" },
  });
  const env = { ...process.env, KILN_HUB: `http://127.0.0.1:${port}`, KILN_DATA: data };
  const kiln = (...args) =>
    execFileSync(process.execPath, [KILN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  try {
    for (let i = 0; i < 100; i++) {
      try {
        kiln("version");
        readFileSync(path.join(data, "admin-token"));
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const arch = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
    kiln("tag", "create", "bench-build", "--arches", arch);
    kiln("tag", "create", "bench");
    kiln("target", "create", "bench-target", "--build-tag", "bench-build", "--dest-tag", "bench");
    kiln("package", "add", "bench", "hello-c", "--owner", "admin");

    const plain = [];
    const viaKiln = [];
    for (let i = 0; i < RUNS; i++) {
      process.stderr.write(`[bench] build overhead: run ${i + 1}/${RUNS}\n`);
      const src = path.join(dir, `plain-${i}`, "hello-c");
      mkdirSync(path.dirname(src), { recursive: true });
      cpSync(FIXTURE, src, { recursive: true });
      plain.push(
        time(() => execFileSync("dpkg-buildpackage", ["-us", "-uc", "-b"], { cwd: src, stdio: "ignore" })),
      );
      // A fresh version each time, as a real release would have (and as Kiln requires).
      const ksrc = path.join(dir, `kiln-${i}`, "hello-c");
      mkdirSync(path.dirname(ksrc), { recursive: true });
      cpSync(FIXTURE, ksrc, { recursive: true });
      const changelog = path.join(ksrc, "debian/changelog");
      writeFileSync(
        changelog,
        readFileSync(changelog, "utf8").replace("hello-c (1.0)", `hello-c (1.0.${i + 1})`),
      );
      viaKiln.push(time(() => kiln("build", "bench-target", ksrc)));
    }
    const p = median(plain);
    const k = median(viaKiln);
    const overhead = k - p;
    const table = [
      "# Kiln build overhead",
      "",
      `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${os.cpus().length} CPUs · ${RUNS} runs each, medians`,
      "",
      "| what | seconds |",
      "| --- | --- |",
      `| \`dpkg-buildpackage -us -uc -b\` of hello-c | ${p.toFixed(2)} |`,
      `| \`kiln build\` of hello-c (source package, sandboxed binary build, upload, import, tag; embedded worker) | ${k.toFixed(2)} |`,
      `| overhead | ${overhead.toFixed(2)} (×${(k / p).toFixed(2)}) |`,
      "",
      `Target: at most 1.5 s of overhead — ${overhead <= 1.5 ? "✅ met" : "❌ missed"}.`,
      "",
      "Kiln's build also makes the source package (`dpkg-source -b`) and runs `dpkg-checkbuilddeps`, both in the sandbox, which the plain build does not.",
    ].join("\n");
    console.log(table);
    mkdirSync(path.join(ROOT, "bench/results"), { recursive: true });
    writeFileSync(path.join(ROOT, "bench/results/build-overhead.md"), `${table}\n`);
  } finally {
    hub.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1000));
    hub.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
