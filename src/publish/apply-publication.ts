import { randomBytes } from "node:crypto";
import { constants, readlinkSync } from "node:fs";
import {
  link,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  unlink,
  utimes,
} from "node:fs/promises";
import path from "node:path";
import type { BlobStore } from "../artifacts/blob-store.js";
import {
  compressIndexChunks,
  componentReleaseFile,
  hashBytes,
  hashBytesNoSha512,
  releaseFile,
} from "../debian/index-writers.js";
import type { IndexFileEntry } from "../debian/index-writers.js";
import { KilnError } from "../errors/catalogue.js";
import type { PoolEntry, PublicationPlan } from "./plan-publication.js";
import { runPoolBatches, type PoolBatch } from "./pool-workers.js";

/** What signs a Release (the archive key); absent when a publication skips signing. */
export interface Signer {
  clearSign(text: string): Promise<string>;
  detachSign(text: string): Promise<string>;
}

export interface PublishDirs {
  /** `<data>/public`: what /apt/ serves. */
  publicDir: string;
  /** `<data>/staging`: where generations are written before they are switched in. */
  stagingDir: string;
}

export interface ReleaseMeta {
  origin: string;
  label: string;
  description?: string;
}

export interface ApplyInput {
  plan: PublicationPlan;
  prefix: string;
  generation: number;
  meta: ReleaseMeta;
  signer?: Signer;
  date: Date;
  /** Generations kept on disk for rollback (the live one included). */
  keep?: number;
  /** Generations whose by-hash files the new one also serves, for clients mid-update. */
  byHashFrom?: number;
  /** The plan's pool, already being put in place (startPool()); started here when absent. */
  pooled?: PoolFilling;
}

export interface ApplyResult {
  releaseSha256: string;
  /** Files under dists/<dist>/ that the Release lists. */
  indexFiles: number;
  poolFilesLinked: number;
}

const GEN_DIR = ".gen";
const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,99}$/;
const RESERVED_SEGMENTS = new Set(["dists", "pool"]);

/**
 * A prefix is `.` (the root) or slash-separated segments of letters, digits and `._+~-`, none
 * starting with a symbol and none named `dists` or `pool` (so one prefix never lies in another's
 * tree). Aptly's API spells `/` as `_`; that mapping lives with the Aptly routes.
 */
export function assertPrefix(prefix: string): void {
  if (prefix === ".") return;
  const segments = prefix.split("/");
  if (prefix.length > 200 || segments.some((s) => !SEGMENT_RE.test(s) || RESERVED_SEGMENTS.has(s))) {
    throw new KilnError(
      "INVALID_PREFIX",
      `prefix "${prefix.slice(0, 100)}" is not allowed: "." or segments of letters, digits and ._+~- separated by "/" (not "dists" or "pool")`,
      { prefix: prefix.slice(0, 200) },
    );
  }
}

export function prefixRoot(publicDir: string, prefix: string): string {
  assertPrefix(prefix);
  return prefix === "." ? publicDir : path.join(publicDir, ...prefix.split("/"));
}

function distPaths(dirs: PublishDirs, prefix: string, dist: string) {
  const root = prefixRoot(dirs.publicDir, prefix);
  const dists = path.join(root, "dists");
  return { root, dists, link: path.join(dists, dist), gens: path.join(dists, GEN_DIR, dist) };
}

async function writeDurable(file: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function mapLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
}

/**
 * The pool files of the generation this process last made live, per distribution: while that
 * generation is still the live one, its files are on disk (the collector keeps every file a
 * generation on disk lists, and never runs during a publish), so the next publish checks only
 * the files it adds instead of stat()ing tens of thousands.
 */
const livePools = new Map<string, { generation: number; files: Map<string, string> }>();

/**
 * Puts every pool file in place as a hard link to its blob (the pool and the blob store share
 * the data directory's file system). A file already there must be the same content: the pool
 * never has a file replaced under a client.
 */
async function linkPool(
  root: string,
  pool: readonly PoolEntry[],
  blobs: BlobStore,
  known?: ReadonlyMap<string, string>,
): Promise<number> {
  const todo = known ? pool.filter((e) => known.get(e.path) !== e.sha256) : pool;
  // One batch per parent directory (pool/<component>/<letter>): its missing source directories,
  // then the links into them. Plan paths are relative, of checked names (planPool()): joined by
  // hand, as path.join() of 20,000 paths costs tens of milliseconds.
  const base = root.endsWith("/") ? root : `${root}/`;
  const batches = new Map<string, PoolBatch>();
  for (const entry of todo) {
    const dest = base + entry.path;
    const dirEnd = dest.lastIndexOf("/");
    const parentEnd = dest.lastIndexOf("/", dirEnd - 1);
    const parent = dest.slice(0, parentEnd);
    let batch = batches.get(parent);
    if (!batch) {
      batch = { parent, dirs: [], links: [] };
      batches.set(parent, batch);
    }
    const dir = dest.slice(parentEnd + 1, dirEnd);
    if (batch.dirs[batch.dirs.length - 1] !== dir) batch.dirs.push(dir); // the pool is sorted by path
    batch.links.push([blobs.path(entry.sha256), dest]);
  }
  // Started now, before any await: the caller's synchronous work (the indexes) runs beside it.
  const done = await runPoolBatches([...batches.values()]);
  let linked = done.linked;
  // Already there (checked below), or the blob is missing.
  const byDest = new Map(done.clashes.length > 0 ? todo.map((e) => [base + e.path, e]) : []);
  const clashes = done.clashes.map((dest) => byDest.get(dest) as PoolEntry);
  await mapLimit(clashes, 16, async (entry) => {
    const dest = path.join(root, ...entry.path.split("/"));
    const blob = blobs.path(entry.sha256);
    const there = await stat(dest).catch(() => undefined);
    if (there) {
      await assertSameContent(dest, there, blob, entry);
      return;
    }
    if (!(await blobs.has(entry.sha256))) {
      throw new KilnError(
        "INTERNAL",
        `the blob of ${entry.path} (${entry.sha256}) is missing from the store`,
      );
    }
    await mkdir(path.dirname(dest), { recursive: true });
    try {
      await link(blob, dest);
      linked++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      await assertSameContent(dest, await stat(dest), blob, entry); // another publish linked it first
    }
  });
  return linked;
}

/** Pool files being put in place (startPool()), awaited by applyPublication before its switch. */
export interface PoolFilling {
  readonly pool: readonly PoolEntry[];
  /** The distribution's generations directory: which publication the pool is filled for. */
  readonly gens: string;
  /** Resolves to the number of files linked. */
  readonly done: Promise<number>;
}

/**
 * Starts putting `pool` (the plan's, planPool()) in place at the prefix, so that a caller can
 * make the indexes meanwhile; pass the result to applyPublication with the plan made from the
 * same pool. The caller must await `done` (applyPublication does) before the task ends, also
 * when it fails before applying.
 */
export function startPool(
  dirs: PublishDirs,
  blobs: BlobStore,
  prefix: string,
  dist: string,
  pool: readonly PoolEntry[],
): PoolFilling {
  const paths = distPaths(dirs, prefix, dist);
  const cached = livePools.get(paths.gens); // read now: applyPublication clears it
  let live: string | undefined;
  try {
    live = cached ? readlinkSync(paths.link) : undefined;
  } catch {
    live = undefined;
  }
  const known = cached && live?.endsWith(`/${cached.generation}`) ? cached.files : undefined;
  const done = linkPool(paths.root, pool, blobs, known);
  done.catch(() => undefined); // awaited by the caller; this only keeps an early failure from being "unhandled"
  return { pool, gens: paths.gens, done };
}

async function assertSameContent(
  dest: string,
  there: { ino: number; size: number },
  blob: string,
  entry: { path: string; sha256: string; size: number },
): Promise<void> {
  const blobStat = await stat(blob).catch(() => undefined);
  if (blobStat && blobStat.ino === there.ino) return;
  if (there.size === entry.size) {
    const { sha256 } = hashBytes(await readFile(dest));
    if (sha256 === entry.sha256) return;
  }
  throw new KilnError(
    "POOL_FILE_CONFLICT",
    `${entry.path} is already in the pool with different content; a package file of that name can be published only once`,
    { path: entry.path, sha256: entry.sha256 },
  );
}

/**
 * Writes one generation of dists/<dist>/ into staging, checks every file against the Release it
 * will be served with, moves it next to the live one and switches the `dists/<dist>` symlink in
 * one rename(2). Until that rename, clients see the previous generation untouched.
 */
export async function applyPublication(
  dirs: PublishDirs,
  blobs: BlobStore,
  input: ApplyInput,
): Promise<ApplyResult> {
  const { plan } = input;
  const paths = distPaths(dirs, input.prefix, plan.distribution);
  // The pool fills while the indexes are staged (a first publish of a large repo makes a
  // directory per source package); both are done before the switch.
  const pooled = input.pooled ?? startPool(dirs, blobs, input.prefix, plan.distribution, plan.pool);
  livePools.delete(paths.gens); // set again once this generation is live
  if (pooled.pool !== plan.pool || pooled.gens !== paths.gens) {
    await pooled.done.catch(() => undefined);
    throw new KilnError("INTERNAL", "the pool being filled is not the plan's");
  }

  const stage = path.join(
    dirs.stagingDir,
    `${plan.distribution}-${input.generation}-${randomBytes(6).toString("hex")}`,
  );
  await mkdir(stage, { recursive: true });
  try {
    const listed: IndexFileEntry[] = [];
    const written = new Map<string, Uint8Array>(); // the bytes each entry of `listed` was hashed from
    const add = async (rel: string, data: Uint8Array | string) => {
      const bytes = typeof data === "string" ? Buffer.from(data) : data;
      // No SHA512: apt fetches by-hash under the strongest hash a Release lists, and SHA256 is
      // the one by-hash directory kept (as Debian's archive does).
      const h = hashBytesNoSha512(bytes);
      const file = path.join(stage, ...rel.split("/"));
      await writeDurable(file, bytes);
      listed.push({ path: rel, ...h });
      written.set(rel, bytes);
      // by-hash/SHA256/<hash> beside the file (Acquire-By-Hash): the same inode, no copy.
      const byHash = path.join(path.dirname(file), "by-hash", "SHA256");
      await mkdir(byHash, { recursive: true });
      await link(file, path.join(byHash, h.sha256)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err;
      });
    };
    const dirsMade = new Set<string>();
    await mapLimit(plan.indexes, 4, async (index) => {
      const rel = `${index.component}/${index.dir}`;
      // Compression first: xz runs in processes of its own while the rest is written here.
      const compressed = compressIndexChunks(index.chunks);
      compressed.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
      dirsMade.add(rel);
      await mkdir(path.join(stage, index.component, index.dir, "by-hash", "SHA256"), { recursive: true });
      // Side by side: their fsyncs overlap.
      await Promise.all([
        add(`${rel}/${index.name}`, Buffer.from(index.content)),
        add(
          `${rel}/Release`,
          componentReleaseFile({
            archive: plan.distribution,
            codename: plan.distribution,
            component: index.component,
            architecture: index.architecture,
            origin: input.meta.origin,
            label: input.meta.label,
            acquireByHash: true,
          }),
        ),
        compressed.then(({ gz, xz }) =>
          Promise.all([add(`${rel}/${index.name}.gz`, gz), add(`${rel}/${index.name}.xz`, xz)]),
        ),
      ]);
    });
    listed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const date = await releaseDate(paths.link, input.date);
    const release = releaseFile({
      origin: input.meta.origin || undefined,
      label: input.meta.label || undefined,
      suite: plan.distribution,
      codename: plan.distribution,
      date,
      architectures: plan.architectures,
      components: plan.components,
      description: input.meta.description,
      acquireByHash: true,
      files: listed,
    });
    await writeDurable(path.join(stage, "Release"), release);
    if (input.signer) {
      const [inRelease, detached] = await Promise.all([
        input.signer.clearSign(release),
        input.signer.detachSign(release),
      ]);
      await writeDurable(path.join(stage, "InRelease"), inRelease);
      await writeDurable(path.join(stage, "Release.gpg"), detached);
    }
    await verifyStaged(stage, listed, written);
    const poolFilesLinked = await pooled.done;
    for (const d of [...dirsMade].map((r) => path.join(stage, r))) await fsyncDir(d);
    await fsyncDir(stage);

    // Into place beside the live generation, then the one-step switch.
    await mkdir(paths.gens, { recursive: true });
    const genDir = path.join(paths.gens, String(input.generation));
    await rm(genDir, { recursive: true, force: true }); // a half-moved leftover of a crashed attempt
    await rename(stage, genDir);
    await fsyncDir(paths.gens);
    await carryByHash(paths.gens, input.generation, input.byHashFrom ?? 3);
    await stampLater(genDir, paths.link, date);
    await switchLink(paths.link, path.join(GEN_DIR, plan.distribution, String(input.generation)));
    livePools.set(paths.gens, {
      generation: input.generation,
      files: new Map(plan.pool.map((e) => [e.path, e.sha256])),
    });
    await pruneGenerations(paths.gens, input.generation, input.keep ?? 5);
    return {
      releaseSha256: hashBytes(Buffer.from(release)).sha256,
      indexFiles: listed.length,
      poolFilesLinked,
    };
  } finally {
    await pooled.done.catch(() => undefined);
    await rm(stage, { recursive: true, force: true });
  }
}

/**
 * The Date of a new Release: strictly later than the live one's. Release dates have whole
 * seconds, and apt keeps the lists it has when a Release is not newer (its replay protection),
 * so two publishes within a second must not share a date.
 */
async function releaseDate(liveLink: string, wanted: Date): Promise<Date> {
  const live = await readFile(path.join(liveLink, "Release"), "utf8").catch(() => undefined);
  const m = live === undefined ? null : /^Date: (.+)$/m.exec(live);
  const previous = m?.[1] ? Date.parse(m[1]) : NaN;
  if (Number.isNaN(previous) || wanted.getTime() >= previous + 1000) return wanted;
  return new Date(previous + 1000);
}

/**
 * apt asks for InRelease with If-Modified-Since, and HTTP dates have whole seconds: the files a
 * switch puts in front get a modification time in a later second than the live ones had, or a
 * second publish (or a rollback) within one second would be answered "304 Not Modified".
 */
async function stampLater(genDir: string, liveLink: string, wanted: Date): Promise<void> {
  const live = await stat(path.join(liveLink, "InRelease"))
    .catch(() => stat(path.join(liveLink, "Release")))
    .catch(() => undefined);
  const floor = live ? Math.floor(live.mtimeMs / 1000) * 1000 + 1000 : 0;
  const when = new Date(Math.max(wanted.getTime(), floor));
  for (const name of ["Release", "InRelease", "Release.gpg"]) {
    await utimes(path.join(genDir, name), when, when).catch(() => undefined);
  }
}

/**
 * Reads back every file the Release lists: what is switched in is what was promised. Each file
 * is compared byte for byte with the bytes its Release entry was hashed from (`written`), which
 * proves as much as hashing it again, for a fraction of the CPU time.
 */
async function verifyStaged(
  stage: string,
  listed: readonly IndexFileEntry[],
  written: ReadonlyMap<string, Uint8Array>,
): Promise<void> {
  await mapLimit(listed, 8, async (entry) => {
    const data = await readFile(path.join(stage, ...entry.path.split("/")));
    const promised = written.get(entry.path);
    if (data.length !== entry.size || promised === undefined || !data.equals(promised)) {
      throw new KilnError("PUBLISH_VERIFY_FAILED", `staged ${entry.path} does not match its Release entry`, {
        path: entry.path,
      });
    }
  });
}

/** Makes `linkPath` point at `target` in one rename(2) of a fresh symlink over it. */
async function switchLink(linkPath: string, target: string): Promise<void> {
  const tmp = `${path.dirname(linkPath)}/.${path.basename(linkPath)}.${randomBytes(6).toString("hex")}`;
  await symlink(target, tmp);
  try {
    await rename(tmp, linkPath);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(linkPath));
}

/** Generation numbers on disk, newest first. */
export async function generationsOnDisk(dirs: PublishDirs, prefix: string, dist: string): Promise<number[]> {
  const { gens } = distPaths(dirs, prefix, dist);
  const names = await readdir(gens).catch(() => [] as string[]);
  return names
    .filter((n) => /^[0-9]+$/.test(n))
    .map(Number)
    .sort((a, b) => b - a);
}

/** The generation `dists/<dist>` points at, if any. */
export async function liveGenerationOnDisk(
  dirs: PublishDirs,
  prefix: string,
  dist: string,
): Promise<number | undefined> {
  const target = await readlink(distPaths(dirs, prefix, dist).link).catch(() => undefined);
  const m = target === undefined ? null : /([0-9]+)$/.exec(target);
  return m ? Number(m[1]) : undefined;
}

/** Rollback and switch: point the distribution at a generation still on disk. */
export async function switchGeneration(
  dirs: PublishDirs,
  prefix: string,
  dist: string,
  generation: number,
): Promise<string> {
  const paths = distPaths(dirs, prefix, dist);
  const release = await readFile(path.join(paths.gens, String(generation), "Release")).catch(() => undefined);
  if (!release) {
    throw new KilnError(
      "GENERATION_NOT_FOUND",
      `generation ${generation} of ${prefix}/${dist} is no longer on disk`,
      {
        generation,
      },
    );
  }
  // Served again now: clients that compare Last-Modified must not be told "not modified".
  await stampLater(path.join(paths.gens, String(generation)), paths.link, new Date());
  await switchLink(paths.link, path.join(GEN_DIR, dist, String(generation)));
  return hashBytes(release).sha256;
}

/**
 * A client that fetched an earlier InRelease a moment ago asks for the indexes it promised by
 * hash: the new generation serves those too (hard links, no copies). It serves what the Release
 * of each older generation still on disk lists (up to `count` - 1 of them), and what the one
 * before it carried that was written in the last ten minutes (quick successive publishes leave
 * a slow client several generations behind). Nothing older is carried, so by-hash directories
 * do not grow generation after generation.
 */
async function carryByHash(gensDir: string, generation: number, count: number): Promise<void> {
  const older = (await readdir(gensDir))
    .filter((n) => /^[0-9]+$/.test(n) && Number(n) < generation)
    .map(Number)
    .sort((a, b) => b - a)
    .slice(0, Math.max(0, count - 1));
  const target = path.join(gensDir, String(generation));
  const dirsMade = new Set<string>();
  const carry = async (from: string, rel: string, name: string) => {
    if (!dirsMade.has(rel)) {
      await mkdir(path.join(target, rel), { recursive: true });
      dirsMade.add(rel);
    }
    await link(path.join(from, rel, name), path.join(target, rel, name)).catch(
      (err: NodeJS.ErrnoException) => {
        // ENOENT: a generation written before every file had its by-hash copy.
        if (err.code !== "EEXIST" && err.code !== "ENOENT") throw err;
      },
    );
  };
  for (const g of older) {
    const from = path.join(gensDir, String(g));
    const release = await readFile(path.join(from, "Release"), "utf8").catch(() => undefined);
    if (release === undefined) continue;
    for (const { dir, sha256 } of sha256Listed(release)) {
      await carry(from, path.join(...dir.split("/"), "by-hash", "SHA256"), sha256);
    }
  }
  const previous = older[0];
  if (previous === undefined) return;
  const from = path.join(gensDir, String(previous));
  const since = Date.now() - BY_HASH_RECENT_MS;
  for (const rel of await byHashDirs(from)) {
    for (const name of await readdir(path.join(from, rel)).catch(() => [] as string[])) {
      const st = await stat(path.join(from, rel, name)).catch(() => undefined);
      if (st && st.mtimeMs >= since) await carry(from, rel, name);
    }
  }
}

const BY_HASH_RECENT_MS = 10 * 60 * 1000;

async function byHashDirs(genDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const comp of await readdir(genDir, { withFileTypes: true })) {
    if (!comp.isDirectory()) continue;
    for (const sub of await readdir(path.join(genDir, comp.name), { withFileTypes: true })) {
      if (!sub.isDirectory()) continue;
      const rel = path.join(comp.name, sub.name, "by-hash", "SHA256");
      if (await stat(path.join(genDir, rel)).catch(() => undefined)) out.push(rel);
    }
  }
  return out;
}

/** The directory and SHA256 of every file a Release's SHA256 list names. */
function sha256Listed(release: string): { dir: string; sha256: string }[] {
  const out: { dir: string; sha256: string }[] = [];
  let inList = false;
  for (const line of release.split("\n")) {
    if (!line.startsWith(" ")) {
      inList = line === "SHA256:";
      continue;
    }
    if (!inList) continue;
    const m = /^ ([0-9a-f]{64}) +[0-9]+ (.+)$/.exec(line);
    const file = m?.[2];
    if (!m?.[1] || file === undefined || !file.includes("/")) continue;
    out.push({ dir: file.slice(0, file.lastIndexOf("/")), sha256: m[1] });
  }
  return out;
}

async function pruneGenerations(gensDir: string, live: number, keep: number): Promise<void> {
  const all = (await readdir(gensDir))
    .filter((n) => /^[0-9]+$/.test(n))
    .map(Number)
    .sort((a, b) => b - a);
  for (const g of all.slice(Math.max(1, keep))) {
    if (g !== live) await rm(path.join(gensDir, String(g)), { recursive: true, force: true });
  }
}

/** Removes a distribution from disk (kiln publish drop); the pool is left to the collector. */
export async function removeDistribution(dirs: PublishDirs, prefix: string, dist: string): Promise<void> {
  const paths = distPaths(dirs, prefix, dist);
  livePools.delete(paths.gens); // gone for good: its pool files must be checked again if it returns
  await unlink(paths.link).catch(() => undefined);
  await rm(paths.gens, { recursive: true, force: true });
}
