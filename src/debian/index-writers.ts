/**
 * Writers for the APT repository index files: Packages paragraphs, pool paths, Release files,
 * their checksums and compressed copies. Pure, except compressIndex(), which runs `xz`.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
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
    { rank: FILE_RANK.filename, text: `Filename: ${file.filename}` },
    { rank: FILE_RANK.size, text: `Size: ${file.size}` },
    { rank: FILE_RANK.md5, text: `MD5sum: ${file.md5}` },
    { rank: FILE_RANK.sha1, text: `SHA1: ${file.sha1}` },
    { rank: FILE_RANK.sha256, text: `SHA256: ${file.sha256}` },
  );
  if (file.sha512 !== undefined) blocks.push({ rank: FILE_RANK.sha512, text: `SHA512: ${file.sha512}` });
  blocks.sort((a, b) => a.rank - b.rank);
  // Joined, not concatenated: one flat string, where `+=` would leave a tree of a few dozen
  // pieces behind every stanza the publisher keeps.
  const lines = blocks.map((b) => b.text);
  lines.push("");
  return lines.join("\n");
}

function rankOf(name: string): number {
  return RANK.get(name.toLowerCase()) ?? 0;
}

const FILE_RANK = {
  filename: rankOf("Filename"),
  size: rankOf("Size"),
  md5: rankOf("MD5sum"),
  sha1: rankOf("SHA1"),
  sha256: rankOf("SHA256"),
  sha512: rankOf("SHA512"),
};

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

/** Rank and lower-case name of the fields of PACKAGES_FIELD_ORDER, as they are usually spelt. */
const KNOWN = new Map(PACKAGES_FIELD_ORDER.map((name, i) => [name, { rank: i, key: name.toLowerCase() }]));

/** A printable ASCII character other than space: what trim() never removes. */
const isGraphic = (code: number): boolean => code > 0x20 && code < 0x7f;

/**
 * Splits control text into one block per field, checking what a Packages file needs. Called
 * for every package a publish lists for the first time, so a line already in its Packages form
 * ("Name: value", or " continued") is taken as it is instead of trimmed and put together again.
 */
function blocksOfText(text: string): Block[] {
  const fail = (line: number, message: string): never => {
    throw debianError("CONTROL_INVALID", `control data, line ${line}: ${message}`, { line });
  };
  const blocks: Block[] = [];
  const seen = new Set<string>();
  let current: Block | undefined;
  let skip = false; // inside a file field being replaced
  let ended = 0; // line of a blank line that ended the paragraph
  for (let i = 0, at = 0; at <= text.length; i++) {
    const eol = text.indexOf("\n", at);
    let line = text.slice(at, eol === -1 ? text.length : eol);
    at = eol === -1 ? text.length + 1 : eol + 1;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09 || line === "") {
      const plain = first === 0x20 && isGraphic(line.charCodeAt(line.length - 1));
      const body = plain ? line.slice(1) : line.slice(1).trimEnd();
      if (!plain && body.trim() === "") {
        if (blocks.length > 0 || skip) ended ||= i + 1;
        continue;
      }
      if (ended) fail(ended, "expected one paragraph, found another");
      if (current === undefined && !skip) fail(i + 1, "a continuation line comes before any field");
      if (current) current.text += plain ? `\n${line}` : `\n ${body}`;
      continue;
    }
    if (first === 0x23) continue; // # comment, as parseDeb822 allows
    if (ended) fail(ended, "expected one paragraph, found another");
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!isValidFieldName(name)) fail(i + 1, `expected "Field: value", got ${quote(line, 60)}`);
    const known = KNOWN.get(name);
    const key = known?.key ?? name.toLowerCase();
    if (seen.has(key)) fail(i + 1, `duplicate field ${quote(name)}`);
    seen.add(key);
    if (FILE_FIELDS.has(key)) {
      skip = true;
      current = undefined;
      continue;
    }
    skip = false;
    const rank = known?.rank ?? RANK.get(key) ?? PACKAGES_FIELD_ORDER.length + i;
    if (
      line.charCodeAt(colon + 1) === 0x20 &&
      isGraphic(line.charCodeAt(colon + 2)) &&
      isGraphic(line.charCodeAt(line.length - 1))
    ) {
      current = { rank, text: line }; // "Name: value" already
    } else {
      const value = line.slice(colon + 1).trim();
      current = { rank, text: value === "" ? `${name}:` : `${name}: ${value}` };
    }
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
  if (p === "" || /[\s\\]/.test(p)) return false;
  // Every segment non-empty (so no leading, trailing or double "/") and not "." or "..".
  for (let start = 0; ;) {
    const end = p.indexOf("/", start);
    const length = (end === -1 ? p.length : end) - start;
    if (length === 0) return false;
    if (length <= 2 && p.charCodeAt(start) === 0x2e && (length === 1 || p.charCodeAt(start + 1) === 0x2e))
      return false;
    if (end === -1) return true;
    start = end + 1;
  }
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
  return spawnXz(["-z", "-c", "-q", ...level, "-T1"], [data]);
}

/** Runs `xz ARGS` with `input` on its stdin; resolves with what it wrote. */
function spawnXz(args: string[], input: readonly Uint8Array[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn("xz", args, { stdio: ["pipe", "pipe", "pipe"] });
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
    for (const d of input) child.stdin.write(d);
    child.stdin.end();
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
/** xz's filter for a piece: a dictionary as large as a piece, not the preset's (same output, less memory to set up). */
const chunkXzFilter = (preset: number): string => `preset=${preset},dict=${CHUNK_MAX}`;

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
  let start = 0;
  let length = 0; // of the piece so far, with the "\n" after each paragraph
  for (let i = 0; i < paragraphs.length - 1; i++) {
    const p = paragraphs[i] as string;
    length += p.length + 1;
    if (length >= CHUNK_MIN && (length >= CHUNK_MAX || cutsAfter(p))) {
      chunks.push(`${paragraphs.slice(start, i + 1).join("\n")}\n`);
      start = i + 1;
      length = 0;
    }
  }
  if (start < paragraphs.length || chunks.length === 0) chunks.push(paragraphs.slice(start).join("\n"));
  return chunks;
}

/**
 * Compressed pieces by compression settings and the piece's text, least recently used first. A
 * text as the key, not a digest of it: V8 hashes a long string by its length alone, so a lookup
 * costs one comparison of equal-length pieces, far less than hashing 10 MB for every publish.
 */
/** A piece compressed: its gzip member, and its xz block(s) with their index records. */
interface CompressedChunk {
  gz: Buffer;
  xz: XzPart;
}

const chunkCache = new Map<string, Map<string, CompressedChunk>>();
const chunkOrder = new Map<string, { settings: string; bytes: number }>();
let chunkCacheBytes = 0;
const CHUNK_CACHE_MAX_BYTES = 128 * 1024 * 1024;

function rememberChunk(settings: string, text: string, value: CompressedChunk): void {
  const old = chunkOrder.get(text); // one text is kept under one setting at a time
  if (old) {
    chunkOrder.delete(text);
    chunkCache.get(old.settings)?.delete(text);
    chunkCacheBytes -= old.bytes;
  }
  let bySettings = chunkCache.get(settings);
  if (!bySettings) {
    bySettings = new Map<string, CompressedChunk>();
    chunkCache.set(settings, bySettings);
  }
  bySettings.set(text, value);
  const bytes = value.gz.length + value.xz.blocks.length + text.length;
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
 * Settings for pieces, by measurement on 9.7 MB of Packages (20,000 paragraphs of the publish
 * benchmark) in 300 KiB pieces, xz with a 512 KiB dictionary, CPU seconds: preset 5 1.00 s
 * (1.740 MB), preset 5 with the hash-chain match finder 0.67 s (1.740 MB), preset 1 0.38 s
 * (2.117 MB), preset 3 0.48 s (2.093 MB). On 12.6 MB of Debian's bookworm Packages in 400 kB
 * pieces: preset 5 1.63 s (2.506 MB), with mf=hc4 1.13 s (2.545 MB), preset 1 0.49 s (2.895 MB).
 * gzip -6 takes 0.10 s (2.014 MB), -5 0.08 s (2.018 MB), -1 0.06 s (2.10 MB); on Debian's,
 * -6 0.16 s (2.875 MB), -5 0.13 s (2.903 MB).
 *
 * A first publish of a large repo compresses every piece while its pool is made, and both
 * compete for the same cores: xz's fast mode (preset 1) costs 15-20% more bytes of Packages.xz
 * than the normal mode's best, for a third of the CPU time; gzip -5 1% more than -6, for a fifth
 * less. Pieces stay compressed between publishes (see chunkCache), so later publishes recompress
 * only what changed either way.
 */
export const CHUNK_COMPRESSION: Readonly<{ gzipLevel: number; xzPreset: number }> = {
  gzipLevel: 5,
  xzPreset: 1,
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
  const settings = `${gzipLevel}/${chunkXzFilter(xzPreset)}`;
  const cached = chunkCache.get(settings);
  const done = new Map<string, CompressedChunk>();
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
  // One xz per core, each given its share of the pieces on its input, one block each: starting
  // a process from a hub with a large heap costs tens of milliseconds, more than compressing a piece.
  const groups = Array.from({ length: Math.min(availableParallelism(), todo.length) }, (_, g) =>
    todo.filter((_t, i) => i % Math.min(availableParallelism(), todo.length) === g),
  );
  await Promise.all(
    groups.map(async (group) => {
      const data = group.map((t) => Buffer.from(t));
      // xz first: it takes several times gzip's time.
      const xzs = runXzBlocks(data, chunkXzFilter(xzPreset));
      xzs.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
      const gzs = await Promise.all(data.map((d) => gzip(d, { level: gzipLevel })));
      const xzOut = await xzs;
      group.forEach((text, i) => {
        const value = { gz: gzs[i] as Buffer, xz: xzOut[i] as XzPart };
        done.set(text, value);
        rememberChunk(settings, text, value);
      });
    }),
  );
  const parts = chunks.map((c) => done.get(c) as CompressedChunk);
  return { gz: Buffer.concat(parts.map((p) => p.gz)), xz: xzStreamOf(parts.map((p) => p.xz)) };
}

/**
 * `xz` of each buffer as a block of its own (`--block-list`: a fresh dictionary each, as
 * `xz -T2` makes them), by one process reading them in a row, in order. An empty buffer has no
 * block.
 */
async function runXzBlocks(data: readonly Buffer[], lzma2: string): Promise<XzPart[]> {
  const input = data.filter((d) => d.length > 0);
  if (input.length === 0) return data.map(() => EMPTY_XZ_PART);
  const sizes = input.map((d) => d.length).join(",");
  const out = await spawnXz(["-z", "-c", "-q", `--lzma2=${lzma2}`, "-T1", `--block-list=${sizes}`], input);
  const blocks = xzBlocksOf(out);
  if (blocks.length !== input.length || blocks.some((b, i) => b.records[0]?.[1] !== input[i]?.length)) {
    throw new KilnError("INTERNAL", "xz did not cut its output where it was asked to");
  }
  let next = 0;
  return data.map((d) => (d.length > 0 ? (blocks[next++] as XzPart) : EMPTY_XZ_PART));
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

/** Blocks of an xz stream: the stream's flags, the blocks' bytes and their index records. */
interface XzPart {
  flags: Buffer;
  blocks: Buffer;
  records: [unpadded: number, uncompressed: number][];
}

/** No block: what an empty piece compresses to (flags of xz's default check, CRC64). */
const EMPTY_XZ_PART: XzPart = { flags: Buffer.from([0x00, 0x04]), blocks: Buffer.alloc(0), records: [] };

/** One stream of xz's output: its flags, its blocks' bytes and their index records. */
function splitXzStream(xz: Buffer): XzPart {
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
  const blocks = xz.subarray(12, indexStart);
  if (records.reduce((n, [unpadded]) => n + Math.ceil(unpadded / 4) * 4, 0) !== blocks.length) bad();
  return { flags: xz.subarray(6, 8), blocks, records };
}

/** Each block of a stream, as a part of its own. */
function xzBlocksOf(stream: Buffer): XzPart[] {
  const { flags, blocks, records } = splitXzStream(stream);
  let at = 0;
  return records.map((record) => {
    const size = Math.ceil(record[0] / 4) * 4; // a block is padded to four bytes
    const part = { flags, blocks: blocks.subarray(at, at + size), records: [record] };
    at += size;
    return part;
  });
}

/** Streams made with the same settings, as one stream of all their blocks in order. */
export function joinXzStreams(streams: readonly Buffer[]): Buffer {
  if (streams.length === 1) return streams[0] as Buffer;
  return xzStreamOf(streams.map(splitXzStream));
}

/** One stream of the parts' blocks, in order, with one index. */
function xzStreamOf(parts: readonly XzPart[]): Buffer {
  const flags = parts.find((p) => p.records.length > 0)?.flags ?? EMPTY_XZ_PART.flags;
  const index: number[] = [0x00];
  writeVarint(
    index,
    parts.reduce((n, p) => n + p.records.length, 0),
  );
  for (const p of parts) {
    if (p.records.length > 0 && !p.flags.equals(flags))
      throw new KilnError("INTERNAL", "xz streams with different checks");
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
