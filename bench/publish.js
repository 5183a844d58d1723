// Publishing against Aptly: for 200, 2,000 and 20,000 small .debs, the time to add them to a
// local repo, publish it, and republish after adding one package — Kiln (a real `kiln serve`
// with its own data directory and SQLite, driven through its HTTP API as the CLI does: upload,
// repo add, publish, publish update) and `aptly` (repo create/add, publish repo, publish update)
// on the same files in the same run. Both skip signing (no gpg-agent in the timings) and neither
// writes Contents indexes (Kiln has none, so aptly runs with -skip-contents); Kiln writes
// Packages, .gz and .xz, aptly Packages, .gz and .bz2.
//
// Targets (issue 4): a full publish of 20,000 packages in at most half of Aptly's time; adding
// one package to the published 20,000-package repo and republishing (add + update) in at most
// 0.5 s. KILN_BENCH_SIZES=200,2000 limits the sizes. Writes bench/results/publish.md.
import { execFile, spawn } from "node:child_process";
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { freePort } from "./lib/kiln-hub.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const KILN = path.join(ROOT, "bin/kiln.js");
const SIZES = (process.env.KILN_BENCH_SIZES ?? "200,2000,20000")
  .split(",")
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);
const ARCH = "amd64";
const run = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// Small valid .debs, written directly (dpkg-deb -b takes ~20 ms each: 7 minutes for 20,000)

function tarHeader(name, size, type) {
  const h = Buffer.alloc(512);
  const octal = (n, len) => `${n.toString(8).padStart(len - 1, "0")}\0`;
  let cursor = 0;
  const field = (s, len) => {
    h.write(s, cursor, len, "ascii");
    cursor += len;
  };
  field(name, 100);
  field(octal(type === "5" ? 0o755 : 0o644, 8), 8);
  field(octal(0, 8), 8); // uid
  field(octal(0, 8), 8); // gid
  field(octal(size, 12), 12);
  field(octal(1_700_000_000, 12), 12); // a fixed mtime: every run makes the same files
  field("        ", 8); // the checksum, counted as spaces, then filled in
  field(type, 1);
  cursor = 257;
  field("ustar\0", 6);
  field("00", 2);
  field("root", 32);
  field("root", 32);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return h;
}

function tar(entries) {
  const parts = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    parts.push(tarHeader(e.name, data.length, e.dir ? "5" : "0"));
    if (data.length > 0) parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function arMember(name, data) {
  const header =
    name.padEnd(16) +
    "1700000000".padEnd(12) +
    "0".padEnd(6) +
    "0".padEnd(6) +
    "100644".padEnd(8) +
    String(data.length).padEnd(10) +
    "`\n";
  return Buffer.concat([Buffer.from(header, "ascii"), data, Buffer.alloc(data.length % 2)]);
}

// Every package installs the same one file (the bench never installs them).
const DATA_TAR_GZ = zlib.gzipSync(
  tar([
    { name: "./", dir: true },
    { name: "./usr/", dir: true },
    { name: "./usr/share/", dir: true },
    { name: "./usr/share/doc/", dir: true },
    { name: "./usr/share/doc/kiln-bench/", dir: true },
    { name: "./usr/share/doc/kiln-bench/README", data: Buffer.from("A package of Kiln's benchmark.\n") },
  ]),
  { level: 9 },
);

function debOf(name, version, index) {
  const control = Buffer.from(
    [
      `Package: ${name}`,
      `Version: ${version}`,
      `Architecture: ${ARCH}`,
      "Maintainer: Kiln Bench <bench@example.org>",
      "Installed-Size: 1",
      "Section: misc",
      "Priority: optional",
      `Description: benchmark package ${index}`,
      ` A small package made by Kiln's publishing benchmark (number ${index}).`,
      "",
    ].join("\n"),
  );
  const controlTarGz = zlib.gzipSync(
    tar([
      { name: "./", dir: true },
      { name: "./control", data: control },
    ]),
    { level: 1 },
  );
  return Buffer.concat([
    Buffer.from("!<arch>\n"),
    arMember("debian-binary", Buffer.from("2.0\n")),
    arMember("control.tar.gz", controlTarGz),
    arMember("data.tar.gz", DATA_TAR_GZ),
  ]);
}

/** Package names spread over pool letters as a real archive's are. */
const nameOf = (i) => `${"abcdefghijklmnopqrstuvwxyz"[i % 26]}bench${i}`;

function makeDebs(dir, from, to) {
  mkdirSync(dir, { recursive: true });
  const files = [];
  for (let i = from; i < to; i++) {
    const file = path.join(dir, `${nameOf(i)}_1.0-1_${ARCH}.deb`);
    writeFileSync(file, debOf(nameOf(i), "1.0-1", i));
    files.push(file);
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// Timing

async function time(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// ---------------------------------------------------------------------------------------------
// Kiln, through its HTTP API

async function startKiln(dir) {
  const data = path.join(dir, "data");
  const port = await freePort();
  const args = [KILN, "serve", "--data", data, "--listen", `127.0.0.1:${port}`];
  if (process.env.KILN_BENCH_PROFILE)
    args.unshift(`--cpu-prof`, `--cpu-prof-dir=${process.env.KILN_BENCH_PROFILE}`);
  const hub = spawn(process.execPath, args, {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, KILN_LOG_LEVEL: "error" },
  });
  const base = `http://127.0.0.1:${port}`;
  let token;
  for (let i = 0; i < 300 && token === undefined; i++) {
    try {
      token = readFileSync(path.join(data, "admin-token"), "utf8").trim();
      const res = await fetch(`${base}/api/v1/repos`, { headers: { authorization: `Bearer ${token}` } });
      if (!res.ok) token = undefined;
    } catch {
      token = undefined;
    }
    if (token === undefined) await new Promise((r) => setTimeout(r, 100));
  }
  if (token === undefined) throw new Error("kiln serve did not start");
  const call = async (method, p, body, type = "application/json") => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": type }) },
      body: body === undefined ? undefined : type === "application/json" ? JSON.stringify(body) : body,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text.slice(0, 500)}`);
    return text === "" ? undefined : JSON.parse(text);
  };
  const stop = () =>
    new Promise((resolve) => {
      hub.on("exit", resolve);
      hub.kill("SIGTERM");
    });
  return { call, stop, data };
}

/** What `kiln repo add` does: a fresh upload area, the files streamed in (8 at a time), one add. */
async function kilnAdd(kiln, repo, files) {
  const { id } = await kiln.call("POST", "/api/v1/uploads", {});
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const file = files[next++];
      await kiln.call(
        "PUT",
        `/api/v1/uploads/${id}/files/${encodeURIComponent(path.basename(file))}`,
        readFileSync(file),
        "application/octet-stream",
      );
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 8 }, worker));
  kiln.uploadSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const out = await kiln.call("POST", `/api/v1/repos/${repo}/add`, { upload: id, removeUpload: "all" });
  if (out.result.added !== files.length) throw new Error(`kiln added ${out.result.added} of ${files.length}`);
}

async function benchKiln(dir, files, extra) {
  const kiln = await startKiln(dir);
  try {
    await kiln.call("POST", "/api/v1/repos", { name: "bench", component: "main" });
    const add = await time(() => kilnAdd(kiln, "bench", files));
    process.stderr.write(`  kiln: upload ${kiln.uploadSeconds.toFixed(3)} s of add ${add.toFixed(3)} s\n`);
    const publish = await time(() =>
      kiln.call("POST", "/api/v1/publish", {
        prefix: "bench",
        distribution: "bench",
        sourceKind: "local",
        sources: [{ component: "main", name: "bench" }],
        architectures: [ARCH],
        skipSigning: true,
      }),
    );
    const addOne = await time(() => kilnAdd(kiln, "bench", [extra]));
    const update = await time(() => kiln.call("POST", "/api/v1/publish/bench/update?prefix=bench", {}));
    const packages = readFileSync(
      path.join(kiln.data, "public/bench/dists/bench/main/binary-amd64/Packages"),
      "utf8",
    );
    const count = packages.split("\n\n").filter((s) => s.trim() !== "").length;
    if (count !== files.length + 1) throw new Error(`kiln's Packages lists ${count} packages`);
    return { add, publish, addOne, update };
  } finally {
    await kiln.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Aptly

async function benchAptly(dir, debDir, extra) {
  const conf = path.join(dir, "aptly.conf");
  writeFileSync(conf, JSON.stringify({ rootDir: path.join(dir, "aptly"), architectures: [ARCH] }));
  const aptly = (...args) => run("aptly", [`-config=${conf}`, ...args], { maxBuffer: 1 << 28 });
  await aptly("repo", "create", "-component=main", "-distribution=bench", "bench");
  const add = await time(() => aptly("repo", "add", "bench", debDir));
  const publish = await time(() =>
    aptly("publish", "repo", "-skip-signing", "-skip-contents", `-architectures=${ARCH}`, "bench", "bench"),
  );
  const addOne = await time(() => aptly("repo", "add", "bench", extra));
  const update = await time(() =>
    aptly("publish", "update", "-skip-signing", "-skip-contents", "bench", "bench"),
  );
  return { add, publish, addOne, update };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  await run("aptly", ["version"]).catch(() => {
    throw new Error("aptly is not installed (apt-get install aptly; scripts/install.sh installs it)");
  });
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-publish-"));
  const rows = [];
  try {
    const max = Math.max(...SIZES);
    process.stderr.write(`[bench] publish: writing ${max} .debs\n`);
    const all = makeDebs(path.join(dir, "debs"), 0, max);
    const extra = makeDebs(path.join(dir, "extra"), max, max + 1)[0];
    const { stdout: info } = await run("dpkg-deb", ["-I", all[0]]);
    if (!info.includes(`Package: ${nameOf(0)}`))
      throw new Error("the generated .deb is not readable by dpkg-deb");
    for (const n of SIZES) {
      // Each tool gets its own directory of the same files (hard links).
      const debDir = path.join(dir, `n${n}`);
      mkdirSync(debDir);
      const files = all.slice(0, n).map((f) => {
        const to = path.join(debDir, path.basename(f));
        linkSync(f, to);
        return to;
      });
      process.stderr.write(`[bench] publish: ${n} packages, kiln\n`);
      const k = await benchKiln(path.join(dir, `kiln-${n}`), files, extra);
      process.stderr.write(`[bench] publish: ${n} packages, aptly\n`);
      mkdirSync(path.join(dir, `aptly-${n}`));
      const a = await benchAptly(path.join(dir, `aptly-${n}`), debDir, extra);
      const big = n >= 20000;
      rows.push([n, "add", k.add, a.add, ""]);
      rows.push([
        n,
        "publish",
        k.publish,
        a.publish,
        big ? (k.publish <= a.publish / 2 ? "yes (≤ ½ aptly)" : "NO (≤ ½ aptly)") : "",
      ]);
      rows.push([n, "add 1", k.addOne, a.addOne, ""]);
      rows.push([n, "publish update", k.update, a.update, ""]);
      const inc = k.addOne + k.update;
      rows.push([
        n,
        "add 1 + update",
        inc,
        a.addOne + a.update,
        big ? (inc <= 0.5 ? "yes (≤ 0.5 s)" : "NO (≤ 0.5 s)") : "",
      ]);
      for (const r of rows.slice(-5))
        process.stderr.write(`  ${r[1]}: kiln ${r[2].toFixed(3)} s, aptly ${r[3].toFixed(3)} s\n`);
      rmSync(path.join(dir, `kiln-${n}`), { recursive: true, force: true });
      rmSync(path.join(dir, `aptly-${n}`), { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const { stdout: version } = await run("aptly", ["version"]);
  const table = [
    "# Publishing: Kiln against Aptly",
    "",
    `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${os.cpus().length} CPUs · ${version.trim()} · one run each`,
    "",
    "Both skip signing; aptly with -skip-contents. Kiln's times are HTTP calls to a `kiln serve`",
    "(SQLite) including the upload of the files; aptly's are its commands on local files.",
    "",
    "| packages | operation | Kiln s | aptly s | Kiln / aptly | target met |",
    "| ---: | --- | ---: | ---: | ---: | --- |",
    ...rows.map(
      ([n, op, k, a, t]) =>
        `| ${n.toLocaleString("en-US")} | ${op} | ${k.toFixed(3)} | ${a.toFixed(3)} | ${(k / a).toFixed(2)} | ${t} |`,
    ),
    "",
  ].join("\n");
  process.stdout.write(`${table}\n`);
  if (SIZES.includes(20000)) {
    mkdirSync(path.join(ROOT, "bench/results"), { recursive: true });
    writeFileSync(path.join(ROOT, "bench/results/publish.md"), table);
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
