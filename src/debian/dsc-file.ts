/**
 * Debian source control files (.dsc): reading one, and the Sources index paragraph made from it.
 */
import { debianError, quote } from "./debian-error.js";
import { formatParagraph, getField, parseParagraph, SOURCES_FIELD_ORDER, type Paragraph } from "./deb822.js";
import { isValidArchitecture, isValidPackageName, isValidVersion } from "./version.js";

export interface DscFileRef {
  name: string;
  size: number;
  md5?: string;
  sha1?: string;
  sha256?: string;
}

export interface DscInfo {
  source: string;
  version: string;
  format: string;
  /** As written: a space-separated list such as "any" or "amd64 all"; "" when the .dsc has none. */
  architecture: string;
  binary: string[];
  /** The files the .dsc lists (not the .dsc itself), in the order of its Files field. */
  files: DscFileRef[];
  paragraph: Paragraph;
  /** the control text without any OpenPGP armor */
  text: string;
}

// A .dsc is small; a much bigger one is not a .dsc.
const MAX_DSC_BYTES = 4 * 1024 * 1024;

const CHECKSUM_FIELDS = [
  { field: "Files", key: "md5", length: 32 },
  { field: "Checksums-Sha1", key: "sha1", length: 40 },
  { field: "Checksums-Sha256", key: "sha256", length: 64 },
] as const;

/**
 * Reads a .dsc, plain or clear-signed (the armor is removed, the signature is NOT verified).
 * Checks the names, version and architectures by Debian's rules, refuses listed file names that
 * could leave the directory (ARCHIVE_UNSAFE), and requires Checksums-Sha256 or Files, with the
 * lists agreeing on names and sizes. `name` names the file in error messages.
 */
export function parseDsc(text: string, name = ".dsc"): DscInfo {
  const body = stripClearsign(text, name);
  const paragraph = parseParagraph(body, { source: name, limits: { maxBytes: MAX_DSC_BYTES } });
  const required = (field: string): string => {
    const value = getField(paragraph, field);
    if (value === undefined || value.trim() === "") {
      throw debianError("CONTROL_INVALID", `${name}: missing required field ${field}`, { field });
    }
    return value.trim();
  };

  const format = required("Format");
  const source = required("Source");
  if (!isValidPackageName(source)) {
    throw debianError("INVALID_PACKAGE_NAME", `${name}: invalid Source ${quote(source)}`, { name: source });
  }
  const version = required("Version");
  if (!isValidVersion(version)) {
    throw debianError("INVALID_VERSION", `${name}: invalid Version ${quote(version)}`, { version });
  }
  const architecture = (getField(paragraph, "Architecture") ?? "").trim().split(/\s+/).filter(Boolean);
  for (const arch of architecture) {
    if (!isValidArchitecture(arch)) {
      throw debianError("INVALID_ARCHITECTURE", `${name}: invalid architecture ${quote(arch)}`, {
        architecture: arch,
      });
    }
  }
  const binary = (getField(paragraph, "Binary") ?? "")
    .split(",")
    .map((b) => b.trim())
    .filter(Boolean);
  for (const b of binary) {
    if (!isValidPackageName(b)) {
      throw debianError("INVALID_PACKAGE_NAME", `${name}: invalid binary package name ${quote(b)}`, {
        name: b,
      });
    }
  }

  return {
    source,
    version,
    format,
    architecture: architecture.join(" "),
    binary,
    files: readFileLists(paragraph, name),
    paragraph,
    text: body,
  };
}

/** Merges Files, Checksums-Sha1 and Checksums-Sha256 into one entry per file. */
function readFileLists(paragraph: Paragraph, name: string): DscFileRef[] {
  const fail = (message: string, details?: Record<string, unknown>): never => {
    throw debianError("CONTROL_INVALID", `${name}: ${message}`, details);
  };
  if (getField(paragraph, "Checksums-Sha256") === undefined && getField(paragraph, "Files") === undefined) {
    fail("it has neither Checksums-Sha256 nor Files");
  }
  const byName = new Map<string, DscFileRef>();
  let firstList: string | undefined;
  for (const { field, key, length } of CHECKSUM_FIELDS) {
    const value = getField(paragraph, field);
    if (value === undefined) continue;
    const seen = new Set<string>();
    for (const line of value.split("\n")) {
      if (line.trim() === "") continue;
      const parts = line.trim().split(/\s+/);
      const [hash = "", sizeText = "", file = ""] = parts;
      if (parts.length !== 3) fail(`${field}: expected "checksum size name", got ${quote(line.trim())}`);
      if (hash.length !== length || !/^[0-9a-fA-F]+$/.test(hash)) {
        fail(`${field}: ${quote(hash)} is not a ${length}-digit hex checksum`);
      }
      if (!/^[0-9]+$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
        fail(`${field}: invalid size ${quote(sizeText)} for ${quote(file)}`);
      }
      assertSafeFileName(file, name);
      if (seen.has(file)) fail(`${field} lists ${quote(file)} twice`);
      seen.add(file);
      const size = Number(sizeText);
      let ref = byName.get(file);
      if (ref === undefined) {
        if (firstList !== undefined) fail(`${field} lists ${quote(file)}, which ${firstList} does not`);
        ref = { name: file, size };
        byName.set(file, ref);
      } else if (ref.size !== size) {
        fail(`${field} gives ${quote(file)} the size ${size}, another list ${ref.size}`, { file });
      }
      ref[key] = hash.toLowerCase();
    }
    if (firstList !== undefined) {
      const missing = [...byName.keys()].find((f) => !seen.has(f));
      if (missing !== undefined) fail(`${field} does not list ${quote(missing)}, which ${firstList} does`);
    }
    firstList ??= field;
  }
  if (byName.size === 0) fail("it lists no files");
  return [...byName.values()];
}

/** A file name a .dsc (or a Sources index) may list: a plain name, never a path. */
function assertSafeFileName(file: string, source: string): void {
  if (
    file === "" ||
    file.includes("/") ||
    file.includes("\\") ||
    file.startsWith(".") ||
    file.includes("..")
  ) {
    throw debianError("ARCHIVE_UNSAFE", `${source}: unsafe file name ${quote(file)}`, { file });
  }
}

const BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE = "-----END PGP SIGNATURE-----";

/**
 * The signed text of a clear-signed message (RFC 4880 §7), dash-escaping undone; plain text is
 * returned as it is. Text outside the armor is refused: it would look signed without being so.
 */
function stripClearsign(text: string, name: string): string {
  const lines = text.split("\n").map((l) => l.replace(/\r$/, ""));
  let i = 0;
  while (i < lines.length && (lines[i] ?? "").trim() === "") i++;
  if (lines[i] !== BEGIN_SIGNED) {
    if (text.includes("-----BEGIN PGP")) {
      throw debianError("CONTROL_INVALID", `${name}: OpenPGP armor in an unexpected place`);
    }
    return text;
  }
  const fail = (message: string): never => {
    throw debianError("CONTROL_INVALID", `${name}: malformed clear-signed message: ${message}`);
  };
  i++;
  while (i < lines.length && (lines[i] ?? "") !== "") {
    if (!/^[A-Za-z]+: /.test(lines[i] ?? "")) fail(`bad armor header ${quote(lines[i] ?? "")}`);
    i++;
  }
  if (i >= lines.length) fail("no blank line after the armor headers");
  i++;
  const body: string[] = [];
  for (;;) {
    if (i >= lines.length) return fail("no signature");
    const line = lines[i++] ?? "";
    if (line === BEGIN_SIGNATURE) break;
    if (line.startsWith("-")) {
      if (!line.startsWith("- ")) fail(`line ${i} starts with "-" but is not dash-escaped`);
      body.push(line.slice(2));
    } else {
      body.push(line);
    }
  }
  while (i < lines.length && lines[i] !== END_SIGNATURE) i++;
  if (i >= lines.length) fail("the signature is not terminated");
  if (lines.slice(i + 1).some((l) => l.trim() !== "")) fail("text after the signature");
  return `${body.join("\n").replace(/\n+$/, "")}\n`;
}

/**
 * The Sources index paragraph for a .dsc, as apt-ftparchive and Aptly write it: Source becomes
 * Package, Directory is added, and Files/Checksums-* list the .dsc itself first and then its
 * files (a list only when every file has that checksum). Ends in "\n".
 */
export function sourcesStanza(
  dsc: DscInfo,
  input: {
    directory: string;
    dscFile: { name: string; size: number; md5: string; sha1: string; sha256: string };
  },
): string {
  const { directory, dscFile } = input;
  if (
    directory === "" ||
    directory.startsWith("/") ||
    /\s/.test(directory) ||
    directory.split("/").some((s) => s === "" || s === "." || s === "..")
  ) {
    throw debianError("ARCHIVE_UNSAFE", `Unsafe Sources directory ${quote(directory)}`, { directory });
  }
  assertSafeFileName(dscFile.name, "Sources");
  const all: DscFileRef[] = [dscFile, ...dsc.files];
  const list = (key: "md5" | "sha1" | "sha256"): string | undefined => {
    if (!all.every((f) => f[key] !== undefined)) return undefined;
    return all.map((f) => `\n${f[key] ?? ""} ${f.size} ${f.name}`).join("");
  };

  const replaced = new Set([
    "source",
    "files",
    "checksums-md5",
    "checksums-sha1",
    "checksums-sha256",
    "checksums-sha512",
  ]);
  const entries: Array<[string, string]> = [["Package", dsc.source]];
  for (const f of dsc.paragraph.fields) {
    if (!replaced.has(f.name.toLowerCase()) && f.name.toLowerCase() !== "directory")
      entries.push([f.name, f.value]);
  }
  entries.push(["Directory", directory]);
  for (const [field, key] of [
    ["Files", "md5"],
    ["Checksums-Sha1", "sha1"],
    ["Checksums-Sha256", "sha256"],
  ] as const) {
    const value = list(key);
    if (value !== undefined) entries.push([field, value]);
  }
  return formatParagraph(entries, SOURCES_FIELD_ORDER);
}
