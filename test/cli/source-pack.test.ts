import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  checkSourceDir,
  classifySource,
  cloneGit,
  collectDscFiles,
  packDirectory,
  parseDsc,
  stripSignature,
} from "../../src/cli/source-pack.js";
import { KilnError } from "../../src/errors/catalogue.js";

const hasGit = spawnSync("git", ["--version"]).status === 0;
if (!hasGit && process.env.CI === "true") throw new Error("git is required in CI (apt-get install git)");

const CHANGELOG = `hello (1.0-1) unstable; urgency=medium

  * Initial release.

 -- Kiln Test <test@example.org>  Mon, 01 Jan 2024 00:00:00 +0000
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-source-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A minimal unpacked source package under `dir/name`. */
function makeSourceDir(name = "hello"): string {
  const top = path.join(dir, name);
  mkdirSync(path.join(top, "debian/source"), { recursive: true });
  writeFileSync(path.join(top, "debian/changelog"), CHANGELOG);
  writeFileSync(path.join(top, "debian/control"), "Source: hello\n\nPackage: hello\nArchitecture: any\n");
  writeFileSync(path.join(top, "debian/source/format"), "3.0 (native)\n");
  writeFileSync(path.join(top, "hello.c"), "int main(void) { return 0; }\n");
  return top;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof KilnError ? err.code : `not a KilnError: ${String(err)}`;
  }
  return "no error";
}

describe("classifySource", () => {
  it("takes URLs and local .git paths with #REF as git", () => {
    expect(classifySource("https://git.example.org/x.git#v1.2")).toEqual({
      kind: "git",
      url: "https://git.example.org/x.git",
      ref: "v1.2",
      display: "https://git.example.org/x.git#v1.2",
    });
    expect(classifySource("file:///srv/repo#main")).toMatchObject({
      kind: "git",
      url: "file:///srv/repo",
      ref: "main",
    });
    expect(classifySource("git@example.org:team/x.git#abc1234")).toMatchObject({
      kind: "git",
      url: "git@example.org:team/x.git",
      ref: "abc1234",
    });
    // A local path becomes a file:// URL, so that a shallow clone works on it.
    expect(classifySource("/srv/x.git#feature/y")).toMatchObject({
      kind: "git",
      url: pathToFileURL("/srv/x.git").href,
      ref: "feature/y",
    });
    expect(classifySource("rel/x.git#main")).toMatchObject({
      url: pathToFileURL(path.resolve("rel/x.git")).href,
    });
  });

  it("takes .dsc files and directories by their names", () => {
    expect(classifySource("../hello_1.0-1.dsc")).toEqual({ kind: "dsc", path: "../hello_1.0-1.dsc" });
    expect(classifySource("hello")).toEqual({ kind: "dir", path: "hello" });
    expect(classifySource("./src/x.git")).toEqual({ kind: "dir", path: "./src/x.git" });
    // A # in a plain path does not make it git.
    expect(classifySource("build#2/hello")).toEqual({ kind: "dir", path: "build#2/hello" });
  });

  it("wants a ref on a git URL", () => {
    expect(() => classifySource("https://git.example.org/x.git")).toThrow(/after a #/);
    expect(() => classifySource("https://git.example.org/x.git#")).toThrow(/names no branch/);
    expect(() => classifySource("/srv/x.git#--upload-pack=evil")).toThrow(/not a git branch/);
    try {
      classifySource("https://git.example.org/x.git");
    } catch (err) {
      expect((err as KilnError).code).toBe("VALIDATION_FAILED");
    }
  });
});

describe("checkSourceDir", () => {
  it("accepts a directory with debian/changelog", async () => {
    await expect(checkSourceDir(makeSourceDir())).resolves.toBeUndefined();
  });

  it("refuses what is not a source package, saying what to do", async () => {
    const none = path.join(dir, "plain");
    mkdirSync(none);
    writeFileSync(path.join(none, "README"), "x");
    await expect(checkSourceDir(none)).rejects.toThrow(
      /has no debian\/ directory; kiln build takes the top directory/,
    );
    expect(await codeOf(checkSourceDir(none))).toBe("VALIDATION_FAILED");

    const noChangelog = makeSourceDir("nochangelog");
    rmSync(path.join(noChangelog, "debian/changelog"));
    await expect(checkSourceDir(noChangelog)).rejects.toThrow(/no debian\/changelog.*dch --create/);

    await expect(checkSourceDir(path.join(dir, "missing"))).rejects.toThrow(/does not exist/);
    await expect(checkSourceDir(path.join(noChangelog, "hello.c"))).rejects.toThrow(
      /neither a directory nor a \.dsc/,
    );
    await expect(checkSourceDir(none, "https://x/y.git#main")).rejects.toThrow(
      /^https:\/\/x\/y\.git#main has no debian/,
    );
  });
});

describe("packDirectory", () => {
  it("makes a .tar.gz with debian/ at the top and no version-control files", async () => {
    const src = makeSourceDir();
    mkdirSync(path.join(src, ".git"));
    writeFileSync(path.join(src, ".git/HEAD"), "ref: refs/heads/main\n");
    const out = path.join(dir, "source.tar.gz");
    const packed = packDirectory(src);
    await Promise.all([pipeline(packed.stream, createWriteStream(out)), packed.done]);
    const names = execFileSync("tar", ["-tzf", out], { encoding: "utf8" }).trim().split("\n").sort();
    expect(names).toEqual([
      "./",
      "./debian/",
      "./debian/changelog",
      "./debian/control",
      "./debian/source/",
      "./debian/source/format",
      "./hello.c",
    ]);
  });

  it("fails when tar fails", async () => {
    const packed = packDirectory(path.join(dir, "missing"));
    packed.stream.resume();
    await expect(packed.done).rejects.toThrow(/tar could not pack/);
  });
});

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function md5(text: string): string {
  return createHash("md5").update(text).digest("hex");
}

function dscText(files: Record<string, string>): string {
  const list = Object.entries(files);
  return (
    "Format: 3.0 (quilt)\nSource: hello\nVersion: 1.0-1\n" +
    `Checksums-Sha256:\n${list.map(([n, c]) => ` ${sha256(c)} ${c.length} ${n}`).join("\n")}\n` +
    `Files:\n${list.map(([n, c]) => ` ${md5(c)} ${c.length} ${n}`).join("\n")}\n`
  );
}

describe("parseDsc", () => {
  it("reads the name, version and files with their SHA-256", () => {
    const files = { "hello_1.0.orig.tar.gz": "orig", "hello_1.0-1.debian.tar.xz": "debian!" };
    expect(parseDsc(dscText(files))).toEqual({
      source: "hello",
      version: "1.0-1",
      files: [
        { name: "hello_1.0.orig.tar.gz", size: 4, sha256: sha256("orig") },
        { name: "hello_1.0-1.debian.tar.xz", size: 7, sha256: sha256("debian!") },
      ],
    });
  });

  it("reads a clear-signed .dsc, and one with Files: alone", () => {
    const signed =
      "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" +
      "Source: hello\nVersion: 1.0-1\nFiles:\n 0123 5 hello_1.0.tar.gz\n" +
      "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
    expect(parseDsc(signed)).toEqual({
      source: "hello",
      version: "1.0-1",
      files: [{ name: "hello_1.0.tar.gz", size: 5 }],
    });
    expect(
      stripSignature(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- -x\ny\n-----BEGIN PGP SIGNATURE-----\n",
      ),
    ).toBe("-x\ny");
  });

  it("refuses file names with paths and .dscs without files", () => {
    expect(() => parseDsc("Source: a\nVersion: 1\nFiles:\n 00 1 ../etc/passwd\n")).toThrow(
      /not a plain file name/,
    );
    expect(() => parseDsc("Source: a\nVersion: 1\n")).toThrow(/lists no files/);
    expect(() => parseDsc("Version: 1\nFiles:\n 00 1 a\n")).toThrow(/no Source or Version/);
  });
});

describe("collectDscFiles", () => {
  it("finds every listed file beside the .dsc, the .dsc first", async () => {
    const files = { "hello_1.0.orig.tar.gz": "orig", "hello_1.0-1.debian.tar.xz": "debian!" };
    const dsc = path.join(dir, "hello_1.0-1.dsc");
    writeFileSync(dsc, dscText(files));
    for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
    const got = await collectDscFiles(dsc);
    expect(got.files.map((f) => [f.name, f.path])).toEqual([
      ["hello_1.0-1.dsc", dsc],
      ["hello_1.0.orig.tar.gz", path.join(dir, "hello_1.0.orig.tar.gz")],
      ["hello_1.0-1.debian.tar.xz", path.join(dir, "hello_1.0-1.debian.tar.xz")],
    ]);
  });

  it("refuses a missing or wrong-sized file, naming it and saying what to do", async () => {
    const dsc = path.join(dir, "hello_1.0-1.dsc");
    writeFileSync(dsc, dscText({ "hello_1.0.orig.tar.gz": "orig", "hello_1.0-1.debian.tar.xz": "debian!" }));
    writeFileSync(path.join(dir, "hello_1.0.orig.tar.gz"), "orig");
    await expect(collectDscFiles(dsc)).rejects.toThrow(
      /hello_1\.0-1\.dsc lists hello_1\.0-1\.debian\.tar\.xz, but .* does not exist; put every file the \.dsc lists/,
    );
    expect(await codeOf(collectDscFiles(dsc))).toBe("VALIDATION_FAILED");
    writeFileSync(path.join(dir, "hello_1.0-1.debian.tar.xz"), "other size");
    await expect(collectDscFiles(dsc)).rejects.toThrow(/is 10 bytes, but hello_1\.0-1\.dsc says 7/);
    await expect(collectDscFiles(path.join(dir, "nope.dsc"))).rejects.toThrow(/nope\.dsc does not exist/);
  });
});

describe.runIf(hasGit)("cloneGit", () => {
  function git(cwd: string, ...args: string[]): string {
    return execFileSync("git", ["-c", "user.email=t@example.org", "-c", "user.name=t", ...args], {
      cwd,
      encoding: "utf8",
    }).trim();
  }

  it("clones a branch or tag shallowly, and a commit id in full", async () => {
    const repo = makeSourceDir("repo");
    git(repo, "init", "-q", "-b", "main");
    git(repo, "add", "-A");
    git(repo, "commit", "-qm", "one");
    const first = git(repo, "rev-parse", "HEAD");
    git(repo, "tag", "v1");
    writeFileSync(path.join(repo, "second.txt"), "2\n");
    git(repo, "add", "-A");
    git(repo, "commit", "-qm", "two");

    const spec = classifySource(`${repo}/.git#v1`);
    if (spec.kind !== "git") throw new Error("expected git");
    await cloneGit(spec, path.join(dir, "at-tag"));
    expect(existsSync(path.join(dir, "at-tag/debian/changelog"))).toBe(true);
    expect(existsSync(path.join(dir, "at-tag/second.txt"))).toBe(false);
    expect(git(path.join(dir, "at-tag"), "rev-list", "--count", "HEAD")).toBe("1");

    await cloneGit({ url: pathToFileURL(repo).href, ref: "main" }, path.join(dir, "at-main"));
    expect(existsSync(path.join(dir, "at-main/second.txt"))).toBe(true);

    await cloneGit({ url: pathToFileURL(repo).href, ref: first.slice(0, 10) }, path.join(dir, "at-commit"));
    expect(git(path.join(dir, "at-commit"), "rev-parse", "HEAD")).toBe(first);
    expect(existsSync(path.join(dir, "at-commit/second.txt"))).toBe(false);

    expect(
      await codeOf(cloneGit({ url: pathToFileURL(repo).href, ref: "nosuch" }, path.join(dir, "x"))),
    ).toBe("VALIDATION_FAILED");
  });
});
