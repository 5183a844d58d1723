/**
 * A worker's cache of buildroot bases, by content: `<dir>/<sha256>/` holds the base's tarball as
 * the hub stores it (`base.tar.zst`), the tree unpacked from it (`root/`, the read-only lower
 * layer of every build's root) and `entry.json`. The tarball is checked against its hash when it
 * arrives and again whenever it is not the file the entry recorded (size or mtime differ): a
 * damaged cache is fetched again, never used. The cache is bounded in bytes and evicts the
 * least recently used base that no running build holds.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { runProcess } from "./executor.js";

export interface BaseRef {
  name: string;
  sha256: string;
  size: number;
}

/** Puts the base's tarball at `dest` (the cache checks its hash afterwards). */
export type FetchBase = (ref: BaseRef, dest: string, signal: AbortSignal) => Promise<void>;

interface Entry {
  sha256: string;
  /** The tarball as last verified. */
  tarSize: number;
  tarMtimeMs: number;
  /** Tarball plus unpacked tree. */
  bytes: number;
  lastUsed: number;
}

export interface AcquiredBase {
  /** The unpacked base: use it read-only (as an overlay's lower layer, or to copy from). */
  root: string;
  /** How it was found: in the cache, checked again after a change on disk, or downloaded. */
  how: "cached" | "verified" | "fetched";
  release(): void;
}

export class CorruptBase extends Error {
  override name = "CorruptBase";
}

const TARBALL = "base.tar.zst";
const ENTRY = "entry.json";
const SHA_RE = /^[0-9a-f]{64}$/;

export class BuildrootCache {
  private readonly holds = new Map<string, number>();
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
    private readonly fetch: FetchBase,
    private readonly log: (text: string) => void = () => undefined,
  ) {}

  /** The unpacked base, fetched and unpacked first if needed; held until `release()`. */
  async acquire(ref: BaseRef, signal: AbortSignal, log = this.log): Promise<AcquiredBase> {
    if (!SHA_RE.test(ref.sha256)) throw new Error(`not a SHA-256: ${ref.sha256}`);
    // One preparation per base at a time; different bases in parallel.
    const how = await this.serialized(ref.sha256, () => this.prepare(ref, signal, log));
    this.holds.set(ref.sha256, (this.holds.get(ref.sha256) ?? 0) + 1);
    let released = false;
    await this.evict(ref.sha256).catch((err: unknown) =>
      log(`kiln: cache eviction failed: ${String(err)}\n`),
    );
    return {
      root: path.join(this.dir, ref.sha256, "root"),
      how,
      release: () => {
        if (released) return;
        released = true;
        const n = (this.holds.get(ref.sha256) ?? 1) - 1;
        if (n <= 0) this.holds.delete(ref.sha256);
        else this.holds.set(ref.sha256, n);
      },
    };
  }

  /**
   * Takes a base this worker has just made — its tarball (already hashed, as `ref` says) and the
   * tree it was packed from — into the cache by renaming both; both must be on the cache's file
   * system. Nothing happens when the base is cached already.
   */
  async adopt(ref: BaseRef, tarball: string, tree: string): Promise<void> {
    await this.serialized(ref.sha256, async () => {
      if (await this.readEntry(ref.sha256)) return;
      const dir = path.join(this.dir, ref.sha256);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await rename(tarball, path.join(dir, TARBALL));
      await rename(tree, path.join(dir, "root"));
      const st = await stat(path.join(dir, TARBALL));
      const entry: Entry = {
        sha256: ref.sha256,
        tarSize: st.size,
        tarMtimeMs: st.mtimeMs,
        bytes: st.size + (await treeBytes(path.join(dir, "root"))),
        lastUsed: Date.now(),
      };
      await writeFile(path.join(dir, ENTRY), JSON.stringify(entry));
    });
    await this.evict(ref.sha256);
  }

  /** Bases in the cache, most recently used first. */
  async entries(): Promise<Entry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const out: Entry[] = [];
    for (const name of names) {
      if (!SHA_RE.test(name)) continue;
      const entry = await this.readEntry(name);
      if (entry) out.push(entry);
    }
    return out.sort((a, b) => b.lastUsed - a.lastUsed);
  }

  private async serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.busy.get(key) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(fn);
    this.busy.set(key, run);
    try {
      return await run;
    } finally {
      if (this.busy.get(key) === run) this.busy.delete(key);
    }
  }

  private async readEntry(sha256: string): Promise<Entry | undefined> {
    try {
      const e = JSON.parse(await readFile(path.join(this.dir, sha256, ENTRY), "utf8")) as Entry;
      return e.sha256 === sha256 ? e : undefined;
    } catch {
      return undefined;
    }
  }

  private async prepare(
    ref: BaseRef,
    signal: AbortSignal,
    log: (t: string) => void,
  ): Promise<AcquiredBase["how"]> {
    const dir = path.join(this.dir, ref.sha256);
    const tarball = path.join(dir, TARBALL);
    const root = path.join(dir, "root");
    const entry = await this.readEntry(ref.sha256);
    const tar = await stat(tarball).catch(() => undefined);
    const rootThere = (await lstat(root).catch(() => undefined))?.isDirectory() === true;
    let how: AcquiredBase["how"] = "cached";
    if (!(entry && tar && rootThere && tar.size === entry.tarSize && tar.mtimeMs === entry.tarMtimeMs)) {
      let good = false;
      if (tar) {
        log(`kiln: checking the cached base ${ref.name} (${ref.sha256.slice(0, 12)})\n`);
        good = (await hashFile(tarball)) === ref.sha256;
        if (!good) log(`kiln: the cached base ${ref.name} does not match its hash; fetching it again\n`);
        how = "verified";
      }
      if (!good) {
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true, mode: 0o755 });
        log(`kiln: fetching the base ${ref.name} (${(ref.size / 1024 ** 2).toFixed(0)} MiB)\n`);
        const part = `${tarball}.part`;
        await this.fetch(ref, part, signal);
        const got = await hashFile(part);
        if (got !== ref.sha256) {
          await rm(dir, { recursive: true, force: true });
          throw new CorruptBase(`the base ${ref.name} arrived with sha256 ${got}, not ${ref.sha256}`);
        }
        await rename(part, tarball);
        how = "fetched";
      }
      await rm(root, { recursive: true, force: true });
      const unpacked = await unpack(tarball, dir, signal);
      const st = await stat(tarball);
      const fresh: Entry = {
        sha256: ref.sha256,
        tarSize: st.size,
        tarMtimeMs: st.mtimeMs,
        bytes: st.size + unpacked,
        lastUsed: Date.now(),
      };
      await writeFile(path.join(dir, ENTRY), JSON.stringify(fresh));
      return how;
    }
    await writeFile(path.join(dir, ENTRY), JSON.stringify({ ...entry, lastUsed: Date.now() }));
    return how;
  }

  /** Removes least recently used bases nobody holds until the cache fits (`keep` stays). */
  private async evict(keep: string): Promise<void> {
    const all = await this.entries();
    let total = all.reduce((n, e) => n + e.bytes, 0);
    for (const e of [...all].reverse()) {
      if (total <= this.maxBytes) break;
      if (e.sha256 === keep || this.holds.has(e.sha256) || this.busy.has(e.sha256)) continue;
      this.log(`kiln: evicting the cached base ${e.sha256.slice(0, 12)} (cache over its bound)\n`);
      await rm(path.join(this.dir, e.sha256), { recursive: true, force: true });
      total -= e.bytes;
    }
  }
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Unpacks the tarball into `<dir>/root` (through a temporary name); returns the bytes written. */
async function unpack(tarball: string, dir: string, signal: AbortSignal): Promise<number> {
  const tmp = path.join(dir, "root.tmp");
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { mode: 0o755 });
  let output = "";
  const out = await runProcess(
    "tar",
    ["--numeric-owner", "--same-owner", "-p", "--zstd", "-xf", tarball, "-C", tmp],
    {
      cwd: "/",
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C.UTF-8" },
      signal,
      killGrace: 5,
      onOutput: (t) => {
        if (output.length < 4096) output += t;
      },
    },
  );
  if (out.exitCode !== 0) {
    await rm(tmp, { recursive: true, force: true });
    throw new CorruptBase(
      `cannot unpack the base: tar ${out.signal ?? `exited with ${out.exitCode}`}: ${output.trim()}`,
    );
  }
  await rename(tmp, path.join(dir, "root"));
  return treeBytes(path.join(dir, "root"));
}

/** Bytes of the regular files under `dir` (hard links counted once), for the cache bound. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const seen = new Set<number>();
  const walk = async (d: string): Promise<void> => {
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) await walk(p);
      else if (ent.isFile()) {
        const st = await lstat(p);
        if (st.nlink > 1) {
          if (seen.has(st.ino)) continue;
          seen.add(st.ino);
        }
        total += st.size;
      }
    }
  };
  await walk(dir);
  return total;
}
