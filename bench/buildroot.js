// Buildroot setup for a small package with a few Build-Depends (issue 7): Kiln's cached base
// (overlay root, apt-get update, apt-get build-dep from the mirror and the tag repo) against
// doing the same by hand on this machine — plain `debootstrap` + `chroot apt-get install`, and a
// stored tarball of the base unpacked + `chroot apt-get install` (sbuild's tarball mode). Target:
// a cached-base buildroot ready in under 10 s. Needs root, debootstrap and network to the mirror.
// Writes bench/results/buildroot.md.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { median, startKilnHub, time, writeResult } from "./lib/kiln-hub.js";

const RUNS = Number(process.env.BENCH_BUILDROOT_RUNS ?? 3);
const DEPS = ["zlib1g-dev", "libbz2-dev", "liblzma-dev"];
const SUITE = "bookworm";

/** The Debian mirror this machine's apt uses. */
function systemMirror() {
  if (process.env.KILN_BENCH_MIRROR) return process.env.KILN_BENCH_MIRROR;
  const text = ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"]
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, "utf8"))
    .join("\n");
  const m = /^URIs:\s*(\S+)/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main/m.exec(text);
  return (m?.[1] ?? "http://deb.debian.org/debian").replace(/\/+$/, "");
}

/** A tiny native source package whose Build-Depends are DEPS (its build links against zlib). */
function writeFixture(dir, version) {
  mkdirSync(path.join(dir, "debian/source"), { recursive: true });
  writeFileSync(path.join(dir, "debian/source/format"), "3.0 (native)\n");
  writeFileSync(
    path.join(dir, "debian/changelog"),
    `bench-deps (${version}) unstable; urgency=medium\n\n  * Bench.\n\n -- Kiln Bench <kiln@example.org>  Sat, 01 Nov 2025 12:00:00 +0000\n`,
  );
  writeFileSync(
    path.join(dir, "debian/control"),
    `Source: bench-deps\nSection: misc\nPriority: optional\nMaintainer: Kiln Bench <kiln@example.org>\nBuild-Depends: ${DEPS.join(", ")}\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n\nPackage: bench-deps\nArchitecture: any\nDescription: bench fixture\n Links against zlib.\n`,
  );
  writeFileSync(
    path.join(dir, "main.c"),
    "#include <stdio.h>\n#include <zlib.h>\nint main(void) { puts(zlibVersion()); return 0; }\n",
  );
  const rules = [
    "#!/usr/bin/make -f",
    "build build-arch build-indep:",
    "\t$(CC) main.c -o bench-deps -lz",
    "binary binary-arch: build",
    "\trm -rf debian/tmp && install -d debian/tmp/DEBIAN debian/tmp/usr/bin",
    "\tinstall -m 0755 bench-deps debian/tmp/usr/bin/",
    "\tdpkg-gencontrol -pbench-deps -Pdebian/tmp",
    "\tdpkg-deb --root-owner-group --build debian/tmp ..",
    "binary-indep:",
    "clean:",
    "\trm -rf debian/tmp debian/files bench-deps",
    "",
  ].join("\n");
  writeFileSync(path.join(dir, "debian/rules"), rules);
  chmodSync(path.join(dir, "debian/rules"), 0o755);
}

/** `apt-get install DEPS` in a chroot, with /proc mounted as a real build would have it. */
function chrootInstall(root) {
  const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C.UTF-8" };
  cpSync("/etc/resolv.conf", path.join(root, "etc/resolv.conf"), { dereference: true });
  execFileSync("mount", ["-t", "proc", "proc", path.join(root, "proc")]);
  try {
    execFileSync("chroot", [root, "apt-get", "update", "-q"], { env, stdio: "ignore" });
    execFileSync("chroot", [root, "apt-get", "install", "-y", "-q", "--no-install-recommends", ...DEPS], {
      env,
      stdio: "ignore",
    });
  } finally {
    spawnSync("umount", ["-l", path.join(root, "proc")]);
  }
}

async function main() {
  if (process.getuid?.() !== 0)
    throw new Error("bench/buildroot.js needs root (debootstrap, chroot, mounts)");
  const mirror = systemMirror();
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-buildroot-"));
  chmodSync(dir, 0o755);
  const { kiln, stop } = await startKilnHub(dir);
  try {
    const arch = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
    process.stderr.write(`[bench] buildroot: kiln buildroot create (debootstrap ${SUITE} from ${mirror})\n`);
    const create = time(() => kiln("buildroot", "create", "bench", "--suite", SUITE, "--mirror", mirror));
    kiln("tag", "create", "bench-build", "--arches", arch);
    kiln("tag", "edit", "bench-build", "--buildroot", "bench");
    kiln("tag", "create", "bench");
    kiln("target", "create", "bench-target", "--build-tag", "bench-build", "--dest-tag", "bench");
    kiln("package", "add", "bench", "bench-deps", "--owner", "admin");

    const setups = [];
    const builds = [];
    for (let i = 0; i < RUNS; i++) {
      process.stderr.write(`[bench] buildroot: kiln build in a buildroot, run ${i + 1}/${RUNS}\n`);
      const src = path.join(dir, `src-${i}`);
      writeFixture(src, `1.0.${i + 1}`);
      builds.push(time(() => kiln("build", "bench-target", src)));
      const info = JSON.parse(kiln("build-info", `bench-deps/1.0.${i + 1}`, "--json"));
      const a = info.buildroot?.arches?.[arch];
      if (!a) throw new Error(`no buildroot record in ${JSON.stringify(info.buildroot)}`);
      setups.push(a.setupSeconds);
    }

    // The peers, on the same mirror; debootstrap's download cache warm for both, as Kiln's is.
    const debs = path.join(dir, "debs");
    mkdirSync(debs);
    const bootstrap = (target) =>
      execFileSync(
        "debootstrap",
        [
          "--variant=minbase",
          "--include=build-essential,fakeroot",
          `--cache-dir=${debs}`,
          SUITE,
          target,
          mirror,
        ],
        { stdio: "ignore" },
      );
    process.stderr.write("[bench] buildroot: warming debootstrap's cache\n");
    bootstrap(path.join(dir, "warm"));
    const tarball = path.join(dir, "base.tar.zst");
    execFileSync("tar", [
      "--numeric-owner",
      "-I",
      "zstd -T0 -3",
      "-cf",
      tarball,
      "-C",
      path.join(dir, "warm"),
      ".",
    ]);
    rmSync(path.join(dir, "warm"), { recursive: true, force: true });
    const plain = [];
    const untar = [];
    for (let i = 0; i < RUNS; i++) {
      process.stderr.write(`[bench] buildroot: debootstrap + chroot, run ${i + 1}/${RUNS}\n`);
      const root = path.join(dir, `plain-${i}`);
      plain.push(
        time(() => {
          bootstrap(root);
          chrootInstall(root);
        }),
      );
      rmSync(root, { recursive: true, force: true });
      const root2 = path.join(dir, `untar-${i}`);
      mkdirSync(root2);
      untar.push(
        time(() => {
          execFileSync("tar", ["--numeric-owner", "--zstd", "-xpf", tarball, "-C", root2]);
          chrootInstall(root2);
        }),
      );
      rmSync(root2, { recursive: true, force: true });
    }
    const k = median(setups);
    const p = median(plain);
    const u = median(untar);
    const table = [
      "# Buildroot setup",
      "",
      `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${os.cpus().length} CPUs · ${SUITE} from ${mirror} · Build-Depends: ${DEPS.join(", ")} · ${RUNS} runs each, medians`,
      "",
      "| how a root with the Build-Depends is made | seconds | vs Kiln |",
      "| --- | --- | --- |",
      `| **Kiln**, cached base: overlay root, \`apt-get update\`, \`apt-get build-dep\` (base's mirror + tag repo) | ${k.toFixed(2)} | ×1.00 |`,
      `| stored tarball of the base unpacked + \`chroot apt-get update && apt-get install\` (sbuild's tarball mode) | ${u.toFixed(2)} | ×${(u / k).toFixed(2)} |`,
      `| plain \`debootstrap --variant=minbase\` + \`chroot apt-get update && apt-get install\` | ${p.toFixed(2)} | ×${(p / k).toFixed(2)} |`,
      "",
      `Target: a cached-base buildroot ready in under 10 s — ${k < 10 ? "✅ met" : "❌ missed"}.`,
      "",
      `For scale: making the base once (\`kiln buildroot create\`: debootstrap, pack, store) took ${create.toFixed(1)} s; a whole \`kiln build\` in a buildroot took ${median(builds).toFixed(2)} s (median). sbuild is not measured: it is not installed here; its unshare/tarball backends do what the middle row does.`,
    ].join("\n");
    writeResult("buildroot", table);
  } finally {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
