import { spawnSync } from "node:child_process";
import { lstat, readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { BuildArchArgs, BuildArchResult, BuildrootRef, SourceFileRef } from "../../client/types.js";
import {
  ChecksumMismatch,
  isNotFound,
  isPlainFileName,
  saveResponse,
  uploadBuildFile,
} from "../build-files.js";
import {
  BUILD_LIMITS,
  describeExit,
  guardStopped,
  lastLines,
  requireSandbox,
  runSteps,
} from "../build-steps.js";
import { prepareBuildRoot } from "../buildroot.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../handler.js";
import { makeBuildDir, SANDBOX_WORKSPACE } from "../sandbox.js";
import { upstreamVersion } from "../source-files.js";

/** Build results dpkg-buildpackage leaves beside the tree, by extension, and their artifact kind. */
const RESULT_KINDS: Readonly<Record<string, string>> = {
  ".deb": "deb",
  ".udeb": "udeb",
  ".ddeb": "ddeb",
  ".buildinfo": "buildinfo",
  ".changes": "changes",
};

// The workspace (ctx.workDir, /build in the sandbox): pkg/ holds the source package's files, the
// unpacked tree pkg/<source>-<upstream>/, and — beside it, as dpkg-buildpackage writes them — the results.
const PKG = "pkg";

function fail(message: string): never {
  throw new TaskFailure("VALIDATION_FAILED", `buildArch: ${message}`);
}

function parseRef(ref: unknown, what: string): SourceFileRef {
  const r = (ref ?? {}) as Partial<SourceFileRef>;
  if (typeof r.name !== "string" || !isPlainFileName(r.name)) fail(`${what}.name must be a plain file name`);
  if (typeof r.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(r.sha256))
    fail(`${what}.sha256 must be a SHA-256 in hex`);
  if (typeof r.size !== "number" || !Number.isSafeInteger(r.size) || r.size < 0)
    fail(`${what}.size must be a byte count`);
  return { name: r.name, sha256: r.sha256, size: r.size };
}

function parseArgs(args: unknown): BuildArchArgs {
  const a = (args ?? {}) as Partial<BuildArchArgs>;
  if (typeof a.source !== "string" || !/^[a-z0-9][a-z0-9+.-]+$/.test(a.source))
    fail("args.source must be a package name");
  if (typeof a.version !== "string" || a.version === "") fail("args.version must be a version");
  if (typeof a.arch !== "string" || !/^[a-z0-9][a-z0-9-]*$/.test(a.arch))
    fail("args.arch must be an architecture");
  if (a.dep !== true && a.indep !== true)
    fail("args.dep or args.indep must be true: there is nothing to build");
  if (!Array.isArray(a.files)) fail("args.files must list the source package's files");
  const dsc = parseRef(a.dsc, "args.dsc");
  if (!dsc.name.endsWith(".dsc")) fail("args.dsc must name a .dsc file");
  const files = a.files.map((f, i) => parseRef(f, `args.files[${i}]`));
  const buildroot = a.buildroot === undefined ? undefined : parseBuildroot(a.buildroot);
  return {
    ...(buildroot ? { buildroot } : {}),
    buildId: Number(a.buildId),
    source: a.source,
    version: a.version,
    arch: a.arch,
    dep: a.dep === true,
    indep: a.indep === true,
    dsc,
    files,
  };
}

function parseBuildroot(raw: unknown): BuildrootRef {
  const b = (raw ?? {}) as Partial<BuildrootRef>;
  const base = parseRef({ name: b.name, sha256: b.sha256, size: b.size }, "args.buildroot");
  const repo = (b.repo ?? {}) as Partial<BuildrootRef["repo"]>;
  if (typeof repo.id !== "number" || typeof repo.tag !== "string")
    fail("args.buildroot.repo must name the build tag's repo");
  if (
    typeof repo.path !== "string" ||
    !/^\/repos\/[A-Za-z0-9._+~/-]+\/$/.test(repo.path) ||
    repo.path.includes("..")
  )
    fail("args.buildroot.repo.path must be the repo's path under /repos/");
  return { ...base, repo: { id: repo.id, tag: repo.tag, path: repo.path } };
}

let nativeArch: string | undefined;
/** What this machine builds for (dpkg's idea of it). */
function hostArch(): string {
  if (nativeArch === undefined) {
    const res = spawnSync("dpkg", ["--print-architecture"], { encoding: "utf8" });
    if (res.status !== 0)
      throw new TaskFailure("SANDBOX_UNAVAILABLE", "dpkg --print-architecture fails on this worker", {
        infra: true,
      });
    nativeArch = res.stdout.trim();
  }
  return nativeArch;
}

/**
 * `buildArch {source, version, arch, dep, indep, dsc, files}`: builds the binary packages of one
 * architecture from a source package — downloaded by hash, unpacked, build dependencies checked,
 * `dpkg-buildpackage` run in the sandbox with no network as the unprivileged build user — and
 * attaches the .deb/.udeb/.ddeb/.buildinfo/.changes to the task.
 */
export const buildArchHandler: TaskHandler = (ctx) =>
  guardStopped(ctx, async () => {
    const args = parseArgs(ctx.task.args);
    if (args.arch !== "all" && args.arch !== hostArch()) {
      throw new TaskFailure(
        "VALIDATION_FAILED",
        `buildArch: this worker builds for ${hostArch()}, not ${args.arch}`,
        {
          infra: true,
        },
      );
    }
    requireSandbox();
    await makeBuildDir(ctx.workDir);
    const pkg = path.join(ctx.workDir, PKG);
    await makeBuildDir(pkg);

    const inputs = await fetchSource(ctx, args);
    const prepared = args.buildroot
      ? await prepareBuildRoot(ctx, args.buildroot, path.posix.join(PKG, args.dsc.name), args)
      : undefined;
    try {
      const artifacts = await buildAndCollect(ctx, args, inputs, prepared?.root);
      const result: BuildArchResult = { artifacts };
      if (args.buildroot && prepared) {
        result.buildroot = {
          name: args.buildroot.name,
          sha256: args.buildroot.sha256,
          repoId: args.buildroot.repo.id,
          installed: prepared.installed,
          setupSeconds: Math.round(prepared.setupSeconds * 100) / 100,
          base: prepared.base,
        };
      }
      return { result };
    } finally {
      await prepared?.dispose();
    }
  });

/**
 * dpkg-source, dpkg-checkbuilddeps and dpkg-buildpackage in the sandbox — over the host's root,
 * or over `root` (a prepared buildroot) — then the results uploaded.
 */
async function buildAndCollect(
  ctx: TaskContext,
  args: BuildArchArgs,
  inputs: Set<string>,
  root: string | undefined,
): Promise<BuildArchResult["artifacts"]> {
  const pkg = path.join(ctx.workDir, PKG);
  const dir = `${args.source}-${upstreamVersion(args.version)}`;
  const inPkg = (...p: string[]) => path.posix.join(SANDBOX_WORKSPACE, PKG, ...p);

  const which = args.dep && args.indep ? "-b" : args.dep ? "-B" : "-A";
  const checkFlag = args.dep && args.indep ? [] : [which];
  // One sandbox for the three steps: each sandbox started costs 10–30 ms more.
  const failed = await runSteps(
    ctx,
    [
      { cwd: inPkg(), argv: ["dpkg-source", "--no-copy", "-x", args.dsc.name, dir] },
      // Apart from the build, so that missing build dependencies are told apart from a failed build.
      { cwd: inPkg(dir), argv: ["dpkg-checkbuilddeps", ...checkFlag] },
      {
        cwd: inPkg(dir),
        // -d: the step before has just checked the build dependencies; no need to check them twice.
        argv: ["dpkg-buildpackage", "-us", "-uc", "-rfakeroot", which, "-d"],
        env: { DEB_BUILD_OPTIONS: `parallel=${Math.min(os.availableParallelism(), 16)}` },
      },
    ],
    { limits: BUILD_LIMITS, ...(root !== undefined ? { sandbox: { root } } : {}) },
  );
  if (failed?.index === 0) {
    throw new TaskFailure(
      "SOURCE_INVALID",
      `dpkg-source -x ${describeExit(failed)}: ${lastLines(failed.output, 3)}`,
      {
        exitCode: failed.exitCode,
        signal: failed.signal,
      },
    );
  }
  if (failed?.index === 1) throw depsFailure(failed);
  if (failed) {
    throw new TaskFailure("BUILD_FAILED", `dpkg-buildpackage ${describeExit(failed)}; see the log`, {
      exitCode: failed.exitCode,
      signal: failed.signal,
    });
  }

  const artifacts: BuildArchResult["artifacts"] = [];
  for (const name of (await readdir(pkg)).sort()) {
    const kind = RESULT_KINDS[path.extname(name)];
    if (kind === undefined || inputs.has(name)) continue;
    // The build user owns this directory: a "result" may be a symlink to a host file.
    if (!(await lstat(path.join(pkg, name))).isFile()) {
      ctx.log(`kiln: not uploading ${name}: it is not a regular file\n`);
      continue;
    }
    const isPackage = kind === "deb" || kind === "udeb" || kind === "ddeb";
    const arch = isPackage && name.endsWith(`_all${path.extname(name)}`) ? "all" : args.arch;
    ctx.log(`kiln: uploading ${name}\n`);
    const ref = await uploadBuildFile(ctx, pkg, name, { kind, arch });
    artifacts.push({ ...ref, kind });
  }
  if (!artifacts.some((a) => a.kind === "deb" || a.kind === "udeb")) {
    throw new TaskFailure(
      "BUILD_FAILED",
      `dpkg-buildpackage ${which} succeeded but made no package; see the log`,
    );
  }
  return artifacts;
}

/** Downloads every file of the source package by its hash; returns their names. */
async function fetchSource(ctx: TaskContext, args: BuildArchArgs): Promise<Set<string>> {
  const refs = new Map<string, SourceFileRef>();
  for (const f of [args.dsc, ...args.files]) {
    const seen = refs.get(f.name);
    if (seen && (seen.sha256 !== f.sha256 || seen.size !== f.size))
      fail(`two different files are named ${f.name}`);
    refs.set(f.name, f);
  }
  for (const f of refs.values()) {
    let res: Response;
    try {
      res = await ctx.client.downloadBlob(f.sha256);
    } catch (err) {
      if (isNotFound(err))
        throw new TaskFailure("SOURCE_INVALID", `the hub has no blob ${f.sha256} (${f.name})`);
      throw err;
    }
    try {
      await saveResponse(res, path.join(ctx.workDir, PKG, f.name), {
        signal: ctx.signal,
        expect: { sha256: f.sha256, size: f.size },
        what: `${f.name} (blob ${f.sha256})`,
      });
    } catch (err) {
      // The hub stores blobs by hash: a mismatch is damage in transit or in its store, not the build's fault.
      if (err instanceof ChecksumMismatch) throw new TaskFailure("TASK_FAILED", err.message, { infra: true });
      throw err;
    }
  }
  ctx.log(`kiln: downloaded ${refs.size} source files, SHA-256 sums checked\n`);
  return new Set(refs.keys());
}

/**
 * dpkg-checkbuilddeps says `dpkg-checkbuilddeps: error: Unmet build dependencies: a (>= 1) b`
 * and/or `…: error: Build conflicts: c`; the task fails with those, as printed, and no retry.
 */
function depsFailure(out: { output: string; exitCode: number | null; signal: string | null }): TaskFailure {
  const unmet = /Unmet build dependencies: (.*)$/m.exec(out.output)?.[1]?.trim();
  const conflicts = /Build conflicts: (.*)$/m.exec(out.output)?.[1]?.trim();
  const parts: string[] = [];
  if (unmet) parts.push(`missing build dependencies: ${unmet}`);
  if (conflicts) parts.push(`conflicting packages installed: ${conflicts}`);
  if (parts.length === 0) {
    return new TaskFailure(
      "BUILD_FAILED",
      `dpkg-checkbuilddeps ${describeExit(out)}: ${lastLines(out.output, 3)}`,
      {
        exitCode: out.exitCode,
        signal: out.signal,
      },
    );
  }
  return new TaskFailure("BUILD_DEPS_MISSING", parts.join("; "), { exitCode: out.exitCode });
}
