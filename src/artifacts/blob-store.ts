/**
 * The content-addressed blob store: `<root>/sha256/ab/cd/<hash>`, written through `<root>/tmp/`.
 *
 * A blob reaches its final path only by rename() of a complete file, so readers never see a
 * partial blob, and two writers of the same content race harmlessly (the second rename replaces
 * an identical file). The file is fsynced before its rename — or, in a DeferredSync batch, before
 * the batch's flush() returns, which its caller awaits before anything refers to the blob.
 * Nothing in here knows what references a blob: the collector is told by its caller.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { constants, createReadStream, openSync, type ReadStream } from "node:fs";
import { chmod, link, lstat, mkdir, open, readdir, rename, unlink, utimes } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { KilnError } from "../errors/catalogue.js";
import { fsyncDir, fsyncFile, isErrno, isOlderThan, writeHashed, type ByteSource } from "./write-hashed.js";

const HASH_RE = /^[0-9a-f]{64}$/;
const HEX_PAIR_RE = /^[0-9a-f]{2}$/;
const DEFAULT_GC_MIN_AGE_MS = 60 * 60 * 1000;

export interface PutOptions {
  /** Abort with PAYLOAD_TOO_LARGE once more than this many bytes have arrived. */
  maxBytes?: number;
  /** The hash the caller claims; a mismatch is VALIDATION_FAILED and nothing is stored. */
  expectSha256?: string;
  /**
   * adoptFile only: skip this blob's own fsyncs; it is durable once `deferSync.flush()` has
   * returned, which the caller must await before anything refers to the blob.
   */
  deferSync?: DeferredSync;
}

/** From this many blobs on, flush() syncs the whole file system rather than each blob. */
const SYNCFS_MIN_FILES = 64;

/**
 * Blobs stored without fsyncs of their own, made durable together by flush(): for many, one sync
 * of the store's file system (sync --file-system) instead of two to four fsyncs a blob, for a
 * repo add of thousands of packages. For a few, or without sync(1), each noted blob, its
 * directories and the store's are fsynced one by one.
 */
export class DeferredSync {
  private readonly files = new Set<string>();

  constructor(private readonly root: string) {}

  note(file: string): void {
    this.files.add(file);
  }

  async flush(): Promise<void> {
    if (this.files.size === 0) return;
    const files = [...this.files];
    this.files.clear();
    // A sync of the file system also waits for everyone else's dirty data: worth it for many
    // blobs, not for a few.
    if (files.length >= SYNCFS_MIN_FILES && (await syncFileSystem(this.root))) return;
    const dirs = new Set<string>();
    for (const file of files) {
      await fsyncFile(file);
      dirs.add(path.dirname(file)).add(path.dirname(path.dirname(file)));
    }
    dirs.add(path.join(this.root, "sha256"));
    for (const dir of dirs) await fsyncDir(dir);
  }
}

/** syncfs(2) of the file system holding `dir`, through sync(1); false when that is not possible. */
function syncFileSystem(dir: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn("sync", ["--file-system", dir], { stdio: "ignore" });
    child.on("error", () => resolve(false));
    child.on("close", (code) => resolve(code === 0));
  });
}

export interface PutResult {
  sha256: string;
  size: number;
  /** True when the content was already stored; the new copy was discarded. */
  existed: boolean;
}

export interface BlobStat {
  size: number;
  mtimeMs: number;
}

export interface GcOptions {
  /** Blobs and temp files modified more recently than this are never removed. Default one hour. */
  minAgeMs?: number;
  /** Report what would be removed without removing it. */
  dryRun?: boolean;
}

export interface GcResult {
  /** Hashes of the blobs removed (or, with dryRun, that would be). */
  removed: string[];
  /** Blobs left in place: referenced or too young. */
  kept: number;
  /** Bytes of the removed blobs and stale temp files. */
  bytesFreed: number;
  /** Stale temp files removed. */
  tempRemoved: number;
}

/** Hashes a freshly linked file (undefined for a symlink: the link is not the content). */
async function hashLinked(
  file: string,
  maxBytes: number,
): Promise<{ sha256: string; size: number } | undefined> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if (isErrno(err, "ELOOP")) return undefined;
    throw err;
  }
  try {
    const hash = createHash("sha256");
    // Sized to the file (one read and the one that finds its end), at most 1 MiB at a time.
    const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, (await fh.stat()).size + 1));
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > maxBytes) {
        throw new KilnError("PAYLOAD_TOO_LARGE", `The content is over the limit of ${maxBytes} bytes`, {
          maxBytes,
        });
      }
      hash.update(buf.subarray(0, bytesRead));
    }
    return { sha256: hash.digest("hex"), size };
  } finally {
    await fh.close();
  }
}

/**
 * Makes a linked file read-only, young (the collector's age counts from storing) and, unless
 * deferred, durable. False when this process may not change it: it is not its own.
 */
async function sealLinked(file: string, deferred: boolean): Promise<boolean> {
  const now = new Date();
  try {
    await chmod(file, 0o444);
    await utimes(file, now, now);
  } catch (err) {
    if (isErrno(err, "EPERM", "EACCES")) return false;
    throw err;
  }
  if (!deferred) await fsyncFile(file);
  return true;
}

/** Links `file` to `temp`; false where a link cannot be made (another file system, not allowed). */
async function linkTo(file: string, temp: string): Promise<boolean> {
  try {
    await link(file, temp);
    return true;
  } catch (err) {
    if (isErrno(err, "EXDEV", "EPERM", "EMLINK", "ENOTSUP", "EOPNOTSUPP")) return false;
    throw err;
  }
}

/** Throws INVALID_NAME unless `sha256` is 64 lowercase hex digits, so a hash can never be a path. */
export function assertSha256(sha256: string): void {
  if (!HASH_RE.test(sha256)) {
    throw new KilnError("INVALID_NAME", "A blob hash must be 64 lowercase hexadecimal digits", {
      sha256: sha256.slice(0, 100),
    });
  }
}

export class BlobStore {
  readonly root: string;
  private readonly blobDir: string;
  private readonly tmpDir: string;
  /** Temp files this instance is writing, which its own cleanup must not touch. */
  private readonly inflight = new Set<string>();
  /** Per-hash chains: the last step of a put and a collector's removal never interleave. */
  private readonly locks = new Map<string, Promise<void>>();

  constructor(root: string) {
    this.root = path.resolve(root);
    this.blobDir = path.join(this.root, "sha256");
    this.tmpDir = path.join(this.root, "tmp");
  }

  /** A batch for adoptFile's `deferSync` (see DeferredSync). */
  deferredSync(): DeferredSync {
    return new DeferredSync(this.root);
  }

  /** Where the blob lives (whether or not it exists). INVALID_NAME for anything but a sha256. */
  path(sha256: string): string {
    assertSha256(sha256);
    return path.join(this.blobDir, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  put(source: ByteSource, opts: PutOptions = {}): Promise<PutResult> {
    return this.viaTemp(".part", opts, (temp) =>
      writeHashed(source, temp, { maxBytes: opts.maxBytes, mode: 0o444 }),
    );
  }

  putFile(file: string, opts: PutOptions = {}): Promise<PutResult> {
    return this.put(createReadStream(file), opts);
  }

  /**
   * Stores a file that already sits on the store's file system by hard-linking it rather than
   * copying it: for uploads, which are never written again once complete. The link is made
   * first, under a temp name only this call knows, and that inode is hashed, so a file replaced
   * under `file` meanwhile cannot slip in under the wrong hash. The inode is made read-only,
   * its mtime set to now (the collector's age check counts from storing) and fsynced before its
   * name is. Across file systems, where links are not allowed, for a symlink or a file this
   * process may not make its own, it is copied as putFile does.
   */
  adoptFile(file: string, opts: PutOptions = {}): Promise<PutResult> {
    return this.viaTemp(
      ".link",
      opts,
      async (temp) => {
        if (!(await linkTo(file, temp))) return undefined;
        const hashed = await hashLinked(temp, opts.maxBytes ?? Infinity);
        if (hashed === undefined || !(await sealLinked(temp, opts.deferSync !== undefined))) return undefined;
        return hashed;
      },
      () => this.putFile(file, opts),
    );
  }

  /**
   * adoptFile for a caller that reads the file anyway (a package's control data and checksums):
   * `inspect` is given the linked temp name — an inode nothing can change any more — and returns
   * its sha256 and size with what it made of it, so the file is read once. Where no link can be
   * made, `inspect` reads `file` itself and a copy checked against its hash is stored. An error
   * of `inspect` stores nothing.
   */
  async adoptInspected<T extends { sha256: string; size: number }>(
    file: string,
    inspect: (file: string) => Promise<T>,
    opts: Pick<PutOptions, "deferSync"> = {},
  ): Promise<{ stored: PutResult; inspected: T }> {
    let inspected: T | undefined;
    const stored = await this.viaTemp(
      ".link",
      opts,
      async (temp) => {
        if (!(await linkTo(file, temp)) || !(await lstat(temp)).isFile()) return undefined;
        inspected = await inspect(temp);
        if (!(await sealLinked(temp, opts.deferSync !== undefined))) return undefined;
        return inspected;
      },
      async () => {
        inspected = await inspect(file);
        return this.putFile(file, { expectSha256: inspected.sha256 });
      },
    );
    if (inspected === undefined) throw new KilnError("INTERNAL", "adoptInspected: nothing inspected");
    return { stored, inspected };
  }

  /**
   * What every write shares: a temp name only this call uses (which cleanTemp leaves alone),
   * filled by `fill` with the hashed content — or undefined, and `instead` does the work — checked
   * against the caller's claim, and installed under the blob's lock. The temp name never outlives
   * the call.
   */
  private async viaTemp(
    suffix: string,
    opts: PutOptions,
    fill: (temp: string) => Promise<{ sha256: string; size: number } | undefined>,
    instead?: () => Promise<PutResult>,
  ): Promise<PutResult> {
    const expected = opts.expectSha256?.toLowerCase();
    // Checked before reading a byte, so a malformed claim costs nothing.
    if (expected !== undefined && !HASH_RE.test(expected)) {
      throw new KilnError("VALIDATION_FAILED", "expectSha256 must be 64 hexadecimal digits", {
        expected: opts.expectSha256,
      });
    }
    await mkdir(this.tmpDir, { recursive: true });
    const temp = path.join(this.tmpDir, `${randomBytes(12).toString("hex")}${suffix}`);
    this.inflight.add(temp);
    let renamed = false;
    try {
      const filled = await fill(temp);
      if (filled === undefined) {
        if (!instead) throw new KilnError("INTERNAL", "A blob write produced nothing");
        return await instead();
      }
      const { sha256, size } = filled;
      if (expected !== undefined && sha256 !== expected) {
        throw new KilnError("VALIDATION_FAILED", "The content does not match the expected sha256", {
          expected,
          actual: sha256,
        });
      }
      const existed = await this.withLock(sha256, () => this.install(temp, sha256, size, opts.deferSync));
      renamed = !existed;
      return { sha256, size, existed };
    } finally {
      if (!renamed) await unlink(temp).catch(() => undefined);
      this.inflight.delete(temp);
    }
  }

  putBuffer(buf: Uint8Array | string, opts: PutOptions = {}): Promise<PutResult> {
    return this.put(Readable.from([buf]), opts);
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.statOrUndefined(this.path(sha256))) !== undefined;
  }

  /** ARTIFACT_NOT_FOUND when missing. */
  async stat(sha256: string): Promise<BlobStat> {
    const st = await this.statOrUndefined(this.path(sha256));
    if (!st) throw notFound(sha256);
    return st;
  }

  /**
   * A stream of the blob's bytes, optionally a range (inclusive `end`, as for HTTP Range).
   * ARTIFACT_NOT_FOUND when missing; the file is opened before returning, so the stream keeps
   * working even if the blob is removed while it is read.
   */
  open(sha256: string, range: { start?: number; end?: number } = {}): ReadStream {
    const file = this.path(sha256);
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) throw notFound(sha256);
      throw err;
    }
    return createReadStream(file, { fd, start: range.start, end: range.end });
  }

  /** Re-hashes the blob: false when its content no longer matches its name. */
  async verify(sha256: string): Promise<boolean> {
    const hash = createHash("sha256");
    for await (const chunk of this.open(sha256)) hash.update(chunk as Buffer);
    return hash.digest("hex") === sha256;
  }

  /** Every stored hash, in order. Stray files that are not blobs are skipped. */
  async *list(): AsyncGenerator<string> {
    for (const ab of await readdirSorted(this.blobDir)) {
      if (!HEX_PAIR_RE.test(ab)) continue;
      for (const cd of await readdirSorted(path.join(this.blobDir, ab))) {
        if (!HEX_PAIR_RE.test(cd)) continue;
        for (const name of await readdirSorted(path.join(this.blobDir, ab, cd))) {
          if (HASH_RE.test(name) && name.startsWith(ab + cd)) yield name;
        }
      }
    }
  }

  /** Removes a blob; false when there was none. Referencing is the caller's business. */
  async remove(sha256: string): Promise<boolean> {
    const file = this.path(sha256);
    return this.withLock(sha256, async () => {
      try {
        await unlink(file);
      } catch (err) {
        if (isErrno(err, "ENOENT")) return false;
        throw err;
      }
      await fsyncDir(path.dirname(file));
      return true;
    });
  }

  /**
   * Mark and sweep: `isReferenced` is the mark set. A blob is removed only when it is not
   * referenced and was last modified (stored, or stored again by a deduplicated put) at least
   * `minAgeMs` ago — the age is checked again under the blob's lock just before removal, so an
   * upload whose reference is not yet recorded is safe. Stale temp files go too.
   */
  async collectGarbage(
    isReferenced: (sha256: string) => boolean | Promise<boolean>,
    opts: GcOptions = {},
  ): Promise<GcResult> {
    const minAgeMs = opts.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS;
    const dryRun = opts.dryRun ?? false;
    const result: GcResult = { removed: [], kept: 0, bytesFreed: 0, tempRemoved: 0 };
    const isOld = (st: BlobStat): boolean => isOlderThan(st.mtimeMs, minAgeMs);

    for await (const sha256 of this.list()) {
      const file = this.path(sha256);
      const before = await this.statOrUndefined(file);
      if (!before) continue; // removed meanwhile
      if (!isOld(before) || (await isReferenced(sha256))) {
        result.kept++;
        continue;
      }
      const freed = await this.withLock(sha256, async () => {
        const st = await this.statOrUndefined(file);
        if (!st || !isOld(st)) return undefined;
        if (!dryRun) {
          try {
            await unlink(file);
          } catch (err) {
            if (isErrno(err, "ENOENT")) return undefined;
            throw err;
          }
        }
        return st.size;
      });
      if (freed === undefined) {
        result.kept++;
      } else {
        result.removed.push(sha256);
        result.bytesFreed += freed;
      }
    }

    const temps = await this.sweepTemp(minAgeMs, dryRun);
    result.tempRemoved = temps.count;
    result.bytesFreed += temps.bytes;
    return result;
  }

  /**
   * Deletes temp files left behind by a crash; call on start. Files this instance is writing are
   * never touched; pass `minAgeMs` when other processes may be writing to the same store.
   * Returns how many were removed.
   */
  async cleanTemp(opts: { minAgeMs?: number } = {}): Promise<number> {
    return (await this.sweepTemp(opts.minAgeMs ?? 0, false)).count;
  }

  private async sweepTemp(minAgeMs: number, dryRun: boolean): Promise<{ count: number; bytes: number }> {
    let count = 0;
    let bytes = 0;
    for (const name of await readdirSorted(this.tmpDir)) {
      const file = path.join(this.tmpDir, name);
      if (this.inflight.has(file)) continue;
      const st = await lstat(file).catch(() => undefined);
      if (!st?.isFile() || !isOlderThan(st.mtimeMs, minAgeMs)) continue;
      if (!dryRun) {
        try {
          await unlink(file);
        } catch (err) {
          if (isErrno(err, "ENOENT")) continue;
          throw err;
        }
      }
      count++;
      bytes += st.size;
    }
    return { count, bytes };
  }

  /** Moves a verified temp file to its final path; returns whether the content was there already. */
  private async install(
    temp: string,
    sha256: string,
    size: number,
    deferred?: DeferredSync,
  ): Promise<boolean> {
    const dest = this.path(sha256);
    // Noted even when it was there: another deferred batch may have stored it, not yet synced.
    deferred?.note(dest);
    const existing = await this.statOrUndefined(dest);
    if (existing && existing.size === size) {
      // Storing the content again counts as new for the collector's age check: the caller is
      // about to reference it.
      const now = new Date();
      await utimes(dest, now, now);
      return true;
    }
    // Missing, or present with the wrong size (a damaged blob): the fresh copy takes its place.
    const dir = path.dirname(dest);
    const created = await mkdir(dir, { recursive: true });
    await rename(temp, dest);
    if (deferred) return false;
    await fsyncDir(dir);
    if (created !== undefined) {
      // New ab/ or ab/cd/ directories must survive a crash too.
      await fsyncDir(path.dirname(dir));
      await fsyncDir(this.blobDir);
    }
    return false;
  }

  private async statOrUndefined(file: string): Promise<BlobStat | undefined> {
    try {
      const st = await lstat(file);
      return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs } : undefined;
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) return undefined;
      throw err;
    }
  }

  private async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = prev.then(() => mine);
    this.locks.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}

function notFound(sha256: string): KilnError {
  return new KilnError("ARTIFACT_NOT_FOUND", `No blob ${sha256}`, { sha256 });
}

async function readdirSorted(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return [];
    throw err;
  }
}
