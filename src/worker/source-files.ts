/**
 * Reading what a Debian source package is made of, for the build handlers: a .dsc's name,
 * version, architectures and files; the binary architectures of debian/control; and a checked
 * listing of an uploaded source tarball (nothing is extracted here: tar does that, in the
 * sandbox, once the listing has passed).
 */
import { createReadStream } from "node:fs";
import { parseLatestChangelogEntry, type ChangelogEntry } from "../debian/changelog.js";
import { getField, parseDeb822, parseParagraph } from "../debian/deb822.js";
import { decompress } from "../debian/decompress.js";
import { DEFAULT_TAR_LIMITS, readTar, type TarLimits } from "../debian/tar.js";
import { isValidArchitecture, isValidPackageName, isValidVersion, parseVersion } from "../debian/version.js";
import { KilnError } from "../errors/catalogue.js";
import { isPlainFileName } from "./build-files.js";
import { TaskFailure } from "./handler.js";

function invalid(message: string): TaskFailure {
  return new TaskFailure("SOURCE_INVALID", message);
}

/** A Debian parser's error (a KilnError with its own stable code) as the task's failure. */
export function asSourceFailure(err: unknown, what: string): unknown {
  if (err instanceof KilnError) return new TaskFailure(err.code, `${what}: ${err.message}`);
  return err;
}

export interface DscInfo {
  source: string;
  version: string;
  /** The Architecture field: what dpkg-source gathered from debian/control's binary packages. */
  architectures: string[];
  /** Every file it lists, with the sizes and sha256 sums it gives. */
  files: { name: string; size: number; sha256: string }[];
}

/** The signed text of a clear-signed message (dash-escaping undone), or the text as it is. */
function stripSignature(text: string): string {
  const lines = text.split(/\r?\n/);
  if (lines[0]?.trim() !== "-----BEGIN PGP SIGNED MESSAGE-----") return text;
  const blank = lines.findIndex((l, i) => i > 0 && l.trim() === "");
  const end = lines.findIndex((l) => l.trim() === "-----BEGIN PGP SIGNATURE-----");
  if (blank === -1 || end === -1 || end < blank)
    throw invalid("the .dsc has a broken OpenPGP signature block");
  return lines
    .slice(blank + 1, end)
    .map((l) => (l.startsWith("- ") ? l.slice(2) : l))
    .join("\n");
}

function fileLines(field: string | undefined, what: string): { sum: string; size: number; name: string }[] {
  return (field ?? "")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((line) => {
      const parts = line.trim().split(/\s+/);
      const [sum = "", size = "", name = ""] = parts;
      if (parts.length !== 3 || !/^\d+$/.test(size))
        throw invalid(`${what}: cannot read the line ${JSON.stringify(line.trim())}`);
      // The files sit beside the .dsc: a name with a path in it would reach elsewhere.
      if (!isPlainFileName(name))
        throw invalid(`${what} lists ${JSON.stringify(name)}, which is not a plain file name`);
      return { sum: sum.toLowerCase(), size: Number(size), name };
    });
}

/**
 * Parses a .dsc (clear-signed or not). Every file must have a SHA-256 sum (Checksums-Sha256),
 * and the files `Files:` lists (MD5) must be the same ones.
 */
export function parseDsc(text: string, what = "the .dsc"): DscInfo {
  let para;
  try {
    para = parseParagraph(stripSignature(text), { source: what });
  } catch (err) {
    throw asSourceFailure(err, `${what} cannot be read`);
  }
  const source = getField(para, "Source") ?? "";
  const version = getField(para, "Version") ?? "";
  if (!isValidPackageName(source))
    throw invalid(`${what}: Source ${JSON.stringify(source)} is not a valid package name`);
  if (!isValidVersion(version))
    throw invalid(`${what}: Version ${JSON.stringify(version)} is not a valid Debian version`);
  const architectures = splitArchitectures(getField(para, "Architecture") ?? "", what);
  const sha = fileLines(getField(para, "Checksums-Sha256"), `${what}, Checksums-Sha256`);
  const md5 = fileLines(getField(para, "Files"), `${what}, Files`);
  if (sha.length === 0)
    throw invalid(`${what} has no Checksums-Sha256 field; rebuild it with a current dpkg-source`);
  for (const f of sha) {
    if (!/^[0-9a-f]{64}$/.test(f.sum)) throw invalid(`${what}: ${f.name} has a malformed SHA-256 sum`);
  }
  const names = new Set(sha.map((f) => f.name));
  if (names.size !== sha.length) throw invalid(`${what} lists a file twice in Checksums-Sha256`);
  for (const f of md5) {
    const other = sha.find((s) => s.name === f.name);
    if (!other) throw invalid(`${what} lists ${f.name} in Files but not in Checksums-Sha256`);
    if (other.size !== f.size)
      throw invalid(`${what} gives ${f.name} two sizes (${f.size} and ${other.size})`);
  }
  return {
    source,
    version,
    architectures,
    files: sha.map((f) => ({ name: f.name, size: f.size, sha256: f.sum })),
  };
}

function splitArchitectures(field: string, what: string): string[] {
  const out: string[] = [];
  for (const arch of field.split(/\s+/).filter(Boolean)) {
    if (!isValidArchitecture(arch)) throw invalid(`${what}: ${JSON.stringify(arch)} is not an architecture`);
    if (!out.includes(arch)) out.push(arch);
  }
  return out;
}

/** The Architecture values of debian/control's binary packages, each once, in order. */
export function controlArchitectures(text: string): string[] {
  let paragraphs;
  try {
    paragraphs = parseDeb822(text, { source: "debian/control" });
  } catch (err) {
    throw asSourceFailure(err, "debian/control cannot be read");
  }
  const binaries = paragraphs.slice(1);
  if (paragraphs[0] === undefined || getField(paragraphs[0], "Source") === undefined) {
    throw invalid("debian/control does not start with a Source paragraph");
  }
  if (binaries.length === 0) throw invalid("debian/control has no binary package (no Package paragraph)");
  const out: string[] = [];
  for (const p of binaries) {
    const name = getField(p, "Package") ?? `paragraph at line ${p.line}`;
    const arch = getField(p, "Architecture");
    if (arch === undefined || arch.trim() === "")
      throw invalid(`debian/control: ${name} has no Architecture field`);
    for (const a of splitArchitectures(arch, `debian/control, ${name}`)) if (!out.includes(a)) out.push(a);
  }
  return out;
}

/** `1:2.0-3` → `2.0-3`: how versions appear in file names. */
export function versionWithoutEpoch(version: string): string {
  const colon = version.indexOf(":");
  return colon >= 0 ? version.slice(colon + 1) : version;
}

/** `1:2.0-3` → `2.0`. */
export function upstreamVersion(version: string): string {
  return parseVersion(version).upstream;
}

export interface SourceTarball {
  /** The directory in the archive that holds debian/ ("" for the top; no trailing slash). */
  root: string;
  changelog: ChangelogEntry;
  /** debian/control's text. */
  control: string;
  /** debian/source/format's first line ("1.0" when there is none, as dpkg-source assumes). */
  format: string;
  entries: number;
}

export const SOURCE_TAR_LIMITS: TarLimits = { ...DEFAULT_TAR_LIMITS, maxContentSize: 4 * 1024 * 1024 };

/**
 * Lists an uploaded .tar.gz of an unpacked source tree and checks it is safe for tar to extract:
 * no absolute or `..` paths (the reader refuses them), no devices or FIFOs, no entry placed
 * through a symlink the archive made, within the entry and size limits. Finds the tree's top
 * (debian/ at the top, or in a single top directory) and reads debian/changelog, debian/control
 * and debian/source/format from it.
 */
export async function inspectSourceTarball(
  file: string,
  name: string,
  limits: TarLimits = SOURCE_TAR_LIMITS,
): Promise<SourceTarball> {
  const wanted = (p: string) => /(^|\/)debian\/(changelog|control|source\/format)$/.test(p);
  const contents = new Map<string, Buffer>();
  const types = new Map<string, string>();
  const symlinks = new Set<string>();
  let entries = 0;
  try {
    const data = decompress(createReadStream(file), "gzip", {
      maxBytes: limits.maxTotalSize + 64 * 1024 * 1024,
      name,
    });
    for await (const entry of readTar(data, { limits, name, readContent: (e) => wanted(logical(e.path)) })) {
      entries++;
      const p = logical(entry.path);
      if (p === "") continue; // "./" itself
      if (
        entry.type !== "file" &&
        entry.type !== "directory" &&
        entry.type !== "symlink" &&
        entry.type !== "hardlink"
      ) {
        throw invalid(
          `${name}: ${JSON.stringify(entry.path)} is a ${entry.type}, which has no place in a source package`,
        );
      }
      // tar would follow a symlink made earlier by the archive itself: `a -> /etc` then `a/x`.
      const through = [p, ...(entry.type === "hardlink" ? [logical(entry.linkTarget ?? "")] : [])].find((q) =>
        passesThrough(q, symlinks),
      );
      if (through !== undefined) {
        throw new TaskFailure(
          "ARCHIVE_UNSAFE",
          `${name}: refused ${JSON.stringify(entry.path)}: it lies beyond a symbolic link of the archive`,
        );
      }
      if (entry.type === "symlink") symlinks.add(p);
      else symlinks.delete(p);
      types.set(p, entry.type);
      if (entry.content !== undefined) contents.set(p, entry.content);
      else contents.delete(p);
    }
  } catch (err) {
    throw asSourceFailure(err, "the source tarball cannot be used");
  }

  let root: string;
  if (types.get("debian/changelog") !== undefined) root = "";
  else {
    const tops = new Set([...types.keys()].map((p) => p.split("/")[0] ?? ""));
    const [top] = tops;
    if (tops.size !== 1 || top === undefined || types.get(`${top}/debian/changelog`) === undefined) {
      throw invalid(
        `${name} has no debian/changelog, neither at its top nor in a single top directory; pack the directory that contains debian/`,
      );
    }
    root = top;
  }
  const at = (rel: string) => (root === "" ? rel : `${root}/${rel}`);
  const text = (rel: string): string | undefined => {
    const type = types.get(at(rel));
    if (type === undefined) return undefined;
    if (type !== "file") throw invalid(`${name}: ${rel} must be a regular file, not a ${type}`);
    return contents.get(at(rel))?.toString("utf8");
  };
  const changelogText = text("debian/changelog");
  const control = text("debian/control");
  if (changelogText === undefined) throw invalid(`${name} has no debian/changelog`);
  if (control === undefined)
    throw invalid(`${name} has no debian/control, which lists the packages to build`);
  let changelog: ChangelogEntry;
  try {
    changelog = parseLatestChangelogEntry(changelogText);
  } catch (err) {
    throw asSourceFailure(err, "debian/changelog cannot be read");
  }
  const format = (text("debian/source/format") ?? "1.0").split("\n")[0]?.trim() || "1.0";
  return { root, changelog, control, format, entries };
}

/** `./a//b/` → `a/b`: the path tar will create, for comparisons. */
function logical(p: string): string {
  return p
    .split("/")
    .filter((s) => s !== "" && s !== ".")
    .join("/");
}

function passesThrough(p: string, symlinks: Set<string>): boolean {
  if (symlinks.size === 0) return false;
  const parts = p.split("/");
  for (let i = 1; i < parts.length; i++) if (symlinks.has(parts.slice(0, i).join("/"))) return true;
  return false;
}
