import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
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
import { compressIndex, componentReleaseFile, hashBytes, releaseFile } from "../debian/index-writers.js";
import type { IndexFileEntry } from "../debian/index-writers.js";
import { KilnError } from "../errors/catalogue.js";
import type { PublicationPlan } from "./plan-publication.js";

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
 * Puts every pool file in place as a hard link to its blob (the pool and the blob store share
 * the data directory's file system). A file already there must be the same content: the pool
 * never has a file replaced under a client.
 */
async function linkPool(root: string, plan: PublicationPlan, blobs: BlobStore): Promise<number> {
  let linked = 0;
  const made = new Set<string>();
  await mapLimit(plan.pool, 16, async (entry) => {
    const dest = path.join(root, ...entry.path.split("/"));
    const blob = blobs.path(entry.sha256);
    const there = await stat(dest).catch(() => undefined);
    if (there) {
      await assertSameContent(dest, there, blob, entry);
      return;
    }
    const dir = path.dirname(dest);
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true });
      made.add(dir);
    }
    try {
      await link(blob, dest);
      linked++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && !(await blobs.has(entry.sha256))) {
        throw new KilnError(
          "INTERNAL",
          `the blob of ${entry.path} (${entry.sha256}) is missing from the store`,
        );
      }
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      await assertSameContent(dest, await stat(dest), blob, entry); // another publish linked it first
    }
  });
  return linked;
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
  const poolFilesLinked = await linkPool(paths.root, plan, blobs);

  const stage = path.join(
    dirs.stagingDir,
    `${plan.distribution}-${input.generation}-${randomBytes(6).toString("hex")}`,
  );
  await mkdir(stage, { recursive: true });
  try {
    const listed: IndexFileEntry[] = [];
    const add = async (rel: string, data: Uint8Array | string) => {
      const bytes = typeof data === "string" ? Buffer.from(data) : data;
      // No SHA512: apt fetches by-hash under the strongest hash a Release lists, and SHA256 is
      // the one by-hash directory kept (as Debian's archive does).
      const { sha512: _unused, ...h } = hashBytes(bytes);
      const file = path.join(stage, ...rel.split("/"));
      await writeDurable(file, bytes);
      listed.push({ path: rel, ...h });
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
      if (!dirsMade.has(rel)) {
        dirsMade.add(rel);
        await mkdir(path.join(stage, index.component, index.dir), { recursive: true });
      }
      const raw = Buffer.from(index.content);
      const { gz, xz } = await compressIndex(raw);
      await add(`${rel}/${index.name}`, raw);
      await add(`${rel}/${index.name}.gz`, gz);
      await add(`${rel}/${index.name}.xz`, xz);
      await add(
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
      );
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
    await verifyStaged(stage, listed);
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
    await pruneGenerations(paths.gens, input.generation, input.keep ?? 5);
    return {
      releaseSha256: hashBytes(Buffer.from(release)).sha256,
      indexFiles: listed.length,
      poolFilesLinked,
    };
  } finally {
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

/** Reads back every file the Release lists: what is switched in is what was promised. */
async function verifyStaged(stage: string, listed: readonly IndexFileEntry[]): Promise<void> {
  await mapLimit(listed, 8, async (entry) => {
    const data = await readFile(path.join(stage, ...entry.path.split("/")));
    const h = hashBytes(data);
    if (h.size !== entry.size || h.sha256 !== entry.sha256) {
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
 * A client that fetched the previous InRelease a moment ago asks for the indexes it promised by
 * hash: the new generation serves those too (hard links, no copies).
 */
async function carryByHash(gensDir: string, generation: number, count: number): Promise<void> {
  const older = (await readdir(gensDir))
    .filter((n) => /^[0-9]+$/.test(n) && Number(n) < generation)
    .map(Number)
    .sort((a, b) => b - a)
    .slice(0, Math.max(0, count - 1));
  const target = path.join(gensDir, String(generation));
  for (const g of older) {
    const from = path.join(gensDir, String(g));
    for (const rel of await byHashDirs(from)) {
      const dest = path.join(target, rel);
      await mkdir(dest, { recursive: true });
      for (const name of await readdir(path.join(from, rel))) {
        await link(path.join(from, rel, name), path.join(dest, name)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "EEXIST") throw err;
        });
      }
    }
  }
}

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
  await unlink(paths.link).catch(() => undefined);
  await rm(paths.gens, { recursive: true, force: true });
}
