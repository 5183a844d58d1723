/**
 * Writers for the APT repository index files: Packages paragraphs, pool paths, Release files,
 * their checksums and compressed copies. Pure, except compressIndex(), which runs `xz`.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { KilnError } from "../errors/catalogue.js";
import { debianError, quote } from "./debian-error.js";
import { isValidFieldName, PACKAGES_FIELD_ORDER, type Paragraph } from "./deb822.js";
import { isValidArchitecture, isValidPackageName } from "./version.js";

export interface PackageFileInfo {
  /** Relative to the publication root, e.g. pool/main/h/hello/hello_1.0_amd64.deb */
  filename: string;
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
  sha512?: string;
}

export interface IndexFileEntry {
  /** Relative to dists/<dist>/, e.g. main/binary-amd64/Packages.xz */
  path: string;
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
  sha512?: string;
}

export interface ReleaseInput {
  origin?: string;
  label?: string;
  suite: string;
  codename: string;
  version?: string;
  date: Date;
  validUntil?: Date;
  architectures: string[];
  components: string[];
  description?: string;
  acquireByHash: boolean;
  signedBy?: string;
  files: IndexFileEntry[];
}

export interface ComponentReleaseInput {
  archive: string;
  codename?: string;
  component: string;
  /** A binary architecture, or "source" for source/Release. */
  architecture: string;
  origin?: string;
  label?: string;
  acquireByHash?: boolean;
}

export interface IndexHashes {
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
  sha512: string;
}

// ---------------------------------------------------------------------------------------------
// Packages

const RANK = new Map(PACKAGES_FIELD_ORDER.map((name, i) => [name.toLowerCase(), i]));
const FILE_FIELDS = new Set(["filename", "size", "md5sum", "sha1", "sha256", "sha512"]);
const HEX_RE = {
  md5: /^[0-9a-f]{32}$/,
  sha1: /^[0-9a-f]{40}$/,
  sha256: /^[0-9a-f]{64}$/,
  sha512: /^[0-9a-f]{128}$/,
};

interface Block {
  rank: number;
  text: string;
}

/**
 * The Packages paragraph of a binary package: its control fields with Filename, Size, MD5sum,
 * SHA1, SHA256 (and SHA512) set (replacing any already there), in apt-ftparchive's field order,
 * ending in "\n". A control text is split into fields without a full parse (the publisher calls
 * this for every package), but still refused when it is not one well-formed paragraph.
 */
export function packagesStanza(control: string | Paragraph, file: PackageFileInfo): string {
  checkFileInfo(file);
  const blocks = typeof control === "string" ? blocksOfText(control) : blocksOfParagraph(control);
  blocks.push(
    { rank: rankOf("Filename"), text: `Filename: ${file.filename}` },
    { rank: rankOf("Size"), text: `Size: ${file.size}` },
    { rank: rankOf("MD5sum"), text: `MD5sum: ${file.md5}` },
    { rank: rankOf("SHA1"), text: `SHA1: ${file.sha1}` },
    { rank: rankOf("SHA256"), text: `SHA256: ${file.sha256}` },
  );
  if (file.sha512 !== undefined) blocks.push({ rank: rankOf("SHA512"), text: `SHA512: ${file.sha512}` });
  blocks.sort((a, b) => a.rank - b.rank);
  let out = "";
  for (const b of blocks) out += `${b.text}\n`;
  return out;
}

function rankOf(name: string): number {
  return RANK.get(name.toLowerCase()) ?? 0;
}

function checkFileInfo(file: PackageFileInfo): void {
  const fail = (what: string): never => {
    throw debianError("CONTROL_INVALID", `Packages entry for ${quote(file.filename)}: ${what}`);
  };
  if (!isSafeRelativePath(file.filename)) fail("the file name is not a safe relative path");
  if (!Number.isSafeInteger(file.size) || file.size < 0) fail(`invalid size ${file.size}`);
  if (!HEX_RE.md5.test(file.md5)) fail("MD5sum is not 32 lowercase hex digits");
  if (!HEX_RE.sha1.test(file.sha1)) fail("SHA1 is not 40 lowercase hex digits");
  if (!HEX_RE.sha256.test(file.sha256)) fail("SHA256 is not 64 lowercase hex digits");
  if (file.sha512 !== undefined && !HEX_RE.sha512.test(file.sha512))
    fail("SHA512 is not 128 lowercase hex digits");
}

/** Splits control text into one block per field, checking what a Packages file needs. */
function blocksOfText(text: string): Block[] {
  const fail = (line: number, message: string): never => {
    throw debianError("CONTROL_INVALID", `control data, line ${line}: ${message}`, { line });
  };
  const blocks: Block[] = [];
  const seen = new Set<string>();
  let current: Block | undefined;
  let skip = false; // inside a file field being replaced
  let ended = 0; // line of a blank line that ended the paragraph
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i] ?? "";
    if (line.endsWith("\r")) line = line.slice(0, -1);
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09 || line === "") {
      const body = line.slice(1).trimEnd();
      if (body.trim() === "") {
        if (blocks.length > 0 || skip) ended ||= i + 1;
        continue;
      }
      if (ended) fail(ended, "expected one paragraph, found another");
      if (current === undefined && !skip) fail(i + 1, "a continuation line comes before any field");
      if (current) current.text += `\n ${body}`;
      continue;
    }
    if (first === 0x23) continue; // # comment, as parseDeb822 allows
    if (ended) fail(ended, "expected one paragraph, found another");
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!isValidFieldName(name)) fail(i + 1, `expected "Field: value", got ${quote(line, 60)}`);
    const key = name.toLowerCase();
    if (seen.has(key)) fail(i + 1, `duplicate field ${quote(name)}`);
    seen.add(key);
    if (FILE_FIELDS.has(key)) {
      skip = true;
      current = undefined;
      continue;
    }
    skip = false;
    const value = line.slice(colon + 1).trim();
    current = {
      rank: RANK.get(key) ?? PACKAGES_FIELD_ORDER.length + i,
      text: value === "" ? `${name}:` : `${name}: ${value}`,
    };
    blocks.push(current);
  }
  if (blocks.length === 0) throw debianError("CONTROL_INVALID", "control data is empty");
  return blocks;
}

function blocksOfParagraph(paragraph: Paragraph): Block[] {
  const blocks: Block[] = [];
  paragraph.fields.forEach((f, i) => {
    const key = f.name.toLowerCase();
    if (FILE_FIELDS.has(key)) return;
    if (!f.value.includes("\n")) {
      const text = f.value === "" ? `${f.name}:` : `${f.name}: ${f.value}`;
      blocks.push({ rank: RANK.get(key) ?? PACKAGES_FIELD_ORDER.length + i, text });
      return;
    }
    const [head = "", ...rest] = f.value.split("\n");
    let text = head === "" ? `${f.name}:` : `${f.name}: ${head}`;
    for (const line of rest) {
      if (line.trim() === "") {
        throw debianError("CONTROL_INVALID", `Field ${f.name} has an empty continuation line`);
      }
      text += `\n ${line}`;
    }
    blocks.push({ rank: RANK.get(key) ?? PACKAGES_FIELD_ORDER.length + i, text });
  });
  if (blocks.length === 0) throw debianError("CONTROL_INVALID", "control data is empty");
  return blocks;
}

// ---------------------------------------------------------------------------------------------
// Pool

const COMPONENT_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]*(?:\/[A-Za-z0-9][A-Za-z0-9._+-]*)*$/;

/** `pool/<component>/<first letter, or lib + next letter>/<source>`, Debian's pool layout. */
export function poolDirectory(component: string, source: string): string {
  if (!COMPONENT_RE.test(component)) {
    throw new KilnError("INVALID_NAME", `Invalid component name ${quote(component)}`, { component });
  }
  if (!isValidPackageName(source)) {
    throw debianError("INVALID_PACKAGE_NAME", `Invalid source package name ${quote(source)}`, {
      name: source,
    });
  }
  const prefix = source.startsWith("lib") && source.length > 3 ? source.slice(0, 4) : source.charAt(0);
  return `pool/${component}/${prefix}/${source}`;
}

// ---------------------------------------------------------------------------------------------
// Release

/** RFC 2822 in UTC, as apt-ftparchive writes it: `Sat, 10 Jun 2023 08:52:17 UTC`. */
export function formatReleaseDate(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new KilnError("INTERNAL", "Invalid date for a Release file");
  return date.toUTCString().replace(/GMT$/, "UTC");
}

/**
 * dists/<dist>/Release: the fields apt reads, then one checksum list per hash (files sorted,
 * sizes right-aligned as apt-ftparchive does). SHA512 is listed when any file has it; with
 * Acquire-By-Hash apt then fetches by-hash/SHA512/<hash> (the strongest hash listed), so the
 * publisher must write by-hash copies under that name too.
 */
export function releaseFile(input: ReleaseInput): string {
  const lines: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value === undefined) return;
    if (/[\r\n]/.test(value)) throw debianError("CONTROL_INVALID", `Release field ${name} must be one line`);
    lines.push(`${name}: ${value}`);
  };
  const word = (name: string, value: string): string => {
    if (!/^[^\s/][^\s]*$/.test(value) || value.includes("..")) {
      throw debianError("CONTROL_INVALID", `Invalid Release ${name} ${quote(value)}`);
    }
    return value;
  };
  for (const arch of input.architectures) {
    if (!isValidArchitecture(arch)) {
      throw debianError("INVALID_ARCHITECTURE", `Invalid architecture ${quote(arch)}`, {
        architecture: arch,
      });
    }
  }
  add("Origin", input.origin);
  add("Label", input.label);
  add("Suite", word("Suite", input.suite));
  add("Version", input.version);
  add("Codename", word("Codename", input.codename));
  add("Date", formatReleaseDate(input.date));
  add("Valid-Until", input.validUntil && formatReleaseDate(input.validUntil));
  if (input.acquireByHash) add("Acquire-By-Hash", "yes");
  add("Signed-By", input.signedBy);
  add("Architectures", input.architectures.join(" "));
  add("Components", input.components.map((c) => word("component", c)).join(" "));
  add("Description", input.description);

  const files = [...input.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  files.forEach((f, i) => {
    checkIndexEntry(f);
    if (files[i - 1]?.path === f.path)
      throw debianError("CONTROL_INVALID", `Release lists ${quote(f.path)} twice`);
  });
  const list = (title: string, key: "md5" | "sha1" | "sha256" | "sha512"): void => {
    const with_ = files.filter((f) => f[key] !== undefined);
    if (key === "sha512" && with_.length === 0) return;
    lines.push(`${title}:`);
    for (const f of with_) lines.push(` ${f[key] ?? ""} ${String(f.size).padStart(16)} ${f.path}`);
  };
  list("MD5Sum", "md5");
  list("SHA1", "sha1");
  list("SHA256", "sha256");
  list("SHA512", "sha512");
  return `${lines.join("\n")}\n`;
}

function checkIndexEntry(f: IndexFileEntry): void {
  const fail = (what: string): never => {
    throw debianError("CONTROL_INVALID", `Release entry ${quote(f.path)}: ${what}`);
  };
  if (!isSafeRelativePath(f.path)) fail("not a safe relative path");
  if (!Number.isSafeInteger(f.size) || f.size < 0) fail(`invalid size ${f.size}`);
  for (const key of ["md5", "sha1", "sha256", "sha512"] as const) {
    const value = f[key];
    if (value !== undefined && !HEX_RE[key].test(value))
      fail(`${key} is not lowercase hex of the right length`);
  }
}

/** dists/<dist>/<component>/binary-<arch>/Release (or source/Release). */
export function componentReleaseFile(input: ComponentReleaseInput): string {
  const lines: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value === undefined) return;
    if (!/^[^\r\n]*$/.test(value))
      throw debianError("CONTROL_INVALID", `Release field ${name} must be one line`);
    lines.push(`${name}: ${value}`);
  };
  if (!COMPONENT_RE.test(input.component)) {
    throw new KilnError("INVALID_NAME", `Invalid component name ${quote(input.component)}`);
  }
  if (!isValidArchitecture(input.architecture)) {
    throw debianError("INVALID_ARCHITECTURE", `Invalid architecture ${quote(input.architecture)}`);
  }
  add("Archive", input.archive);
  add("Codename", input.codename);
  add("Origin", input.origin);
  add("Label", input.label);
  if (input.acquireByHash === true) add("Acquire-By-Hash", "yes");
  add("Component", input.component);
  add("Architecture", input.architecture);
  return `${lines.join("\n")}\n`;
}

function isSafeRelativePath(p: string): boolean {
  return (
    p !== "" &&
    !/[\s\\]/.test(p) &&
    !p.startsWith("/") &&
    p.split("/").every((s) => s !== "" && s !== "." && s !== "..")
  );
}

// ---------------------------------------------------------------------------------------------
// Hashes and compression

/** Size and every checksum a Release file lists, in one pass over the bytes. */
export function hashBytes(data: Uint8Array): IndexHashes {
  return { ...hashBytesNoSha512(data), sha512: createHash("sha512").update(data).digest("hex") };
}

/** hashBytes() without SHA512, which Kiln's Release files do not list (a quarter of the work). */
export function hashBytesNoSha512(data: Uint8Array): Omit<IndexHashes, "sha512"> {
  const digest = (algorithm: string): string => createHash(algorithm).update(data).digest("hex");
  return { size: data.byteLength, md5: digest("md5"), sha1: digest("sha1"), sha256: digest("sha256") };
}

const gzip = promisify(zlib.gzip);

/**
 * Chosen by measurement on 12.6 MB of Debian's own Packages (16,113 paragraphs): gzip -6 takes
 * 0.17 s (2.85 MB; -1 saves 80 ms for 13% more bytes); xz -6 takes 4.9 s (2.22 MB) against 2.8 s
 * for -4 (2.40 MB) and 1.0 s for -2 (2.68 MB). Both run side by side, so xz sets the time. -6 is
 * what Debian and Aptly ship; a repository that large is rare and its indexes are rebuilt only
 * when they change. -T1 keeps the output one block whatever xz's default thread count.
 */
export const DEFAULT_COMPRESSION: Readonly<{ gzipLevel: number; xzPreset: number }> = {
  gzipLevel: 6,
  xzPreset: 6,
};

/** The .gz and .xz copies of an index. gzip runs in-process and xz as the system tool, in parallel. */
export async function compressIndex(
  data: Uint8Array,
  options: Partial<typeof DEFAULT_COMPRESSION> = {},
): Promise<{ gz: Buffer; xz: Buffer }> {
  const { gzipLevel, xzPreset } = { ...DEFAULT_COMPRESSION, ...options };
  if (!Number.isInteger(xzPreset) || xzPreset < 0 || xzPreset > 9) {
    throw new KilnError("INTERNAL", `Invalid xz preset ${xzPreset}`);
  }
  const [gz, xz] = await Promise.all([gzip(data, { level: gzipLevel }), runXz(data, xzPreset)]);
  return { gz, xz };
}

function runXz(data: Uint8Array, preset: number, dict?: number): Promise<Buffer> {
  const level = dict === undefined ? [`-${preset}`] : [`--lzma2=preset=${preset},dict=${dict}`];
  return new Promise((resolve, reject) => {
    const child = spawn("xz", ["-z", "-c", "-q", ...level, "-T1"], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString("utf8");
    });
    // A write error (EPIPE) shows up as xz's exit status, reported below.
    child.stdin.on("error", () => undefined);
    child.on("error", (err) => {
      reject(new KilnError("INTERNAL", `Cannot run xz to compress an index: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out));
      else {
        const why = signal !== null ? `signal ${signal}` : `exit code ${code}`;
        reject(new KilnError("INTERNAL", `xz failed (${why}): ${stderr.trim()}`));
      }
    });
    child.stdin.end(data);
  });
}

// ---------------------------------------------------------------------------------------------
// Indexes in pieces: compressed once, reused while unchanged

/**
 * Bounds of a piece of an index, in UTF-16 units. A piece ends after a paragraph chosen by the
 * paragraph's own text once the piece has MIN units (about one in CUT_EVERY paragraphs), or
 * after MAX units: so adding or removing a package changes the piece it falls in and, nearly
 * always, no other.
 */
const CHUNK_MIN = 128 * 1024;
const CHUNK_MAX = 512 * 1024;
const CUT_EVERY = 256;
/** xz's dictionary for a piece: as large as a piece, not -6's 8 MiB (same output ratio, less memory to set up). */
const CHUNK_XZ_DICT = CHUNK_MAX;

function cutsAfter(paragraph: string): boolean {
  // FNV-1a of the first line or so (a paragraph starts with its Package or Source field).
  let h = 0x811c9dc5;
  const end = Math.min(paragraph.length, 96);
  for (let i = 0; i < end; i++) {
    h ^= paragraph.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % CUT_EVERY === 0;
}

/**
 * An index made of `paragraphs` (each ending in "\n", joined by blank lines) cut into pieces at
 * paragraph boundaries that depend only on the paragraphs around them. The pieces joined are
 * the index text; there is always at least one (possibly empty).
 */
export function indexChunks(paragraphs: readonly string[]): string[] {
  const chunks: string[] = [];
  let parts: string[] = [];
  let length = 0;
  paragraphs.forEach((p, i) => {
    const last = i === paragraphs.length - 1;
    const text = last ? p : `${p}\n`;
    parts.push(text);
    length += text.length;
    if (!last && length >= CHUNK_MIN && (length >= CHUNK_MAX || cutsAfter(p))) {
      chunks.push(parts.join(""));
      parts = [];
      length = 0;
    }
  });
  if (parts.length > 0 || chunks.length === 0) chunks.push(parts.join(""));
  return chunks;
}

/**
 * Compressed pieces by compression settings and the piece's text, least recently used first. A
 * text as the key, not a digest of it: V8 hashes a long string by its length alone, so a lookup
 * costs one comparison of equal-length pieces, far less than hashing 10 MB for every publish.
 */
const chunkCache = new Map<string, Map<string, { gz: Buffer; xz: Buffer }>>();
const chunkOrder = new Map<string, { settings: string; bytes: number }>();
let chunkCacheBytes = 0;
const CHUNK_CACHE_MAX_BYTES = 128 * 1024 * 1024;

function rememberChunk(settings: string, text: string, value: { gz: Buffer; xz: Buffer }): void {
  const old = chunkOrder.get(text); // one text is kept under one setting at a time
  if (old) {
    chunkOrder.delete(text);
    chunkCache.get(old.settings)?.delete(text);
    chunkCacheBytes -= old.bytes;
  }
  let bySettings = chunkCache.get(settings);
  if (!bySettings) {
    bySettings = new Map<string, { gz: Buffer; xz: Buffer }>();
    chunkCache.set(settings, bySettings);
  }
  bySettings.set(text, value);
  const bytes = value.gz.length + value.xz.length + text.length;
  chunkOrder.set(text, { settings, bytes });
  chunkCacheBytes += bytes;
  for (const [t, { settings: s, bytes: b }] of chunkOrder) {
    if (chunkCacheBytes <= CHUNK_CACHE_MAX_BYTES) break;
    chunkOrder.delete(t);
    chunkCache.get(s)?.delete(t);
    chunkCacheBytes -= b;
  }
}

/**
 * Settings for pieces, by measurement on 9.7 MB of Packages (20,000 paragraphs) in 256 KiB
 * pieces: xz preset 5 with a 512 KiB dictionary takes 0.72 s of CPU (1.708 MB), preset 6 1.18 s
 * (1.710 MB; its deeper match search finds nothing more in a piece), preset 4 0.67 s (1.742 MB),
 * presets 0 to 3 0.4 s (2.13 MB). gzip -6 takes 0.11 s (2.02 MB), -1 0.05 s (2.09 MB).
 */
export const CHUNK_COMPRESSION: Readonly<{ gzipLevel: number; xzPreset: number }> = {
  gzipLevel: 6,
  xzPreset: 5,
};

/**
 * The .gz and .xz of an index given as pieces (indexChunks()): each piece is its own gzip member
 * and its own xz block (with a fresh dictionary, as `xz -T2` makes them), put together as one
 * .gz and one single-stream .xz that apt, zcat and xzcat read whole. A piece compressed before
 * in this process is not compressed again, so republishing a large index after a small change
 * recompresses a few hundred KiB; new pieces are compressed side by side on every core. The
 * output depends only on the pieces.
 */
export async function compressIndexChunks(
  chunks: readonly string[],
  options: Partial<typeof CHUNK_COMPRESSION> = {},
): Promise<{ gz: Buffer; xz: Buffer }> {
  const { gzipLevel, xzPreset } = { ...CHUNK_COMPRESSION, ...options };
  if (!Number.isInteger(xzPreset) || xzPreset < 0 || xzPreset > 9) {
    throw new KilnError("INTERNAL", `Invalid xz preset ${xzPreset}`);
  }
  const settings = `${gzipLevel}/${xzPreset}`;
  const cached = chunkCache.get(settings);
  const done = new Map<string, { gz: Buffer; xz: Buffer }>();
  const todo: string[] = [];
  for (const text of chunks) {
    if (done.has(text)) continue;
    const hit = cached?.get(text);
    if (hit) {
      const order = chunkOrder.get(text);
      if (order) {
        chunkOrder.delete(text); // most recently used goes last
        chunkOrder.set(text, order);
      }
      done.set(text, hit);
    } else if (!todo.includes(text)) todo.push(text);
  }
  // One xz per core, each given its share of the pieces as files: starting a process from a
  // hub with a large heap costs tens of milliseconds, more than compressing a piece.
  const groups = Array.from({ length: Math.min(availableParallelism(), todo.length) }, (_, g) =>
    todo.filter((_t, i) => i % Math.min(availableParallelism(), todo.length) === g),
  );
  await Promise.all(
    groups.map(async (group) => {
      const data = group.map((t) => Buffer.from(t));
      const [gzs, xzs] = await Promise.all([
        Promise.all(data.map((d) => gzip(d, { level: gzipLevel }))),
        runXzFiles(data, xzPreset, CHUNK_XZ_DICT),
      ]);
      group.forEach((text, i) => {
        const value = { gz: gzs[i] as Buffer, xz: xzs[i] as Buffer };
        done.set(text, value);
        rememberChunk(settings, text, value);
      });
    }),
  );
  const parts = chunks.map((c) => done.get(c) as { gz: Buffer; xz: Buffer });
  return { gz: Buffer.concat(parts.map((p) => p.gz)), xz: joinXzStreams(parts.map((p) => p.xz)) };
}

/** `xz` of each buffer (as files in a temporary directory, by one process), in order. */
async function runXzFiles(data: readonly Buffer[], preset: number, dict: number): Promise<Buffer[]> {
  const dir = await mkdtemp(path.join(tmpdir(), "kiln-xz-"));
  try {
    const files = data.map((_, i) => path.join(dir, String(i)));
    await Promise.all(files.map((f, i) => writeFile(f, data[i] as Buffer)));
    await new Promise<void>((resolve, reject) => {
      const args = ["-z", "-q", `--lzma2=preset=${preset},dict=${dict}`, "-T1", "--", ...files];
      const child = spawn("xz", args, { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        if (stderr.length < 4096) stderr += chunk.toString("utf8");
      });
      child.on("error", (err) => {
        reject(new KilnError("INTERNAL", `Cannot run xz to compress an index: ${err.message}`));
      });
      child.on("close", (code, signal) => {
        if (code === 0) resolve();
        else {
          const why = signal !== null ? `signal ${signal}` : `exit code ${code}`;
          reject(new KilnError("INTERNAL", `xz failed (${why}): ${stderr.trim()}`));
        }
      });
    });
    return await Promise.all(files.map((f) => readFile(`${f}.xz`)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// An .xz file holds streams of blocks; apt reads only the first stream, so the pieces' own
// streams are taken apart and their blocks put in one stream with one index. A block is
// self-contained (each starts with a fresh dictionary), as `xz -T2` makes them.
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

function readVarint(buf: Buffer, at: number): [value: number, next: number] {
  let value = 0;
  let shift = 1;
  for (let i = 0; i < 9; i++) {
    const b = buf[at + i];
    if (b === undefined) break;
    value += (b & 0x7f) * shift;
    if ((b & 0x80) === 0) return [value, at + i + 1];
    shift *= 128;
  }
  throw new KilnError("INTERNAL", "xz wrote an index Kiln cannot read");
}

function writeVarint(out: number[], value: number): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** One stream of xz's output: its flags, its blocks' bytes and their index records. */
function splitXzStream(xz: Buffer): { flags: Buffer; blocks: Buffer; records: [number, number][] } {
  const bad = (): never => {
    throw new KilnError("INTERNAL", "xz wrote a stream Kiln cannot read");
  };
  if (xz.length < 32 || !xz.subarray(0, 6).equals(XZ_MAGIC)) bad();
  const footer = xz.subarray(xz.length - 12);
  if (footer[10] !== 0x59 || footer[11] !== 0x5a) bad(); // "YZ": one stream, no padding after it
  const indexSize = (footer.readUInt32LE(4) + 1) * 4;
  const indexStart = xz.length - 12 - indexSize;
  if (indexStart < 12 || xz[indexStart] !== 0x00) bad();
  let [count, at] = readVarint(xz, indexStart + 1);
  const records: [number, number][] = [];
  while (count-- > 0) {
    const [unpadded, a1] = readVarint(xz, at);
    const [uncompressed, a2] = readVarint(xz, a1);
    records.push([unpadded, uncompressed]);
    at = a2;
  }
  return { flags: xz.subarray(6, 8), blocks: xz.subarray(12, indexStart), records };
}

/** Streams made with the same settings, as one stream of all their blocks in order. */
export function joinXzStreams(streams: readonly Buffer[]): Buffer {
  if (streams.length === 1) return streams[0] as Buffer;
  const parts = streams.map(splitXzStream);
  const flags = parts[0]?.flags ?? Buffer.from([0x00, 0x04]);
  const index: number[] = [0x00];
  writeVarint(
    index,
    parts.reduce((n, p) => n + p.records.length, 0),
  );
  for (const p of parts) {
    if (!p.flags.equals(flags)) throw new KilnError("INTERNAL", "xz streams with different checks");
    for (const [unpadded, uncompressed] of p.records) {
      writeVarint(index, unpadded);
      writeVarint(index, uncompressed);
    }
  }
  while (index.length % 4 !== 0) index.push(0);
  const indexBuf = Buffer.from(index);
  const indexCrc = Buffer.alloc(4);
  indexCrc.writeUInt32LE(zlib.crc32(indexBuf));
  const header = Buffer.alloc(12);
  XZ_MAGIC.copy(header);
  flags.copy(header, 6);
  header.writeUInt32LE(zlib.crc32(flags), 8);
  const footer = Buffer.alloc(12);
  footer.writeUInt32LE((indexBuf.length + 4) / 4 - 1, 4);
  flags.copy(footer, 8);
  footer.writeUInt32LE(zlib.crc32(footer.subarray(4, 10)), 0);
  footer.write("YZ", 10, "latin1");
  return Buffer.concat([header, ...parts.map((p) => p.blocks), indexBuf, indexCrc, footer]);
}
