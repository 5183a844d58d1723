// The overhead Kiln adds to a build: `kiln build` (waiting until the build is complete and
// tagged) of a small debhelper package, against `dpkg-buildpackage -b` of the same source on the
// same machine. Target: at most 1.5 s of overhead. Writes bench/results/build-overhead.md, with
// where the time of the median `kiln build` went (from the hub's task timestamps).
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { KILN, ROOT, median, startKilnHub, time, writeResult } from "./lib/kiln-hub.js";

const FIXTURE = path.join(ROOT, "test/fixtures/packages/hello-c");
const RUNS = Number(process.env.BENCH_BUILD_RUNS ?? 5);

/**
 * Where one `kiln build` spent its time, from the hub's timestamps of its tasks (milliseconds;
 * the hub runs on this machine, so its clock is ours).
 */
async function phases(api, taskId, startedMs, endedMs) {
  const top = await api(`/api/v1/tasks/${taskId}`);
  const { tasks } = await api(`/api/v1/tasks?parent=${taskId}&limit=100`);
  const ms = (iso) => new Date(iso).getTime();
  const src = tasks.find((t) => t.method === "buildSrc");
  const archs = tasks.filter((t) => t.method === "buildArch");
  const tag = tasks.find((t) => t.method === "tagBuild");
  if (!src || archs.length === 0) return undefined;
  const archStart = Math.min(...archs.map((t) => ms(t.startedAt)));
  const archEnd = Math.max(...archs.map((t) => ms(t.completedAt)));
  return [
    ["CLI: start, pack and upload the source, queue the build", ms(top.createdAt) - startedMs],
    ["hub: hand buildSrc to the worker", ms(src.startedAt) - ms(top.createdAt)],
    ["worker: buildSrc (dpkg-source -b in the sandbox, upload)", ms(src.completedAt) - ms(src.startedAt)],
    ["hub: hand buildArch to the worker", archStart - ms(src.completedAt)],
    [
      "worker: buildArch (download, sandboxed dpkg-source -x, checkbuilddeps, dpkg-buildpackage, upload)",
      archEnd - archStart,
    ],
    [`hub: import${tag ? " and tagBuild" : ""}`, ms(top.completedAt) - archEnd],
    ["CLI: see the end and exit", endedMs - ms(top.completedAt)],
  ];
}

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-build-"));
  chmodSync(dir, 0o755);
  const { env, kiln, api, stop } = await startKilnHub(dir);
  try {
    const arch = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
    kiln("tag", "create", "bench-build", "--arches", arch);
    kiln("tag", "create", "bench");
    kiln("target", "create", "bench-target", "--build-tag", "bench-build", "--dest-tag", "bench");
    kiln("package", "add", "bench", "hello-c", "--owner", "admin");

    const plain = [];
    const viaKiln = [];
    const runs = [];
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
      let out;
      const startedMs = Date.now();
      viaKiln.push(
        time(() => {
          out = spawnSync(process.execPath, [KILN, "build", "bench-target", ksrc], { env, encoding: "utf8" });
        }),
      );
      const endedMs = Date.now();
      if (out.status !== 0) throw new Error(`kiln build failed: ${out.stderr}`);
      const taskId = Number(/ as task (\d+)/.exec(out.stderr)?.[1]);
      runs.push(await phases(api, taskId, startedMs, endedMs));
    }
    const p = median(plain);
    const k = median(viaKiln);
    const overhead = k - p;
    const medianRun = runs[viaKiln.indexOf(k)];
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
      ...(medianRun
        ? [
            "",
            `Where the median \`kiln build\` (${k.toFixed(2)} s) spent its time:`,
            "",
            "| phase | ms |",
            "| --- | --- |",
            ...medianRun.map(([what, ms]) => `| ${what} | ${ms} |`),
          ]
        : []),
    ].join("\n");
    writeResult("build-overhead", table);
  } finally {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
