/**
 * What `kiln build SOURCE` sends: SOURCE named as a directory with debian/, a .dsc, or a git
 * URL#REF; checking it, packing a directory with tar, reading the files a .dsc lists, cloning.
 */
import { spawn } from "node:child_process";
import { readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pathToFileURL } from "node:url";
import { getField, parseParagraph } from "../debian/deb822.js";
import { KilnError } from "../errors/catalogue.js";

export type SourceSpec =
  | { kind: "dir"; path: string }
  | { kind: "dsc"; path: string }
  /** `display` is what the user wrote; `url` what git is given. */
  | { kind: "git"; url: string; ref: string; display: string };

const WHAT_SOURCE =
  "kiln build takes the top directory of a Debian source package (the one that contains debian/), " +
  "a .dsc file, or a git URL#REF";

const URL_RE = /^[a-z][a-z0-9+.-]*:\/\//i;
/** git's scp-like syntax: `git@host:group/repo.git`. */
const SCP_RE = /^[\w.-]+@[\w.-]+:/;
const COMMIT_RE = /^[0-9a-f]{7,64}$/i;

function invalid(message: string, details?: Record<string, unknown>): KilnError {
  return new KilnError("VALIDATION_FAILED", message, details);
}

function isRemote(text: string): boolean {
  return URL_RE.test(text) || SCP_RE.test(text);
}

/**
 * What kind of SOURCE this is, from its spelling alone: a URL (or a local path ending in `.git`)
 * with `#REF` is git; a name ending in `.dsc` a .dsc; anything else a directory. A path that
 * merely contains `#` stays a path.
 */
export function classifySource(arg: string): SourceSpec {
  const hash = arg.lastIndexOf("#");
  const base = hash === -1 ? arg : arg.slice(0, hash);
  const ref = hash === -1 ? "" : arg.slice(hash + 1);
  const remote = isRemote(base);
  if (hash !== -1 && (remote || /\.git\/?$/.test(base))) {
    if (ref === "") {
      throw invalid(
        `${arg} names no branch, tag or commit after the #: write ${base}#main, ${base}#v1.0 or ${base}#<commit>`,
      );
    }
    if (ref.startsWith("-") || /\s/.test(ref)) throw invalid(`"${ref}" is not a git branch, tag or commit`);
    // A local path goes to git as a file:// URL, so that --depth 1 applies to it too.
    const url = remote ? base : pathToFileURL(path.resolve(base)).href;
    return { kind: "git", url, ref, display: arg };
  }
  if (hash === -1 && remote) {
    throw invalid(
      `name the branch, tag or commit to build after a #: ${arg}#main, ${arg}#v1.0 or ${arg}#<commit>`,
    );
  }
  if (arg.endsWith(".dsc")) return { kind: "dsc", path: arg };
  return { kind: "dir", path: arg };
}

/**
 * Refuses a directory that is not an unpacked Debian source package, saying what to do. `label`
 * names it in messages (a git URL#REF for a clone in a temporary directory).
 */
export async function checkSourceDir(dir: string, label: string = dir): Promise<void> {
  const kind = async (p: string): Promise<"dir" | "file" | "none"> => {
    try {
      return (await stat(p)).isDirectory() ? "dir" : "file";
    } catch {
      return "none";
    }
  };
  const top = await kind(dir);
  if (top === "none") throw invalid(`${label} does not exist; ${WHAT_SOURCE}`, { path: label });
  if (top === "file")
    throw invalid(`${label} is neither a directory nor a .dsc; ${WHAT_SOURCE}`, { path: label });
  if ((await kind(path.join(dir, "debian"))) !== "dir") {
    throw invalid(`${label} has no debian/ directory; ${WHAT_SOURCE}`, { path: label });
  }
  if ((await kind(path.join(dir, "debian", "changelog"))) !== "file") {
    throw invalid(
      `${label} has no debian/changelog, which names the package and its version; ` +
        "write one (`dch --create` from devscripts starts it) and try again",
      { path: label },
    );
  }
}

export interface PackedSource {
  /** The .tar.gz as tar writes it. */
  stream: Readable;
  /** Settles when tar has exited: rejects if it failed, even after writing something. */
  done: Promise<void>;
  /** Stops tar (when the upload failed and nobody reads any more). */
  kill(): void;
}

/**
 * Packs a directory into a .tar.gz as it is read, leaving out version-control files (.git and
 * the like); paths in it start with `./`, debian/ at the top.
 */
export function packDirectory(dir: string): PackedSource {
  const child = spawn("tar", ["-czf", "-", "--exclude-vcs", "-C", dir, "."], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (text: string) => {
    if (stderr.length < 4000) stderr += text;
  });
  const done = new Promise<void>((resolve, reject) => {
    child.on("error", (err) => {
      reject(invalid(`cannot run tar to pack ${dir}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      if (code === 0) return resolve();
      const why = stderr.trim() || (signal ? `killed by ${signal}` : `exit code ${code}`);
      reject(invalid(`tar could not pack ${dir}: ${why}`, { path: dir }));
    });
  });
  // An error surfaces through `done`; the stream's own error must not crash the process.
  child.stdout.on("error", () => undefined);
  return { stream: child.stdout, done, kill: () => child.kill("SIGTERM") };
}

// ---------------------------------------------------------------------------------------------
// .dsc

export interface DscFile {
  name: string;
  size: number;
  /** From Checksums-Sha256; undefined for a file only `Files:` lists (MD5). */
  sha256?: string;
}

export interface Dsc {
  source: string;
  version: string;
  files: DscFile[];
}

/** The signed text of a clear-signed message (dash-escaping undone), or the text as it is. */
export function stripSignature(text: string): string {
  const lines = text.split(/\r?\n/);
  if (lines[0]?.trim() !== "-----BEGIN PGP SIGNED MESSAGE-----") return text;
  const blank = lines.findIndex((l, i) => i > 0 && l.trim() === "");
  const end = lines.findIndex((l) => l.trim() === "-----BEGIN PGP SIGNATURE-----");
  if (blank === -1 || end === -1 || end < blank) return text;
  return lines
    .slice(blank + 1, end)
    .map((l) => (l.startsWith("- ") ? l.slice(2) : l))
    .join("\n");
}

/** `checksum size name` lines, as in Files: and Checksums-*:. */
function fileLines(field: string | undefined, what: string): { sum: string; size: number; name: string }[] {
  if (field === undefined) return [];
  return field
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((line) => {
      const parts = line.trim().split(/\s+/);
      const [sum = "", size = "", name = ""] = parts;
      if (parts.length !== 3 || !/^\d+$/.test(size))
        throw invalid(`${what}: cannot read the line "${line.trim()}"`);
      // The files sit beside the .dsc: a name with a path in it would reach elsewhere.
      if (name.includes("/") || name === "." || name === "..") {
        throw invalid(`${what} lists "${name}", which is not a plain file name`);
      }
      return { sum, size: Number(size), name };
    });
}

/** The name, version and files of a .dsc (clear-signed or not). `what` names it in errors. */
export function parseDsc(text: string, what = "the .dsc"): Dsc {
  let para;
  try {
    para = parseParagraph(stripSignature(text), { source: what });
  } catch (err) {
    throw invalid(`${what} cannot be read: ${(err as Error).message}`);
  }
  const source = getField(para, "Source");
  const version = getField(para, "Version");
  if (!source || !version) throw invalid(`${what} has no Source or Version field; is it a .dsc?`);
  const files = new Map<string, DscFile>();
  for (const f of fileLines(getField(para, "Files"), `${what}, Files`))
    files.set(f.name, { name: f.name, size: f.size });
  for (const f of fileLines(getField(para, "Checksums-Sha256"), `${what}, Checksums-Sha256`)) {
    const known = files.get(f.name);
    if (known && known.size !== f.size) {
      throw invalid(`${what} gives ${f.name} two sizes (${known.size} and ${f.size})`);
    }
    files.set(f.name, { name: f.name, size: f.size, sha256: f.sum.toLowerCase() });
  }
  if (files.size === 0) throw invalid(`${what} lists no files (neither Files: nor Checksums-Sha256:)`);
  return { source, version, files: [...files.values()] };
}

export interface LocalFile extends DscFile {
  path: string;
}

/**
 * Reads a .dsc and finds every file it lists beside it; a missing file or one of another size
 * is refused before anything is uploaded. The .dsc itself comes first.
 */
export async function collectDscFiles(dscPath: string): Promise<{ dsc: Dsc; files: LocalFile[] }> {
  let text: string;
  try {
    text = await readFile(dscPath, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw invalid(
      code === "ENOENT" ? `${dscPath} does not exist` : `cannot read ${dscPath}: ${(err as Error).message}`,
      {
        path: dscPath,
      },
    );
  }
  const dsc = parseDsc(text, path.basename(dscPath));
  const dir = path.dirname(dscPath);
  const self = await stat(dscPath);
  const files: LocalFile[] = [{ name: path.basename(dscPath), size: self.size, path: dscPath }];
  for (const f of dsc.files) {
    const p = path.join(dir, f.name);
    let size: number;
    try {
      const s = await stat(p);
      if (!s.isFile()) throw new Error("not a file");
      size = s.size;
    } catch {
      throw invalid(
        `${path.basename(dscPath)} lists ${f.name}, but ${p} does not exist; ` +
          "put every file the .dsc lists (its Files: field) in the same directory as the .dsc",
        { path: p },
      );
    }
    if (size !== f.size) {
      throw invalid(
        `${p} is ${size} bytes, but ${path.basename(dscPath)} says ${f.size}: is it the right file?`,
        {
          path: p,
        },
      );
    }
    files.push({ ...f, path: p });
  }
  return { dsc, files };
}

// ---------------------------------------------------------------------------------------------
// git

function runGit(args: string[], cwd?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, { stdio: ["ignore", "ignore", "pipe"], ...(cwd ? { cwd } : {}) });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (stderr.length < 8000) stderr += text;
    });
    child.on("error", (err) => {
      const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
      reject(
        invalid(missing ? "git is not installed (apt-get install git)" : `cannot run git: ${err.message}`),
      );
    });
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new Error(stderr.trim().split("\n").slice(-5).join("\n") || `git exited with ${code}`));
    });
  });
}

/**
 * Clones REF of the repository into `dest` (which must not exist): a shallow clone of a branch or
 * tag, else — when REF looks like a commit id — a full clone checked out at that commit.
 */
export async function cloneGit(
  spec: { url: string; ref: string; display?: string },
  dest: string,
): Promise<void> {
  const what = spec.display ?? `${spec.url}#${spec.ref}`;
  try {
    await runGit(["clone", "--quiet", "--depth", "1", "--branch", spec.ref, "--", spec.url, dest]);
    return;
  } catch (err) {
    if (err instanceof KilnError || !COMMIT_RE.test(spec.ref)) {
      throw err instanceof KilnError ? err : invalid(`cannot clone ${what}: ${(err as Error).message}`);
    }
  }
  await rm(dest, { recursive: true, force: true });
  try {
    await runGit(["clone", "--quiet", "--no-checkout", "--", spec.url, dest]);
    await runGit(["checkout", "--quiet", "--detach", spec.ref], dest);
  } catch (err) {
    throw err instanceof KilnError ? err : invalid(`cannot clone ${what}: ${(err as Error).message}`);
  }
}
