/**
 * Building in a buildroot, the way sbuild does for Debian's buildds: a fresh root from a cached
 * base, the Build-Depends installed by apt from the base's mirror and the build tag's repo (the
 * only phase with network, run as root in the root's own namespaces), then the build with no
 * network as the unprivileged build user, then the root removed.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { BuildrootRef, InstalledPackage } from "../client/types.js";
import { getField, parseDeb822 } from "../debian/deb822.js";
import { ChecksumMismatch, isNotFound, saveResponse } from "./build-files.js";
import { lastLines, runSteps, type StepFailure } from "./build-steps.js";
import { BuildrootCache, CorruptBase, type AcquiredBase, type BaseRef } from "./buildroot-cache.js";
import { makeBuildRoot, type BuildRoot } from "./buildroot-mount.js";
import { TaskFailure, type TaskContext } from "./handler.js";
import { SANDBOX_WORKSPACE } from "./sandbox.js";

/** Default bound of a worker's base cache (KILN_BUILDROOT_CACHE_MB overrides it). */
export const DEFAULT_CACHE_BYTES = 8 * 1024 ** 3;

const caches = new Map<string, BuildrootCache>();

/** The base cache of the worker whose task directories are in `workerDir` (one per directory). */
export function cacheFor(workerDir: string, ctx: Pick<TaskContext, "client">): BuildrootCache {
  const dir = path.join(workerDir, "buildroot-cache");
  let cache = caches.get(dir);
  if (!cache) {
    const mb = Number(process.env.KILN_BUILDROOT_CACHE_MB);
    const max = Number.isFinite(mb) && mb > 0 ? mb * 1024 ** 2 : DEFAULT_CACHE_BYTES;
    cache = new BuildrootCache(dir, max, (ref, dest, signal) => fetchBase(ctx, ref, dest, signal));
    caches.set(dir, cache);
  }
  return cache;
}

async function fetchBase(ctx: Pick<TaskContext, "client">, ref: BaseRef, dest: string, signal: AbortSignal) {
  let res: Response;
  try {
    res = await ctx.client.downloadBlob(ref.sha256);
  } catch (err) {
    if (isNotFound(err))
      throw new TaskFailure(
        "BUILDROOT_NOT_FOUND",
        `the hub no longer has the base ${ref.name} (blob ${ref.sha256}); recreate it with \`kiln buildroot create\``,
      );
    throw err;
  }
  try {
    await saveResponse(res, dest, {
      signal,
      expect: { sha256: ref.sha256, size: ref.size },
      what: `the base ${ref.name}`,
      maxBytes: 64 * 1024 ** 3,
    });
  } catch (err) {
    if (err instanceof ChecksumMismatch) throw new CorruptBase(err.message);
    throw err;
  }
}

export interface PreparedRoot {
  root: string;
  installed: InstalledPackage[];
  setupSeconds: number;
  base: AcquiredBase["how"];
  dispose(): Promise<void>;
}

/** Where a task's build root lives: beside its workspace, so the build never sees it. */
export function rootDirOf(workDir: string): string {
  return `${workDir}.root`;
}

/**
 * A root ready to build `dsc` in: the base from the cache (fetched if missing or damaged), a
 * copy-on-write root over it, apt pointed at the build tag's repo, the Build-Depends installed.
 * Throws BUILD_DEPS_MISSING with apt's explanation when they cannot be satisfied.
 */
export async function prepareBuildRoot(
  ctx: TaskContext,
  ref: BuildrootRef,
  dsc: string,
  which: { dep: boolean; indep: boolean },
): Promise<PreparedRoot> {
  const started = performance.now();
  const cache = cacheFor(path.dirname(ctx.workDir), ctx);
  let base: AcquiredBase;
  try {
    base = await cache.acquire(ref, ctx.signal, (t) => ctx.log(t));
  } catch (err) {
    if (err instanceof CorruptBase) throw new TaskFailure("TASK_FAILED", err.message, { infra: true });
    throw err;
  }
  let made: BuildRoot | undefined;
  try {
    made = await makeBuildRoot(base.root, rootDirOf(ctx.workDir));
    ctx.log(
      `kiln: buildroot ${ref.name} (${ref.sha256.slice(0, 12)}, ${base.how}) as a fresh ${made.how} root\n`,
    );
    const root = made.root;
    await pointAptAtRepo(ctx, root, ref);
    const before = await installedIn(root);
    const failed = await runSteps(
      ctx,
      [
        { cwd: "/", argv: ["apt-get", "update"] },
        {
          cwd: "/",
          argv: [
            "apt-get",
            "build-dep",
            "--yes",
            "--no-install-recommends",
            ...(which.dep && !which.indep ? ["--arch-only"] : []),
            ...(which.indep && !which.dep ? ["--indep-only"] : []),
            path.posix.join(SANDBOX_WORKSPACE, dsc),
          ],
        },
      ],
      {
        sandbox: {
          root,
          privileged: true,
          network: true,
          env: { DEBIAN_FRONTEND: "noninteractive", HOME: "/root" },
        },
      },
    );
    if (failed?.index === 0) {
      throw new TaskFailure(
        "TASK_FAILED",
        `apt-get update in the buildroot failed (the mirror or the hub's tag repo is unreachable?): ${lastLines(failed.output, 4)}`,
        { infra: true, exitCode: failed.exitCode },
      );
    }
    if (failed) throw installFailure(failed);
    const installed = diffInstalled(before, await installedIn(root));
    const setupSeconds = (performance.now() - started) / 1000;
    ctx.log(
      `kiln: buildroot ready in ${setupSeconds.toFixed(1)} s; installed ${installed.length} packages for the Build-Depends\n`,
    );
    const kept = made;
    return {
      root,
      installed,
      setupSeconds,
      base: base.how,
      dispose: async () => {
        try {
          await kept.dispose();
        } finally {
          base.release();
        }
      },
    };
  } catch (err) {
    try {
      await made?.dispose();
    } finally {
      base.release();
    }
    throw err;
  }
}

/** The build tag's repo as an apt source of the root, signed by the hub's archive key. */
async function pointAptAtRepo(ctx: TaskContext, root: string, ref: BuildrootRef): Promise<void> {
  const res = await fetch(`${ctx.client.hub}/apt/kiln-archive-keyring.asc`, { signal: ctx.signal });
  if (!res.ok) {
    throw new TaskFailure("TASK_FAILED", `cannot fetch the hub's archive key: HTTP ${res.status}`, {
      infra: true,
    });
  }
  const keyring = path.join(root, "etc/apt/keyrings/kiln-archive-keyring.asc");
  await mkdir(path.dirname(keyring), { recursive: true });
  await writeFile(keyring, await res.text(), { mode: 0o644 });
  const url = new URL(ref.repo.path, `${ctx.client.hub}/`).href;
  const sources = [
    "Types: deb",
    `URIs: ${url}`,
    "Suites: kiln",
    "Components: main",
    "Signed-By: /etc/apt/keyrings/kiln-archive-keyring.asc",
    "",
  ].join("\n");
  await writeFile(path.join(root, "etc/apt/sources.list.d/kiln-tag-repo.sources"), sources, { mode: 0o644 });
  ctx.log(`kiln: Build-Depends from the base's mirror and ${ref.repo.tag}'s repo ${ref.repo.id} (${url})\n`);
}

/** `package → version/arch` of what dpkg has installed in a root. */
async function installedIn(root: string): Promise<Map<string, InstalledPackage>> {
  const text = await readFile(path.join(root, "var/lib/dpkg/status"), "utf8");
  const out = new Map<string, InstalledPackage>();
  for (const stanza of parseDeb822(text)) {
    const status = getField(stanza, "status") ?? "";
    if (!/\binstalled$/.test(status) || /not-installed$/.test(status)) continue;
    const pkg = getField(stanza, "package");
    const version = getField(stanza, "version");
    const arch = getField(stanza, "architecture") ?? "";
    if (pkg && version) out.set(`${pkg}:${arch}`, { package: pkg, version, arch });
  }
  return out;
}

/** What was installed or changed between two states of a root. */
export function diffInstalled(
  before: ReadonlyMap<string, InstalledPackage>,
  after: ReadonlyMap<string, InstalledPackage>,
): InstalledPackage[] {
  return [...after.entries()]
    .filter(([k, p]) => before.get(k)?.version !== p.version)
    .map(([, p]) => p)
    .sort((a, b) => (a.package < b.package ? -1 : a.package > b.package ? 1 : 0));
}

/**
 * apt-get build-dep's failure: unsatisfiable Build-Depends (BUILD_DEPS_MISSING, with apt's own
 * explanation, no retry) or a download that failed (infra: retried elsewhere).
 */
function installFailure(failed: StepFailure): TaskFailure {
  const out = failed.output;
  if (/Failed to fetch|Temporary failure resolving|Could not connect|Connection failed/.test(out)) {
    return new TaskFailure(
      "TASK_FAILED",
      `installing the Build-Depends could not download: ${lastLines(out, 4)}`,
      { infra: true, exitCode: failed.exitCode },
    );
  }
  const lines = out.split("\n").map((l) => l.trimEnd());
  const start = lines.findIndex((l) =>
    /unmet dependencies|Unable to locate|has no installation candidate/.test(l),
  );
  const explained = (start >= 0 ? lines.slice(start) : lines)
    .filter((l) => l !== "" && !/^(Reading|Building|Note,|\$ )/.test(l))
    .slice(0, 20)
    .join("\n");
  return new TaskFailure(
    "BUILD_DEPS_MISSING",
    `the Build-Depends cannot be installed in the buildroot: ${explained || lastLines(out, 5)}`,
    { exitCode: failed.exitCode },
  );
}
