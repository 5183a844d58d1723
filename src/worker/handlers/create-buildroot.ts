/**
 * `createBuildroot {buildrootId, name, suite, mirror, arch, include}`: a minimal base made with
 * `debootstrap --variant=minbase` plus build-essential and fakeroot (what sbuild-createchroot
 * makes), set up for builds (no recommends, no services started, the build user, a /build mount
 * point), tarred with zstd and uploaded; the hub stores it by content. The worker keeps the tree
 * it just made in its base cache, so its first build needs no download.
 */
import { spawnSync } from "node:child_process";
import { appendFile, chmod, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { CreateBuildrootTaskArgs } from "../../client/types.js";
import { getField, parseDeb822 } from "../../debian/deb822.js";
import { uploadBuildFile } from "../build-files.js";
import { guardStopped, lastLines } from "../build-steps.js";
import { cacheFor } from "../buildroot.js";
import { unmountUnder } from "../buildroot-mount.js";
import { runProcess } from "../executor.js";
import { TaskFailure, type TaskHandler } from "../handler.js";
import { findOnPath } from "../host-facts.js";
import { BUILD_GID, BUILD_UID } from "../sandbox.js";

/** Always in a base: what every Debian build needs (build-essential) and dpkg-buildpackage -rfakeroot. */
export const BASE_PACKAGES = ["build-essential", "fakeroot"];

const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C.UTF-8" };

function fail(message: string): never {
  throw new TaskFailure("VALIDATION_FAILED", `createBuildroot: ${message}`);
}

function parseArgs(raw: unknown): CreateBuildrootTaskArgs {
  const a = (raw ?? {}) as Partial<CreateBuildrootTaskArgs>;
  if (typeof a.name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/.test(a.name)) fail("bad name");
  if (typeof a.suite !== "string" || !/^[a-z0-9][a-z0-9.+-]*$/.test(a.suite)) fail("bad suite");
  if (typeof a.mirror !== "string" || !/^https?:\/\/[^\s]+$/.test(a.mirror)) fail("bad mirror URL");
  if (typeof a.arch !== "string" || !/^[a-z0-9][a-z0-9-]*$/.test(a.arch)) fail("bad arch");
  const include = Array.isArray(a.include) ? a.include : [];
  for (const p of include)
    if (typeof p !== "string" || !/^[a-z0-9][a-z0-9+.-]+$/.test(p)) fail(`bad package name ${String(p)}`);
  return {
    buildrootId: Number(a.buildrootId),
    name: a.name,
    suite: a.suite,
    mirror: a.mirror,
    arch: a.arch,
    include: include,
  };
}

export const createBuildrootHandler: TaskHandler = (ctx) =>
  guardStopped(ctx, async () => {
    const args = parseArgs(ctx.task.args);
    if (process.getuid?.() !== 0)
      throw new TaskFailure("SANDBOX_UNAVAILABLE", "making a buildroot needs a worker running as root", {
        infra: true,
      });
    const debootstrap = findOnPath("debootstrap", ENV.PATH);
    if (!debootstrap)
      throw new TaskFailure(
        "SANDBOX_UNAVAILABLE",
        "debootstrap is not installed on this worker (apt-get install debootstrap)",
        { infra: true },
      );
    const work = ctx.workDir;
    const root = path.join(work, "root");
    const workerDir = path.dirname(work);
    // debootstrap's own download cache: a second base from the same mirror downloads little.
    const debs = path.join(workerDir, "buildroot-cache", "debootstrap-debs");
    await mkdir(debs, { recursive: true });
    try {
      const include = [...new Set([...BASE_PACKAGES, ...args.include])];
      let output = "";
      const out = await runProcess(
        debootstrap,
        [
          "--variant=minbase",
          `--include=${include.join(",")}`,
          `--arch=${args.arch}`,
          `--cache-dir=${debs}`,
          args.suite,
          root,
          args.mirror,
        ],
        {
          cwd: "/",
          env: ENV,
          signal: ctx.signal,
          killGrace: ctx.killGrace,
          onOutput: (t) => {
            ctx.log(t);
            output = (output + t).slice(-64 * 1024);
          },
        },
      );
      if (out.exitCode !== 0) {
        if (ctx.signal.aborted) throw new TaskFailure("TASK_CANCELED", "createBuildroot was stopped");
        throw new TaskFailure("BUILDROOT_CREATE_FAILED", `debootstrap failed: ${debootstrapError(output)}`, {
          exitCode: out.exitCode,
          signal: out.signal,
        });
      }
      await unmountUnder(root);
      await setUpBase(root);
      const info = await describeBase(root);
      ctx.log(`kiln: base has ${info.packages} packages; packing it\n`);
      const file = `${args.name}.tar.zst`;
      await pack(ctx, root, path.join(work, file));
      const ref = await uploadBuildFile(ctx, work, file, { kind: "buildroot", arch: args.arch });
      // Into this worker's cache: the first build here uses the tree just made.
      await cacheFor(workerDir, ctx)
        .adopt({ name: args.name, sha256: ref.sha256, size: ref.size }, path.join(work, file), root)
        .catch((err: unknown) => ctx.log(`kiln: could not keep the base in the cache: ${String(err)}\n`));
      ctx.log(`kiln: base ${args.name} is ${ref.size} bytes, sha256 ${ref.sha256}\n`);
      return { result: { sha256: ref.sha256, size: ref.size, info } };
    } finally {
      // debootstrap mounts /proc and /sys in the target; a failure can leave them mounted.
      await unmountUnder(work);
      await rm(root, { recursive: true, force: true }).catch(() => undefined);
    }
  });

/** debootstrap's own explanation: its `E:` lines, else its last lines. */
function debootstrapError(output: string): string {
  const errors = output
    .split("\n")
    .filter((l) => /^E: /.test(l))
    .map((l) => l.slice(3).trim());
  const text = errors.length > 0 ? errors.join("; ") : lastLines(output, 3);
  if (/No such script/.test(text)) return `${text} (debootstrap does not know this suite)`;
  if (/Failed getting release file|Couldn't download|Failure trying to run/.test(text))
    return `${text} (is the mirror reachable, and does it have this suite?)`;
  return text;
}

/** Settings every build root needs, as sbuild-createchroot makes them. */
async function setUpBase(root: string): Promise<void> {
  const etc = (p: string) => path.join(root, "etc", p);
  await writeFile(
    etc("apt/apt.conf.d/90kiln"),
    [
      'APT::Install-Recommends "false";',
      'APT::Install-Suggests "false";',
      'Acquire::Languages "none";',
      'Acquire::Retries "3";',
      'Dpkg::Use-Pty "false";',
      "",
    ].join("\n"),
  );
  // No daemon a package installs may start in a build root.
  const policy = path.join(root, "usr/sbin/policy-rc.d");
  await writeFile(policy, "#!/bin/sh\nexit 101\n");
  await chmod(policy, 0o755);
  // The build runs as BUILD_UID: give it a name (whoami, getpwuid) and /build as its home.
  const passwd = await readFile(etc("passwd"), "utf8");
  if (!passwd.split("\n").some((l) => l.split(":")[2] === String(BUILD_UID)))
    await appendFile(
      etc("passwd"),
      `kiln-build:x:${BUILD_UID}:${BUILD_GID}:Kiln build user:/build:/bin/sh\n`,
    );
  const group = await readFile(etc("group"), "utf8");
  if (!group.split("\n").some((l) => l.split(":")[2] === String(BUILD_GID)))
    await appendFile(etc("group"), `kiln-build:x:${BUILD_GID}:\n`);
  // The install phase binds the worker's resolv.conf over a plain file (a symlink would dangle).
  await rm(etc("resolv.conf"), { force: true });
  await writeFile(etc("resolv.conf"), "");
  await mkdir(path.join(root, "build"), { recursive: true, mode: 0o755 });
  // debootstrap's .debs (copies of its cache) are of no use in a base.
  await rm(path.join(root, "var/cache/apt/archives"), { recursive: true, force: true });
  await mkdir(path.join(root, "var/cache/apt/archives/partial"), { recursive: true });
}

/** What a base holds, for `kiln buildroot show`. */
async function describeBase(
  root: string,
): Promise<{ packages: number; debootstrap: string; apt: string; installed: string[] }> {
  const status = await readFile(path.join(root, "var/lib/dpkg/status"), "utf8");
  const installed: string[] = [];
  let apt = "";
  for (const p of parseDeb822(status, { comments: false })) {
    if (!/ installed$/.test(getField(p, "status") ?? "")) continue;
    const name = getField(p, "package") ?? "?";
    const version = getField(p, "version") ?? "?";
    if (name === "apt") apt = version;
    installed.push(`${name}=${version}`);
  }
  installed.sort();
  const q = spawnSync("dpkg-query", ["-W", "-f=${Version}", "debootstrap"], { encoding: "utf8", env: ENV });
  return { packages: installed.length, debootstrap: q.stdout.trim(), apt, installed };
}

/** tar with zstd (multithreaded): ~150 MB for bookworm with build-essential, unpacked in about a second. */
async function pack(ctx: Parameters<TaskHandler>[0], root: string, file: string): Promise<void> {
  let output = "";
  const out = await runProcess(
    "tar",
    ["--numeric-owner", "--one-file-system", "-I", "zstd -T0 -3", "-cf", file, "-C", root, "."],
    {
      cwd: "/",
      env: ENV,
      signal: ctx.signal,
      killGrace: ctx.killGrace,
      onOutput: (t) => {
        if (output.length < 8192) output += t;
      },
    },
  );
  if (out.exitCode !== 0)
    throw new TaskFailure(
      "TASK_FAILED",
      `cannot pack the base: tar exited with ${out.exitCode}: ${output.trim()}`,
      {
        infra: true,
      },
    );
  const st = await stat(file);
  ctx.log(`kiln: packed ${(st.size / 1024 ** 2).toFixed(0)} MiB\n`);
}
