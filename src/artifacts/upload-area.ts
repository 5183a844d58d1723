/**
 * Upload areas: `<data>/upload/<dir>/<file>`, the layout of Aptly's rootDir. Each upload gets a
 * directory of its own, so a client that cleans up after itself removes only its own files.
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, rename, rm, unlink } from "node:fs/promises";
import path from "node:path";
import { KilnError } from "../errors/catalogue.js";
import { fsyncDir, fsyncFile, isErrno, isOlderThan, writeHashed, type ByteSource } from "./write-hashed.js";

const AREA_RE = /^[A-Za-z0-9._-]{1,128}$/;
const MAX_PREFIX = 64; // leaves room for "-<timestamp>-<random>" within 128
const MAX_FILE_NAME_BYTES = 255;
/** Files being written carry this prefix; clients may not use it, and listings hide it. */
const TEMP_PREFIX = ".kiln-part-";
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

export interface UploadArea {
  id: string;
  dir: string;
}

export interface UploadedFile {
  name: string;
  size: number;
  sha256: string;
}

export interface UploadEntry {
  name: string;
  size: number;
}

/** INVALID_NAME unless `id` is 1–128 of `[A-Za-z0-9._-]` and not `.` or `..`. */
export function assertAreaName(id: string): void {
  if (!AREA_RE.test(id) || id === "." || id === "..") {
    throw new KilnError(
      "INVALID_NAME",
      "An upload directory name is 1 to 128 letters, digits, '.', '_' or '-', and not '.' or '..'",
      { name: id.slice(0, 200) },
    );
  }
}

/**
 * INVALID_NAME unless `name` can only mean a file directly inside an area: 1–255 bytes, no `/`
 * or `\`, not `.` or `..`, no NUL or other control character, not our temp prefix.
 */
export function assertFileName(name: string): void {
  const bytes = Buffer.byteLength(name, "utf8");
  if (
    bytes < 1 ||
    bytes > MAX_FILE_NAME_BYTES ||
    name === "." ||
    name === ".." ||
    name.includes("/") ||
    name.includes("\\") ||
    CONTROL_RE.test(name) ||
    name.startsWith(TEMP_PREFIX)
  ) {
    throw new KilnError(
      "INVALID_NAME",
      "A file name is 1 to 255 bytes without '/', '\\' or control characters, and not '.' or '..'",
      { name: name.slice(0, 300) },
    );
  }
}

export class UploadAreas {
  readonly root: string;
  /** Areas this instance is writing into, with the number of writes under way. */
  private readonly writing = new Map<string, number>();

  /** `root` is `<data>/upload`. */
  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** The directory of an area (whether or not it exists); INVALID_NAME for a bad id. */
  areaDir(id: string): string {
    assertAreaName(id);
    return path.join(this.root, id);
  }

  /** A fresh, empty area named `<prefix>-<timestamp>-<random>` (prefix `u` by default). */
  async create(prefix = "u"): Promise<UploadArea> {
    if (prefix.length > MAX_PREFIX) {
      throw new KilnError("INVALID_NAME", `An upload prefix is at most ${MAX_PREFIX} characters`, {
        prefix: prefix.slice(0, 200),
      });
    }
    assertAreaName(prefix);
    await mkdir(this.root, { recursive: true });
    for (let attempt = 0; ; attempt++) {
      const id = `${prefix}-${Date.now()}-${randomBytes(6).toString("hex")}`;
      const dir = this.areaDir(id);
      try {
        await mkdir(dir); // not recursive: an existing directory is never handed out twice
        return { id, dir };
      } catch (err) {
        if (!isErrno(err, "EEXIST") || attempt >= 5) throw err;
      }
    }
  }

  /**
   * The area with a caller-chosen name, created when missing — Aptly's `/api/files/:dir`, where
   * a client uploads several files into one directory it names. Keeping such names apart is the
   * clients' affair; `create()` is the collision-free way.
   */
  async ensure(name: string): Promise<UploadArea & { created: boolean }> {
    const dir = this.areaDir(name);
    await mkdir(this.root, { recursive: true });
    try {
      await mkdir(dir);
      return { id: name, dir, created: true };
    } catch (err) {
      if (!isErrno(err, "EEXIST")) throw err;
    }
    if (!(await isDirectory(dir))) {
      throw new KilnError("INVALID_NAME", "That upload name is taken by something other than a directory", {
        name,
      });
    }
    return { id: name, dir, created: false };
  }

  async exists(id: string): Promise<boolean> {
    return isDirectory(this.areaDir(id));
  }

  /** The ids of all areas, sorted. */
  async areas(): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.root, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT")) return [];
      throw err;
    }
    return entries
      .filter((e) => e.isDirectory() && AREA_RE.test(e.name) && e.name !== "." && e.name !== "..")
      .map((e) => e.name)
      .sort();
  }

  /**
   * Streams `source` into `<area>/<name>` through a temp file, hashing it; an existing file of
   * that name is replaced atomically. Over `maxBytes` it is PAYLOAD_TOO_LARGE and nothing is
   * left behind; UPLOAD_NOT_FOUND when the area does not exist (or is removed meanwhile).
   */
  async writeFile(
    id: string,
    name: string,
    source: ByteSource,
    opts: { maxBytes?: number } = {},
  ): Promise<UploadedFile> {
    const dir = this.areaDir(id);
    assertFileName(name);
    if (!(await isDirectory(dir))) throw areaNotFound(id);
    const temp = path.join(dir, `${TEMP_PREFIX}${randomBytes(12).toString("hex")}`);
    this.writing.set(id, (this.writing.get(id) ?? 0) + 1);
    try {
      // No fsyncs: an upload is staging. Whatever keeps its content makes that durable itself —
      // the blob store's put fsyncs its copy, a repo add syncs the file system before its rows
      // commit — so the upload's own fsyncs would only be paid twice. A power cut can lose
      // files of an area (a later add reports them missing or invalid); a process crash cannot.
      const { sha256, size } = await writeHashed(source, temp, { maxBytes: opts.maxBytes, sync: false });
      try {
        await rename(temp, path.join(dir, name));
      } catch (err) {
        await unlink(temp).catch(() => undefined);
        throw err;
      }
      return { name, size, sha256 };
    } catch (err) {
      // The area removed under us, rather than say a missing source file, is a 404.
      if (isErrno(err, "ENOENT") && !(await isDirectory(dir))) throw areaNotFound(id);
      throw err;
    } finally {
      const n = (this.writing.get(id) ?? 1) - 1;
      if (n > 0) this.writing.set(id, n);
      else this.writing.delete(id);
    }
  }

  /** The files in an area, sorted by name; files still being written are not shown. */
  async list(id: string): Promise<UploadEntry[]> {
    const dir = this.areaDir(id);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) throw areaNotFound(id);
      throw err;
    }
    const files: UploadEntry[] = [];
    for (const e of entries) {
      if (!e.isFile() || e.name.startsWith(TEMP_PREFIX)) continue;
      const st = await lstat(path.join(dir, e.name)).catch(() => undefined);
      if (st?.isFile()) files.push({ name: e.name, size: st.size });
    }
    return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Makes an area's files durable (writeFile does not): for a build whose tasks will read its
   * source from the area later, so a power cut after the build was accepted cannot lose it.
   */
  async sync(id: string): Promise<void> {
    const dir = this.areaDir(id);
    for (const f of await this.list(id)) await fsyncFile(path.join(dir, f.name));
    await fsyncDir(dir);
  }

  /** Where a file of an area lives (whether or not it exists); both names validated. */
  filePath(id: string, name: string): string {
    const dir = this.areaDir(id);
    assertFileName(name);
    return path.join(dir, name);
  }

  /** Removes one file; false when there was none. */
  async removeFile(id: string, name: string): Promise<boolean> {
    try {
      await unlink(this.filePath(id, name));
      return true;
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) return false;
      throw err;
    }
  }

  /** Removes an area and everything in it; false when there was none. */
  async remove(id: string): Promise<boolean> {
    const dir = this.areaDir(id);
    if (!(await isDirectory(dir))) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  }

  /**
   * Removes areas abandoned for at least `ms`: nothing in them (the directory or any file,
   * including one being written) was modified for that long. Areas this instance is writing
   * into are kept regardless. Returns the ids removed.
   */
  async removeOlderThan(ms: number): Promise<string[]> {
    const removed: string[] = [];
    for (const id of await this.areas()) {
      if (this.writing.has(id)) continue;
      const newest = await newestMtime(this.areaDir(id));
      if (newest === undefined || !isOlderThan(newest, ms)) continue;
      await rm(this.areaDir(id), { recursive: true, force: true });
      removed.push(id);
    }
    return removed;
  }
}

function areaNotFound(id: string): KilnError {
  return new KilnError("UPLOAD_NOT_FOUND", `No upload area ${id}`, { id });
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return false;
    throw err;
  }
}

/** The latest mtime of a directory and its direct entries; undefined if it is gone. */
async function newestMtime(dir: string): Promise<number | undefined> {
  let newest: number;
  let names: string[];
  try {
    newest = (await lstat(dir)).mtimeMs;
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return undefined;
    throw err;
  }
  for (const name of names) {
    const st = await lstat(path.join(dir, name)).catch(() => undefined);
    if (st && st.mtimeMs > newest) newest = st.mtimeMs;
  }
  return newest;
}
