/**
 * Garbage collection (issue 4): pool files, package rows, blobs and upload areas that nothing
 * refers to any more.
 *
 * - Pool files: the truth is the disk. A pool file stays while any generation still on disk
 *   under its prefix lists it, so every rollback `kiln publish rollback` can still do serves
 *   every file. Only prefixes whose `pool:PREFIX` lock the caller holds exclusively are swept:
 *   publishes hold it shared while they link new files.
 * - Package rows: kept while a repo, a snapshot or a generation on disk (by the main file's
 *   sha256) refers to them. Rows made from builds' artifacts are made again on demand.
 * - Blobs: kept while an artifact or a package row refers to them, and while they are younger
 *   than the oldest running task (its uploads may not be recorded yet) or than `minAgeMs`. A
 *   buildroot tarball is kept only while its base is being made or is the tarball of a ready base:
 *   a deleted or failed base's goes (unless a ready base has the same content).
 * - Upload areas: those of builds that completed, and any untouched for `uploadMaxAgeMs`, unless
 *   an unfinished task names them.
 */
import type { Stats } from "node:fs";
import { lstat, readdir, readFile, rmdir, unlink } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import type { BlobStore } from "../artifacts/blob-store.js";
import type { UploadAreas } from "../artifacts/upload-area.js";
import { withWriteTx, type Db } from "../db/database.js";
import type { Database } from "../db/schema.js";
import type { Kysely } from "kysely";
import { assertPrefix, prefixRoot, type PublishDirs } from "./apply-publication.js";
import { BUILDROOT_ARTIFACT_KIND } from "../builds/buildroot-store.js";
import type { PackageFile } from "./package-store.js";

export interface GcDeps {
  db: Db;
  clock: { now(): number };
  blobs: BlobStore;
  uploads: UploadAreas;
  dirs: PublishDirs;
  log: Logger;
}

export interface GcInput {
  /** Prefixes whose pool is swept: the caller holds `pool:PREFIX` exclusive for each. */
  prefixes: readonly string[];
  /** Report what would go, removing nothing. */
  dryRun?: boolean;
  /** Blobs and package rows younger than this are kept. Default one hour. */
  minAgeMs?: number;
  /** Upload areas untouched for this long go. Default one day. */
  uploadMaxAgeMs?: number;
  /** The collecting task, which is not one of the running tasks that protect young blobs. */
  taskId?: number;
}

export interface PoolReport {
  prefix: string;
  /** Generations on disk whose indexes were read. */
  generations: number;
  /** Pool files the generations list. */
  referenced: number;
  /** How many pool files were removed (or would be). */
  removedCount: number;
  /** The first REPORT_LIST_MAX of them, relative to the prefix's root. */
  removed: string[];
  bytesFreed: number;
  /** Why the prefix was left alone, when it was. */
  skipped?: string;
}

export interface GcReport {
  dryRun: boolean;
  pool: PoolReport[];
  /** How many package rows were deleted (or would be). */
  packagesRemoved: number;
  /** Keys of the first REPORT_LIST_MAX of them. */
  packages: string[];
  blobs: { removed: number; kept: number; bytesFreed: number; tempRemoved: number };
  /** Ids of the upload areas removed (or that would be). */
  uploads: string[];
}

export const DEFAULT_GC_MIN_AGE_MS = 3_600_000;
export const DEFAULT_UPLOAD_MAX_AGE_MS = 24 * 3_600_000;

const UNFINISHED = ["free", "assigned", "open"];
const GEN_DIR = ".gen";
const MAX_PREFIX_DEPTH = 8;
const CHUNK = 500;
/** Lists in a report are cut here: the report is stored as the task's result. */
export const REPORT_LIST_MAX = 1000;

// --- Pure: what an index refers to -------------------------------------------------------------

export interface IndexReferences {
  /** Pool paths relative to the prefix's root (`pool/main/h/hello/hello_1.0_amd64.deb`). */
  files: string[];
  /** sha256 of every file listed: binaries' SHA256, sources' Checksums-Sha256. */
  sha256: string[];
}

/** Fields of each stanza of a deb822 index, only those asked for; continuation lines joined. */
function* stanzas(text: string, wanted: ReadonlySet<string>): Generator<Map<string, string>> {
  let fields = new Map<string, string>();
  let current: string | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (fields.size > 0) yield fields;
      fields = new Map();
      current = undefined;
      continue;
    }
    if (line.startsWith(" ") || line.startsWith("\t")) {
      if (current !== undefined) fields.set(current, `${fields.get(current) ?? ""}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon).toLowerCase() : "";
    current = wanted.has(name) ? name : undefined;
    if (current !== undefined) fields.set(current, line.slice(colon + 1).trim());
  }
  if (fields.size > 0) yield fields;
}

const PACKAGES_FIELDS = new Set(["filename", "sha256"]);
const SOURCES_FIELDS = new Set(["directory", "files", "checksums-sha256"]);

/** The pool files and hashes a Packages or Sources index lists. */
export function indexReferences(kind: "Packages" | "Sources", text: string): IndexReferences {
  const files: string[] = [];
  const sha256: string[] = [];
  if (kind === "Packages") {
    for (const s of stanzas(text, PACKAGES_FIELDS)) {
      const filename = s.get("filename");
      if (filename) files.push(path.posix.normalize(filename));
      const hash = s.get("sha256");
      if (hash) sha256.push(hash.toLowerCase());
    }
    return { files, sha256 };
  }
  for (const s of stanzas(text, SOURCES_FIELDS)) {
    const dir = s.get("directory") ?? "";
    const names = new Set<string>();
    for (const field of ["files", "checksums-sha256"]) {
      for (const line of (s.get(field) ?? "").split("\n")) {
        const parts = line.trim().split(/\s+/);
        if (parts.length !== 3) continue;
        names.add(parts[2] as string);
        if (field === "checksums-sha256") sha256.push((parts[0] as string).toLowerCase());
      }
    }
    for (const n of names) files.push(path.posix.normalize(path.posix.join(dir, n)));
  }
  return { files, sha256 };
}

// --- Prefixes ----------------------------------------------------------------------------------

/** The lock a collector holds on a prefix's pool (publishes hold the same one shared). */
export const gcPoolLock = (prefix: string) => ({ resource: `pool:${prefix}`, exclusive: true });

/**
 * Every prefix that has a pool or dists on disk, or a publication: a dropped publication's pool
 * is still there to collect after its row is gone.
 */
export async function listGcPrefixes(db: Kysely<Database>, publicDir: string): Promise<string[]> {
  const found = new Set<string>();
  const rows = await db.selectFrom("publications").select("prefix").distinct().execute();
  for (const r of rows) found.add(r.prefix);
  const walk = async (dir: string, segments: string[]): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const names = new Set(entries.filter((e) => e.isDirectory()).map((e) => e.name));
    if (names.has("pool") || names.has("dists")) {
      const prefix = segments.length === 0 ? "." : segments.join("/");
      if (isValidPrefix(prefix)) found.add(prefix);
    }
    if (segments.length >= MAX_PREFIX_DEPTH) return;
    for (const name of [...names].sort()) {
      if (name === "pool" || name === "dists" || name.startsWith(".")) continue;
      await walk(path.join(dir, name), [...segments, name]);
    }
  };
  await walk(publicDir, []);
  return [...found].sort();
}

function isValidPrefix(prefix: string): boolean {
  try {
    assertPrefix(prefix);
    return true;
  } catch {
    return false;
  }
}

/** The prefixes whose pool lock a task holds exclusively: what its collection may sweep. */
export async function lockedPoolPrefixes(db: Kysely<Database>, taskId: number): Promise<string[]> {
  const rows = await db
    .selectFrom("task_locks")
    .select("resource")
    .where("task_id", "=", taskId)
    .where("exclusive", "=", 1)
    .where("resource", "like", "pool:%")
    .execute();
  return rows
    .map((r) => r.resource.slice("pool:".length))
    .filter(isValidPrefix)
    .sort();
}

// --- Generations on disk -----------------------------------------------------------------------

interface PrefixRefs {
  generations: number;
  files: Set<string>;
  sha256: Set<string>;
  /** Set when an index could not be read: nothing of the prefix's pool may go. */
  unreadable?: string;
}

const isErrno = (err: unknown, ...codes: string[]): boolean =>
  codes.includes((err as NodeJS.ErrnoException | undefined)?.code ?? "");

async function dirNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return [];
    throw err;
  }
}

/**
 * What the generations on disk under a prefix list. A generation without its Release can be
 * neither served nor rolled back to (a pruning that crashed halfway): it is skipped.
 */
async function referencesOfPrefix(publicDir: string, prefix: string): Promise<PrefixRefs> {
  const refs: PrefixRefs = { generations: 0, files: new Set(), sha256: new Set() };
  const gensRoot = path.join(prefixRoot(publicDir, prefix), "dists", GEN_DIR);
  for (const dist of await dirNames(gensRoot)) {
    for (const gen of await dirNames(path.join(gensRoot, dist))) {
      if (!/^[0-9]+$/.test(gen)) continue;
      const genDir = path.join(gensRoot, dist, gen);
      const release = await lstat(path.join(genDir, "Release")).catch(() => undefined);
      if (!release) continue;
      refs.generations++;
      for (const component of await dirNames(genDir)) {
        for (const sub of await dirNames(path.join(genDir, component))) {
          const kind = sub === "source" ? "Sources" : sub.startsWith("binary-") ? "Packages" : undefined;
          if (!kind) continue;
          const file = path.join(genDir, component, sub, kind);
          let text: string;
          try {
            text = await readFile(file, "utf8");
          } catch (err) {
            if (!isErrno(err, "ENOENT")) throw err;
            refs.unreadable ??= `${path.relative(publicDir, file)} is missing`;
            continue;
          }
          const found = indexReferences(kind, text);
          for (const f of found.files) refs.files.add(f);
          for (const h of found.sha256) refs.sha256.add(h);
        }
      }
    }
  }
  return refs;
}

/** Removes the pool files no generation lists, then the directories that left empty. */
async function sweepPool(root: string, referenced: ReadonlySet<string>, dryRun: boolean) {
  const removed: string[] = [];
  let bytesFreed = 0;
  const visit = async (rel: string): Promise<boolean> => {
    const dir = path.join(root, ...rel.split("/"));
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) return true;
      throw err;
    }
    let left = 0;
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const childRel = `${rel}/${e.name}`;
      if (e.isDirectory()) {
        if (!(await visit(childRel))) left++;
        continue;
      }
      if (referenced.has(childRel)) {
        left++;
        continue;
      }
      const st: Stats | undefined = await lstat(path.join(dir, e.name)).catch(() => undefined);
      if (!st) continue;
      if (!dryRun) {
        try {
          await unlink(path.join(dir, e.name));
        } catch (err) {
          if (!isErrno(err, "ENOENT")) throw err;
          continue;
        }
      }
      removed.push(childRel);
      bytesFreed += st.size;
    }
    // The top `pool` directory stays: only what is under it comes and goes.
    if (left > 0 || rel === "pool") return left === 0;
    if (!dryRun) {
      try {
        await rmdir(dir);
      } catch (err) {
        if (isErrno(err, "ENOTEMPTY", "EEXIST")) return false;
        if (!isErrno(err, "ENOENT")) throw err;
      }
    }
    return true;
  };
  await visit("pool");
  return { removed, bytesFreed };
}

// --- Packages, blobs, upload areas -------------------------------------------------------------

/** Package rows no repo, snapshot or generation on disk refers to, older than `cutoff`. */
async function unreferencedPackages(
  db: Kysely<Database>,
  generationSha256: ReadonlySet<string>,
  cutoff: number,
): Promise<{ id: number; key: string }[]> {
  const rows = await db
    .selectFrom("packages")
    .select(["id", "key", "sha256"])
    .where("created_at", "<=", cutoff)
    .where((eb) =>
      eb.not(
        eb.exists(
          eb.selectFrom("repo_packages").select("repo_id").whereRef("package_id", "=", "packages.id"),
        ),
      ),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb.selectFrom("snapshot_packages").select("snapshot_id").whereRef("package_id", "=", "packages.id"),
        ),
      ),
    )
    .orderBy("id")
    .execute();
  return rows.filter((r) => !generationSha256.has(r.sha256)).map((r) => ({ id: r.id, key: r.key }));
}

/**
 * Deletes the rows, checking again in the same statement that no repo or snapshot took them
 * meanwhile (repo and snapshot tasks do not wait for the collector). Returns the keys deleted.
 */
async function deletePackages(db: Db, candidates: readonly { id: number; key: string }[]): Promise<string[]> {
  const deleted: string[] = [];
  for (let i = 0; i < candidates.length; i += CHUNK) {
    const chunk = candidates.slice(i, i + CHUNK);
    const rows = await withWriteTx(db, (trx) =>
      trx
        .deleteFrom("packages")
        .where(
          "id",
          "in",
          chunk.map((c) => c.id),
        )
        .where((eb) =>
          eb.not(
            eb.exists(
              eb.selectFrom("repo_packages").select("repo_id").whereRef("package_id", "=", "packages.id"),
            ),
          ),
        )
        .where((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom("snapshot_packages")
                .select("snapshot_id")
                .whereRef("package_id", "=", "packages.id"),
            ),
          ),
        )
        .returning("key")
        .execute(),
    );
    deleted.push(...rows.map((r) => r.key));
  }
  return deleted;
}

/**
 * The buildroot tarballs to keep: ready bases' own, and any uploaded by a base's task that is still
 * making it (its finalizer has yet to check it) or by a task with no base row (never guessed away).
 */
async function keptBuildrootBlobs(db: Kysely<Database>): Promise<Set<string>> {
  const out = new Set<string>();
  const ready = await db
    .selectFrom("buildroots")
    .select("sha256")
    .where("state", "=", "ready")
    .where("deleted_at", "is", null)
    .execute();
  for (const r of ready) if (r.sha256 !== null) out.add(r.sha256);
  const uploaded = await db
    .selectFrom("artifacts")
    .leftJoin("buildroots", "buildroots.task_id", "artifacts.task_id")
    .select(["artifacts.sha256", "buildroots.state"])
    .where("artifacts.kind", "=", BUILDROOT_ARTIFACT_KIND)
    .execute();
  for (const r of uploaded) if (r.state === null || r.state === "building") out.add(r.sha256);
  return out;
}

/** Every blob a build artifact or a package row (minus `dropped`) refers to. */
async function referencedBlobs(db: Kysely<Database>, dropped: ReadonlySet<string>): Promise<Set<string>> {
  const out = await keptBuildrootBlobs(db);
  const artifacts = await db
    .selectFrom("artifacts")
    .select("sha256")
    .distinct()
    .where("kind", "!=", BUILDROOT_ARTIFACT_KIND)
    .execute();
  for (const r of artifacts) out.add(r.sha256);
  let after = 0;
  for (;;) {
    const rows = await db
      .selectFrom("packages")
      .select(["id", "key", "files"])
      .where("id", ">", after)
      .orderBy("id")
      .limit(CHUNK)
      .execute();
    for (const r of rows) {
      if (dropped.has(r.key)) continue;
      for (const f of JSON.parse(r.files) as PackageFile[]) out.add(f.sha256);
    }
    const last = rows[rows.length - 1];
    if (!last || rows.length < CHUNK) break;
    after = last.id;
  }
  return out;
}

/**
 * How young a blob must be to be kept: `minAgeMs`, or more while tasks run that started earlier
 * (a build uploads an artifact before its row is written; a repo task stores a file before the
 * package row that names it). Parents waiting on subtasks upload nothing themselves.
 */
async function protectedAgeMs(deps: GcDeps, minAgeMs: number, taskId: number | undefined): Promise<number> {
  let q = deps.db.kysely
    .selectFrom("tasks")
    .select((eb) => eb.fn.min<number>(eb.fn.coalesce("claimed_at", "created_at")).as("since"))
    .where("state", "in", ["assigned", "open"])
    .where("waiting", "=", 0)
    .where("method", "!=", "gc");
  if (taskId !== undefined) q = q.where("id", "!=", taskId);
  const since = (await q.executeTakeFirst())?.since;
  if (since === null || since === undefined) return minAgeMs;
  // A minute of slack for the distance between the hub's clock and the file system's.
  return Math.max(minAgeMs, deps.clock.now() - Number(since) + 60_000);
}

/** The upload areas unfinished tasks name (`args.upload`): never removed under them. */
async function uploadsInUse(db: Kysely<Database>): Promise<Set<string>> {
  const rows = await db
    .selectFrom("tasks")
    .select("args")
    .where("state", "in", UNFINISHED)
    .where("args", "like", '%"upload"%')
    .execute();
  const out = new Set<string>();
  for (const r of rows) uploadsNamedIn(JSON.parse(r.args) as unknown, out, 0);
  return out;
}

/**
 * Every `upload` in a task's args, however deep: a chain build holds its later groups' sources
 * in `groups[][].upload` until those groups start.
 */
function uploadsNamedIn(value: unknown, out: Set<string>, depth: number): void {
  if (depth > 4 || typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    for (const v of value) uploadsNamedIn(v, out, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    if (k === "upload" && typeof v === "string") out.add(v);
    else uploadsNamedIn(v, out, depth + 1);
  }
}

/** Whether a `build` task that closed took its source from this area. */
async function builtFrom(db: Kysely<Database>, area: string): Promise<boolean> {
  const rows = await db
    .selectFrom("tasks")
    .select("args")
    .where("method", "=", "build")
    .where("state", "=", "closed")
    .where("args", "like", `%${area}%`)
    .execute();
  return rows.some((r) => (JSON.parse(r.args) as { upload?: unknown }).upload === area);
}

/** The newest modification time of an area and the files in it. */
async function newestMtime(dir: string): Promise<number | undefined> {
  const top = await lstat(dir).catch(() => undefined);
  if (!top) return undefined;
  let newest = top.mtimeMs;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await lstat(path.join(dir, name)).catch(() => undefined);
    if (st && st.mtimeMs > newest) newest = st.mtimeMs;
  }
  return newest;
}

async function collectUploads(deps: GcDeps, maxAgeMs: number, dryRun: boolean): Promise<string[]> {
  const inUse = await uploadsInUse(deps.db.kysely);
  const removed: string[] = [];
  for (const id of await deps.uploads.areas()) {
    if (inUse.has(id)) continue;
    let go = await builtFrom(deps.db.kysely, id);
    if (!go) {
      const newest = await newestMtime(deps.uploads.areaDir(id));
      go = newest !== undefined && Date.now() - newest >= maxAgeMs;
    }
    if (!go) continue;
    if (dryRun || (await deps.uploads.remove(id))) removed.push(id);
  }
  return removed;
}

// --- The collector -----------------------------------------------------------------------------

/**
 * One collection: pools of `input.prefixes` first (their indexes also tell which package rows
 * generations use), then package rows, then blobs, then upload areas.
 */
export async function collectGarbage(deps: GcDeps, input: GcInput): Promise<GcReport> {
  const dryRun = input.dryRun ?? false;
  const minAgeMs = input.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS;
  const db = deps.db.kysely;
  const locked = new Set(input.prefixes);
  for (const p of locked) assertPrefix(p);

  // Generations of every prefix keep their packages; only the locked prefixes' pools are swept.
  const generationSha256 = new Set<string>();
  const pool: PoolReport[] = [];
  const prefixes = [...new Set([...(await listGcPrefixes(db, deps.dirs.publicDir)), ...locked])].sort();
  for (const prefix of prefixes) {
    const refs = await referencesOfPrefix(deps.dirs.publicDir, prefix);
    for (const h of refs.sha256) generationSha256.add(h);
    if (!locked.has(prefix)) continue;
    const report: PoolReport = {
      prefix,
      generations: refs.generations,
      referenced: refs.files.size,
      removedCount: 0,
      removed: [],
      bytesFreed: 0,
    };
    if (refs.unreadable) {
      report.skipped = refs.unreadable;
      deps.log.warn({ prefix, reason: refs.unreadable }, "gc: pool left alone");
    } else {
      const swept = await sweepPool(prefixRoot(deps.dirs.publicDir, prefix), refs.files, dryRun);
      report.removedCount = swept.removed.length;
      report.removed = swept.removed.slice(0, REPORT_LIST_MAX);
      report.bytesFreed = swept.bytesFreed;
    }
    pool.push(report);
  }

  const candidates = await unreferencedPackages(db, generationSha256, deps.clock.now() - minAgeMs);
  const packages = dryRun ? candidates.map((c) => c.key) : await deletePackages(deps.db, candidates);

  const referenced = await referencedBlobs(db, dryRun ? new Set(packages) : new Set());
  const blobResult = await deps.blobs.collectGarbage((h) => referenced.has(h), {
    minAgeMs: await protectedAgeMs(deps, minAgeMs, input.taskId),
    dryRun,
  });

  const uploads = await collectUploads(deps, input.uploadMaxAgeMs ?? DEFAULT_UPLOAD_MAX_AGE_MS, dryRun);

  const report: GcReport = {
    dryRun,
    pool,
    packagesRemoved: packages.length,
    packages: packages.slice(0, REPORT_LIST_MAX),
    blobs: {
      removed: blobResult.removed.length,
      kept: blobResult.kept,
      bytesFreed: blobResult.bytesFreed,
      tempRemoved: blobResult.tempRemoved,
    },
    uploads,
  };
  deps.log.info(
    {
      dryRun,
      poolFiles: pool.reduce((n, p) => n + p.removedCount, 0),
      packages: packages.length,
      blobs: blobResult.removed.length,
      uploads: uploads.length,
    },
    "garbage collected",
  );
  return report;
}
